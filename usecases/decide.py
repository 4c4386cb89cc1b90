"""Decide: a reviewer's signed approve/reject of a ticket under the policy pinned in the ledger."""

from __future__ import annotations

from typing import ClassVar

from analysis.governance.record_types import Choice, Decision

from .base import Outcome, Progress, Request, usecase


class DecideRequest(Request):
    """What a reviewer asks to record; the rules (reason, override, roles, the pinned policy) are checked by
    `analysis.governance.decisions.decide` against the trail as it stands when it is signed."""

    USECASE: ClassVar[str] = "decide"

    ticket: str  # ticket id or unique prefix
    decision: Choice
    reason: str
    as_name: str | None = None  # the reviewer whose key signs (default $TICKETLAB_USER)
    override: bool = False
    override_reason: str | None = None
    baseline: str = "dense"

    def argv(self) -> list[str]:
        out = ["decide", self.ticket, self.decision.value, "--reason", self.reason]
        out += ["--as", self.as_name] if self.as_name else []
        out += ["--override"] if self.override else []
        out += ["--override-reason", self.override_reason] if self.override_reason else []
        return out + (["--baseline", self.baseline] if self.baseline != "dense" else [])


class DecideOutcome(Outcome):
    decision: Decision  # the signed record as the read model shows it
    repeated: bool  # the same request was recorded already (a rerun after a crash): nothing was written

    def as_dict(self) -> dict:
        """The decision's fields then `repeated` (what `ticketlab decide --json` prints, without `record`)."""
        return self.decision.as_dict() | {"repeated": self.repeated}


@usecase(DecideRequest)
def decide(request: DecideRequest, progress: Progress | None = None, *, signer=None, ledger=None) -> DecideOutcome:
    """`signer`: the reviewer's key already unlocked (the dashboard's signed-in person); else `as_name`'s key is
    unlocked here. `ledger`: the configured ledger unless given."""
    from analysis.governance import decisions, identity
    from analysis.ledger import Ledger

    signer = signer if signer is not None else identity.unlock(request.as_name)
    row = decisions.decide(ledger if ledger is not None else Ledger(), request.ticket, request.decision, signer,
                           request.reason, override=request.override, override_reason=request.override_reason,
                           baseline=request.baseline)
    return DecideOutcome(decision=Decision(**{k: v for k, v in row.items() if k != "repeated"}),
                         repeated=row["repeated"])
