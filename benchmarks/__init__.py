"""Speed and quality benchmarks: `python -m benchmarks` runs them all, `python -m benchmarks.<name>` one.

Set TICKETLAB_BENCH_QUICK=1 (or pass --quick to `python -m benchmarks`) for a small smoke run.
"""
