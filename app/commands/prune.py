"""`ticketlab prune` and `ticketlab methods`: flags and listings generated from each method's options model.

A flag that several methods share (`--pattern`, `--owl-lambda`, ...) is declared once and read as
text; the chosen method's own options model then types and checks it, so each method keeps its own
choices and bounds, and a flag the method does not take is an error rather than silently ignored.
"""

from __future__ import annotations

import json
import typing
from collections import defaultdict

from pruning.method_registry import PruneMethod, all_methods
from pruning.options import OptionInfo
from usecases.prune import PruneRequest, prune

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
    for name, field in PruneRequest.model_fields.items():  # the request's own settings, declared once there
        extra = field.json_schema_extra or {}
        if extra.get("cli", True):
            kind = next(t for t in (int, float, str) if t is field.annotation or t in typing.get_args(field.annotation))
            p.add_argument(extra.get("flag", "--" + name.replace("_", "-")), dest=name, type=kind,
                           required=field.is_required(), default=field.default, help=field.description)
    p.add_argument("--json", action="store_true", help="print one JSON object")
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

    outcome = prune(request_from_args(args), progress=progress_bar)
    if args.json:
        print(outcome.model_dump_json())
    else:
        units = f"  units removed {outcome.unit_sparsity:.4f}" if outcome.unit_sparsity is not None else ""
        print(f"ticket {outcome.id}  weight sparsity {outcome.achieved_sparsity:.4f}{units}  {outcome.path}"
              + (f"  creator {outcome.creator} (signed)" if outcome.creator else
                 f"\nnobody signed as its creator: `ticketlab sign-ticket {outcome.id} --as NAME` before review"))
    return 0


def request_from_args(args) -> PruneRequest:
    """The typed request the flags spell (checked here, before any model is loaded)."""
    from app.cli import request_of

    return request_of(PruneRequest, args, options=method_options(args))
