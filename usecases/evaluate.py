"""Evaluate: a ticket (or the dense model) on suites of benchmarks, recorded as one ledger run."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

from pydantic import Field

from analysis.perplexity import DEFAULT_SEQ_LEN
from analysis.safety.loaders import BBQ_PER_CATEGORY

from .base import Outcome, Progress, Request, usecase


class EvalRequest(Request):
    USECASE: ClassVar[str] = "eval"

    subject: str  # a ticket id (or unique prefix, or directory), or "dense"
    model: str | None = None  # the dense model (default: the ticket's own, or the embedded default for dense)
    suite: str = "all"
    tasks: str | None = None
    plain_prompt: bool = False
    limit: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1)] | None = None
    seq_len: Annotated[int, Field(ge=2)] = DEFAULT_SEQ_LEN
    bbq_per_category: Annotated[int, Field(ge=0)] = BBQ_PER_CATEGORY
    hub: bool = False
    device: str = "cpu"
    dtype: str = "float32"

    def command(self) -> str:
        """The command text the ledger's run records (unchanged from the CLI's)."""
        return "ticketlab eval " + " ".join(
            [self.subject, f"--suite {self.suite}"] + [f"--{k.replace('_', '-')} {getattr(self, k)}" for k in
                                                       ("tasks", "limit", "batch_size") if getattr(self, k) is not None]
            + (["--plain-prompt"] if self.plain_prompt else []))

    def argv(self) -> list[str]:
        out = ["eval", self.subject, "--suite", self.suite]
        for k in ("tasks", "limit", "batch_size", "model"):
            if getattr(self, k) is not None:
                out += [f"--{k.replace('_', '-')}", str(getattr(self, k))]
        out += ["--seq-len", str(self.seq_len), "--bbq-per-category", str(self.bbq_per_category)]
        out += (["--plain-prompt"] if self.plain_prompt else []) + (["--hub"] if self.hub else [])
        return out + ([] if self.device == "cpu" else ["--device", self.device]) + (
            [] if self.dtype == "float32" else ["--dtype", self.dtype])


class EvalOutcome(Outcome):
    subject: str  # the ticket id, or "dense"
    dense_sha256: str
    model: str
    suite: str
    run_id: str | None
    results: dict[str, dict[str, Any]]  # task -> {"metric,filter": value} as lm-eval names them
    config: dict[str, Any]


def _json_safe(value):
    """Plain JSON values (NaN and inf are None; numpy scalars their number; anything else its text, as
    the CLI's `--json` always printed it)."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


@usecase(EvalRequest)
def evaluate(request: EvalRequest, progress: Progress | None = None) -> EvalOutcome:
    from analysis.evaluate import evaluate as run_suites
    from pruning.models import DEFAULT_MODEL, load_model
    from pruning.ticket import Ticket, find_ticket

    ticket = None if request.subject == "dense" else Ticket.load(find_ticket(request.subject))
    spec = request.model or (ticket.dense["spec"] if ticket is not None else DEFAULT_MODEL)
    loaded = load_model(spec, device=request.device, dtype=request.dtype)
    bar = progress("eval") if progress else None
    try:
        out = run_suites(loaded, ticket, suite=request.suite, tasks=request.tasks, limit=request.limit,
                         command=request.command(), progress=bar, batch_size=request.batch_size,
                         seq_len=request.seq_len, bbq_per_category=request.bbq_per_category or None,
                         hub=request.hub, chat=not request.plain_prompt)
    finally:
        if bar is not None:
            bar.close()
    return EvalOutcome(**_json_safe({k: out[k] for k in EvalOutcome.model_fields}))
