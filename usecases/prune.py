"""Prune: a model, a method and its options -> a saved ticket recorded in the ledger."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, PrivateAttr, model_validator

from pruning.models import DEFAULT_MODEL

from .base import Outcome, Progress, Request, usecase


class PruneRequest(Request):
    """Everything a prune needs, checked when built: the method exists, its options parse into its typed
    model (unknown options, bounds, cross-field rules), the sparsity is in [0, 1) and agrees with an N:M
    pattern (None: the pattern's, else 0.5), the calibration need is worked out (`calibrated`)."""

    USECASE: ClassVar[str] = "prune"

    model: str = Field(DEFAULT_MODEL, description="embedded name, Hugging Face id or local directory")
    method: str = Field(description="the pruning method (`ticketlab methods` lists them)")
    sparsity: float | None = Field(None, description="the target: fraction of weights (structured: units) removed, in "
                                              "[0, 1) (default 0.5, or the N:M pattern's 1 - N/M)")
    # the method's options, every default filled in (what the ticket records); flags from its options model
    options: dict[str, Any] = Field({}, json_schema_extra={"cli": False})
    pattern: tuple[int, int] | None = Field(None, json_schema_extra={"cli": False})  # N:M, parsed once (derived)
    # whether this method with these options reads calibration data (derived, once)
    calibrated: bool = Field(False, json_schema_extra={"cli": False})
    calib_samples: Annotated[int, Field(ge=1, description="calibration windows N")] = 32
    calib_len: Annotated[int, Field(ge=1, description="tokens per calibration window L")] = 512
    calib_tokens: str | None = Field(None, description="exact calibration token ids: a 2-D integer tensor "
                                                       "(.pt/.npy/.safetensors)")
    seed: int = Field(0, description="seed of the calibration windows and of random methods")
    name: str | None = Field(None, description="a human name for the ticket")
    device: str = Field("cpu", description="cpu, cuda or auto")
    dtype: str = Field("float32", description="weights dtype while pruning")
    as_name: str | None = Field(None, description="sign as the ticket's creator with this person's key (default: "
                                                  "$TICKETLAB_USER's key if there is one, else the ticket is "
                                                  "unsigned)", json_schema_extra={"flag": "--as"})

    _params: Any = PrivateAttr(None)  # the method's typed options (a MethodOptions), parsed once below

    @model_validator(mode="after")
    def _resolve(self):
        from pruning.method_registry import get_method
        from pruning.prune import calibration_needed, resolve_sparsity
        from pruning.text import require_plain

        method = get_method(self.method)
        params = method.parse(dict(self.options))
        options = params.model_dump()
        require_plain(self.name, "--name")  # shown later in listings, terminals and pages
        # the derived fields are set here, once; the request stays frozen for everyone else
        self.__dict__.update(options=options, pattern=params.nm,
                             sparsity=resolve_sparsity(self.sparsity, params.nm, options.get("pattern")),
                             calibrated=calibration_needed(method, options))
        self._params = params
        return self

    @property
    def params(self):
        """The method's options as its typed model (`pruning.options.MethodOptions`)."""
        return self._params

    def argv(self) -> list[str]:
        """The same request as a `ticketlab prune` command line (shown beside a job; runs the same)."""
        from pruning.method_registry import get_method

        out = ["prune", "--model", self.model, "--method", self.method, "--sparsity", f"{self.sparsity:g}",
               "--seed", str(self.seed)]
        for info in get_method(self.method).params:
            if self.options.get(info.name) != info.default:
                out += [info.flag, str(self.options[info.name])]
        if self.calibrated:
            out += (["--calib-tokens", self.calib_tokens] if self.calib_tokens else
                    ["--calib-samples", str(self.calib_samples), "--calib-len", str(self.calib_len)])
        out += ["--name", self.name] if self.name else []
        out += ["--as", self.as_name] if self.as_name else []
        return out + ([] if self.device == "cpu" else ["--device", self.device]) + (
            [] if self.dtype == "float32" else ["--dtype", self.dtype])


class PruneOutcome(Outcome):
    id: str  # the ticket's id
    path: str
    method: str
    params: dict[str, Any]
    model: str
    target_sparsity: float  # asked for (the ledger's tickets.target_sparsity)
    achieved_sparsity: float  # weights actually removed (tickets.achieved_sparsity)
    unit_sparsity: float | None = None  # structured: the fraction of heads / neurons / layers removed
    creator: str | None = None  # who signed as its creator (None: unsigned)


@usecase(PruneRequest)
def prune(request: PruneRequest, progress: Progress | None = None) -> PruneOutcome:
    from analysis.governance.identity import creation_signer
    from analysis.ledger import Ledger
    from analysis.recording import record_prune
    from pruning import calibration
    from pruning.models import load_model
    from pruning.prune import make_ticket

    signer = creation_signer(Ledger(), request.as_name)  # a wrong passphrase fails now, not after pruning
    loaded = load_model(request.model, device=request.device, dtype=request.dtype)
    calib = None
    if request.calibrated:
        limit = loaded.adapter.max_positions
        if request.calib_tokens:
            calib = calibration.from_token_file(request.calib_tokens, vocab_size=loaded.model.config.vocab_size,
                                                max_positions=limit)
        else:
            calib = calibration.from_corpus(loaded.tokenizer, request.calib_samples, request.calib_len,
                                            request.seed, max_positions=limit)
    bar = progress(f"prune {request.method}") if progress else None
    try:
        ticket = make_ticket(loaded, request.method, request.sparsity, options=request.params, calib=calib,
                             seed=request.seed, name=request.name, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    path = ticket.save()
    record_prune(loaded, ticket, command="ticketlab prune " + request.method, signer=signer)
    units = (ticket.structure or {}).get("unit_sparsity")
    return PruneOutcome(id=ticket.id, path=str(path), method=ticket.method, params=ticket.params, model=loaded.spec,
                        target_sparsity=ticket.target_sparsity, achieved_sparsity=round(ticket.achieved_sparsity, 6),
                        unit_sparsity=units, creator=signer.name if signer else None)

