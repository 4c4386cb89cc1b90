"""The deployment pointer: per dense model, which ticket (or the dense model itself) is deployed.

Every move is a signed record by a person holding the deployer role; nothing is ever deleted. The
current state is a replay of the moves (`state.stack`): a promotion pushes a ticket, a rollback
returns to an earlier deployment (by default the one before the current), so rolling back twice walks
further back rather than flip-flopping. A promotion rests on a signed approval made under the policy
pinned now, and records that policy's hash.
"""

from __future__ import annotations

from pruning.errors import TicketLabError

from . import records, state
from .audit import require_intact
from .keys import Signer
from .reader import snapshot
from .review import review_ticket
from .state import DENSE, history, moves, stack  # noqa: F401  (re-exported for callers of the old API)


def current(ledger, dense_sha256: str) -> str:
    return state.deployment_pointer(ledger, dense_sha256)


def _need(by: Signer, reason: str) -> None:
    if not isinstance(by, Signer):
        raise TicketLabError("a deployment move is signed: pass the deployer's unlocked key, not a name.")
    if not (reason or "").strip():
        raise TicketLabError("a deployment move needs --reason: say why, for whoever audits it later.")


def _ready(ledger, by: Signer, kind: str) -> state.GovState:
    st = state.load(ledger)
    if st.ledger_id is None:
        raise records.not_initialised(ledger)
    require_intact(ledger, "move the deployment")  # a tampered trail explains itself before any other refusal
    records.require_actor(st, by, kind)
    return st


def promote(ledger, ticket_ref: str, by: Signer, reason: str) -> dict:
    _need(by, reason)
    with snapshot(ledger) as db:
        body = _promotion(db, ticket_ref, by, reason)
    records.write(ledger, by, "promote", body, body["dense_sha256"], doing=f"promote {body['target']}")
    return moves(ledger, body["dense_sha256"])[-1]


def _promotion(ledger, ticket_ref: str, by: Signer, reason: str) -> dict:
    st = _ready(ledger, by, "promote")
    ticket = ledger.get_ticket(ticket_ref)
    tid, dense = ticket["id"], ticket["dense_sha256"]
    approval, last = state.approval_of(st, tid), state.latest_decision(st, tid)
    if approval is None:
        why = f"its latest decision is {last['decision']} (#{last['seq']})" if last else "it has no decision"
        raise TicketLabError(f"only approved tickets can be promoted: {tid} is not approved ({why}). See "
                             f"`ticketlab review` and `ticketlab decide`.")
    pol = state.current_policy(st)
    if approval["policy_sha256"] != pol.sha256:
        raise TicketLabError(f"{tid} was approved under policy {approval['policy_sha256'][:12]} (v{approval['policy_version']}), "
                             f"but the pinned policy is now {pol.name} {pol.sha256[:12]} (v{state.pinned_version(st)}): "
                             f"a reviewer must decide again under it before it can be promoted.")
    now = state.deployment_pointer(st, dense)
    if now == tid:
        raise TicketLabError(f"{tid} is already deployed for dense model {dense[:12]}.")
    # the pinned policy is evaluated again on today's evidence: a rule failing now that the approval did not
    # knowingly override (new or worse results since) sends the ticket back to a reviewer
    review = review_ticket(ledger, tid, baseline=approval["baseline"] or "dense", policy=pol,
                           reviewer=approval["reviewer"])
    unmet = list(dict.fromkeys(r.rule for r in review.failures))
    new = [r for r in unmet if r not in approval["unmet_rules"]]
    if new:
        raise TicketLabError(f"{tid} now fails {', '.join(new)} under the pinned policy {pol.name}, which its approval "
                             f"(decision #{approval['seq']}) did not override: a reviewer must decide again.")
    return {"dense_sha256": dense, "target": tid, "previous": now, "reason": reason.strip(),
            "decision_hash": approval["row_hash"], "policy_sha256": pol.sha256, "policy_passed": review.passed,
            "unmet_rules": unmet}


def _dense_for(st: state.GovState, ledger, model: str | None) -> str:
    have = sorted({m["dense_sha256"] for m in moves(st)})
    if model:
        hits = [d for d in have if d.startswith(model)]
        if not hits:
            spec = ledger.query("SELECT weights_sha256 FROM models WHERE spec = ?", [model])
            hits = [r["weights_sha256"] for r in spec if r["weights_sha256"] in have]
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
    """Return to the previous deployment (or `to`: dense or a ticket deployed before for this model)."""
    _need(by, reason)
    with snapshot(ledger) as db:
        st = _ready(db, by, "rollback")
        to, dense, now = _rollback_target(st, db, to, model)
    body = {"dense_sha256": dense, "target": to, "previous": now, "reason": reason.strip()}
    records.write(ledger, by, "rollback", body, dense, doing=f"roll back to {to}")
    return moves(ledger, dense)[-1]


def _rollback_target(st: state.GovState, ledger, to: str | None, model: str | None) -> tuple[str, str, str]:
    """(target, dense model, currently deployed), or a clear error why there is no valid target."""
    if to and to != DENSE:
        ticket = ledger.get_ticket(to)
        to, dense = ticket["id"], ticket["dense_sha256"]
    else:
        dense = _dense_for(st, ledger, model)
    s = stack(st, dense)
    now = s[-1]
    if to is None:
        if len(s) < 2:
            raise TicketLabError(f"nothing to roll back to: the dense model {dense[:12]} itself is deployed.")
        to = s[-2]
    if to == now:
        raise TicketLabError(f"{to} is already deployed for dense model {dense[:12]}.")
    if to != DENSE:
        if to not in {m["target"] for m in moves(st, dense) if m["signed"]}:
            raise TicketLabError(f"{to} was never deployed for dense model {dense[:12]}: rollback returns to an "
                                 f"earlier deployment; use `ticketlab promote` for a new one.")
        last = state.latest_decision(st, to)
        if last is not None and last["decision"] == "reject":
            raise TicketLabError(f"{to} was rejected after it was deployed (decision #{last['seq']} by "
                                 f"{last['reviewer']}); roll back to another one, e.g. --to dense.")
    return to, dense, now


def format_history(rows: list[dict]) -> str:
    if not rows:
        return "no deployment moves yet: every dense model serves itself."
    lines = [f"{'#':>3} {'when (UTC)':<19} {'model':<12} {'action':<8} {'from':<16} {'to':<16} {'by':<12} why"]
    for r in rows:
        mark = "" if r["signed"] else "  [SIGNATURE DOES NOT VERIFY]"
        lines.append(f"{r['seq']:>3} {str(r['moved_at'])[:19]:<19} {r['dense_sha256'][:12]:<12} {r['action']:<8} "
                     f"{r['previous']:<16} {r['target']:<16} {r['by_user']:<12} {r['reason']}{mark}")
    return "\n".join(lines)
