"""A real browser through the dashboard: `ticketlab app` as a subprocess on a free port, Debian's chromium
driven by Playwright, prune -> survival heatmap -> review -> export on a tiny model. Screenshots go to
tests/artifacts/."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import pytest

from app.dashboard.screenshots import CHROMIUM, free_port, launch, settle, snapshot, start_server, stop_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} not found: install Debian's chromium (`make browser`)"),
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture
def server(state, tiny_llama_dir):
    (state / "reviewers.toml").write_text('reviewers = ["alice", "bob"]\n')
    env = dict(os.environ, TICKETLAB_USER="carol")  # the creator; alice reviews (separation of duties)
    port = free_port()
    log = state / "server.log"
    proc = start_server(port, str(tiny_llama_dir), env=env, log=log)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


def _shot(page, name: str) -> None:
    snapshot(page, ARTIFACTS / f"{name}.png")


def test_prune_survival_review_export_in_a_browser(server, tiny_llama_dir, state):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)

        # empty ledger: one click prunes a first ticket in the background
        page.goto(server)
        settle(page)
        expect(page.get_by_text("The ledger is empty")).to_be_visible()
        page.get_by_role("button", name=re.compile("Prune a first ticket")).click()
        expect(page.get_by_text(re.compile(r"Tickets \(1\)"))).to_be_visible(timeout=180_000)
        settle(page)
        _shot(page, "1-models")
        ticket = next((state / "tickets").iterdir()).name

        # survival heatmaps, with a hover value
        page.get_by_role("link", name="Survival").click()
        settle(page)
        expect(page.get_by_text("Surviving weights: layer × matrix")).to_be_visible()
        plots = page.locator(".js-plotly-plot")
        assert plots.count() >= 3
        box = plots.first.locator(".nsewdrag").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.25)
        expect(page.locator(".hoverlayer .hovertext").first).to_contain_text("weights", timeout=10_000)
        _shot(page, "2-survival")

        # review: approve with an override (no evaluations on a tiny model), promote
        page.get_by_role("link", name="Review").click()
        settle(page)
        expect(page.get_by_text("Audit chain intact")).to_be_visible()
        page.get_by_label("reason (recorded, and part of the hash chain)").fill("browser test")
        page.get_by_text("override the policy").click()
        page.get_by_label("override reason").fill("tiny test model has no evaluations")
        page.get_by_role("button", name="Record decision").click()
        expect(page.get_by_text(re.compile(r"recorded decision #1: approve"))).to_be_visible()
        page.locator('[data-testid="stForm"]').filter(has_text="Promote").get_by_label("reason").fill("ship it")
        page.get_by_role("button", name=f"Promote {ticket[:10]}").click()
        expect(page.get_by_text(re.compile(f"promoted {ticket}"))).to_be_visible()
        settle(page)
        _shot(page, "3-review")

        # export the approved ticket in the background, verify it, download the zip
        page.get_by_role("link", name="Export").click()
        settle(page)
        page.get_by_role("button", name="Export in the background").click()
        expect(page.get_by_role("button", name="Verify every file's hash")).to_be_visible(timeout=180_000)
        page.get_by_role("button", name="Verify every file's hash").click()
        expect(page.get_by_text(re.compile("verified: .* files match the manifest"))).to_be_visible()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download as zip").click()
        target = ARTIFACTS / "bundle.zip"
        download.value.save_as(target)
        with zipfile.ZipFile(target) as z:
            manifest = json.loads(z.read(f"{ticket}-masks/manifest.json"))
        assert manifest["ticket"]["id"] == ticket
        settle(page)
        _shot(page, "4-export")
        browser.close()
