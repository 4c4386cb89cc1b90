"""`ticketlab prune` and `ticketlab methods`: flags and listings generated from each method's options model.

A flag that several methods share (`--pattern`, `--owl-lambda`, ...) is declared once and read as
text; the chosen method's own options model then types and checks it, so each method keeps its own
choices and bounds, and a flag the method does not take is an error rather than silently ignored.
"""

from __future__ import annotations

import json
from collections import defaultdict

from analysis.recording import record_prune
from pruning import calibration
from pruning.models import DEFAULT_MODEL, load_model
from pruning.options import OptionInfo
from pruning.prune import calibration_needed, make_ticket
from pruning.registry import PruneMethod, all_methods, get_method

from ..progress import progress_bar


def _flag_help(infos: list[tuple[str, OptionInfo]]) -> str:
    """One help text for a flag shared by several methods, saying what each method accepts."""
    first = infos[0][1]
    per = defaultdict(list)
    for method, o in infos:
        accepts = "|".join(map(str, o.choices)) if o.choices else o.type.__name__ + (
            f" {o.bounds_text()}" if o.bounds else "")
        per[(accepts, repr(o.default))].append(method)
    spelled = "; ".join(f"{', '.join(ms)}: {acc} (default {d})" for (acc, d), ms in per.items())
    return f"{first.help} [{spelled}]"


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
    p.add_argument("--as", dest="as_name", help="sign as the ticket's creator with this person's key (default: "
                                                "$TICKETLAB_USER's key if there is one, else the ticket is unsigned)")
    shared: dict[str, list[tuple[str, OptionInfo]]] = defaultdict(list)
    for name, method in all_methods().items():
        for o in method.params:
            shared[o.name].append((name, o))
    for opt, infos in shared.items():
        p.add_argument(infos[0][1].flag, dest=f"opt_{opt}", default=None, metavar="VALUE", help=_flag_help(infos))
    m = sub.add_parser("methods", parents=[parent], help="list the pruning methods and their options")
    m.add_argument("--json", action="store_true")
    return [p, m]


def _calibration_flag(method) -> bool | str:
    rule = method.needs_calibration
    return rule if isinstance(rule, bool) else "depends on options"


def method_options(args) -> dict:
    """The option flags given on the command line, for `method`'s options model to check. Flags of
    other methods are refused there ("takes no option")."""
    return {k[len("opt_"):]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}


def describe_method(m: PruneMethod) -> dict:
    return {"description": m.description, "needs_calibration": _calibration_flag(m), "structured": m.structured,
            "changes_weights": m.changes_weights,
            "params": {o.name: {"flag": o.flag, "type": o.type.__name__, "default": o.default, "choices": o.choices,
                                "bounds": dict(o.bounds), "help": o.help} for o in m.params},
            "rules": list(m.options.RULES)}


def run(args) -> int:
    if args.command == "methods":
        methods = all_methods()
        if args.json:
            print(json.dumps({n: describe_method(m) for n, m in methods.items()}, indent=2))
        else:
            for n, m in methods.items():
                print(f"{n:<12} {m.description}")
                for o in m.params:
                    accepts = "|".join(map(str, o.choices)) if o.choices else o.type.__name__ + (
                        f" {o.bounds_text()}" if o.bounds else "")
                    print(f"{'':<14}{o.flag} {accepts} (default {o.default}): {o.help}")
                for rule in m.options.RULES:
                    print(f"{'':<14}rule: {rule}")
        return 0

    from pruning.text import require_plain

    require_plain(args.name, "--name")  # shown later in listings, terminals and pages
    method = get_method(args.method)
    options = method.validate(method_options(args))  # typed and checked before any model is loaded
    from analysis.governance.identity import creation_signer
    from analysis.ledger import Ledger

    signer = creation_signer(Ledger(), args.as_name)  # a wrong passphrase fails now, not after pruning
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    calib = None
    if calibration_needed(method, options):
        limit = loaded.adapter.max_positions
        if args.calib_tokens:
            calib = calibration.from_token_file(args.calib_tokens, vocab_size=loaded.model.config.vocab_size,
                                                max_positions=limit)
        else:
            calib = calibration.from_corpus(loaded.tokenizer, args.calib_samples, args.calib_len, args.seed,
                                            max_positions=limit)
    bar = progress_bar(f"prune {args.method}", quiet=False)
    ticket = make_ticket(loaded, args.method, args.sparsity, options=options, calib=calib, seed=args.seed,
                         name=args.name, progress=bar)
    bar.close()
    path = ticket.save()
    record_prune(loaded, ticket, command="ticketlab prune " + args.method, signer=signer)
    out = {"id": ticket.id, "path": str(path), "sparsity": round(ticket.achieved_sparsity, 6),
           "creator": signer.name if signer else None,
           "target_sparsity": ticket.target_sparsity, "method": ticket.method, "params": ticket.params,
           "model": loaded.spec}
    if ticket.structure and "unit_sparsity" in ticket.structure:
        out["unit_sparsity"] = ticket.structure["unit_sparsity"]  # structured: the fraction of units removed
    if args.json:
        print(json.dumps(out))
    else:
        units = f"  units removed {out['unit_sparsity']:.4f}" if "unit_sparsity" in out else ""
        print(f"ticket {ticket.id}  weight sparsity {ticket.achieved_sparsity:.4f}{units}  {path}"
              + (f"  creator {signer.name} (signed)" if signer else
                 f"\nnobody signed as its creator: `ticketlab sign-ticket {ticket.id} --as NAME` before review"))
    return 0
