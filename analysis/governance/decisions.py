"""Review decisions: signed records in the governance log, made under the policy pinned in the ledger.

Approving a ticket that fails a rule or lacks evidence needs an explicit, recorded override. Two
duties cannot be overridden: a ticket nobody has signed as creator cannot be approved, and its
creator may not approve it when the pinned policy says so. Those rules live in `replay.decision_problem`
(checked before signing and again by the audit); the evidence the policy was evaluated on (metric rows,
the achieved sparsity recomputed from the ticket's hash-checked files) is signed into the decision, so
the audit evaluates the policy again on exactly what the reviewer saw. A policy file given on the
command line or in the dashboard only previews (`review`); it never decides.
"""

from __future__ import annotations

from pruning import text
from pruning.errors import TicketLabError

from . import chain, records, replay, state
from .audit import audit, audit_message, require_intact  # noqa: F401  (report and dashboard read them here)
from .keys import Signer
from .record_types import APPROVE, CHOICES, Decision, DecisionBody
from .review import Review, evaluate, gather_evidence
from .state import approval_of, decision_rows, latest_decision  # noqa: F401  (re-exported)


def decide(ledger, ticket_ref: str, decision: str, reviewer: Signer, reason: str, *, override: bool = False,
           override_reason: str | None = None, baseline: str = "dense") -> dict:
    """Record a signed decision under the pinned policy. Idempotent: when the ticket's latest decision is this
    very request (a rerun after a crash that came after the commit), it is returned and nothing is written.
    The policy is evaluated once: the review made for the body is the one the rules check before signing."""
    if decision not in CHOICES:
        raise TicketLabError(f"decision must be {' or '.join(CHOICES)}, not {decision!r}.")
    if not isinstance(reviewer, Signer):
        raise TicketLabError("a decision is signed: pass the reviewer's unlocked key (identity.unlock), not a name.")
    if not (reason or "").strip():
        raise TicketLabError("a decision needs --reason: say why, for whoever audits it later.")
    if override and decision != APPROVE:
        raise TicketLabError("--override only applies to approvals.")
    if override and not (override_reason or "").strip():
        raise TicketLabError("--override needs --override-reason: why approve despite the policy?")
    text.require_plain(reason, "--reason")
    text.require_plain(override_reason or "", "--override-reason")
    asked: dict = {}

    def prepare(db, st: state.GovState):
        body, review = evaluated_decision(db, st, ticket_ref, decision, reviewer.name, reason, override,
                                          override_reason, baseline)
        tid = asked["tid"] = body["ticket_id"]
        last = st.trail.latest(tid)
        if last is not None and last["actor"] == reviewer.name and chain.body_of(last).get("request") == body["request"]:
            return None  # this very decision is the latest already: recorded by an earlier run
        return body, tid, review

    row = records.write(ledger, reviewer, "decision", prepare, doing=f"record a decision on {ticket_ref}")
    if row is None:
        latest = state.latest_decision(ledger, asked["tid"])
        return latest | {"repeated": True}
    # the record just written was checked against the trail it extends: it counts, no replay needed to say so
    return Decision.from_row(row, signed=True).as_dict() | {"repeated": False}


def decision_body(db, st: state.GovState, ticket_ref: str, decision: str, reviewer: str, reason: str,
                  override: bool, override_reason: str | None, baseline: str) -> dict:
    """The body of a decision, evaluated under the pinned policy on evidence gathered now and signed with it."""
    return evaluated_decision(db, st, ticket_ref, decision, reviewer, reason, override, override_reason, baseline)[0]


def evaluated_decision(db, st: state.GovState, ticket_ref: str, decision: str, reviewer: str, reason: str,
                       override: bool, override_reason: str | None, baseline: str) -> tuple[dict, Review]:
    """(the decision's body, the review of the pinned policy on its evidence): the review is passed on to the
    rules (`replay.decision_problem`), so one decision evaluates the policy once."""
    ticket = db.get_ticket(ticket_ref)
    tid = ticket["id"]
    pol = state.policy_in_force(st)
    creation = state.creation_of(st, tid)
    signed = chain.body_of(creation) if creation else ticket  # the creator signed these facts
    evidence = gather_evidence(db, ticket, baseline, pol)
    review = evaluate(pol, evidence, tid, signed["dense_sha256"], creation["actor"] if creation else None, reviewer)
    body = DecisionBody(
        ticket_id=tid, dense_sha256=signed["dense_sha256"], content_sha256=signed["content_sha256"],
        decision=decision, reason=reason.strip(), override=bool(override),
        override_reason=override_reason.strip() if override else None, baseline=baseline,
        policy_name=pol.name, policy_sha256=pol.sha256, policy_version=state.pinned_version(st),
        policy_results=review.to_json(), passed=review.passed,
        unmet_rules=list(dict.fromkeys(r.rule for r in review.failures)),
        creator=creation["actor"] if creation else None, creation_hash=creation["row_hash"] if creation else None,
        evidence=evidence, evidence_sha256=replay.evidence_digest(evidence), request="",
        like_for_like=review.like_for_like).to_body()
    body["request"] = request_key(body, reviewer)
    return body, review


def request_key(body: dict, reviewer: str) -> str:
    """What makes two decide calls the same request (`record_types.REQUEST_KEYS`)."""
    return DecisionBody.request_of(body, reviewer)
