"""pytest plugin: with TICKETLAB_REQUIRE_ALL=1 (set by .ci/run) a skipped test is a failure.

Tests that need the reference data or chromium skip on a developer's machine without them; in CI
that would let a run pass with the most important tests never executed. A test that may be skipped
even in CI says so with `@pytest.mark.may_skip`. Loaded by tests/conftest.py."""

from __future__ import annotations

import os

import pytest

ENV = "TICKETLAB_REQUIRE_ALL"


def require_all() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "may_skip: may be skipped even when TICKETLAB_REQUIRE_ALL=1 (CI)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not (require_all() and rep.skipped) or hasattr(rep, "wasxfail") or item.get_closest_marker("may_skip"):
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    reason = reason.removeprefix("Skipped: ")
    rep.outcome = "failed"
    rep.longrepr = f"{ENV}=1 and this test would be skipped: {reason}. CI must run it: provide what it needs."
