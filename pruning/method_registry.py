"""The one registry of pruning methods. The CLI, `ticketlab methods` and the dashboard list methods
and build their forms from it, so a method registered here shows up everywhere.

Every method has one signature:

    fn(loaded: LoadedModel, calib: CalibrationSet | None, options: PruneOptions) -> PruneResult

and one options model (a `pruning.options.MethodOptions` subclass): `options.params` is the validated,
typed instance (`options.params.owl_lambda`), `options["owl_lambda"]` the same value by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import TicketLabError
from .options import MethodOptions, NoOptions, OptionInfo, describe, parse


@dataclass
class PruneOptions:
    sparsity: float
    seed: int = 0
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)  # `params` as a plain dict (what the ticket records)
    progress: Callable[[int, int, str], None] | None = None  # (done, total, what) -> None
    params: MethodOptions | None = None  # the validated, typed options

    def __getitem__(self, key: str) -> Any:
        return self.options[key]

    def report(self, done: int, total: int, what: str = "") -> None:
        if self.progress:
            self.progress(done, total, what)


@dataclass
class PruneResult:
    masks: dict[str, torch.Tensor]  # parameter name -> bool mask (True = kept), parameter's own shape
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # surviving weights the method changed
    structure: dict | None = None  # structured methods: pruning.structure's one schema
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PruneMethod:
    name: str
    fn: Callable[..., PruneResult]
    description: str
    needs_calibration: bool | Callable[[dict], bool] = False
    structured: bool = False
    changes_weights: bool = False
    options: type[MethodOptions] = NoOptions

    @property
    def params(self) -> tuple[OptionInfo, ...]:
        """Each option's name, type, default, help, choices and bounds (for forms and listings)."""
        return describe(self.options)

    def parse(self, raw: dict[str, Any]) -> MethodOptions:
        """Typed options from user input; unknown options, wrong types, NaN, out-of-range and inconsistent
        values are one `TicketLabError` naming the option."""
        return parse(self.options, raw, self.name)

    def validate(self, raw: dict[str, Any]) -> dict[str, Any]:
        """`parse`, as the plain dict a ticket records (defaults filled in)."""
        return self.parse(raw).model_dump()


METHODS: dict[str, PruneMethod] = {}


def register(name: str, description: str, *, needs_calibration: bool | Callable[[dict], bool] = False,
             structured: bool = False, changes_weights: bool = False,
             options: type[MethodOptions] = NoOptions) -> Callable:
    def wrap(fn: Callable[..., PruneResult]) -> Callable[..., PruneResult]:
        METHODS[name] = PruneMethod(name, fn, description, needs_calibration, structured, changes_weights, options)
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
