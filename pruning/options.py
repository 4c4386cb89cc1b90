"""Typed, validated method options: one pydantic model per pruning method (as llm-compressor's
modifiers are). Bounds, finite numbers and choices are checked on construction, cross-field rules in
`check`, rules that need the loaded model (an N:M pattern must divide every input width) in
`check_model`. Every failure is one `TicketLabError` naming the option (`owl_lambda`, CLI
`--owl-lambda`) and the fix.

The CLI flags, `ticketlab methods` and the dashboard form are generated from these models
(`describe`), so an option is declared once, here or in the method's own module.

Shared option types (`Pattern`, `Scope`, `Allocation`, `OwlLambda`, `OwlM`, `Importance`, `PerLayer`)
keep the same option meaning the same thing in every method.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import TicketLabError
from .importance import IMPORTANCE
from .masks import parse_pattern

PATTERNS = ("none", "2:4", "4:8", "1:4", "2:8")

Pattern = Annotated[Literal[PATTERNS], Field(  # type: ignore[valid-type]
    description="N:M semi-structured pattern along the input dimension (e.g. 2:4, 4:8)")]
Scope = Annotated[Literal["layer", "global"], Field(
    description="compare weights within each tensor (layer) or across all of them (global)")]
Allocation = Annotated[Literal["uniform", "owl"], Field(
    description="per-layer sparsity: uniform, or outlier-weighted (OWL)")]
# OWL spreads layer sparsities over 2 x lambda; at 0.5 or more that spread cannot fit inside [0, 1).
OwlLambda = Annotated[float, Field(ge=0.0, lt=0.5, description="OWL: largest deviation of a layer's sparsity "
                                                                "from the target")]
OwlM = Annotated[float, Field(gt=0.0, description="OWL: a weight is an outlier when its score exceeds "
                                                           "M x the layer mean")]
Importance = Annotated[Literal[IMPORTANCE], Field(  # type: ignore[valid-type]
    description="unit importance: weight norm, activation norm on the calibration data, or first-order "
                "Taylor (mean over calibration sequences of |dL/d gate| on each unit's output, Michel et al. 2019)")]
PerLayer = Annotated[Literal["uniform", "global"], Field(
    description="structured: the same fraction of units in every layer (uniform), or chosen by one ranking "
                "over all layers after normalising each layer's scores (global)")]


# Cross-field rules in words (`ticketlab methods` lists them for the methods whose options have them).
RULE_OWL_PATTERN = "allocation=owl needs pattern=none (an N:M pattern fixes every layer's sparsity)"
RULE_OWL_GLOBAL = "allocation=owl needs scope=layer (OWL chooses a sparsity per layer)"
RULE_GLOBAL_PATTERN = "scope=global needs pattern=none (N:M keeps N of every M weights per row)"
RULE_NM_WIDTH = "an N:M pattern's M must divide every prunable layer's input width (checked on the model)"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _named(name: str) -> str:
    return f"{name} ({flag(name)})"


class MethodOptions(BaseModel):
    """Base of every method's options. Subclasses declare fields; `RULES` says their cross-field rules
    in words (listed by `ticketlab methods`) and `check` enforces them."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)
    RULES: ClassVar[tuple[str, ...]] = ()

    @property
    def nm(self) -> tuple[int, int] | None:
        """The N:M pattern as (N, M), None without one: the one place a pattern's text is read."""
        return parse_pattern(getattr(self, "pattern", None))

    def check(self) -> None:
        """Cross-field rules; raise `TicketLabError` naming the options."""
        allocation, pattern, scope = (getattr(self, k, None) for k in ("allocation", "pattern", "scope"))
        if allocation == "owl" and self.nm:
            raise TicketLabError(f"allocation=owl cannot be combined with an N:M pattern (pattern={pattern}): the "
                                 f"pattern fixes every layer's sparsity at 1 - N/M. Use {flag('pattern')} none "
                                 f"with OWL.")
        if allocation == "owl" and scope == "global":
            raise TicketLabError("allocation=owl chooses a sparsity per layer; it cannot be combined with "
                                 f"scope=global. Use {flag('scope')} layer with OWL.")
        if scope == "global" and self.nm:
            raise TicketLabError(f"scope=global cannot be combined with pattern={pattern}: an N:M pattern keeps N "
                                 f"of every M weights in each row, there is no global ranking. Drop one of "
                                 f"{flag('scope')} and {flag('pattern')}.")

    def check_model(self, adapter) -> None:
        """Rules against the loaded model: an N:M pattern must divide every prunable input width."""
        nm = self.nm
        if not nm:
            return
        for ref in adapter.linears():
            width = adapter.weight_view(ref).shape[1]
            if width % nm[1]:
                raise TicketLabError(f"option {_named('pattern')}={self.pattern}: M={nm[1]} does not divide the "
                                     f"input width {width} of {ref.name}; choose M dividing every layer's input "
                                     f"width.")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, value, info):
        # pydantic's lax mode reads True as 1; a yes/no is never a block size or a lambda.
        if isinstance(value, bool) and cls.model_fields[info.field_name].annotation is not bool:
            raise ValueError("a true/false value is not a number or a choice")
        return value

    @model_validator(mode="after")
    def _cross_field(self):
        self.check()
        return self


@dataclass(frozen=True)
class OptionInfo:
    """One option as the CLI, `ticketlab methods` and the dashboard show it."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    bounds: tuple[tuple[str, float], ...] = ()  # (("ge", 0.0), ("lt", 0.5))

    @property
    def flag(self) -> str:
        return flag(self.name)

    def bounds_text(self) -> str:
        signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        return ", ".join(f"{signs[k]} {v:g}" for k, v in self.bounds)


def describe(cls: type[MethodOptions]) -> tuple[OptionInfo, ...]:
    out = []
    for name, f in cls.model_fields.items():
        ann, choices = f.annotation, None
        if typing.get_origin(ann) is Literal:
            choices = typing.get_args(ann)
            ann = type(choices[0])
        bounds = tuple((k, getattr(m, k)) for m in f.metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k))
        out.append(OptionInfo(name, ann, f.default, f.description or "", choices, bounds))
    return tuple(out)


def parse(cls: type[MethodOptions], raw: dict[str, Any], method: str) -> MethodOptions:
    """Build and validate a method's options from user input (CLI strings or typed values)."""
    known = cls.model_fields
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise TicketLabError(f"method {method!r} takes no option {', '.join(_named(u) for u in unknown)}; it takes: "
                             f"{', '.join(_named(k) for k in known) or 'none'}.")
    try:
        return cls(**{k: v for k, v in raw.items() if v is not None})
    except ValidationError as e:
        raise TicketLabError(_message(cls, e, raw, method)) from None


def _message(cls: type[MethodOptions], e: ValidationError, raw: dict, method: str) -> str:
    info = {o.name: o for o in describe(cls)}
    parts = []
    for err in e.errors():
        name = str(err["loc"][0]) if err["loc"] else None
        if name not in info:
            parts.append(str(err["msg"]))
            continue
        o = info[name]
        value = raw.get(name)
        if isinstance(value, float) and not math.isfinite(value) or err["type"] == "finite_number":
            why = "must be a finite number"
        elif o.choices:
            why = "choose one of " + ", ".join(map(str, o.choices))
        elif o.bounds and err["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            why = "must be " + o.bounds_text()
        else:
            why = f"is not a valid {o.type.__name__} ({err['msg']})"
        parts.append(f"option {_named(name)}={value!r} for method {method!r} {why} (default {o.default!r}; "
                     f"{o.help})")
    return "; ".join(parts) + "."


class NoOptions(MethodOptions):
    pass
