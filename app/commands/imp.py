"""`ticketlab imp` (a pre-registered lottery-ticket experiment: pilot, IMP with rewinding, controls,
seeds, verdict) and `ticketlab imp-report`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
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

--model tiny (default): a Llama from scratch (4 layers, hidden 128, GQA, a 2,048-token BPE trained on
the train split) on WikiText-2 valid+test split by article 80/10/10; 14 rounds at 20% (4.4% density),
K = 20, 5 seeds, stability of every level's ticket from 0, K, T/10, T/5 on 11 points.
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


def add_parser(sub, parent):
    from pruning.lottery.arms import ARMS
    from pruning.lottery.protocol import Protocol

    d = Protocol()
    p = sub.add_parser("imp", parents=[parent], help="lottery-ticket experiment: IMP with rewinding, controls, "
                                                     "seeds and a verdict with confidence intervals",
                       description=IMP_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny (trained from scratch) or a model spec (default tiny)")
    p.add_argument("--rounds", type=int, default=d.rounds, help="pruning rounds after the dense round 0")
    p.add_argument("--rate", type=float, default=d.rate, help="fraction of the remaining weights pruned per round, "
                                                              "in (0, 1)")
    p.add_argument("--rewind", default=d.rewind, help="step:K | init (= step:0) | pretrained | lr | finetune")
    p.add_argument("--train-steps", type=int, help="T, steps per training (empty: the pilot chooses)")
    p.add_argument("--lr", type=float, help="peak learning rate (empty: the pilot chooses)")
    p.add_argument("--pilot-lrs", default=",".join(f"{x:g}" for x in d.pilot_lrs),
                   help="learning rates the pilot tries")
    p.add_argument("--pilot-steps", type=int, default=d.pilot_steps,
                   help="longest T of the default T grid (pilot-steps / 4, / 2, x 1)")
    p.add_argument("--pilot-ts", default="", help="candidate T values (comma-separated; each its own schedule)")
    p.add_argument("--pilot-extend", type=int, default=d.pilot_extend,
                   help="extensions per axis when the best lr or T is at the edge of its grid")
    p.add_argument("--pilot-seeds", type=int, default=d.pilot_seeds,
                   help="fresh inits trained twice for the seed noise of the power analysis (0: none)")
    p.add_argument("--target-density", default="none",
                   help="density the rounds must reach, refused before training otherwise (default none)")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="validation every N steps (early stopping)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="windows per step")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help="tokens per window")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="linear warm-up steps")
    p.add_argument("--seeds", default=",".join(map(str, d.seeds)),
                   help="comma-separated seeds (>= 2; the power analysis says how many are needed)")
    p.add_argument("--power", type=float, default=d.power, help="power target of the seed analysis")
    p.add_argument("--arms", default=",".join(d.arms), help="arms: " + ", ".join(sorted(ARMS)))
    p.add_argument("--scope", default=d.scope, choices=("global", "layer"),
                   help="one magnitude threshold over all prunable tensors, or per tensor")
    p.add_argument("--unit", default=d.unit, choices=("weights", "heads"),
                   help="prune individual weights or whole attention heads")
    p.add_argument("--prune-embeddings", action="store_true", help="also prune the input embedding")
    p.add_argument("--val-windows", type=int, default=d.val_windows, help="validation windows per evaluation (0 all)")
    p.add_argument("--heldout-windows", type=int, default=d.heldout_windows, help="held-out windows (0 all)")
    p.add_argument("--delta", type=float, default=d.delta, help="matching margin in nats")
    p.add_argument("--confidence", type=float, default=d.confidence, help="interval level")
    p.add_argument("--stability", default=d.stability, choices=("none", "dense", "all"),
                   help="loss barrier: none, the dense network from K and from 0, or also every ticket")
    p.add_argument("--stability-ks", default="", help="rewind points of the stability sweep (empty: 0, K, T/10, T/5)")
    p.add_argument("--stability-points", type=int, default=d.stability_points,
                   help="interpolation points on the line (>= 11)")
    p.add_argument("--no-sanity", action="store_true", help="skip the sanity check (the random mask at the highest "
                                                            "sparsity must be worse than dense by more than delta)")
    p.add_argument("--recovery", default=d.recovery, choices=("full", "lora"),
                   help="train the surviving weights (full) or LoRA adapters, merged and re-masked (lora)")
    p.add_argument("--lora-rank", type=int, default=d.lora_rank)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--dtype", default="float32", choices=("float32",),
                   help="weights stay float32 (master weights); use --amp bf16 on CUDA")
    p.add_argument("--amp", default="none", choices=("none", "bf16"), help="bf16 autocast (CUDA only)")
    p.add_argument("--json", action="store_true", help="print one JSON object {experiment, rounds, verdict}")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    r = sub.add_parser("imp-report", parents=[parent], help="table, verdict and figure of an IMP experiment")
    r.add_argument("experiment", nargs="+", help="experiment id or unique prefix (several: also compares the "
                                                 "loss barrier per rewind point)")
    r.add_argument("--out", help="figure file (.html; a .png is added when kaleido can render); default "
                                 "<state>/experiments/<id>/report.html")
    r.add_argument("--json", action="store_true", help="print the table and verdict as JSON")
    return [p, r]


def protocol_from_args(args):
    """The protocol the options spell. For a pretrained model, options left at the tiny defaults take the
    pretrained defaults (pruning.lottery.protocol.default_protocol)."""
    from pruning.lottery.protocol import Protocol, default_protocol
    from pruning.models import resolve_device

    tiny = Protocol()
    given = {"rounds": args.rounds, "rate": args.rate, "rewind": args.rewind, "steps": args.train_steps,
             "lr": args.lr, "pilot_lrs": _floats(args.pilot_lrs, "pilot-lrs"), "pilot_steps": args.pilot_steps,
             "eval_every": args.eval_every, "batch_size": args.batch_size, "seq_len": args.seq_len,
             "warmup_steps": args.warmup_steps, "seeds": _ints(args.seeds, "seeds"), "arms": _names(args.arms),
             "scope": args.scope, "unit": args.unit, "prune_embeddings": args.prune_embeddings,
             "val_windows": args.val_windows, "heldout_windows": args.heldout_windows, "delta": args.delta,
             "confidence": args.confidence, "stability": args.stability, "sanity": not args.no_sanity,
             "recovery": args.recovery, "lora_rank": args.lora_rank, "dtype": args.dtype, "amp": args.amp,
             "pilot_ts": _ints(args.pilot_ts, "pilot-ts"), "pilot_extend": args.pilot_extend,
             "pilot_seeds": args.pilot_seeds, "target_density": _density(args.target_density), "power": args.power,
             "stability_ks": _ints(args.stability_ks, "stability-ks"), "stability_points": args.stability_points}
    if args.model != "tiny":
        given = {k: v for k, v in given.items() if v != getattr(tiny, k)}
    protocol = default_protocol(args.model, device=resolve_device(args.device), **given)
    if "target_density" in given and given["target_density"] is None:  # an explicit "none" (None means "default")
        protocol = replace(protocol, target_density=None)
    return protocol


def request_from_args(args):
    """`ticketlab imp`'s typed request (`imp-report` runs no job)."""
    if args.command != "imp":
        return None
    from usecases.experiment import ImpRequest

    command = "ticketlab imp " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["imp"] \
        else "ticketlab imp"
    return ImpRequest.build(protocol=protocol_from_args(args).to_dict(), command=command, quiet=args.quiet)


def run(args) -> int:
    if args.command == "imp-report":
        return _report(args)
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


def _report(args) -> int:
    from analysis.ledger import Ledger
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
        print(f"figure: {out}\n")
    if len(args.experiment) > 1:
        by_rewind = stability_by_rewind(args.experiment, ledger)
        if not by_rewind.empty:
            print("loss barrier per rewind step (95% t-interval):")
            print(by_rewind.to_string(index=False))
    return 0
