"""The governance records, typed: the one place that spells each record kind's keys.

A *body* is what a person signs (`chain.append` stores it as canonical JSON): `DecisionBody`,
`PromoteBody`, `RollbackBody`, `RegisterBody`, ... Its fields are declared once here, in the order the
writers have always used; `required` (the fields declared with `checked(types)`) is what the audit replay
insists on (`replay.body_problem`), the other fields are carried but optional, because records signed
before they existed lack them. `to_body()` is exactly the dict that is signed, so the canonical bytes, hashes
and signatures of records written through these types are those of the records written before them.

A field added after records were signed without it is declared `added()`: absent from those records (and
from their `to_body()`), present in every new one.

A *view* is what the read model shows of a signed row (`state.decision_rows`, `state.moves`): `Decision`
and `Move`, built from the row and its body here, carried by the use cases, printed by the CLI and drawn by
the dashboard. Adding a field to a decision: one field on `DecisionBody` (and `Decision`, to show it), its
value where the decision is made (`decisions.decision_body`).
"""

from __future__ import annotations

import hashlib
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar


class Choice(StrEnum):
    """What a reviewer decides. A `str`: signed bodies and JSON carry the plain word."""
    APPROVE = "approve"
    REJECT = "reject"


APPROVE, REJECT = Choice.APPROVE.value, Choice.REJECT.value
CHOICES = (APPROVE, REJECT)


def checked(*types: type, default: Any = MISSING) -> Any:
    """A body field the replay requires, of one of `types` (bool is not an int there)."""
    return field(metadata={"types": types}, default=default)


def carried(default: Any = None) -> Any:
    """A body field that is signed when present, but that older records may lack."""
    return field(default=default)


def added() -> Any:
    """A carried field added after records were signed without it: left out of `to_body` when it is None, so
    an older record read into its typed body and written back out is still the bytes that were signed."""
    return field(default=None, metadata={"added": True})


@dataclass(frozen=True, kw_only=True)
class Body:
    """A record body: `KIND` is the record kind it is signed as."""
    KIND: ClassVar[str] = ""

    def to_body(self) -> dict:
        """The dict that is signed (every declared field, in declaration order)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not (f.metadata.get("added") and getattr(self, f.name) is None)}

    @classmethod
    def from_body(cls, body: dict):
        """The typed body of a stored record (a field the record lacks reads as its default)."""
        return cls(**{f.name: body[f.name] for f in fields(cls) if f.name in body})

    @classmethod
    def required(cls) -> dict[str, tuple[type, ...]]:
        return {f.name: f.metadata["types"] for f in fields(cls) if "types" in f.metadata}


@dataclass(frozen=True, kw_only=True)
class InitBody(Body):
    KIND: ClassVar[str] = "init"
    ledger_id: str = checked(str)
    person: dict = checked(dict)
    witness: str | None = carried()


@dataclass(frozen=True, kw_only=True)
class RegisterBody(Body):
    """A registration: a person, their public key, their roles."""
    KIND: ClassVar[str] = "register"
    name: str = checked(str)
    public_key: str = checked(str)
    roles: list = checked(list)


@dataclass(frozen=True, kw_only=True)
class RolesBody(Body):
    KIND: ClassVar[str] = "roles"
    name: str = checked(str)
    roles: list = checked(list)


@dataclass(frozen=True, kw_only=True)
class RevokeBody(Body):
    KIND: ClassVar[str] = "revoke"
    name: str = checked(str)
    key_id: str = checked(str)
    reason: str = checked(str)


@dataclass(frozen=True, kw_only=True)
class PolicyBody(Body):
    KIND: ClassVar[str] = "policy"
    version: int = checked(int)
    name: str | None = carried()
    sha256: str = checked(str)
    text: str = checked(str)


@dataclass(frozen=True, kw_only=True)
class CreateBody(Body):
    KIND: ClassVar[str] = "create"
    ticket_id: str = checked(str)
    dense_sha256: str = checked(str)
    content_sha256: str = checked(str)
    method: str = checked(str)
    how: str | None = carried()


# what makes two decide calls the same request (`DecisionBody.request_of`)
REQUEST_KEYS = ("ticket_id", "content_sha256", "decision", "reason", "override", "override_reason", "baseline",
                "policy_sha256", "evidence_sha256")


@dataclass(frozen=True, kw_only=True)
class DecisionBody(Body):
    """A signed review decision, with the evidence it was evaluated on and the policy's result."""
    KIND: ClassVar[str] = "decision"
    ticket_id: str = checked(str)
    dense_sha256: str = checked(str)
    content_sha256: str = checked(str)
    decision: str = checked(str)
    reason: str = checked(str)
    override: bool = checked(bool)
    override_reason: str | None = checked(str, type(None))
    baseline: str = checked(str)
    policy_name: str | None = carried()
    policy_sha256: str = checked(str)
    policy_version: int | None = carried()
    policy_results: dict | None = carried()
    passed: bool = checked(bool)
    unmet_rules: list = checked(list)
    creator: str | None = carried()
    creation_hash: str | None = checked(str, type(None))
    evidence: dict = checked(dict)
    evidence_sha256: str = checked(str)
    request: str = checked(str)
    # the like-for-like rule the evidence was evaluated under (`analysis.like_for_like`): absent = rule 1, the
    # rule of decisions signed before evidence rows carried their setup; the replay evaluates each under its own
    like_for_like: int | None = added()

    @staticmethod
    def request_of(body: dict, reviewer: str) -> str:
        """Who, on what evidence, under which policy, deciding what and why: a rerun of a decide that was
        killed after its commit has the same key."""
        from .chain import canonical

        return hashlib.sha256(canonical({"reviewer": reviewer, **{k: body[k] for k in REQUEST_KEYS}})).hexdigest()


@dataclass(frozen=True, kw_only=True)
class PromoteBody(Body):
    """A promotion: `target` deployed for its dense model, resting on its approval under the pinned policy."""
    KIND: ClassVar[str] = "promote"
    dense_sha256: str = checked(str)
    target: str = checked(str)
    content_sha256: str = checked(str)
    previous: str = checked(str)
    reason: str = checked(str)
    decision_hash: str = checked(str)
    policy_sha256: str = checked(str)
    policy_passed: bool | None = carried()
    unmet_rules: list = checked(list)


@dataclass(frozen=True, kw_only=True)
class RollbackBody(Body):
    KIND: ClassVar[str] = "rollback"
    dense_sha256: str = checked(str)
    target: str = checked(str)
    previous: str = checked(str)
    reason: str = checked(str)


BODIES: dict[str, type[Body]] = {c.KIND: c for c in (InitBody, RegisterBody, RolesBody, RevokeBody, PolicyBody,
                                                      CreateBody, DecisionBody, PromoteBody, RollbackBody)}
MOVES = (PromoteBody.KIND, RollbackBody.KIND)


def record_json(r: dict) -> dict:
    """A record as carried in a bundle: enough to re-check its hash and signature without the ledger."""
    from . import chain  # kept light at import: the CLI reads CHOICES when it builds its parser

    return {k: (chain._at(r[k]) if k == "signed_at" else r[k]) for k in (*chain.FIELDS, "row_hash", "signature")}


@dataclass(frozen=True, kw_only=True)
class Decision:
    """A decision record as the read model shows it (`state.decision_rows`); `signed`: it counts."""
    seq: int
    ticket_id: str
    dense_sha256: str | None
    decision: str | None
    reviewer: str
    reason: str | None
    override: bool
    override_reason: str | None
    baseline: str | None
    policy_name: str | None
    policy_sha256: str | None
    policy_version: int | None
    policy_results: Any
    passed: bool
    unmet_rules: list
    decided_at: Any
    row_hash: str
    key_id: str
    signed: bool
    record: dict

    # what a bundle's manifest carries of the latest decision (`export`), beside the signed record itself
    MANIFEST: ClassVar[tuple[str, ...]] = ("seq", "decision", "reviewer", "reason", "override", "override_reason",
                                           "baseline", "policy_name", "policy_sha256", "policy_version", "unmet_rules",
                                           "decided_at", "row_hash")

    @classmethod
    def from_row(cls, r: dict, signed: bool) -> Decision:
        from .chain import body_of

        b = body_of(r)
        return cls(seq=r["seq"], ticket_id=r["subject"], dense_sha256=b.get("dense_sha256"),
                   decision=b.get("decision"), reviewer=r["actor"], reason=b.get("reason"),
                   override=bool(b.get("override")), override_reason=b.get("override_reason"),
                   baseline=b.get("baseline"), policy_name=b.get("policy_name"),
                   policy_sha256=b.get("policy_sha256"), policy_version=b.get("policy_version"),
                   policy_results=b.get("policy_results"), passed=bool(b.get("passed")),
                   unmet_rules=list(b.get("unmet_rules") or []), decided_at=r["signed_at"], row_hash=r["row_hash"],
                   key_id=r["key_id"], signed=signed, record=record_json(r))

    @property
    def approves(self) -> bool:
        return self.decision == APPROVE

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def manifest(self) -> dict:
        return {k: getattr(self, k) for k in self.MANIFEST}


@dataclass(frozen=True, kw_only=True)
class Move:
    """A deployment move (promotion or rollback) as the read model shows it (`state.moves`)."""
    seq: int
    moved_at: Any
    dense_sha256: str | None
    action: str
    previous: str | None
    target: str | None
    by_user: str
    reason: str | None
    decision_hash: str | None
    policy_sha256: str | None
    row_hash: str
    signed: bool

    @classmethod
    def from_row(cls, r: dict, signed: bool) -> Move:
        from .chain import body_of

        b = body_of(r)
        return cls(seq=r["seq"], moved_at=r["signed_at"], dense_sha256=b.get("dense_sha256"), action=r["kind"],
                   previous=b.get("previous"), target=b.get("target"), by_user=r["actor"], reason=b.get("reason"),
                   decision_hash=b.get("decision_hash"), policy_sha256=b.get("policy_sha256"),
                   row_hash=r["row_hash"], signed=signed)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
