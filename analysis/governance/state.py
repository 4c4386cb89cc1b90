"""The one read model of governance state: who is registered with which roles, the pinned policy, each
ticket's signed creator and latest decision, and the deployment pointer of each dense model.

Everything is a replay of the signed governance log (`chain.py`, judged by `replay.replay`), read on
one connection. Review, decide, deploy, export, report, `ticketlab tickets`, compare and the dashboard
read governance state here and nowhere else. Functions take a `Ledger`, a reader `Snapshot`, or a
`GovState` already loaded with `load` (so a page showing 50 tickets replays the log once).

The unsigned tables of the previous schema (`legacy_*`) are history only: `legacy_history` shows them,
they never make a ticket approved or deployed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pruning.errors import TicketLabError

from ..ledger import governance_store
from . import chain, people
from .policy import Policy, load_policy, parse_policy
from .reader import Snapshot, snapshot
from .record_types import APPROVE, MOVES, Decision, Move, record_json  # noqa: F401  (record_json re-exported)
from .replay import Trail, replay

DENSE = "dense"


@dataclass
class GovState:
    rows: list[dict]
    registry: people.Registry
    problems: dict[int, str]  # seq -> why that record is not what a registered key signed (integrity)
    link: tuple[int, str] | None  # first broken hash link (seq, why), or None
    voided: dict[int, str] = field(default_factory=dict)  # seq -> why a signed record counts for nothing
    trail: Trail = field(default_factory=Trail)  # what the valid records established (replay.Trail)
    tickets: dict[str, str] = field(default_factory=dict)  # ticket id -> dense sha256 (from the tickets table)
    legacy: dict[str, dict] = field(default_factory=dict)  # ticket id -> newest unsigned pre-signing decision

    @property
    def ledger_id(self) -> str | None:
        return self.registry.ledger_id

    @property
    def head(self) -> tuple[int, str]:
        return (self.rows[-1]["seq"], self.rows[-1]["row_hash"]) if self.rows else (0, chain.GENESIS)

    def signed(self, row: dict) -> bool:
        """The record counts: it is what its signer signed, and it abides by the rules (`replay`)."""
        return row["seq"] not in self.problems and row["seq"] not in self.voided and \
            (self.link is None or row["seq"] < self.link[0])

    def of_kind(self, *kinds: str) -> list[dict]:
        return [r for r in self.rows if r["kind"] in kinds]


@dataclass
class TicketState:
    ticket_id: str
    creator: str | None  # the signer of the ticket's creation record; None: nobody has signed for it
    review_status: str  # unreviewed | approved | rejected
    decided_by: str | None = None
    decided_at: object = None
    override: bool = False
    override_reason: str | None = None
    unmet_rules: list[str] = field(default_factory=list)  # rules failing or lacking evidence at the decision
    policy_sha256: str | None = None
    policy_version: int | None = None
    deployed: bool = False
    signed: bool = True  # every governance record about this ticket verifies (signature and role)
    decision_seq: int | None = None
    decision_hash: str | None = None
    creation_hash: str | None = None
    legacy_decision: dict | None = None  # newest unsigned decision from before signed governance


def load(ledger) -> GovState:
    """Replay the log once. On a reader Snapshot the result is kept: the snapshot cannot change under it."""
    if isinstance(ledger, GovState):
        return ledger
    cached = getattr(ledger, "_gov_state", None)
    if cached is not None:
        return cached
    with snapshot(ledger) as db:
        rows = governance_store.log_rows(db)
        tickets = governance_store.ticket_dense_hashes(db)
        legacy = governance_store.legacy_decisions_by_ticket(db)
    row, why = chain.link_problem(rows)
    link = (row["seq"], why) if row else None
    judged = replay(rows, upto=link[0] if link else None)
    out = GovState(rows, judged.registry, judged.problems, link, voided=judged.voided, trail=judged.trail,
                   tickets=tickets, legacy=legacy)
    if isinstance(ledger, Snapshot):
        ledger._gov_state = out
    return out


# --- people and policy ---------------------------------------------------------------------------
def roles(ledger) -> dict[str, set[str]]:
    return load(ledger).registry.roles()


def initialised(ledger) -> bool:
    return load(ledger).ledger_id is not None


def policy_versions(ledger) -> list[dict]:
    st = load(ledger)
    out = []
    for r in st.of_kind("policy"):
        if st.signed(r):
            b = chain.body_of(r)
            out.append({"version": b["version"], "name": b.get("name"), "sha256": b["sha256"], "text": b["text"],
                        "by": r["actor"], "at": r["signed_at"], "seq": r["seq"]})
    return out


def current_policy(ledger) -> Policy:
    """The policy in force: the newest policy an admin pinned with a valid signature."""
    versions = policy_versions(ledger)
    if not versions:
        raise TicketLabError("no policy is pinned in this ledger: an admin pins one with `ticketlab policy set FILE` "
                             "(`ticketlab init` pins the shipped default).")
    v = versions[-1]
    return parse_policy(v["text"], f"ledger policy v{v['version']}", v["sha256"])


def policy_in_force(ledger, policy: Policy | str | Path | None = None) -> Policy:
    """The one answer to "which policy is this read against", for the CLI, the dashboard, the scorecard,
    the verdict line, decisions and promotions: `policy` when given (a `Policy`, or a what-if file: a
    preview, which never decides), else the policy pinned in the ledger, else, for a ledger nobody has
    initialised, the default policy (`load_policy(None)`). An initialised ledger with no pinned policy is
    refused (`current_policy`'s error), never read against a default."""
    if isinstance(policy, Policy):
        return policy
    if policy:
        return load_policy(policy)
    if initialised(ledger):
        return current_policy(ledger)
    return load_policy(None)


def pinned_version(ledger) -> int | None:
    versions = policy_versions(ledger)
    return versions[-1]["version"] if versions else None


# --- tickets ---------------------------------------------------------------------------------------
def creation_of(ledger, ticket_id: str) -> dict | None:
    st = load(ledger)
    for r in st.of_kind("create"):
        if r["subject"] == ticket_id and st.signed(r):
            return r
    return None


def creator_of(ledger, ticket_id: str) -> str | None:
    r = creation_of(ledger, ticket_id)
    return r["actor"] if r else None


def _decision(st: GovState, r: dict) -> dict:
    return Decision.from_row(r, st.signed(r)).as_dict()


def decision_rows(ledger, ticket_id: str | None = None) -> list[dict]:
    st = load(ledger)
    return [_decision(st, r) for r in st.of_kind("decision") if ticket_id is None or r["subject"] == ticket_id]


def latest_decision(ledger, ticket_id: str) -> dict | None:
    rows = decision_rows(ledger, ticket_id)
    return rows[-1] if rows else None


def approval_of(ledger, ticket_id: str) -> dict | None:
    """The decision that makes a ticket approved now: its latest decision, if that is a signed approval."""
    d = latest_decision(ledger, ticket_id)
    return d if d and d["decision"] == APPROVE and d["signed"] else None


def ticket_state(ledger, ticket_id: str) -> TicketState:
    st = load(ledger)
    creation = creation_of(st, ticket_id)
    d = latest_decision(st, ticket_id)
    own = [r for r in st.rows if r["subject"] == ticket_id or
           (r["kind"] in MOVES and chain.body_of(r).get("target") == ticket_id)]
    out = TicketState(ticket_id=ticket_id, creator=creation["actor"] if creation else None,
                      review_status="unreviewed", creation_hash=creation["row_hash"] if creation else None,
                      signed=all(st.signed(r) for r in own), deployed=ticket_id in deployment_pointers(st).values(),
                      legacy_decision=st.legacy.get(ticket_id))
    if d is not None:
        out.review_status = "approved" if d["decision"] == APPROVE else "rejected"
        out.decided_by, out.decided_at = d["reviewer"], d["decided_at"]
        out.override, out.override_reason = d["override"], d["override_reason"]
        out.unmet_rules, out.policy_sha256, out.policy_version = d["unmet_rules"], d["policy_sha256"], d["policy_version"]
        out.decision_seq, out.decision_hash = d["seq"], d["row_hash"]
    return out


def ticket_states(ledger) -> dict[str, TicketState]:
    """Every ticket the ledger knows (or the log mentions), on one replay."""
    st = load(ledger)
    ids = set(st.tickets) | {r["subject"] for r in st.of_kind("create", "decision")}
    return {t: ticket_state(st, t) for t in sorted(ids)}


# --- deployments -----------------------------------------------------------------------------------
def _move(st: GovState, r: dict) -> dict:
    return Move.from_row(r, st.signed(r)).as_dict()


def moves(ledger, dense_sha256: str | None = None) -> list[dict]:
    st = load(ledger)
    out = [_move(st, r) for r in st.of_kind(*MOVES)]
    return [m for m in out if dense_sha256 is None or m["dense_sha256"] == dense_sha256]


def stack(ledger, dense_sha256: str) -> list[str]:
    """What was deployed, oldest first: a promotion pushes, a rollback pops back to its target (valid moves
    only: the replay keeps the stack)."""
    return list(load(ledger).trail.stack(dense_sha256))


def deployment_pointer(ledger, dense_sha256: str) -> str:
    """What serves for this dense model now: a ticket id, or "dense"."""
    return stack(ledger, dense_sha256)[-1]


def deployment_pointers(ledger) -> dict[str, str]:
    st = load(ledger)
    return {d: st.trail.pointer(d) for d in sorted(st.trail.stacks)}


def history(ledger, dense_sha256: str | None = None) -> list[dict]:
    return moves(ledger, dense_sha256)


# --- unsigned history ------------------------------------------------------------------------------
def legacy_history(ledger) -> dict[str, list[dict]]:
    """Decisions, deployment moves and creators recorded before signed governance (nobody signed them)."""
    with snapshot(ledger) as db:
        return governance_store.legacy_tables(db)
