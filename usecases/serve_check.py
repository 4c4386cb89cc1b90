"""Serve-check: does a bundle load and answer in vLLM as the lab's model does, and how fast against its
dense model (analysis.serving.check); the check is recorded as a ledger run."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field

from .base import Outcome, Progress, Request, usecase


class ServeCheckRequest(Request):
    USECASE: ClassVar[str] = "serve-check"

    bundle: str  # bundle directory (masked-weights or materialized)
    base_url: str | None = None  # a server already serving the bundle, instead of starting one here
    dense_base_url: str | None = None  # a server of the dense model (default: start one here)
    with_dense: bool = True  # False: no dense comparison, no speed ratios
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] = 32
    rounds: Annotated[int, Field(ge=1)] = 2
    startup_timeout: Annotated[float, Field(gt=0)] = 900.0
    dtype: str | None = None  # engine dtype (default: the bundle's weights dtype)
    command: str = "ticketlab serve-check"  # what the ledger run records as its command

    def argv(self) -> list[str]:
        out = ["serve-check", self.bundle]
        for k in ("base_url", "dense_base_url", "port", "dtype"):
            if getattr(self, k) is not None:
                out += [f"--{k.replace('_', '-')}", str(getattr(self, k))]
        out += [] if self.max_tokens == 32 else ["--max-tokens", str(self.max_tokens)]
        out += [] if self.rounds == 2 else ["--rounds", str(self.rounds)]
        out += [] if self.startup_timeout == 900.0 else ["--startup-timeout", str(self.startup_timeout)]
        return out + ([] if self.with_dense else ["--no-dense"])


class ServeCheckOutcome(Outcome):
    bundle: str
    loads: bool
    error: str | None
    run_id: str
    result: dict[str, Any]  # the check's whole result as recorded (outputs, speed, servers), with run_id


@usecase(ServeCheckRequest)
def serve_check(request: ServeCheckRequest, progress: Progress | None = None) -> ServeCheckOutcome:
    from analysis.ledger import Ledger
    from analysis.serving.check import record
    from analysis.serving.check import serve_check as check

    result = check(request.bundle, base_url=request.base_url, dense_base_url=request.dense_base_url,
                   with_dense=request.with_dense, port=request.port, max_tokens=request.max_tokens,
                   rounds=request.rounds, startup_timeout=request.startup_timeout, dtype=request.dtype)
    result["run_id"] = record(Ledger(), result, request.command)
    return ServeCheckOutcome(bundle=str(result["bundle"]), loads=bool(result["loads"]), error=result.get("error"),
                             run_id=result["run_id"], result=result)
