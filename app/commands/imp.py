"""`ticketlab imp` (a pre-registered lottery-ticket experiment: pilot, IMP with rewinding, controls,
seeds, verdict) and `ticketlab imp-report`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import typing
from pathlib import Path

from pruning.errors import TicketLabError

from ..progress import progress_bar

IMP_HELP = """\
Lottery-ticket experiment under a protocol fixed before the run (stored with the experiment; its hash,
with the trained tokenizer's, is the experiment id). A pilot tunes the learning rate and T (every (lr, T)
of the grid its own run with a schedule of length T; a best value at an edge extends that grid) unless
--lr and --train-steps are given, and measures the seed noise for the power analysis. Per seed, a
continuous dense run keeps the rewind point K (weights and AdamW state); the dense baseline (level 0)
resumes from it like every pruned level; each round prunes RATE of the remaining weights of the
previous level's ticket by magnitude and every arm resumes at K with the same data order (paired):
the ticket, a random mask with its per-layer counts, its mask on a fresh initialisation, and for
pretrained models one-shot magnitude, Wanda and a compute-matched dense run. Every run is early-stopped
on the validation split; the held-out split is only reported.

Verdict per sparsity, paired by seed: TOST of (ticket - dense) against +-delta (0.02 nats) at alpha =
1 - confidence; matching when its upper test rejects "worse by delta"; sparsities tested from low to
high, stopping at the first failure; winning when matching, the random control is not, and (random -
ticket) > 0. Sanity check: the random mask at the highest sparsity must be worse than dense by more
than delta, otherwise "inconclusive: the budget cannot show a capacity difference". The seeds' power
is stated (a warning when fewer than the power analysis needs).

--model tiny (default): a Llama from scratch (3 layers, hidden 64, GQA, a 1,024-token BPE trained on
the train split) on WikiText-2 valid+test split by article 80/10/10, 1,024 train windows of 64 tokens
(the T grid 256-1,024 spans 2-8 epochs); 14 rounds at 20% (4.4% density), K = 20, 5 seeds, stability
of the dense network (every seed) and of every level's ticket (first seed) from 0, K, T/10, T/5 on 11
points. The whole default experiment fits 2 hours on a 2-core CPU.
--model <checkpoint> (SmolLM2, Llama family): Chen et al. 2020, rewinding to the pretrained weights;
options left at the tiny defaults take the pretrained defaults (3 rounds at 20%, 48 steps of 4 x 128
tokens at lr 1e-4, 2 seeds).

Interrupted runs resume: run the same command again (same protocol -> same folder, same ticket ids).
"""


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise TicketLabError(f"--{what} {text!r}: give comma-separated integers, e.g. 0,1,2.") from None


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise TicketLabError(f"--{what} {text!r}: give comma-separated numbers, e.g. 2.5e-3,5e-3,1e-2.") from None


def _density(text: str) -> float | None:
    if text.strip().lower() in ("none", ""):
        return None
    try:
        return float(text)
    except ValueError:
        raise TicketLabError(f"--target-density {text!r}: give a number in (0, 1) or none.") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _text_of(value) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return "none" if value is None else str(value)


def _add_setting(p, f, default, hint, arms: str) -> None:
    """One `ticketlab imp` flag from one declared protocol setting: its name (or declared spelling), type,
    default, choices and help. Lists and "none" are read as text and typed in `protocol_from_args`."""
    meta = f.metadata
    flag = meta["flag"] or "--" + f.name.replace("_", "-")
    help_text = meta["help"].format(arms=arms)
    if hint is bool:
        p.add_argument(flag, dest=f.name, action="store_false" if default else "store_true", help=help_text)
    elif typing.get_origin(hint) is tuple or f.name == "target_density":
        p.add_argument(flag, dest=f.name, default=_text_of(default), help=help_text)
    else:
        kind = next(t for t in (int, float, str) if t is hint or t in typing.get_args(hint))
        p.add_argument(flag, dest=f.name, type=kind, default=default, choices=meta["choices"], help=help_text)


def _typed(f, hint, value):
    """A setting's text flag (a comma list, or a density or none) as the protocol's value."""
    if typing.get_origin(hint) is not tuple:
        return _density(value) if f.name == "target_density" else value
    from pruning.lottery.protocol import word_value

    is_word, word = word_value(f.name, value)
    if is_word:
        return word
    kind = typing.get_args(hint)[0]
    flag = (f.metadata["flag"] or f.name.replace("_", "-")).lstrip("-")
    return {int: _ints, float: _floats}.get(kind, lambda text, _: _names(text))(value, flag)


def add_parser(sub, parent):
    from pruning.lottery.arms import ARMS
    from pruning.lottery.protocol import Protocol, settings_of

    d, hints = Protocol(), typing.get_type_hints(Protocol)
    p = sub.add_parser("imp", parents=[parent], help="lottery-ticket experiment: IMP with rewinding, controls, "
                                                     "seeds and a verdict with confidence intervals",
                       description=IMP_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in settings_of():  # every flag of a protocol setting comes from its declaration in Protocol
        _add_setting(p, f, getattr(d, f.name), hints[f.name], arms=", ".join(sorted(ARMS)))
    p.add_argument("--json", action="store_true", help="print one JSON object {experiment, rounds, verdict}")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    r = sub.add_parser("imp-report", parents=[parent], help="table, verdict and figure of an IMP experiment")
    r.add_argument("experiment", nargs="+", help="experiment id or unique prefix (several: also compares the "
                                                 "loss barrier per rewind point)")
    r.add_argument("--out", help="figure file (.html; a .png is added when kaleido can render); default "
                                 "<state>/experiments/<id>/report.html")
    r.add_argument("--json", action="store_true", help="print the table and verdict as JSON")

    e = sub.add_parser("imp-eval", parents=[parent], help="run a behaviour suite on an experiment's tickets (level "
                                                         "0 and the last level of every arm, per seed)",
                       description="Downstream evaluation of a lottery-ticket experiment (Chen et al. 2020): the "
                                   "suite runs through `eval` on level 0 and the last level of every arm of every "
                                   "seed (each an ordinary recorded eval run), then the table pairs each arm with "
                                   "level 0 of the same seed. Tickets already evaluated with the suite and limit "
                                   "are skipped, so an interrupted run resumes.")
    e.add_argument("experiment", help="experiment id or unique prefix")
    e.add_argument("--suite", choices=("instruct", "safety"), default="instruct")
    e.add_argument("--limit", type=int, help="documents per task (default: the full sets)")
    e.add_argument("--rounds", choices=("last", "all"), default="last", help="the last level (default) or every level")
    e.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    e.add_argument("--dtype", default="float32")
    e.add_argument("--json", action="store_true", help="print the outcome as JSON")
    return [p, r, e]


def request_from_args(args):
    """`ticketlab imp`'s and `imp-eval`'s typed requests (`imp-report` runs no job)."""
    if args.command == "imp-eval":
        from usecases.experiment import ImpEvalRequest

        return ImpEvalRequest.build(experiment=args.experiment, suite=args.suite, limit=args.limit, rounds=args.rounds,
                                    device=args.device, dtype=args.dtype)
    if args.command != "imp":
        return None
    from pruning.lottery.protocol import Protocol, settings_of
    from usecases.experiment import ImpRequest

    argv = getattr(args, "_argv", None) or sys.argv[1:]  # the command line a job was asked with, or this one
    command = "ticketlab imp " + " ".join(shlex.quote(a) for a in argv[1:]) if argv[:1] == ["imp"] \
        else "ticketlab imp"
    hints = typing.get_type_hints(Protocol)
    return ImpRequest.from_settings({f.name: _typed(f, hints[f.name], getattr(args, f.name)) for f in settings_of()},
                                    command=command, quiet=args.quiet)


def run(args) -> int:
    if args.command == "imp-report":
        return _report(args)
    if args.command == "imp-eval":
        return _downstream(args)
    from analysis.ledger import Ledger
    from analysis.lottery.experiments import format_report, imp_report
    from usecases.experiment import run_experiment

    out = run_experiment(request_from_args(args), progress=progress_bar)
    if not out.rounds and not out.verdict:
        return 0  # another process of `accelerate launch`: rank 0 reports
    if args.json:
        print(json.dumps({"experiment": out.experiment, "rounds": out.rounds, "verdict": out.verdict}, default=str))
    else:
        print(format_report(imp_report(out.experiment, Ledger())))
        print(f"\nexperiment {out.experiment}: {out.folder}\n(figure: ticketlab imp-report {out.experiment})")
    return 0


def _downstream(args) -> int:
    from usecases.experiment import evaluate_experiment

    out = evaluate_experiment(request_from_args(args), progress=progress_bar,
                              on_unit=lambda u, what: print(f"{what} {u.arm} seed {u.seed} level {u.round} "
                                                            f"({u.sparsity:.1%}): ticket {u.ticket}", flush=True))
    if args.json:
        print(json.dumps(out.model_dump(), default=str))
    else:
        print(out.text)
    return 0


def _report(args) -> int:
    from analysis.ledger import Ledger
    from analysis.lottery.downstream import downstream_table, format_downstream, recorded_limit
    from analysis.lottery.experiments import (
        find_experiment,
        format_report,
        imp_figure,
        imp_report,
        pilot_record,
        stability_by_rewind,
    )
    from pruning import settings

    ledger = Ledger()
    tables = []
    for ref in args.experiment:
        exp = find_experiment(ref, ledger)["id"]
        table = imp_report(exp, ledger)
        out = Path(args.out) if (args.out and len(args.experiment) == 1) else \
            settings.state_dir() / "experiments" / exp / "report.html"
        imp_figure(table, out)
        tables.append((exp, table, out))
    if args.json:
        print(json.dumps({exp: {"table": json.loads(t.to_json(orient="records")), "verdict": t.attrs["verdict"],
                                "pilot": pilot_record(exp, ledger)} for exp, t, _ in tables}, default=str))
        return 0
    for exp, table, out in tables:
        pilot = pilot_record(exp, ledger)
        if pilot and pilot.get("curves"):
            for note in pilot.get("extensions", []):
                print(f"  pilot grid extended: {note}")
            print(f"pilot: lr {pilot['lr']:g}, T = {pilot['steps']} ({pilot['rule']}); validation minimum per lr: "
                  + ", ".join(f"{c['lr']:g}: {min(v for _, v in c['curve']):.3f}" for c in pilot["curves"]))
            if pilot.get("edge"):
                print(f"  note: the pilot's choice is {' and '.join(pilot['edge'])}: the grid may not bracket the "
                      f"optimum (a wider grid is a new protocol)")
        print(format_report(table))
        limit = recorded_limit(exp, ledger)
        if limit is not False:
            print(format_downstream(downstream_table(exp, ledger, limit)))
        print(f"figure: {out}\n")
    if len(args.experiment) > 1:
        by_rewind = stability_by_rewind(args.experiment, ledger)
        if not by_rewind.empty:
            print("loss barrier per rewind step (95% t-interval):")
            print(by_rewind.to_string(index=False))
    return 0
