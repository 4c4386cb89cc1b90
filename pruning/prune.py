"""From a loaded model and a method name to a ticket: validation, the method call, and lineage."""

from __future__ import annotations

import math
from typing import Any

from .calibration import CalibrationSet, check_length
from .errors import TicketLabError
from .masks import parse_pattern
from .models import LoadedModel
from .registry import PruneMethod, PruneOptions, get_method
from .ticket import Ticket


def check_sparsity(sparsity: float) -> None:
    if not (isinstance(sparsity, int | float) and math.isfinite(sparsity) and 0.0 <= sparsity < 1.0):
        raise TicketLabError(f"sparsity {sparsity} is outside [0, 1): it is the fraction of weights removed.")


def calibration_needed(spec: PruneMethod, options: dict[str, Any]) -> bool:
    """Whether this method with these (validated) options reads calibration data. A method's
    `needs_calibration` is a bool, or a callable of its options when only some options read
    activations; OWL allocation needs activations whatever the method."""
    rule = spec.needs_calibration
    needed = bool(rule(options)) if callable(rule) else bool(rule)
    return needed or options.get("allocation") == "owl"


def make_ticket(loaded: LoadedModel, method: str, sparsity: float, *, options: dict[str, Any] | None = None,
                calib: CalibrationSet | None = None, seed: int = 0, name: str | None = None,
                parent: str | None = None, lineage: dict | None = None, progress=None) -> Ticket:
    spec = get_method(method)
    params = spec.parse(options or {})
    params.check_model(loaded.adapter)
    opts = params.model_dump()
    nm = parse_pattern(opts.get("pattern"))
    if nm:
        sparsity = 1.0 - nm[0] / nm[1]  # the pattern fixes the sparsity
    check_sparsity(sparsity)
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
