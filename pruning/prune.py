"""From a loaded model and a method name to a ticket: validation, the method call, and lineage."""

from __future__ import annotations

import math
from typing import Any

from .calibration import CalibrationSet, check_length
from .errors import TicketLabError
from .method_registry import PruneMethod, PruneOptions, get_method
from .models import LoadedModel
from .options import MethodOptions
from .ticket import Ticket


def check_sparsity(sparsity: float) -> None:
    if not (isinstance(sparsity, int | float) and math.isfinite(sparsity) and 0.0 <= sparsity < 1.0):
        raise TicketLabError(f"sparsity {sparsity} is outside [0, 1): it is the fraction of weights removed.")


def resolve_sparsity(sparsity: float | None, nm: tuple[int, int] | None, pattern: str | None = None) -> float:
    """The sparsity a prune removes: an N:M pattern fixes it at 1 - N/M, so a different sparsity beside a
    pattern is refused naming both (it used to be silently replaced); None means the pattern's, or 0.5."""
    if nm:
        fixed = 1.0 - nm[0] / nm[1]
        if sparsity is not None and not (isinstance(sparsity, int | float) and math.isclose(sparsity, fixed,
                                                                                             abs_tol=1e-9)):
            raise TicketLabError(f"sparsity {sparsity} conflicts with pattern {pattern or f'{nm[0]}:{nm[1]}'}, which "
                                 f"removes exactly {fixed:g}: give --sparsity {fixed:g} or leave it out, or drop "
                                 f"the pattern.")
        sparsity = fixed
    elif sparsity is None:
        sparsity = 0.5
    check_sparsity(sparsity)
    return float(sparsity)


def calibration_needed(spec: PruneMethod, options: dict[str, Any]) -> bool:
    """Whether this method with these (validated) options reads calibration data. A method's
    `needs_calibration` is a bool, or a callable of its options when only some options read
    activations; OWL allocation needs activations whatever the method."""
    rule = spec.needs_calibration
    needed = bool(rule(options)) if callable(rule) else bool(rule)
    return needed or options.get("allocation") == "owl"


def make_ticket(loaded: LoadedModel, method: str, sparsity: float | None, *,
                options: dict[str, Any] | MethodOptions | None = None,
                calib: CalibrationSet | None = None, seed: int = 0, name: str | None = None,
                parent: str | None = None, lineage: dict | None = None, progress=None) -> Ticket:
    spec = get_method(method)
    params = options if isinstance(options, spec.options) else spec.parse(options or {})  # typed: parsed already
    params.check_model(loaded.adapter)
    opts = params.model_dump()
    sparsity = resolve_sparsity(sparsity, params.nm, opts.get("pattern"))
    calibrated = calibration_needed(spec, opts)
    if calibrated and calib is None:
        why = " with these options" if callable(spec.needs_calibration) or not spec.needs_calibration else ""
        raise TicketLabError(f"method {method!r}{why} needs calibration data "
                             f"(--calib-samples/--calib-len or --calib-tokens).")
    if calibrated:  # windows longer than the model's positions fail deep inside attention, or wrap silently
        check_length(calib.length, loaded.adapter.max_positions, "calibration window length")
    result = spec.fn(loaded, calib if calibrated else None,
                     PruneOptions(sparsity=sparsity, seed=seed, device=loaded.device, options=opts, progress=progress,
                                  params=params))
    dense = {"spec": loaded.spec, "weights_sha256": loaded.weights_sha256, "family": loaded.family,
             "model_type": loaded.model.config.model_type}
    return Ticket(masks=result.masks, dense=dense, method=method, params=opts, target_sparsity=sparsity, seed=seed,
                  calibration=calib.record if (calib is not None and calibrated) else None,
                  parent=parent, lineage=lineage or {}, structure=result.structure,
                  weights=result.weights, name=name)
