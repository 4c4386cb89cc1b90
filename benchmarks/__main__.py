"""`python -m benchmarks [--quick] [NAME ...]`: run every module in benchmarks/ that has a `main()`, in
name order, or only the named ones. `--quick` sets TICKETLAB_BENCH_QUICK=1 for a small smoke run.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--quick" in args:
        args.remove("--quick")
        os.environ["TICKETLAB_BENCH_QUICK"] = "1"
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))
    unknown = [a for a in args if a not in names]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    failed = []
    for name in args or names:
        module = importlib.import_module(f"benchmarks.{name}")
        entry = getattr(module, "main", None)
        if not callable(entry):
            continue
        print(f"\n=== benchmarks.{name} ===", flush=True)
        start = time.perf_counter()
        # a main that parses its own arguments gets none of ours
        rc = entry([]) if inspect.signature(entry).parameters else entry()
        print(f"=== benchmarks.{name}: {time.perf_counter() - start:.0f} s, exit {rc or 0} ===", flush=True)
        if rc:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
