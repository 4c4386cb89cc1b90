"""`ticketlab imp` (iterative magnitude pruning with rewinding, controls, seeds) and `ticketlab imp-report`."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from pruning.errors import TicketLabError

from ..progress import progress_bar

IMP_HELP = """\
Lottery-ticket experiment: train, prune RATE of the remaining weights by magnitude, rewind the
survivors, train again, for ROUNDS rounds; with the reinit and random-mask controls and several seeds.
Each (arm, seed, round) is a ticket in the ledger with its held-out loss and perplexity.

--model tiny trains a 1.3M-parameter Llama (4 layers, GQA) from scratch on WikiText-2 (valid.txt split
by article: 90% train, 10% held out). Default 200 steps of 8 x 128 tokens: ~45-60 s per training on
one core, so the default experiment (5 rounds, 3 arms, 2 seeds = 32 trainings) takes ~25-30 min.
--model smollm2-135m-instruct (or any supported checkpoint) fine-tunes the prunable linears and
rewinds to the pretrained weights; defaults (48 steps of 4 x 128 tokens, 32 held-out windows) take
about 10 minutes per arm and round for SmolLM2-135M on this shared 2-core CPU (~10 s per step), so a
round with both controls is ~30 min (use --controls none, fewer --train-steps or --device cuda).

Interrupted runs resume: run the same command again (the experiment folder under
<state>/experiments/ is named by a hash of the settings; more rounds or seeds extend it).
"""


def _seeds(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TicketLabError(f"--seeds {text!r}: give comma-separated integers, e.g. 0,1,2.") from None


def _controls(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_parser(sub, parent):
    p = sub.add_parser("imp", parents=[parent], help="iterative magnitude pruning with rewinding (lottery tickets)",
                       description=IMP_HELP, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny (trained from scratch) or a model spec (default tiny)")
    p.add_argument("--rounds", type=int, default=5, help="pruning rounds after the dense round 0 (default 5)")
    p.add_argument("--rate", type=float, default=0.2, help="fraction of the remaining weights pruned per round, in "
                                                           "(0, 1) (default 0.2)")
    p.add_argument("--rewind", help="init | step:K | pretrained | lr | finetune (default: init for tiny, "
                                    "pretrained otherwise)")
    p.add_argument("--train-steps", type=int, help="optimizer steps per training (default 200 tiny, 48 pretrained)")
    p.add_argument("--batch-size", type=int, help="windows per step (default 8 tiny, 4 pretrained)")
    p.add_argument("--seq-len", type=int, help="tokens per window (default 128)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 5e-3 tiny, 1e-4 pretrained)")
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    p.add_argument("--controls", default="reinit,random", help="reinit,random | reinit | random | none")
    p.add_argument("--scope", default="global", choices=("global", "layer"),
                   help="one magnitude threshold over all prunable tensors, or per tensor (default global)")
    p.add_argument("--unit", default="weights", choices=("weights", "heads"),
                   help="prune individual weights or whole attention heads (default weights)")
    p.add_argument("--prune-embeddings", action="store_true", help="also prune the input embedding")
    p.add_argument("--eval-windows", type=int, help="held-out windows scored per round (default all for tiny, "
                                                    "32 pretrained)")
    p.add_argument("--recovery", default="full", choices=("full", "lora"),
                   help="train the surviving weights (full) or LoRA adapters on the frozen sparse backbone, merged "
                        "and re-masked (lora)")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--stability", action="store_true",
                   help="also train two copies of each round's ticket from its rewind point with different data "
                        "orders and record the loss barrier along the line between them (2 more trainings/round)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--json", action="store_true", help="print one JSON object {experiment, rounds}")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    r = sub.add_parser("imp-report", parents=[parent], help="table and figure of an IMP experiment")
    r.add_argument("experiment", nargs="+", help="experiment id or unique prefix (several: also compares the "
                                                 "loss barrier per rewind point)")
    r.add_argument("--out", help="figure file (.html; a .png is added when kaleido can render); default "
                                 "<state>/experiments/<id>/report.html")
    r.add_argument("--json", action="store_true", help="print the table as JSON records")
    return [p, r]


def _settings(args):
    from pruning.imp import ImpSettings, default_train
    from pruning.models import resolve_device

    tiny = args.model == "tiny"
    train = default_train(args.model, steps=args.train_steps, batch_size=args.batch_size, seq_len=args.seq_len,
                          lr=args.lr)
    eval_windows = args.eval_windows if args.eval_windows is not None else (0 if tiny else 32)
    return ImpSettings(model=args.model, rate=args.rate, rewind=args.rewind or ("init" if tiny else "pretrained"),
                       scope=args.scope, unit=args.unit, prune_embeddings=args.prune_embeddings, train=train,
                       eval_windows=eval_windows, eval_batch=16 if tiny else 4, recovery=args.recovery,
                       lora_rank=args.lora_rank, device=resolve_device(args.device), dtype=args.dtype)


def run(args) -> int:
    if args.command == "imp-report":
        return _report(args)
    from analysis.experiments import (
        format_report,
        imp_report,
        record_experiment,
        record_round,
        summary_of,
        to_json_rows,
    )
    from analysis.ledger import Ledger
    from pruning.imp import ImpExperiment

    config = _settings(args)
    seeds, controls = _seeds(args.seeds), _controls(args.controls)
    experiment = ImpExperiment(config)
    ledger = Ledger()
    ledger.reap_stale_runs()
    command = "ticketlab imp " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["imp"] \
        else "ticketlab imp"
    params = {**experiment.record, "rounds": args.rounds, "seeds": seeds, "controls": list(controls),
              "stability": args.stability, "folder": str(experiment.dir)}
    record_experiment(experiment.id, params, "running", ledger=ledger)
    progress = None if args.quiet else (lambda desc: progress_bar(desc))
    try:
        results = experiment.run(args.rounds, seeds, controls, stability=args.stability,
                                 on_round=lambda r: record_round(r, ledger, command), progress=progress)
    except BaseException as e:
        record_experiment(experiment.id, params, "failed", {"error": f"{type(e).__name__}: {e}"[:2000]}, ledger)
        raise
    record_experiment(experiment.id, params, "complete", summary_of(results), ledger)
    if args.json:
        print(json.dumps({"experiment": experiment.id, "rounds": to_json_rows(results)}))
    else:
        print(format_report(imp_report(experiment.id, ledger)))
        print(f"\nexperiment {experiment.id}: {experiment.dir}\n(figure: ticketlab imp-report {experiment.id})")
    return 0


def _report(args) -> int:
    from analysis.experiments import (
        find_experiment,
        format_report,
        imp_figure,
        imp_report,
        stability_by_rewind,
    )
    from analysis.ledger import Ledger
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
        print(json.dumps({exp: json.loads(t.to_json(orient="records")) for exp, t, _ in tables}))
        return 0
    for _exp, table, out in tables:
        print(format_report(table))
        print(f"figure: {out}\n")
    if len(args.experiment) > 1:
        by_rewind = stability_by_rewind(args.experiment, ledger)
        if not by_rewind.empty:
            print("loss barrier per rewind point (run with --stability):")
            print(by_rewind.to_string(index=False))
    return 0
