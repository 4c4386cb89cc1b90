"""`ticketlab serve-check BUNDLE`: does the bundle load and answer in vLLM, as the lab's model does, and how
fast against its dense model (analysis.serving.check); recorded in the ledger."""

from __future__ import annotations

import json
import shlex
import sys


def add_parser(sub, parent):
    p = sub.add_parser("serve-check", parents=[parent],
                       help="serve a bundle in vLLM (its own env, `make serve-env`): loads? same answers? how fast?")
    p.add_argument("bundle", help="bundle directory (from `ticketlab export`, format masked-weights or materialized)")
    p.add_argument("--base-url", help="check a vLLM server already serving this bundle (e.g. on a GPU host) "
                                      "instead of starting one here")
    p.add_argument("--dense-base-url", help="a server of the dense model to compare speed with (default: start "
                                            "one here from the ticket's dense model)")
    p.add_argument("--no-dense", action="store_true", help="skip the dense comparison (no speed ratios)")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 for the bundle's server (default: a free one)")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens generated per request")
    p.add_argument("--rounds", type=int, default=2, help="interleaved measurement rounds (ticket, dense, ...)")
    p.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for a server to be healthy")
    p.add_argument("--dtype", help="engine dtype (default: the bundle's weights dtype)")
    p.add_argument("--json", action="store_true")
    e = sub.add_parser("serve-eval", parents=[parent],
                       help="evaluate a bundle's artifact as shipped: served by vLLM, scored by the suites")
    e.add_argument("bundle", help="bundle directory (masked-weights or materialized, quantized or not)")
    e.add_argument("--suite", default="ppl,safety", help="ppl, safety, or both (comma list)")
    e.add_argument("--tasks", help="safety tasks, comma separated (default all)")
    e.add_argument("--limit", type=int, help="ppl windows / documents per safety task (recorded)")
    e.add_argument("--seq-len", type=int, default=512, help="perplexity window length")
    e.add_argument("--base-url", help="a vLLM server already serving this bundle, instead of starting one")
    e.add_argument("--startup-timeout", type=float, default=900.0)
    e.add_argument("--dtype", help="engine dtype (default: the bundle's weights dtype)")
    e.add_argument("--json", action="store_true")
    return [p, e]


def _line(result: dict) -> str:
    parts = [f"serve-check {result['bundle']}: loads in {result.get('engine', 'vLLM')}"]
    out = result.get("outputs")
    if out:
        parts.append(f"exact match {out['exact_match_rate']:.0%}, token agreement {out['token_agreement']:.1%} "
                     f"with the lab ({out['claim']})")
    for c, row in (result.get("speed") or {}).items():
        t = row["ticket"]
        ratio = f", {row['ratio_vs_dense']:.2f}x dense" if "ratio_vs_dense" in row else ""
        parts.append(f"{c} concurrent: {t['tokens_per_s']:.1f} tok/s, p50 {t['latency_p50_s']:.2f} s{ratio}")
    return "; ".join(parts)


def _serve_eval(args) -> int:
    from analysis.serving.shipped import evaluate_shipped

    suites = tuple(x.strip() for x in args.suite.split(",") if x.strip())
    out = evaluate_shipped(args.bundle, suites=suites, tasks=args.tasks, limit=args.limit, seq_len=args.seq_len,
                           base_url=args.base_url, command="ticketlab " + shlex.join(sys.argv[1:]),
                           startup_timeout=args.startup_timeout, dtype=args.dtype)
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    print(f"{out['subject']} as shipped (artifact {out['artifact']['id'][:12]}, {out['artifact']['engine']}), "
          f"run {out['run_id']}")
    for task, values in out["results"].items():
        for key, value in values.items():
            if "_stderr" not in key and value is not None:
                print(f"  {task:<40} {key.split(',')[0]:<30} {value:.4f}")
    return 0


def run(args) -> int:
    if args.command == "serve-eval":
        return _serve_eval(args)
    from analysis.ledger import Ledger
    from analysis.serving.check import record, serve_check

    result = serve_check(args.bundle, base_url=args.base_url, dense_base_url=args.dense_base_url,
                         with_dense=not args.no_dense, port=args.port, max_tokens=args.max_tokens,
                         rounds=args.rounds, startup_timeout=args.startup_timeout, dtype=args.dtype)
    run_id = record(Ledger(), result, "ticketlab " + shlex.join(sys.argv[1:]))
    result["run_id"] = run_id
    if args.json:
        print(json.dumps(result, default=str))
    elif not result["loads"]:
        print(f"serve-check {result['bundle']}: does NOT load: {result['error']}")
    else:
        print(_line(result))
        for name, s in (result.get("servers") or {}).items():
            if s["started_here"]:
                print(f"  {name}: started in {s['startup_s']:.0f} s, peak memory {s['peak_rss_bytes'] / 2**30:.2f} GiB, "
                      f"log {s['log']}")
    return 0 if result["loads"] else 1
