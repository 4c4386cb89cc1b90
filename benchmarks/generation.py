"""Generation speed on SmolLM2-135M-Instruct: the batched decoding path against the naive baseline, the
instruct suite's quick preset, and the full IFEval + XSTest run.

    python -m benchmarks.generation [--quick | --full] [--threads N] [--prompts N] [--batch-size N] [--json FILE]

1. Throughput, side by side in one run: `model.generate` one prompt at a time (greedy, the same stop
   tokens, no padding) against `analysis.generation.generate` (batched, left-padded, KV cache, rows
   leave the batch when they stop, pending prompts take their places) on the first N IFEval prompts (default 64,
   two batches' worth, so refilling counts) with 64 new tokens.
   Both must give the same tokens for every prompt (checked, printed); target >= 5x.
2. The quick preset (`ticketlab eval dense --suite instruct --limit 18`, as the dashboard's
   "instruct quick" starts it): wall time, generated tokens/s; target < 3 min.
3. Both full suites (541 IFEval + 450 XSTest prompts): `--full` times the real run (target < 20 min);
   the default extrapolates from step 2 by prompts (mean generated tokens per prompt of each task in
   the quick run, at the quick run's tokens/s), and says so.
Peak memory is the process's maximum resident set size (getrusage), printed after each step.
`--quick` (or TICKETLAB_BENCH_QUICK=1) only checks that everything runs (4 prompts, limit 2).

The load average is printed with the results: on a shared machine the figures are only as good as the
quiet they ran in.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

RATIO_TARGET, QUICK_TARGET_S, FULL_TARGET_S = 5.0, 180.0, 1200.0
FULL_PROMPTS = {"ifeval": 541, "xstest": 450}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def naive_vs_batched(loaded, n: int, new_tokens: int, batch_size: int) -> dict:
    import torch

    from analysis.generation import encode, generate, stop_ids
    from analysis.safety.loaders import ifeval_rows

    prompts = [r["prompt"] for r in ifeval_rows()[:n]]
    stops = stop_ids(loaded.model, loaded.tokenizer)
    t0 = time.perf_counter()
    naive = []
    with torch.inference_mode():
        for ids in encode(loaded.tokenizer, prompts):
            x = torch.tensor([ids])
            out = loaded.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens,
                                        do_sample=False, eos_token_id=stops, pad_token_id=stops[0])
            toks = out[0, len(ids):].tolist()
            naive.append(toks[:-1] if toks and toks[-1] in stops else toks)
    naive_s = time.perf_counter() - t0
    g = generate(loaded.model, loaded.tokenizer, prompts, max_new_tokens=new_tokens, batch_size=batch_size)
    same = sum(a == b for a, b in zip(naive, g.tokens, strict=True))
    tokens = sum(len(t) for t in naive)
    return {"prompts": n, "new_tokens": new_tokens, "batch_size": batch_size, "generated_tokens": tokens,
            "naive_s": naive_s, "batched_s": g.seconds, "naive_tokens_per_s": tokens / naive_s,
            "batched_tokens_per_s": g.generated_tokens / g.seconds, "speedup": naive_s / g.seconds,
            "identical_prompts": same, "peak_rss_mib": _peak_mib()}


def suite_run(loaded, limit: int | None) -> dict:
    from analysis.evaluate import evaluate

    t0 = time.perf_counter()
    out = evaluate(loaded, None, suite="instruct", limit=limit, record=False)
    wall = time.perf_counter() - t0
    cfg = out["config"]["instruct"]
    gen = cfg["generation"]
    per_task = {t: len(transcript_records(sha)) for t, sha in cfg["transcripts"].items()}
    tokens = {t: sum(len(r.get("completion", "")) for r in transcript_records(sha)) for t, sha in
              cfg["transcripts"].items()}  # characters, for the per-task share below
    headline = {t: {k.split(",")[0]: v for k, v in r.items() if k.split(",")[0] in
                    ("prompt_level_loose_acc", "inst_level_loose_acc", "refusal_rate_unsafe", "compliance_rate_safe")}
                for t, r in out["results"].items()}
    return {"limit": limit, "wall_s": wall, "generation_s": gen["seconds"], "prompts": per_task,
            "generated_tokens": gen["generated_tokens"], "prompt_tokens": gen["prompt_tokens"],
            "tokens_per_s": gen["generated_tokens"] / gen["seconds"], "completion_chars": tokens,
            "transcripts": cfg["transcripts"], "results": headline, "peak_rss_mib": _peak_mib()}


def transcript_records(sha: str) -> list[dict]:
    from analysis import transcripts

    return transcripts.load(sha)["records"]


def extrapolate(quick: dict) -> dict:
    """Full-run time from the quick run: each task's prompts scaled to the full count, its share of the
    generated tokens taken from its share of the completion characters."""
    chars = sum(quick["completion_chars"].values()) or 1
    tokens = 0.0
    for task, n in quick["prompts"].items():
        share = quick["completion_chars"][task] / chars * quick["generated_tokens"]
        tokens += share / max(n, 1) * FULL_PROMPTS[task]
    overhead = quick["wall_s"] - quick["generation_s"]  # loading tasks, scoring: small, counted once
    return {"generated_tokens": tokens, "wall_s": tokens / quick["tokens_per_s"] + overhead}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.generation")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--full", action="store_true", help="time the real full IFEval + XSTest run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, help="prompts decoded together (default: the suite's GEN_BATCH_SIZE)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    quick = args.quick or os.environ.get("TICKETLAB_BENCH_QUICK") == "1"
    import torch

    torch.set_num_threads(args.threads)
    from analysis.evaluate import GEN_BATCH_SIZE
    from analysis.safety import INSTRUCT_QUICK_LIMIT
    from pruning.models import load_model

    loaded = load_model("smollm2-135m-instruct")
    report = {"threads": args.threads, "load_before": os.getloadavg()}
    n = 4 if quick else args.prompts
    r = naive_vs_batched(loaded, n, 8 if quick else 64, min(args.batch_size or GEN_BATCH_SIZE, n))
    report["throughput"] = r
    print(f"1. {r['prompts']} IFEval prompts x {r['new_tokens']} new tokens: naive model.generate "
          f"{r['naive_s']:.1f} s ({r['naive_tokens_per_s']:.1f} tok/s), batched {r['batched_s']:.1f} s "
          f"({r['batched_tokens_per_s']:.1f} tok/s): {r['speedup']:.2f}x (target >= {RATIO_TARGET:g}x); "
          f"identical tokens on {r['identical_prompts']}/{r['prompts']} prompts; peak RSS {r['peak_rss_mib']:.0f} MiB",
          flush=True)
    q = suite_run(loaded, 2 if quick else INSTRUCT_QUICK_LIMIT)
    report["quick_preset"] = q
    print(f"2. quick preset (--limit {q['limit']}): {q['wall_s']:.0f} s wall (target < {QUICK_TARGET_S:.0f} s), "
          f"{q['generated_tokens']:,} tokens at {q['tokens_per_s']:.1f} tok/s; {json.dumps(q['results'])}; "
          f"peak RSS {q['peak_rss_mib']:.0f} MiB", flush=True)
    if args.full and not quick:
        f = suite_run(loaded, None)
        report["full"] = f
        print(f"3. full IFEval + XSTest: {f['wall_s']:.0f} s wall (target < {FULL_TARGET_S:.0f} s), "
              f"{f['generated_tokens']:,} tokens at {f['tokens_per_s']:.1f} tok/s; {json.dumps(f['results'])}; "
              f"peak RSS {f['peak_rss_mib']:.0f} MiB", flush=True)
    else:
        e = extrapolate(q)
        report["full_extrapolated"] = e
        print(f"3. full IFEval + XSTest, EXTRAPOLATED from step 2 (run with --full to time it): ~{e['wall_s']:.0f} s "
              f"for ~{e['generated_tokens']:,.0f} generated tokens (target < {FULL_TARGET_S:.0f} s)", flush=True)
    report["load_after"] = os.getloadavg()
    print(f"load average before {report['load_before']}, after {report['load_after']} (2 cores, shared: noisy)")
    if args.json:
        from pruning import durable

        durable.atomic_write_json(args.json, report, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
