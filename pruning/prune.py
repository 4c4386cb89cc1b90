"""From a loaded model and a method name to a ticket: validation, the method call, and lineage."""

from __future__ import annotations

from typing import Any

from .calibration import CalibrationSet
from .errors import TicketLabError
from .masks import parse_pattern
from .models import LoadedModel
from .registry import PruneMethod, PruneOptions, get_method
from .ticket import Ticket


def check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise TicketLabError(f"sparsity {sparsity} is outside [0, 1): it is the fraction of weights removed.")


def check_pattern(loaded: LoadedModel, pattern: str | None) -> None:
    nm = parse_pattern(pattern)
    if not nm:
        return
    for ref in loaded.adapter.linears():
        width = loaded.adapter.weight_view(ref).shape[1]
        if width % nm[1]:
            raise TicketLabError(f"pattern {pattern} does not divide the input width {width} of {ref.name}; "
                                 f"choose M dividing every layer's input width.")


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
    opts = spec.validate(options or {})
    pattern = opts.get("pattern")
    if parse_pattern(pattern):
        check_pattern(loaded, pattern)
        n, m = parse_pattern(pattern)
        sparsity = 1.0 - n / m  # the pattern fixes the sparsity
    check_sparsity(sparsity)
    calibrated = calibration_needed(spec, opts)
    if calibrated and calib is None:
        why = " with these options" if callable(spec.needs_calibration) or not spec.needs_calibration else ""
        raise TicketLabError(f"method {method!r}{why} needs calibration data "
                             f"(--calib-samples/--calib-len or --calib-tokens).")
    result = spec.fn(loaded, calib if calibrated else None,
                     PruneOptions(sparsity=sparsity, seed=seed, device=loaded.device, options=opts, progress=progress))
    dense = {"spec": loaded.spec, "weights_sha256": loaded.weights_sha256, "family": loaded.family,
             "model_type": loaded.model.config.model_type}
    return Ticket(masks=result.masks, dense=dense, method=method, params=opts, target_sparsity=sparsity, seed=seed,
                  calibration=calib.record if (calib is not None and calibrated) else None,
                  parent=parent, lineage=lineage or {}, structure=result.structure,
                  weights=result.weights, name=name)
