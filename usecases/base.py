"""The request/outcome base types and the registry of use cases."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from pruning.errors import TicketLabError


class Bar(Protocol):
    def __call__(self, done: int, total: int, what: str = "") -> None: ...

    def close(self) -> None: ...


Progress = Callable[[str], Bar]  # desc -> a (done, total, what) callback with close(); the caller's display


class Request(BaseModel):
    """A validated, immutable request: building it is the one place its values are checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    USECASE: ClassVar[str] = ""  # its use case's name (also the job kind)

    @classmethod
    def build(cls, **values: Any):
        """The request, or one `TicketLabError` line naming the first bad field (pydantic's own error
        for bounds and types; the use case's words for its rules)."""
        try:
            return cls(**values)
        except ValidationError as e:
            err = e.errors()[0]
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, TicketLabError):
                raise TicketLabError(str(cause)) from None
            where = ".".join(str(p) for p in err["loc"]) or cls.__name__
            raise TicketLabError(f"{where}: {err['msg']} (got {err.get('input')!r}).") from None


class Outcome(BaseModel):
    """What a use case returns; stored as JSON in a job's status.json."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class UseCase:
    name: str
    request: type[Request]
    fn: Callable[..., Outcome]


USECASES: dict[str, UseCase] = {}


def usecase(request: type[Request]) -> Callable:
    """Register `fn(request, progress=None) -> Outcome` under the request type's USECASE name."""
    def wrap(fn: Callable[..., Outcome]) -> Callable[..., Outcome]:
        USECASES[request.USECASE] = UseCase(request.USECASE, request, fn)
        return fn

    return wrap


def _load_all() -> None:
    import usecases

    for info in pkgutil.iter_modules(usecases.__path__):
        importlib.import_module(f"usecases.{info.name}")


def request_from_json(name: str, data: dict) -> Request:
    _load_all()
    if name not in USECASES:
        raise TicketLabError(f"no use case {name!r}; known: {', '.join(sorted(USECASES))}.")
    return USECASES[name].request.build(**data)


def execute(name: str, data: dict, progress: Progress | None = None) -> Outcome:
    """Run a stored request: what a dashboard job's runner does."""
    request = request_from_json(name, data)
    return USECASES[name].fn(request, progress=progress)
