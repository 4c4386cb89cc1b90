"""Export: a ticket as a bundle for a deployer (signed by the approving reviewer or a deployer, or
unsigned and marked unreviewed)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from .base import Outcome, Progress, Request, usecase


class ExportRequest(Request):
    USECASE: ClassVar[str] = "export"

    ticket: str  # ticket id or unique prefix
    out: str  # bundle directory
    format: Literal["masks", "masked-weights", "materialized"] = "masked-weights"
    as_name: str | None = None  # who signs (default $TICKETLAB_USER); ignored when unreviewed
    unreviewed: bool = False
    overwrite: bool = False
    model: str | None = None
    dtype: str = "float32"
    quantize: Literal["none", "w8a8", "w4a16"] = "none"
    group_size: Annotated[int, Field(ge=1)] | None = None
    serve_check: bool = False

    def argv(self) -> list[str]:
        out = ["export", self.ticket, "--out", self.out, "--format", self.format]
        for k in ("as_name", "model", "group_size"):
            if getattr(self, k) is not None:
                out += ["--as" if k == "as_name" else f"--{k.replace('_', '-')}", str(getattr(self, k))]
        out += [] if self.dtype == "float32" else ["--dtype", self.dtype]
        out += [] if self.quantize == "none" else ["--quantize", self.quantize]
        return out + [f"--{k.replace('_', '-')}" for k in ("unreviewed", "overwrite", "serve_check") if getattr(self, k)]


class ExportOutcome(Outcome):
    out: str
    bundle_format: str
    ticket: dict[str, Any]
    review: dict[str, Any] | None
    deployer: dict[str, Any] | None
    files: int  # files in the bundle
    signed_by: str | None  # None: unsigned (unreviewed)


@usecase(ExportRequest)
def export(request: ExportRequest, progress: Progress | None = None) -> ExportOutcome:
    from analysis.governance import identity
    from analysis.governance.export import export_bundle
    from analysis.ledger import Ledger

    from .evaluate import _json_safe

    signer = None if request.unreviewed else identity.unlock(request.as_name)
    m = export_bundle(Ledger(), request.ticket, request.out, request.format, signer=signer,
                      unreviewed=request.unreviewed, overwrite=request.overwrite, model=request.model,
                      dtype=request.dtype, quantize=request.quantize, group_size=request.group_size,
                      serve_check=request.serve_check)
    return ExportOutcome(out=request.out, files=len(m["files"]), signed_by=signer.name if signer else None,
                         **_json_safe({k: m[k] for k in ("bundle_format", "ticket", "review",
                                                                          "deployer")}))
