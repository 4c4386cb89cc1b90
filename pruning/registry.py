"""The one registry of pruning methods. The CLI and the dashboard list methods and build their forms
from it, so a method registered here shows up everywhere.

Every method has one signature:

    fn(loaded: LoadedModel, calib: CalibrationSet | None, options: PruneOptions) -> PruneResult
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import TicketLabError


@dataclass(frozen=True)
class Param:
    """A method option beyond the sparsity. `choices` makes it a select box in the dashboard."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None


@dataclass
class PruneOptions:
    sparsity: float
    seed: int = 0
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)  # validated against the method's Params
    progress: Callable[[int, int, str], None] | None = None  # (done, total, what) -> None

    def __getitem__(self, key: str) -> Any:
        return self.options[key]

    def report(self, done: int, total: int, what: str = "") -> None:
        if self.progress:
            self.progress(done, total, what)


@dataclass
class PruneResult:
    masks: dict[str, torch.Tensor]  # parameter name -> bool mask (True = kept), parameter's own shape
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # surviving weights the method changed
    structure: dict | None = None  # structured methods: what was removed, and the GQA rule applied
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PruneMethod:
    name: str
    fn: Callable[..., PruneResult]
    description: str
    needs_calibration: bool = False
    structured: bool = False
    changes_weights: bool = False
    params: tuple[Param, ...] = ()

    def validate(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults, coerce types, check choices; unknown options are an error, not ignored."""
        known = {p.name: p for p in self.params}
        unknown = set(raw) - set(known)
        if unknown:
            raise TicketLabError(f"method {self.name!r} takes no option(s) {', '.join(sorted(unknown))}; "
                                 f"it takes: {', '.join(known) or 'none'}.")
        out = {}
        for p in self.params:
            value = raw.get(p.name, p.default)
            if value is not None and not isinstance(value, p.type):
                try:
                    value = p.type(value)
                except (TypeError, ValueError):
                    raise TicketLabError(f"option {p.name}={value!r} is not a {p.type.__name__}.") from None
            if p.choices and value not in p.choices:
                raise TicketLabError(f"option {p.name}={value!r}: choose one of {', '.join(map(str, p.choices))}.")
            out[p.name] = value
        return out


METHODS: dict[str, PruneMethod] = {}


def register(name: str, description: str, *, needs_calibration: bool = False, structured: bool = False,
             changes_weights: bool = False, params: tuple[Param, ...] = ()) -> Callable:
    def wrap(fn: Callable[..., PruneResult]) -> Callable[..., PruneResult]:
        METHODS[name] = PruneMethod(name, fn, description, needs_calibration, structured, changes_weights, params)
        return fn

    return wrap


def get_method(name: str) -> PruneMethod:
    from . import methods  # noqa: F401  (importing the package registers every method)

    if name not in METHODS:
        raise TicketLabError(f"unknown pruning method {name!r}; available: {', '.join(sorted(METHODS))}.")
    return METHODS[name]


def all_methods() -> dict[str, PruneMethod]:
    from . import methods  # noqa: F401

    return dict(sorted(METHODS.items()))


# Shared option definitions, so the same option means the same thing in every method.
SCOPE = Param("scope", str, "layer", "compare weights within each tensor (layer) or across all of them (global)",
              ("layer", "global"))
PATTERN = Param("pattern", str, "none", "N:M semi-structured pattern along the input dimension (e.g. 2:4, 4:8)",
                ("none", "2:4", "4:8", "1:4", "2:8"))
ALLOCATION = Param("allocation", str, "uniform", "per-layer sparsity: uniform, or outlier-weighted (OWL)",
                   ("uniform", "owl"))
OWL_LAMBDA = Param("owl_lambda", float, 0.08, "OWL: largest deviation of a layer's sparsity from the target")
OWL_M = Param("owl_m", float, 5.0, "OWL: a weight is an outlier when its score exceeds M x the layer mean")
