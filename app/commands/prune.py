"""`ticketlab prune` and `ticketlab methods`: options come from the engine's method registry."""

from __future__ import annotations

import json

from analysis.recording import record_prune
from pruning import calibration
from pruning.models import DEFAULT_MODEL, load_model
from pruning.prune import calibration_needed, make_ticket
from pruning.registry import all_methods

from ..progress import progress_bar


def add_parser(sub, parent):
    p = sub.add_parser("prune", parents=[parent], help="prune a model into a ticket")
    p.add_argument("--model", default=DEFAULT_MODEL, help="embedded name, Hugging Face id or local directory")
    p.add_argument("--method", required=True, help="one of: " + ", ".join(all_methods()))
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction removed, in [0, 1)")
    p.add_argument("--calib-samples", type=int, default=32, help="calibration windows N")
    p.add_argument("--calib-len", type=int, default=512, help="tokens per calibration window L")
    p.add_argument("--calib-tokens", help="exact calibration token ids: a 2-D integer tensor (.pt/.npy/.safetensors)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="a human name for the ticket")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    seen = {}
    for method in all_methods().values():
        for param in method.params:
            seen.setdefault(param.name, param)
    for param in seen.values():
        p.add_argument(f"--{param.name.replace('_', '-')}", dest=f"opt_{param.name}", type=param.type,
                       choices=param.choices, default=None, help=f"{param.help} (default {param.default})")
    m = sub.add_parser("methods", parents=[parent], help="list the pruning methods and their options")
    m.add_argument("--json", action="store_true")
    return [p, m]


def _calibration_flag(method) -> bool | str:
    rule = method.needs_calibration
    return rule if isinstance(rule, bool) else "depends on options"


def run(args) -> int:
    if args.command == "methods":
        methods = all_methods()
        if args.json:
            print(json.dumps({n: {"description": m.description, "needs_calibration": _calibration_flag(m),
                                  "structured": m.structured, "changes_weights": m.changes_weights,
                                  "params": {p.name: {"type": p.type.__name__, "default": p.default,
                                                      "choices": p.choices, "help": p.help} for p in m.params}}
                              for n, m in methods.items()}, indent=2))
        else:
            for n, m in methods.items():
                opts = ", ".join(f"{p.name}={p.default}" for p in m.params)
                print(f"{n:<12} {m.description}" + (f"\n{'':<12} options: {opts}" if opts else ""))
        return 0

    from pruning.registry import get_method

    method = get_method(args.method)
    options = {p.name: getattr(args, f"opt_{p.name}") for p in method.params
               if getattr(args, f"opt_{p.name}", None) is not None}
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    calib = None
    if calibration_needed(method, method.validate(options)):
        if args.calib_tokens:
            calib = calibration.from_token_file(args.calib_tokens, vocab_size=loaded.model.config.vocab_size)
        else:
            calib = calibration.from_corpus(loaded.tokenizer, args.calib_samples, args.calib_len, args.seed)
    bar = progress_bar(f"prune {args.method}", quiet=False)
    ticket = make_ticket(loaded, args.method, args.sparsity, options=options, calib=calib, seed=args.seed,
                         name=args.name, progress=bar)
    bar.close()
    path = ticket.save()
    record_prune(loaded, ticket, command="ticketlab prune " + args.method)
    out = {"id": ticket.id, "path": str(path), "sparsity": round(ticket.achieved_sparsity, 6),
           "target_sparsity": ticket.target_sparsity, "method": ticket.method, "params": ticket.params,
           "model": loaded.spec}
    if ticket.structure and "unit_sparsity" in ticket.structure:
        out["unit_sparsity"] = ticket.structure["unit_sparsity"]  # structured: the fraction of units removed
    if args.json:
        print(json.dumps(out))
    else:
        units = f"  units removed {out['unit_sparsity']:.4f}" if "unit_sparsity" in out else ""
        print(f"ticket {ticket.id}  weight sparsity {ticket.achieved_sparsity:.4f}{units}  {path}")
    return 0
