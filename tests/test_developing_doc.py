"""docs/DEVELOPING.md is checked against the code (issue 22: it documented a function that did not exist).

Every backticked path (`analysis/schema.py`, `tests/x.py::test_y`), bare module file (`masks.py`) and
dotted name rooted in one of our packages (`pruning.prune.resolve_sparsity`, `app.cli.request_of(...)`)
must exist. Placeholders in angle brackets (`views/<page>.py`) are skipped.
"""

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "DEVELOPING.md"
PACKAGES = ("pruning", "analysis", "usecases", "app", "benchmarks", "tests")


def _cited() -> list[str]:
    return sorted({m for m in re.findall(r"`([^`\n]+)`", DOC.read_text()) if "<" not in m and " " not in m.split("(")[0]})


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


# Files the doc tells a contributor to create, not files that exist.
TO_BE_WRITTEN = {"tests/test_mine.py"}


def missing_citations() -> list[str]:
    files = {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    missing = []
    for cite in _cited():
        name = cite.split("(")[0]
        path, _, test = name.partition("::")
        if path.endswith(".py"):
            hits = [f for f in files if f == path or f.endswith("/" + path)]
            if path in TO_BE_WRITTEN:
                continue
            if not hits or (test and not any(f"def {test}(" in (ROOT / f).read_text() for f in hits)):
                missing.append(cite)
        elif re.fullmatch(r"(pruning|analysis|usecases|app)(/\w+)*\.\w+(\.\w+)*", name):
            # `app/progress.progress_bar` names a module by its path, then an attribute.
            if not (ROOT / name).exists() and not _resolves(name.replace("/", ".")):
                missing.append(cite)
    return missing


def test_every_name_developing_md_cites_exists() -> None:
    assert not missing_citations(), f"docs/DEVELOPING.md cites what does not exist: {missing_citations()}"
