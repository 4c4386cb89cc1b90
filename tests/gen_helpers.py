"""Shared by the generation-suite tests: the shipped IFEval / XSTest YAMLs with a small max_gen_toks,
in a task folder of their own on $TICKETLAB_TASK_PATH (a later folder's task of the same name wins, as
in lm-eval), so tiny-model runs generate a few dozen tokens instead of 512."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.safety import benchmark_registry

INSTRUCT_DIR = benchmark_registry.TASK_DIR / "instruct"


def write_short_tasks(folder: Path, tokens: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("ifeval", "xstest"):
        text = (INSTRUCT_DIR / f"{name}.yaml").read_text()
        lines = [f"  max_gen_toks: {tokens}" if ln.strip().startswith("max_gen_toks:") else ln
                 for ln in text.splitlines()]
        (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def short_generation(tmp_path, monkeypatch) -> Path:
    folder = write_short_tasks(tmp_path / "short_tasks")
    monkeypatch.setenv(benchmark_registry.PATH_ENV, str(folder))
    return folder
