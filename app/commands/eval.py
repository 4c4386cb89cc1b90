"""`ticketlab eval`, `ticketlab compare`, `ticketlab tickets` and `ticketlab ledger export`."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path

from pruning.errors import TicketLabError
from pruning.models import DEFAULT_MODEL

from ..progress import progress_bar


def at_least(low: int):
    """An argparse type: a whole number >= low (so 0, negatives, 1e9999 and nan are refused, the option named)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, not {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, not {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def add_parser(sub, parent):
    from analysis.perplexity import DEFAULT_SEQ_LEN
    from analysis.safety import BBQ_PER_CATEGORY, TASKS
    from analysis.safety import benchmark_registry as registry

    e = sub.add_parser("eval", parents=[parent], help="evaluate a ticket or the dense model; recorded in the ledger")
    e.add_argument("subject", metavar="TICKET|dense", help="a ticket id (or unique prefix, or directory), or dense")
    e.add_argument("--model", help=f"dense model (default: the ticket's own, or {DEFAULT_MODEL} for dense)")
    e.add_argument("--suite", default="all", help="ppl, safety, instruct, attribution, latency or all (or a comma "
                                                  "list); instruct generates answers (IFEval, XSTest): minutes")
    e.add_argument("--tasks", help="safety / instruct tasks, comma separated (default all): "
                   + ", ".join([*TASKS, *registry.names(suite="instruct")]))
    e.add_argument("--plain-prompt", action="store_true",
                   help="instruct suite: give the model the bare prompt instead of its chat template (for a model "
                        "without one)")
    e.add_argument("--limit", type=at_least(1), help="quick look: ppl windows / documents per safety task / attribution "
                                             "pairs (recorded; only compared with the same limit)")
    e.add_argument("--batch-size", type=at_least(1), help="ppl windows, safety packed rows, instruct prompts or latency "
                                                  "prompts per pass (default: each suite's own)")
    e.add_argument("--seq-len", type=at_least(2), default=DEFAULT_SEQ_LEN, help="perplexity window length")
    e.add_argument("--bbq-per-category", type=at_least(0), default=BBQ_PER_CATEGORY,
                   help="BBQ examples per category (whole instances, seeded); 0 = all")
    e.add_argument("--hub", action="store_true", help="use lm-eval's built-in tasks on their hub datasets "
                                                      "(needs the network) instead of the local copies")
    e.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    e.add_argument("--dtype", default="float32")
    e.add_argument("--json", action="store_true", help="print one JSON object (results as lm-eval names them)")
    c = sub.add_parser("compare", parents=[parent], help="two subjects' metrics side by side, with deltas")
    c.add_argument("a", metavar="A", help="ticket id or dense")
    c.add_argument("b", metavar="B", help="ticket id or dense")
    c.add_argument("--json", action="store_true")
    t = sub.add_parser("tickets", parents=[parent], help="list the tickets in the ledger with key metrics")
    t.add_argument("--json", action="store_true")
    lg = sub.add_parser("ledger", help="ledger maintenance")
    lsub = lg.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    x = lsub.add_parser("export", parents=[parent], help="export every ledger table to Parquet")
    x.add_argument("--out", required=True, help="output directory (one <table>.parquet per table)")
    return [e, c, t, lg, x]


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _print_results(out: dict) -> None:
    from analysis import metric_meta

    print(f"{out['subject']}  model {out['model']}  run {out['run_id']}")
    for task, values in out["results"].items():
        for key, value in values.items():
            metric, _, filt = key.partition(",")
            if metric.endswith("_stderr"):
                continue
            se = values.get(f"{metric}_stderr,{filt}")
            meta = metric_meta.meta_for(task, metric)
            how = "" if meta is None else meta.direction + (f" {meta.ideal:g}" if meta.direction == "target" else "")
            shown = "-" if value is None else f"{value:.4f}" + (f" ± {se:.4f}" if se is not None else "")
            print(f"  {task:<40} {metric:<38} {shown:<24} {how}")


def request_from_args(args):
    """`ticketlab eval`'s typed request (the other commands here run no job)."""
    if args.command != "eval":
        return None
    from app.cli import request_of
    from usecases.evaluate import EvalRequest

    return request_of(EvalRequest, args)


def _eval(args) -> int:
    from usecases.evaluate import evaluate

    out = evaluate(request_from_args(args), progress=progress_bar)
    if args.json:
        print(out.model_dump_json())
    else:
        _print_results(out.model_dump())
    return 0


def _compare(args) -> int:
    from analysis.side_by_side import compare, format_table

    out = compare(args.a, args.b)
    print(json.dumps(_json_safe(out), default=str) if args.json else format_table(out))
    return 0


def ticket_listing(ledger) -> list[dict]:
    """Tickets with their headline metrics (the newest full run, else the newest limited one) and their
    review state as the signed governance log has it (the verdict line's own words)."""
    from analysis import metric_meta
    from analysis.governance import state as gov_state
    from analysis.governance.verdict import review_words
    from analysis.ledger import read_model

    tickets = read_model.ticket_list().rows(ledger)
    best: dict[tuple, read_model.MetricValue] = {}
    for m in read_model.metric_values().rows(ledger):  # full runs first, newest first: the first row wins
        best.setdefault((m.subject, m.task, m.metric), m)
    states = gov_state.ticket_states(ledger) if tickets else {}
    out = []
    for t in tickets:
        known = states.get(t.id)
        review = review_words(known).text if known is not None else "unreviewed"
        key = {}
        for task, metric in metric_meta.KEY_METRICS:
            m = best.get((t.id, task, metric))
            if m is not None:
                key[f"{task}.{metric}"] = {"value": m.value, "stderr": m.stderr, "limit": m.limit}
        out.append({**asdict(t), "created_at": str(t.created_at), "review": review, "metrics": key})
    return out


def _tickets(args) -> int:
    from analysis.ledger import Ledger

    rows = ticket_listing(Ledger())
    if args.json:
        print(json.dumps(_json_safe(rows), default=str))
        return 0
    if not rows:
        print("no tickets in the ledger yet: `ticketlab prune ...` makes one.")
        return 0
    for r in rows:
        sparsity = r["achieved_sparsity"]
        shown = "  ".join(f"{k.split('.', 1)[0]}.{k.split('.', 1)[1]}={v['value']:.4g}"
                          + ("*" if v["limit"] is not None else "") for k, v in r["metrics"].items()
                          if v["value"] is not None)
        print(f"{r['id']}  {r['method']:<12} sparsity {sparsity:.3f}  [{r['review']}]  {r['name'] or ''}  {shown}")
    print("(* = measured with --limit)")
    return 0


def _export(args) -> int:
    from analysis.ledger import Ledger
    from pruning import durable

    out = Path(args.out).expanduser().resolve()
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise TicketLabError(f"--out {out} is not a folder; give a new folder (or a previous export to replace).")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if not (p.is_file() and p.suffix == ".parquet"))
        if others:
            raise TicketLabError(f"--out {out} holds other files ({', '.join(others[:5])}); an export replaces the "
                                 f"whole folder, so give a new folder or a previous export.")
    ledger = Ledger()
    # the whole folder appears at once: an interrupted export leaves the previous one, never a mix
    with durable.atomic_dir(out, replace=True) as tmp:
        names = [p.name for p in ledger.export_parquet(tmp)]
    for name in names:
        print(out / name)
    return 0


def run(args) -> int:
    if args.command == "eval":
        return _eval(args)
    if args.command == "compare":
        return _compare(args)
    if args.command == "tickets":
        return _tickets(args)
    return _export(args)
