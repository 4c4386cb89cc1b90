"""`ticketlab materialize TICKET --out DIR`: a structured ticket as a physically smaller model."""

from __future__ import annotations

import json
from pathlib import Path

from pruning.materialize import check_destination, materialize
from pruning.models import load_model
from pruning.ticket import Ticket, find_ticket


def add_parser(sub, parent):
    p = sub.add_parser("materialize", parents=[parent],
                       help="cut a structured ticket's removed heads/neurons/layers out into a smaller model")
    p.add_argument("ticket", help="ticket id, unique id prefix, or ticket directory")
    p.add_argument("--out", required=True, help="directory to write (safetensors, config, tokenizer)")
    p.add_argument("--model", help="the ticket's dense model (default: the spec recorded in the ticket)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is a materialized model (any other folder is refused)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return [p]


def run(args) -> int:
    out = Path(args.out)
    check_destination(out, args.overwrite)  # before loading a model, so a refused --out costs nothing
    ticket = Ticket.load(find_ticket(args.ticket))
    loaded = load_model(args.model or ticket.dense["spec"], device=args.device)
    summary = materialize(loaded, ticket, out, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(summary))
    else:
        ratio = summary["parameters"] / summary["parameters_dense"]
        print(f"materialized ticket {ticket.id} -> {summary['path']}  {summary['num_layers']} layers, "
              f"{summary['parameters']:,} parameters ({ratio:.1%} of dense); load with {summary['loader']}")
        for note in summary["notes"]:
            print(f"  note: {note}")
    return 0
