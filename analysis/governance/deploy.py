"""The deployment pointer: per dense model, which ticket (or the dense model itself) is deployed.

Every move is a signed record by a person holding the deployer role; nothing is ever deleted. The
current state is a replay of the moves (`state.stack`): a promotion pushes a ticket, a rollback
returns to an earlier deployment (by default the one before the current), so rolling back twice walks
further back rather than flip-flopping. A promotion rests on a signed approval made under the policy
pinned now, and records that policy's hash. The rules of both moves are written once, in `replay.py`.
"""

from __future__ import annotations

from pruning import text
from pruning.errors import TicketLabError

from ..ledger import governance_store
from . import chain, records, state
from .keys import Signer
from .record_types import Move, PromoteBody, RollbackBody
from .review import evaluate, gather_evidence
from .state import DENSE, history, moves, stack  # noqa: F401  (re-exported for callers of the old API)


def current(ledger, dense_sha256: str) -> str:
    return state.deployment_pointer(ledger, dense_sha256)


def _need(by: Signer, reason: str) -> None:
    if not isinstance(by, Signer):
        raise TicketLabError("a deployment move is signed: pass the deployer's unlocked key, not a name.")
    if not (reason or "").strip():
        raise TicketLabError("a deployment move needs --reason: say why, for whoever audits it later.")
    text.require_plain(reason, "--reason")


def promote(ledger, ticket_ref: str, by: Signer, reason: str) -> dict:
    """Deploy an approved ticket for its own dense model. The rules (approved under the policy pinned now,
    the ticket's own model, no rule failing now that the approval did not override) are
    `replay.promote_problem`, checked before signing and by the audit; retried on a moved trail."""
    _need(by, reason)
    asked: dict = {}

    def prepare(db, st):
        return _promotion(db, st, ticket_ref, reason, by.name, asked)

    row = records.write(ledger, by, "promote", prepare, doing=f"promote {ticket_ref}")
    return _written(ledger, row, asked["dense"])


def _written(ledger, row: dict | None, dense: str) -> dict:
    """The move just written (checked against the trail it extends, so it counts: no replay to say so), or,
    when an earlier run had made it already, that move."""
    return Move.from_row(row, signed=True).as_dict() if row is not None else moves(ledger, dense)[-1]


def _repeated(st: state.GovState, dense: str, kind: str, target: str, reason: str, actor: str | None = None) -> bool:
    """The last valid move of this model is this very move (a rerun of a command killed after its commit)."""
    last = next((m for m in reversed(moves(st, dense)) if m["signed"]), None)
    return bool(last and last["action"] == kind and last["target"] == target == st.trail.pointer(dense)
                and last["reason"] == reason.strip() and (actor is None or last["by_user"] == actor))


def _promotion(ledger, st: state.GovState, ticket_ref: str, reason: str, actor: str,
               asked: dict) -> tuple[dict, str] | None:
    ticket = ledger.get_ticket(ticket_ref)
    tid = ticket["id"]
    creation = state.creation_of(st, tid)
    signed = chain.body_of(creation) if creation else ticket  # the creator signed the ticket's model and content
    dense = signed["dense_sha256"]
    asked["dense"] = dense
    if _repeated(st, dense, "promote", tid, reason, actor):
        return None  # promoted by an earlier run of this very command
    approval, pol = state.approval_of(st, tid), state.policy_in_force(st)
    unmet: list[str] = []
    passed = False
    if approval is not None and approval["policy_sha256"] == pol.sha256:
        # the pinned policy is evaluated again on today's evidence: a rule failing now that the approval did
        # not knowingly override (new or worse results since) sends the ticket back to a reviewer
        review = evaluate(pol, gather_evidence(ledger, ticket, approval["baseline"] or "dense", pol), tid, dense,
                          creation["actor"] if creation else None, approval["reviewer"])
        unmet, passed = list(dict.fromkeys(r.rule for r in review.failures)), review.passed
    body = PromoteBody(dense_sha256=dense, target=tid, content_sha256=signed["content_sha256"],
                       previous=st.trail.pointer(dense), reason=reason.strip(),
                       decision_hash=approval["row_hash"] if approval else "", policy_sha256=pol.sha256,
                       policy_passed=passed, unmet_rules=unmet)
    return body.to_body(), dense


def _dense_for(st: state.GovState, ledger, model: str | None) -> str:
    have = sorted(st.trail.stacks)
    if model:
        hits = [d for d in have if d.startswith(model)]
        if not hits:
            hits = [w for w in governance_store.weights_of_spec(ledger, model) if w in have]
        if len(hits) != 1:
            raise TicketLabError(f"--model {model!r} names {'no' if not hits else 'more than one'} dense model with "
                                 f"deployments; known: {', '.join(h[:12] for h in have) or 'none'}.")
        return hits[0]
    if not have:
        raise TicketLabError("nothing has been promoted yet, so there is nothing to roll back.")
    if len(have) > 1:
        raise TicketLabError(f"several dense models have deployments ({', '.join(h[:12] for h in have)}): "
                             f"say which with --model HASH-PREFIX or --to TICKET.")
    return have[0]


def rollback(ledger, by: Signer, reason: str, to: str | None = None, model: str | None = None) -> dict:
    """Return to the previous deployment (or `to`: dense or a ticket deployed before for this model and not
    rejected since: `replay.rollback_problem`). Retried on a moved trail."""
    _need(by, reason)

    asked: dict = {}

    def prepare(db, st):
        to_, dense = _rollback_target(st, db, to, model)
        asked["dense"] = dense
        if to and _repeated(st, dense, "rollback", to_, reason, by.name):
            return None  # an explicit --to already done by an earlier run of this very command
        return RollbackBody(dense_sha256=dense, target=to_, previous=st.trail.pointer(dense),
                            reason=reason.strip()).to_body(), dense

    row = records.write(ledger, by, "rollback", prepare, doing=f"roll back to {to or 'the previous deployment'}")
    return _written(ledger, row, asked["dense"])


def _rollback_target(st: state.GovState, ledger, to: str | None, model: str | None) -> tuple[str, str]:
    """(target, dense model); whether that target may be deployed again is the rules' question."""
    if to and to != DENSE:
        ticket = ledger.get_ticket(to)
        creation = state.creation_of(st, ticket["id"])
        return ticket["id"], (chain.body_of(creation) if creation else ticket)["dense_sha256"]
    dense = _dense_for(st, ledger, model)
    if to is None:
        s = stack(st, dense)
        if len(s) < 2:
            raise TicketLabError(f"nothing to roll back to: the dense model {dense[:12]} itself is deployed.")
        return s[-2], dense
    return to, dense


def format_history(rows: list[dict]) -> str:
    if not rows:
        return "no deployment moves yet: every dense model serves itself."
    lines = [f"{'#':>3} {'when (UTC)':<19} {'model':<12} {'action':<8} {'from':<16} {'to':<16} {'by':<12} why"]
    for r in rows:
        mark = "" if r["signed"] else "  [SIGNATURE DOES NOT VERIFY]"
        lines.append(f"{r['seq']:>3} {str(r['moved_at'])[:19]:<19} {r['dense_sha256'][:12]:<12} {r['action']:<8} "
                     f"{r['previous']:<16} {r['target']:<16} {r['by_user']:<12} {r['reason']}{mark}")
    return "\n".join(lines)
