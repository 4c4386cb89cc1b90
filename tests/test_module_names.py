"""Module names that collide (issue 22: compare.py / comparison.py / dashboard/comparison.py, two registry.py).

A ratchet: the groups below are today's shared basenames; a new collision fails, and a group that is
resolved must be struck from the list. Some are the intended floor-parallel naming (a CLI command or a
dashboard view named after the use case it calls); the rest are to be renamed so each name says what it is.
"""

from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pruning", "analysis", "usecases", "app", "benchmarks")
KNOWN = {
    "admin.py": {"analysis/governance/admin.py", "app/dashboard/views/admin.py"},
    "base.py": {"pruning/adapters/base.py", "usecases/base.py"},
    "evaluate.py": {"analysis/evaluate.py", "usecases/evaluate.py"},
    "experiments.py": {"analysis/lottery/experiments.py", "app/dashboard/views/experiments.py"},
    "export.py": {"analysis/governance/export.py", "app/dashboard/views/export.py", "usecases/export.py"},
    "generation.py": {"analysis/generation.py", "benchmarks/generation.py"},
    "governance.py": {"app/dashboard/governance.py", "benchmarks/governance.py"},
    "imp.py": {"app/commands/imp.py", "benchmarks/imp.py"},
    "jobs.py": {"app/dashboard/views/jobs.py", "app/jobs.py"},
    "masks.py": {"pruning/lottery/masks.py", "pruning/masks.py"},
    "materialize.py": {"app/commands/materialize.py", "pruning/materialize.py"},
    "models.py": {"app/dashboard/views/models.py", "pruning/models.py"},
    "people.py": {"analysis/governance/people.py", "app/commands/people.py"},
    "prune.py": {"app/commands/prune.py", "app/dashboard/views/prune.py", "pruning/prune.py", "usecases/prune.py"},
    "review.py": {"analysis/governance/review.py", "app/dashboard/views/review.py"},
    "runner.py": {"analysis/safety/runner.py", "pruning/lottery/runner.py"},
    "serve_check.py": {"app/commands/serve_check.py", "usecases/serve_check.py"},
    "survival.py": {"analysis/survival.py", "app/dashboard/views/survival.py"},
    "transcripts.py": {"analysis/transcripts.py", "app/dashboard/transcripts.py"},
}


def _shared_basenames() -> dict[str, set[str]]:
    by_name: dict[str, set[str]] = defaultdict(set)
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name != "__init__.py":
                by_name[path.name].add(path.relative_to(ROOT).as_posix())
    return {name: paths for name, paths in by_name.items() if len(paths) > 1}


def test_no_new_module_name_collisions() -> None:
    shared = _shared_basenames()
    new = {n: sorted(p - KNOWN.get(n, set())) for n, p in shared.items() if p - KNOWN.get(n, set())}
    assert not new, f"a module name already used elsewhere (rename it to say what it is): {new}"


def test_resolved_collisions_are_struck_from_the_list() -> None:
    shared = _shared_basenames()
    stale = sorted(n for n, p in KNOWN.items() if shared.get(n, set()) != p)
    assert not stale, f"these collisions changed or were resolved: update KNOWN: {stale}"
