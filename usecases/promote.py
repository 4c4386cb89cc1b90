"""Promote and roll back: the signed moves of a dense model's deployment pointer (deployer role)."""

from __future__ import annotations

from typing import ClassVar

from analysis.governance.record_types import Move

from .base import Outcome, Progress, Request, usecase


class PromoteRequest(Request):
    USECASE: ClassVar[str] = "promote"

    ticket: str  # an approved ticket, id or unique prefix
    reason: str
    as_name: str | None = None  # the deployer whose key signs (default $TICKETLAB_USER)

    def argv(self) -> list[str]:
        return ["promote", self.ticket, "--reason", self.reason] + (["--as", self.as_name] if self.as_name else [])


class RollbackRequest(Request):
    USECASE: ClassVar[str] = "rollback"

    reason: str
    to: str | None = None  # dense or a ticket deployed before (default: the previous deployment)
    model: str | None = None  # dense weight hash prefix or spec, when several models have deployments
    as_name: str | None = None

    def argv(self) -> list[str]:
        out = ["rollback", "--reason", self.reason]
        for flag, value in (("--to", self.to), ("--model", self.model), ("--as", self.as_name)):
            out += [flag, value] if value else []
        return out


class MoveOutcome(Outcome):
    move: Move  # the signed move as the read model shows it


def _setup(request, signer, ledger):
    from analysis.governance import identity
    from analysis.ledger import Ledger

    return (signer if signer is not None else identity.unlock(request.as_name),
            ledger if ledger is not None else Ledger())


@usecase(PromoteRequest)
def promote(request: PromoteRequest, progress: Progress | None = None, *, signer=None, ledger=None) -> MoveOutcome:
    """`signer`: the deployer's key already unlocked (the dashboard's signed-in person), else `as_name`'s."""
    from analysis.governance import deploy

    signer, ledger = _setup(request, signer, ledger)
    return MoveOutcome(move=Move(**deploy.promote(ledger, request.ticket, signer, request.reason)))


@usecase(RollbackRequest)
def rollback(request: RollbackRequest, progress: Progress | None = None, *, signer=None, ledger=None) -> MoveOutcome:
    from analysis.governance import deploy

    signer, ledger = _setup(request, signer, ledger)
    return MoveOutcome(move=Move(**deploy.rollback(ledger, signer, request.reason, to=request.to,
                                                   model=request.model)))
