"""Forward latency of materialized structured tickets against dense SmolLM2-135M-Instruct.

    python -m benchmarks.materialized_latency [--quick] [--batch 8] [--seq 256] [--repeats 7] [--json FILE]

Tickets (weight-magnitude importance, uniform per layer, so every layer keeps the same shape and the
stock transformers loader reads the result):
- `heads`: one KV group per layer (3 of SmolLM2's 9 query heads and 1 of its 3 KV heads);
- `neurons`: half of the MLP neurons (768 of 1536 per layer);
- `heads+neurons`: both (the two tickets' masks together).

Each is materialized into a temporary directory and loaded back. Latency is one forward pass over the
same prompt batch (random token ids with a fixed seed: the content does not change the work), with
`logits_to_keep=1` as a prefill does, so the full-vocabulary LM head over every position (which no
pruning here shrinks) does not hide the body's speed-up. Dense and materialized runs alternate and
each figure is the median over the repeats after one warm-up.

The ideal speed-up is dense FLOPs / materialized FLOPs for that forward: per layer the q, k, v, o
and MLP projections (2 x tokens x in x out each) and the attention products (2 x 2 x batch x seq^2 x
heads x head_dim, the full square, as SDPA's kernels compute it), plus the last-token LM head.
Target (issue 2): measured speed-up at least 0.8 x ideal.

Quick mode (`--quick` or TICKETLAB_BENCH_QUICK=1): 2 x 64 tokens, 2 repeats; it checks that everything
runs, its numbers mean nothing. Timings taken while other jobs share the CPU are noisy: say so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

TARGET = 0.8
CONFIGS = (("heads", [("heads", 1 / 3, {"unit": "kv_group"})]),
           ("neurons", [("neurons", 0.5, {})]),
           ("heads+neurons", [("heads", 1 / 3, {"unit": "kv_group"}), ("neurons", 0.5, {})]))


def forward_flops(shapes: list[dict], hidden: int, head_dim: int, vocab: int, batch: int, seq: int) -> float:
    tokens = batch * seq
    total = 2.0 * batch * hidden * vocab  # LM head on the last position only
    for s in shapes:
        q, kv, m = s["num_attention_heads"] * head_dim, s["num_key_value_heads"] * head_dim, s["intermediate_size"]
        total += 2.0 * tokens * hidden * (q + 2 * kv) + 2.0 * tokens * q * hidden  # q, k, v, o
        total += 2 * 2.0 * batch * seq * seq * q  # scores and weighted values
        total += 3 * 2.0 * tokens * hidden * m  # gate, up, down
    return total


def _combined(tickets):
    """One ticket removing what each of `tickets` removes (their masks together)."""
    from pruning.ticket import Ticket

    first = tickets[0]
    if len(tickets) == 1:
        return first
    masks = {}
    for t in tickets:
        for name, m in t.masks.items():
            masks[name] = masks[name] & m if name in masks else m.clone()
    return Ticket(masks=masks, dense=first.dense, method="+".join(t.method for t in tickets),
                  params={t.method: t.params for t in tickets}, target_sparsity=first.target_sparsity,
                  structure={"kind": "combined", "parts": [t.structure for t in tickets]})


def _time(model, ids: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
    return time.perf_counter() - start


def run(batch: int, seq: int, repeats: int, device: str = "cpu") -> list[dict]:
    from pruning.calibration import CalibrationSet
    from pruning.materialize import load_materialized, materialize
    from pruning.models import load_model
    from pruning.prune import make_ticket

    loaded = load_model(device=device)
    a = loaded.adapter
    dense_shape = {"num_attention_heads": a.num_heads, "num_key_value_heads": a.num_kv_heads,
                   "intermediate_size": a.intermediate_size}
    vocab = loaded.model.config.vocab_size
    dense_flops = forward_flops([dense_shape] * a.num_layers, a.hidden_size, a.head_dim, vocab, batch, seq)
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0)).to(device)
    # Weight-magnitude importance reads no calibration data; the registry still asks for a set.
    calib = CalibrationSet(ids[:1, :16].cpu(), {"source": "unused by magnitude importance"})
    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="ticketlab-bench-"))
    try:
        for label, parts in CONFIGS:
            ticket = _combined([make_ticket(loaded, m, s, options={"importance": "magnitude", **o}, calib=calib)
                                for m, s, o in parts])
            summary = materialize(loaded, ticket, workdir / label.replace("+", "_"))
            small = load_materialized(summary["path"], device=device)
            flops = forward_flops(summary["layer_shapes"], a.hidden_size, a.head_dim, vocab, batch, seq)
            _time(loaded.model, ids), _time(small, ids)  # warm-up
            dense_t, small_t = [], []
            for _ in range(repeats):  # alternate, so a burst of contention hits both
                dense_t.append(_time(loaded.model, ids))
                small_t.append(_time(small, ids))
            d, s = statistics.median(dense_t), statistics.median(small_t)
            ideal = dense_flops / flops
            rows.append({"config": label, "layer_shape": summary["layer_shapes"][0],
                         "params": summary["parameters"], "params_dense": summary["parameters_dense"],
                         "stock_loadable": summary["stock_loadable"], "dense_ms": d * 1e3, "materialized_ms": s * 1e3,
                         "speedup": d / s, "ideal_speedup": ideal, "fraction_of_ideal": (d / s) / ideal,
                         "meets_target": (d / s) / ideal >= TARGET, "dense_runs_ms": [x * 1e3 for x in dense_t],
                         "materialized_runs_ms": [x * 1e3 for x in small_t]})
            del small
            shutil.rmtree(workdir / label.replace("+", "_"), ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def print_table(rows: list[dict], batch: int, seq: int, repeats: int) -> None:
    print(f"forward latency, {batch} x {seq} tokens, median of {repeats}, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}")
    head = (f"{'config':<15}{'heads/kv/mlp':>14}{'params':>9}{'dense ms':>10}{'mat. ms':>9}{'speedup':>9}"
            f"{'ideal':>7}{'of ideal':>10}  target {TARGET:.1f}")
    print(head)
    print("-" * len(head))
    for r in rows:
        s = r["layer_shape"]
        shape = f"{s['num_attention_heads']}/{s['num_key_value_heads']}/{s['intermediate_size']}"
        print(f"{r['config']:<15}{shape:>14}{r['params'] / r['params_dense']:>9.1%}{r['dense_ms']:>10.1f}"
              f"{r['materialized_ms']:>9.1f}{r['speedup']:>9.2f}{r['ideal_speedup']:>7.2f}"
              f"{r['fraction_of_ideal']:>10.2f}  {'met' if r['meets_target'] else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.materialized_latency", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 x 64 tokens, 2 repeats: a smoke run")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    if args.quick or os.environ.get("TICKETLAB_BENCH_QUICK") == "1":
        args.batch, args.seq, args.repeats = 2, 64, 2
    rows = run(args.batch, args.seq, args.repeats, args.device)
    print_table(rows, args.batch, args.seq, args.repeats)
    if args.json:
        Path(args.json).write_text(json.dumps({"batch": args.batch, "seq": args.seq, "repeats": args.repeats,
                                               "threads": torch.get_num_threads(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
