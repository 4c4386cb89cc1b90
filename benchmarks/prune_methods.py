"""One-shot pruning methods on SmolLM2-135M-Instruct: pruning time, peak memory, WikiText-2 perplexity.

    python -m benchmarks.prune_methods [--quick] [--only LABEL,...] [--ppl-windows N|all] [--json FILE]

Each configuration runs in its own subprocess (one at a time), so its peak memory is its own: the
peak resident set size while the method runs, above the resident size with the dense model loaded
and the calibration set built (Linux: VmHWM after resetting it through /proc/self/clear_refs;
elsewhere ru_maxrss, which then also counts the model load). The same process then scores the
ticket's WikiText-2 test perplexity on non-overlapping 512-token windows.

Targets from the issue (2-core CPU, 32 x 512 calibration tokens): wanda under 2 minutes, sparsegpt
under 6, peak memory under 3 GiB above the model. Expected orderings (the papers): magnitude far
worse than wanda and sparsegpt; unstructured better than 4:8 better than 2:4; OWL better than
uniform at 70%. The run prints whether each holds.

Quick mode (`--quick` or TICKETLAB_BENCH_QUICK=1) checks that everything runs: 2 x 64 calibration
tokens and 2 perplexity windows; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WANDA_TARGET_S, SPARSEGPT_TARGET_S, MEMORY_TARGET_B = 120.0, 360.0, 3 * 2 ** 30
TIME_TARGETS = {"wanda": WANDA_TARGET_S, "sparsegpt": SPARSEGPT_TARGET_S}
METHODS = ("magnitude", "wanda", "sparsegpt")
DEFAULT_PPL_WINDOWS = 128  # ~65k of WikiText-2 test's tokens; `--ppl-windows all` scores every window


def configurations() -> list[dict]:
    out = [{"label": "dense", "method": None, "setting": "dense", "sparsity": 0.0, "options": {}}]
    settings = [("50%", 0.5, {}), ("4:8", 0.5, {"pattern": "4:8"}), ("2:4", 0.5, {"pattern": "2:4"}),
                ("70%", 0.7, {}), ("70% OWL", 0.7, {"allocation": "owl"})]
    for setting, sparsity, options in settings:
        for method in METHODS:
            out.append({"label": f"{method} {setting}", "method": method, "setting": setting,
                        "sparsity": sparsity, "options": options})
    return out


# --- one configuration, in its own process -------------------------------------------------------
def _rss_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def run_worker(config: dict, calib_n: int, calib_len: int, ppl_windows: int | None, seed: int) -> dict:
    import torch

    from analysis.perplexity import perplexity
    from pruning.calibration import from_corpus
    from pruning.models import load_model
    from pruning.prune import make_ticket
    from usecases.prune import PruneRequest

    loaded = load_model("smollm2-135m-instruct")
    row = dict(config, threads=torch.get_num_threads(), calib=f"{calib_n}x{calib_len}")
    ticket = None
    if config["method"]:
        # checked and typed once, as the CLI's request; the timing below is the engine's make_ticket only
        request = PruneRequest.build(method=config["method"], sparsity=config["sparsity"], options=config["options"])
        calib = from_corpus(loaded.tokenizer, calib_n, calib_len, seed=seed) if request.calibrated else None
        base = _rss_bytes("VmRSS")
        exact_peak = base is not None and _reset_peak()
        start = time.perf_counter()
        ticket = make_ticket(loaded, request.method, request.sparsity, options=request.params, calib=calib, seed=seed)
        row["seconds"] = time.perf_counter() - start
        if exact_peak:
            row["peak_above_model_bytes"] = _rss_bytes("VmHWM") - base
            row["peak_how"] = "VmHWM"
        else:  # ru_maxrss is KiB on Linux, bytes on macOS; it includes the model load's own peak
            scale = 1 if sys.platform == "darwin" else 1024
            row["peak_above_model_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - (base or 0)
            row["peak_how"] = "ru_maxrss"
        row["achieved_sparsity"] = ticket.achieved_sparsity
        row["ticket"] = ticket.id
    ppl = perplexity(loaded, ticket, seq_len=512, limit=ppl_windows)
    row.update(ppl=ppl["perplexity"], ppl_stderr=ppl["stderr"], ppl_windows=ppl["n_windows"],
               ppl_tokens=ppl["n_tokens"])
    return row


# --- the table -------------------------------------------------------------------------------------
def _fmt(x, spec: str, empty: str = "-") -> str:
    return empty if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    dense = next((r["ppl"] for r in rows if r["method"] is None and r.get("ppl")), None)
    head = (f"{'configuration':<20} {'time s':>8} {'/target':>8} {'peak MiB':>9} {'sparsity':>9} "
            f"{'ppl':>10} {'+-':>7} {'/dense':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['label']:<20} FAILED: {r['error'][-80:]}")
            continue
        target = TIME_TARGETS.get(r["method"])
        lines.append(
            f"{r['label']:<20} {_fmt(r.get('seconds'), '8.1f'):>8} "
            f"{_fmt(r['seconds'] / target if target and r.get('seconds') else None, '8.2f'):>8} "
            f"{_fmt(r['peak_above_model_bytes'] / 2 ** 20 if 'peak_above_model_bytes' in r else None, '9.0f'):>9} "
            f"{_fmt(r.get('achieved_sparsity'), '9.4f'):>9} {_fmt(r.get('ppl'), '10.2f'):>10} "
            f"{_fmt(r.get('ppl_stderr'), '7.2f'):>7} "
            f"{_fmt(r['ppl'] / dense if dense and r.get('ppl') else None, '8.2f'):>8}")
    return "\n".join(lines)


def orderings(rows: list[dict]) -> list[str]:
    ppl = {r["label"]: r["ppl"] for r in rows if r.get("ppl") is not None}
    out = []

    def check(claim: str, labels: list[str]) -> None:
        if all(label in ppl for label in labels):
            values = [ppl[label] for label in labels]
            holds = all(a < b for a, b in zip(values[:-1], values[1:], strict=True))
            out.append(f"{'holds        ' if holds else 'DOES NOT HOLD'}  {claim}: "
                       + " < ".join(f"{label} {ppl[label]:.2f}" for label in labels))

    for setting in ("50%", "2:4", "70%"):
        for better in ("wanda", "sparsegpt"):
            check(f"{better} beats magnitude at {setting}", [f"{better} {setting}", f"magnitude {setting}"])
    for method in METHODS:
        check(f"{method}: unstructured < 4:8 < 2:4", [f"{method} 50%", f"{method} 4:8", f"{method} 2:4"])
        check(f"{method}: OWL beats uniform at 70%", [f"{method} 70% OWL", f"{method} 70%"])
    return out


def targets(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        target = TIME_TARGETS.get(r.get("method"))
        if target and r.get("seconds") is not None and r["setting"] == "50%":
            out.append(f"{'met   ' if r['seconds'] <= target else 'MISSED'}  {r['method']} time "
                       f"{r['seconds']:.0f} s (target {target:.0f} s)")
        if r.get("peak_above_model_bytes") is not None and r["peak_above_model_bytes"] > MEMORY_TARGET_B:
            out.append(f"MISSED  {r['label']} peak memory {r['peak_above_model_bytes'] / 2 ** 30:.2f} GiB (target 3 GiB)")
    return out


# --- driver ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.prune_methods", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny settings to check that it runs (numbers meaningless)")
    p.add_argument("--only", help="comma-separated configuration labels or method names (e.g. 'dense,wanda 2:4')")
    p.add_argument("--calib-samples", type=int, default=32)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--ppl-windows", default=str(DEFAULT_PPL_WINDOWS), help="512-token windows to score, or 'all'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick or os.environ.get("TICKETLAB_BENCH_QUICK") == "1"
    if quick:
        args.calib_samples, args.calib_len, args.ppl_windows = 2, 64, "2"
    windows = None if args.ppl_windows == "all" else int(args.ppl_windows)

    if args.worker:
        row = run_worker(json.loads(args.worker), args.calib_samples, args.calib_len, windows, args.seed)
        print("RESULT " + json.dumps(row), flush=True)
        return 0

    configs = configurations()
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        configs = [c for c in configs if c["label"] in wanted or c["method"] in wanted]
    print(f"SmolLM2-135M-Instruct, calibration {args.calib_samples} x {args.calib_len} tokens, perplexity on "
          f"{windows or 'all'} WikiText-2 test windows of 512 tokens, {len(configs)} configurations, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}" + ("  [QUICK: numbers meaningless]" if quick else ""),
          flush=True)
    rows = []
    for config in configs:
        cmd = [sys.executable, "-m", "benchmarks.prune_methods", "--worker", json.dumps(config),
               "--calib-samples", str(args.calib_samples), "--calib-len", str(args.calib_len),
               "--ppl-windows", str(windows or "all"), "--seed", str(args.seed)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not result:
            rows.append(dict(config, error=(proc.stderr.strip().splitlines() or ["no output"])[-1]))
        else:
            rows.append(json.loads(result[-1][len("RESULT "):]))
        print(f"  {config['label']:<20} done in {time.perf_counter() - start:.0f} s", flush=True)
    print()
    print(table(rows))
    threads = {r.get("threads") for r in rows if r.get("threads")}
    print(f"\ntorch threads: {', '.join(map(str, threads))}; peak = RSS above the loaded model while pruning "
          f"({', '.join(sorted({r['peak_how'] for r in rows if r.get('peak_how')})) or '-'}); "
          f"time/target: wanda {WANDA_TARGET_S:.0f} s, sparsegpt {SPARSEGPT_TARGET_S:.0f} s; "
          f"+- is the perplexity's standard error over windows.")
    for line in targets(rows) + orderings(rows):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
