"""Review decisions: signed records in the governance log, made under the policy pinned in the ledger.

Approving a ticket that fails a rule or lacks evidence needs an explicit, recorded override. Two
duties cannot be overridden: a ticket nobody has signed as creator cannot be approved, and its
creator may not approve it when the pinned policy says so. A policy file given on the command line
or in the dashboard only previews (`review`); it never decides.
"""

from __future__ import annotations

from pruning.errors import TicketLabError

from . import records, state
from .audit import audit, audit_message, require_intact  # noqa: F401  (report and dashboard read them here)
from .keys import Signer
from .reader import snapshot
from .review import FAIL, Review, review_ticket
from .state import approval_of, decision_rows, latest_decision  # noqa: F401  (re-exported)


def decide(ledger, ticket_ref: str, decision: str, reviewer: Signer, reason: str, *, override: bool = False,
           override_reason: str | None = None, baseline: str = "dense") -> dict:
    return records.retrying(lambda: _decide(ledger, ticket_ref, decision, reviewer, reason, override=override,
                                            override_reason=override_reason, baseline=baseline))


def _decide(ledger, ticket_ref: str, decision: str, reviewer: Signer, reason: str, *, override: bool,
            override_reason: str | None, baseline: str) -> dict:
    if decision not in ("approve", "reject"):
        raise TicketLabError(f"decision must be approve or reject, not {decision!r}.")
    if not isinstance(reviewer, Signer):
        raise TicketLabError("a decision is signed: pass the reviewer's unlocked key (identity.unlock), not a name.")
    if not (reason or "").strip():
        raise TicketLabError("a decision needs --reason: say why, for whoever audits it later.")
    if override and decision != "approve":
        raise TicketLabError("--override only applies to approvals.")
    if override and not (override_reason or "").strip():
        raise TicketLabError("--override needs --override-reason: why approve despite the policy?")
    with snapshot(ledger) as db:  # one read connection for every check; closed before the write
        st = state.load(db)
        if st.ledger_id is None:
            raise records.not_initialised(db)
        require_intact(db, "record a decision")
        records.require_actor(st, reviewer, "decision")
        ticket = db.get_ticket(ticket_ref)
        tid = ticket["id"]
        pol = state.current_policy(st)
        creation = state.creation_of(st, tid)
        if decision == "approve":
            if creation is None:
                raise TicketLabError(f"{tid} cannot be approved: nobody has signed as its creator (it was recorded by "
                                     f"`ticketlab eval`, an experiment or a dashboard Load). Its creator signs for it "
                                     f"with `ticketlab sign-ticket {tid}` first; this cannot be overridden.")
            if creation["actor"] == reviewer.name and not pol.creator_may_approve:
                raise TicketLabError(f"{reviewer.name} may not approve {tid}: {reviewer.name} signed its creation "
                                     f"(record #{creation['seq']}) and the pinned policy {pol.name} separates duties; "
                                     f"this cannot be overridden.")
        review = review_ticket(db, tid, baseline=baseline, policy=pol, reviewer=reviewer.name)
    if decision == "approve":
        _check_approval(review, override)
    unmet = list(dict.fromkeys(r.rule for r in review.failures))
    body = {"ticket_id": tid, "dense_sha256": ticket["dense_sha256"], "decision": decision, "reason": reason.strip(),
            "override": bool(override), "override_reason": override_reason.strip() if override else None,
            "baseline": baseline, "policy_name": pol.name, "policy_sha256": pol.sha256,
            "policy_version": state.pinned_version(st), "policy_results": review.to_json(), "passed": review.passed,
            "unmet_rules": unmet, "creator": creation["actor"] if creation else None,
            "creation_hash": creation["row_hash"] if creation else None}
    row = records.write(ledger, reviewer, "decision", body, tid, doing=f"record a decision on {tid}")
    return state.latest_decision(ledger, tid) | {"row_hash": row["row_hash"]}


def _check_approval(review: Review, override: bool) -> None:
    hard = [r for r in review.results if r.status == FAIL and not r.overridable]
    if hard:
        raise TicketLabError(f"{review.reviewer} may not approve {review.ticket}: {hard[0].detail} ({hard[0].limit}); "
                             f"this cannot be overridden.")
    failing = review.failures
    if failing and not override:
        listed = ", ".join(f"{r.rule} {r.item}: {r.status}{' (indicative)' if r.indicative else ''}"
                           for r in failing[:6])
        more = f" and {len(failing) - 6} more" if len(failing) > 6 else ""
        raise TicketLabError(f"{review.ticket} does not pass the pinned policy {review.policy['name']} ({listed}{more}); "
                             f"approving it needs --override --override-reason TEXT, which is recorded. See "
                             f"`ticketlab review`.")
    if override and not failing:
        raise TicketLabError(f"{review.ticket} passes the pinned policy {review.policy['name']}: there is nothing to "
                             f"override; drop --override.")
