"""Run a lottery-ticket experiment (IMP with rewinding, its controls, seeds and the verdict) and record
it in the ledger: running, each round as it finishes, then complete, or failed with the error."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from .base import Outcome, Progress, Request, usecase


class ImpRequest(Request):
    """The pre-registered protocol (every setting; `pruning.lottery.protocol.Protocol`, validated when the
    request is built) and how to run it."""

    USECASE: ClassVar[str] = "imp"

    protocol: dict[str, Any]  # Protocol.to_dict(): its hash (with the model's identity) is the experiment id
    command: str = "ticketlab imp"  # recorded with every round
    quiet: bool = False  # no progress bars

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        from pruning.lottery.protocol import Protocol

        if isinstance(data, dict) and isinstance(data.get("protocol"), dict):
            p = Protocol.from_dict(data["protocol"])
            p.validate()  # every setting that cannot work, refused before any training
            data = {**data, "protocol": p.to_dict()}
        return data

    @classmethod
    def from_settings(cls, settings: dict[str, Any], command: str = "ticketlab imp", quiet: bool = False):
        """The request for the protocol these declared settings (by name, typed) spell; the rest keep their
        defaults. For a pretrained model, settings left at the tiny defaults take the pretrained defaults
        (`default_protocol`). The CLI and the dashboard's form both come here."""
        from pruning.lottery.protocol import Protocol, default_protocol
        from pruning.models import resolve_device

        tiny = Protocol()
        model = settings.get("model", tiny.model)
        given = {k: v for k, v in settings.items() if k not in ("model", "device")}
        if model != "tiny":
            given = {k: v for k, v in given.items() if v != getattr(tiny, k)}
        protocol = default_protocol(model, device=resolve_device(settings.get("device", tiny.device)), **given)
        if "target_density" in given and given["target_density"] is None:  # explicitly none (None: "default")
            protocol = replace(protocol, target_density=None)
        return cls.build(protocol=protocol.to_dict(), command=command, quiet=quiet)

    def protocol_object(self):
        from pruning.lottery.protocol import Protocol

        return Protocol.from_dict(self.protocol)

    def argv(self) -> list[str]:
        from pruning.lottery.protocol import WORDS, Protocol

        d, p = Protocol().to_dict(), self.protocol
        out = ["imp", "--model", str(p["model"])]
        for key, value in p.items():
            if key in ("model", "format", "tiny", "corpora", "split_every", "validation_index", "heldout_index",
                       "device") or value == d.get(key):
                continue
            if isinstance(value, bool):
                out += ["--no-sanity"] if key == "sanity" else [f"--{key.replace('_', '-')}"] if value else []
                continue
            key = "train_steps" if key == "steps" else key
            word = next((w for w, v in WORDS.get(key, {}).items() if isinstance(value, list) and v == tuple(value)),
                        None)
            if word is not None:  # a setting's word (seeds "auto"), not its value
                out += [f"--{key.replace('_', '-')}", word]
                continue
            text = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(
                value, list) else ("none" if value is None else str(value))
            out += [f"--{key.replace('_', '-')}", text]
        return out


class ImpOutcome(Outcome):
    experiment: str  # the experiment id
    folder: str
    rounds: list[dict[str, Any]]  # one row per (arm, seed, round): ticket id, sparsity, held-out loss, steps
    verdict: dict[str, Any]
    resolved: dict[str, Any]  # the lr and T the pilot chose (or the protocol gave)
    resumed_units: int  # rounds found complete on disk from an interrupted run


@usecase(ImpRequest)
def run_experiment(request: ImpRequest, progress: Progress | None = None,
                   on_round: Callable[[Any], None] | None = None,
                   warn: Callable[[str], None] | None = None) -> ImpOutcome:
    """The one "run an experiment and record it": the CLI, dashboard jobs and benchmarks/imp.py call it.
    On any failure the ledger's experiment is marked failed with the error, and the error is raised."""
    from analysis.ledger import Ledger
    from analysis.lottery.experiments import (
        experiment_verdict,
        record_experiment,
        record_round,
        summary_of,
        to_json_rows,
    )
    from pruning.lottery.runner import ImpExperiment

    protocol = request.protocol_object()
    experiment = ImpExperiment(protocol)
    if not experiment.main:  # another process of `accelerate launch`: it trains its share; rank 0 records
        experiment.run()
        return ImpOutcome(experiment=experiment.id, folder=str(experiment.dir), rounds=[], verdict={},
                          resolved={}, resumed_units=0)
    ledger = Ledger()
    ledger.reap_stale_runs()
    params = {**protocol.to_dict(), "rewind_step": protocol.rewind_step, "folder": str(experiment.dir),
              "model_identity": experiment.model_identity}
    record_experiment(experiment.id, params, "running", ledger=ledger)

    def recorded(r) -> None:
        record_round(r, ledger, request.command)
        if on_round is not None:
            on_round(r)

    try:
        results = experiment.run(on_round=recorded, progress=None if request.quiet else progress,
                                 warn=warn or (lambda w: print(f"warning: {w}", file=sys.stderr)))
    except BaseException as e:
        record_experiment(experiment.id, params, "failed", {"error": f"{type(e).__name__}: {e}"[:2000]}, ledger)
        raise
    params["resolved"] = {"lr": experiment.resolved.lr, "steps": experiment.resolved.steps}
    params["budget"] = experiment.budget()
    v = experiment_verdict(experiment.id, ledger)
    record_experiment(experiment.id, params, "complete", summary_of(results, v), ledger)
    from .evaluate import _json_safe

    return ImpOutcome(experiment=experiment.id, folder=str(experiment.dir), rounds=_json_safe(to_json_rows(results)),
                      verdict=_json_safe(v), resolved=params["resolved"],
                      resumed_units=sum(r.resumed for r in results))


class ImpEvalRequest(Request):
    """Run a behaviour suite on an experiment's tickets (level 0 and the last level of every arm, per seed)."""

    USECASE: ClassVar[str] = "imp-eval"

    experiment: str  # an experiment id (or unique prefix)
    suite: Literal["instruct", "safety"] = "instruct"
    limit: Annotated[int, Field(ge=1)] | None = None  # documents per task (None: the full sets)
    rounds: Literal["last", "all"] = "last"
    device: str = "cpu"
    dtype: str = "float32"


class ImpEvalOutcome(Outcome):
    experiment: str
    evaluated: list[str]  # ticket ids evaluated by this call
    already: list[str]  # ticket ids that had the suite's results at this limit (resuming skips them)
    table: list[dict[str, Any]]  # analysis.lottery.downstream.downstream_table, one row per metric, arm and level
    text: str


@usecase(ImpEvalRequest)
def evaluate_experiment(request: ImpEvalRequest, progress: Progress | None = None,
                        on_unit: Callable[[Any, str], None] | None = None) -> ImpEvalOutcome:
    """Each selected ticket through the `evaluate` use case (an ordinary, recorded eval run), skipping those
    already evaluated with this suite and limit, then the paired downstream table."""
    from analysis.ledger import Ledger
    from analysis.lottery.downstream import (
        downstream_table,
        downstream_units,
        format_downstream,
        to_json,
        unit_metrics,
    )
    from analysis.lottery.experiments import find_experiment
    from analysis.safety import benchmark_registry

    from .evaluate import EvalRequest, evaluate

    ledger = Ledger()
    exp = find_experiment(request.experiment, ledger)["id"]
    tasks = set(benchmark_registry.tasks(suite=request.suite))
    evaluated, already = [], []
    for unit in downstream_units(exp, ledger, request.rounds):
        if any(task in tasks for task, _ in unit_metrics(unit, ledger, request.limit)):
            already.append(unit.ticket)
            continue
        if on_unit is not None:
            on_unit(unit, "evaluating")
        evaluate(EvalRequest.build(subject=unit.ticket, suite=request.suite, limit=request.limit,
                                   device=request.device, dtype=request.dtype), progress)
        evaluated.append(unit.ticket)
    table = downstream_table(exp, ledger, request.limit, request.rounds)
    return ImpEvalOutcome(experiment=exp, evaluated=evaluated, already=already, table=to_json(table),
                          text=format_downstream(table))
