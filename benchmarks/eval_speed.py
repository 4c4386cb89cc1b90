"""Evaluation speed on SmolLM2-135M-Instruct: loglikelihood requests/s, batch size, and the issue's targets.

    python -m benchmarks.eval_speed [--quick | --full] [--threads N] [--json FILE]

1. Requests/s on CrowS-Pairs requests: lm-eval's own HFLM path against the shared-prefix scorer
   (analysis/safety/scoring.py) at several batch sizes (packed rows per pass) and row budgets.
2. Work per task: every request of the full suite is built and packed without running the model
   (`plan_only`): requests, unique requests, tokens run vs tokens lm-eval's path would run.
3. Targets on 2 cores (issue 3): full CrowS-Pairs < 3 min, whole suite (BBQ capped) < 20 min,
   WikiText-2 test perplexity (313k tokens) < 10 min. `--full` times the real runs; the default
   times a subset and extrapolates by tokens (said so in the output). `--quick` (or
   TICKETLAB_BENCH_QUICK=1) only checks that everything runs; its numbers mean little.

The load average is printed with the results: on a shared machine the figures are only as good as
the quiet it ran in.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

CROWS_TARGET_S, SUITE_TARGET_S, PPL_TARGET_S = 180.0, 1200.0, 600.0


def _load(threads: int):
    import torch

    torch.set_num_threads(threads)
    from pruning.models import load_model

    return load_model("smollm2-135m-instruct")


def _crows_requests(n_pairs: int):
    from lm_eval.api.instance import Instance

    from analysis.safety.loaders import crows_pairs_rows

    rows = crows_pairs_rows()[:n_pairs]
    return [Instance(request_type="loglikelihood", doc={}, arguments=("", s), idx=0)
            for r in rows for s in (r["sent_more"], r["sent_less"])]


def request_rates(loaded, n_pairs: int, batch_sizes: list[int], row_budgets: list[int]) -> list[dict]:
    from analysis.safety.scoring import DEFAULT_ROW_TOKENS, make_lm

    reqs = _crows_requests(n_pairs)
    out = []
    configs = [("lm-eval HFLM", 8, None)] + [("shared-prefix", b, DEFAULT_ROW_TOKENS) for b in batch_sizes]
    configs += [("shared-prefix", batch_sizes[len(batch_sizes) // 2], r) for r in row_budgets
                if r != DEFAULT_ROW_TOKENS]
    for label, bs, rows in configs:
        lm = make_lm(loaded.model, loaded.tokenizer, batch_size=bs, row_tokens=rows or DEFAULT_ROW_TOKENS)
        if rows is None:
            lm.shared = False
        t0 = time.perf_counter()
        lm.loglikelihood(reqs)
        dt = time.perf_counter() - t0
        stats = lm.stats.to_dict() if rows is not None else {}
        out.append({"path": label, "batch_size": bs, "row_tokens": rows, "requests": len(reqs), "seconds": dt,
                    "requests_per_s": len(reqs) / dt, "tokens": stats.get("tokens"),
                    "tokens_per_s": stats.get("tokens_per_s")})
        print(f"  {label:<14} batch {bs:>2} rows {rows or '-':>5}: {len(reqs) / dt:6.1f} requests/s"
              + (f"  {stats['tokens_per_s']:6.0f} tokens/s" if stats.get("tokens_per_s") else ""), flush=True)
    return out


def plan(loaded) -> dict:
    from analysis.safety import run_safety

    groups = {"crows_pairs": ["crows_pairs_english"], "bbq": ["bbq"],
              "truthfulqa": ["truthfulqa_mc1", "truthfulqa_mc2"], "winogender": ["winogender_all"], "suite": None}
    out = {}
    for name, tasks in groups.items():
        s = run_safety(loaded, tasks=tasks, plan_only=True).config["scoring"]
        out[name] = {k: s[k] for k in ("requests", "unique", "contexts", "rows", "tokens", "naive_tokens")}
        print(f"  {name:<12} {s['requests']:>6} requests  {s['unique']:>6} unique  {s['tokens']:>8,} tokens run "
              f"(lm-eval's path: {s['naive_tokens']:,})", flush=True)
    return out


def timed(label: str, fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn()
    dt = time.perf_counter() - t0
    print(f"  {label:<44} {dt:8.1f} s", flush=True)
    return dt, value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.eval_speed", description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smoke run: tiny subsets")
    mode.add_argument("--full", action="store_true", help="time the real full runs (about half an hour)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    quick = args.quick or os.environ.get("TICKETLAB_BENCH_QUICK") == "1"

    from analysis.ledger import machine_description
    from analysis.perplexity import QUICK_WINDOWS, load_tokens, perplexity, windows
    from analysis.safety import QUICK_LIMIT, run_safety

    loaded = _load(args.threads)
    load0 = os.getloadavg()
    mode_name = "quick" if quick else "full" if args.full else "default"
    print(f"SmolLM2-135M-Instruct, {args.threads} thread(s), mode {mode_name}, load average {load0[0]:.2f}",
          flush=True)
    result: dict = {"mode": mode_name, "threads": args.threads, "machine": machine_description(),
                    "loadavg_start": load0}

    print("1. loglikelihood requests/s (CrowS-Pairs requests)")
    n_pairs = 12 if quick else 80
    result["rates"] = request_rates(loaded, n_pairs, [1, 4] if quick else [1, 2, 4, 8, 16],
                                    [] if quick else [256, 1024])
    print("2. work per task (full suite, nothing run)")
    result["plan"] = plan(loaded)

    print("3. targets")
    full_tokens = len(load_tokens(loaded.tokenizer))
    targets = {}
    if args.full:
        dt, _ = timed("CrowS-Pairs, full (3,016 requests)",
                      lambda: run_safety(loaded, tasks=["crows_pairs_english"]))
        targets["crows_pairs_s"] = {"seconds": dt, "target_s": CROWS_TARGET_S, "measured": True}
        dt, _ = timed("whole safety suite (BBQ capped)", lambda: run_safety(loaded))
        targets["suite_s"] = {"seconds": dt, "target_s": SUITE_TARGET_S, "measured": True}
        dt, r = timed(f"WikiText-2 test perplexity ({full_tokens:,} tokens)", lambda: perplexity(loaded))
        targets["ppl_s"] = {"seconds": dt, "target_s": PPL_TARGET_S, "measured": True, "perplexity": r["value"]}
    else:
        limit = 4 if quick else 60
        dt, res = timed(f"CrowS-Pairs, first {limit} pairs", lambda: run_safety(
            loaded, tasks=["crows_pairs_english"], limit=limit))
        crows_rate = res.config["scoring"]["tokens"] / dt
        n_win = 2 if quick else QUICK_WINDOWS
        dt, r = timed(f"perplexity, {n_win} windows", lambda: perplexity(loaded, limit=n_win))
        ppl_rate = r["n_windows"] * r["seq_len"] / dt
        dt, res = timed(f"whole suite, --limit {2 if quick else QUICK_LIMIT}", lambda: run_safety(
            loaded, limit=2 if quick else QUICK_LIMIT))
        suite_rate = res.config["scoring"]["tokens"] / dt
        plan_ = result["plan"]
        targets["crows_pairs_s"] = {"seconds": plan_["crows_pairs"]["tokens"] / crows_rate,
                                    "target_s": CROWS_TARGET_S, "measured": False}
        targets["suite_s"] = {"seconds": plan_["suite"]["tokens"] / suite_rate, "target_s": SUITE_TARGET_S,
                              "measured": False}
        targets["ppl_s"] = {"seconds": full_tokens / ppl_rate, "target_s": PPL_TARGET_S, "measured": False}
        print("  (full-run times below are extrapolated by tokens from these subsets)")
        targets["quick_subsets"] = {"ppl_windows": QUICK_WINDOWS, "safety_limit": QUICK_LIMIT,
                                    "ppl_windows_s": r["n_windows"] * r["seq_len"] / ppl_rate}
    for name, t in targets.items():
        if "target_s" in t:
            ok = "meets" if t["seconds"] < t["target_s"] else "MISSES"
            how = "measured" if t["measured"] else "estimated"
            print(f"  {name:<16} {t['seconds'] / 60:6.1f} min ({how})  target {t['target_s'] / 60:.0f} min: {ok}")
    result["targets"] = targets
    result["ppl_windows_total"] = len(windows(full_tokens, 512))
    result["loadavg_end"] = os.getloadavg()
    print(f"load average at the end {result['loadavg_end'][0]:.2f} (above {args.threads} means shared cores: "
          f"the times are pessimistic)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
