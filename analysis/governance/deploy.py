"""The deployment pointer: per dense model, which ticket (or the dense model itself) is deployed.

Every move is an appended, hash-chained row; nothing is ever deleted. The current state is a replay
of the moves: a promotion pushes a ticket, a rollback returns to an earlier deployment (by default
the one before the current), so rolling back twice walks further back rather than flip-flopping.
"""

from __future__ import annotations

from pruning.errors import TicketLabError

from ..ledger import Ledger, _now
from . import chain
from .decisions import DEPLOY_FIELDS, approval_of, latest_decision, require_intact
from .reader import snapshot

DENSE = "dense"


def moves(ledger: Ledger, dense_sha256: str | None = None) -> list[dict]:
    if dense_sha256:
        return ledger.query("SELECT * FROM deployments WHERE dense_sha256 = ? ORDER BY seq", [dense_sha256])
    return ledger.query("SELECT * FROM deployments ORDER BY seq")


def stack(ledger: Ledger, dense_sha256: str) -> list[str]:
    s = [DENSE]
    for m in moves(ledger, dense_sha256):
        if m["action"] == "rollback" and m["target"] in s:
            del s[s.index(m["target"]) + 1:]
        else:
            s.append(m["target"])
    return s


def current(ledger: Ledger, dense_sha256: str) -> str:
    return stack(ledger, dense_sha256)[-1]


def _append(ledger: Ledger, row: dict) -> dict:
    with ledger.transaction() as con:
        return chain.append(con, "deployments", row, DEPLOY_FIELDS)


def _need(by: str, reason: str) -> None:
    if not (by or "").strip():
        raise TicketLabError("say who is moving the deployment (--by NAME).")
    if not (reason or "").strip():
        raise TicketLabError("a deployment move needs --reason: say why, for whoever audits it later.")


def promote(ledger: Ledger, ticket_ref: str, by: str, reason: str) -> dict:
    _need(by, reason)
    with snapshot(ledger) as db:
        ticket = db.get_ticket(ticket_ref)
        require_intact(db, f"promote {ticket['id']}")
        approval = approval_of(db, ticket["id"])
        last = latest_decision(db, ticket["id"])
        dense = ticket["dense_sha256"]
        now = current(db, dense)
    if approval is None:
        state = f"its latest decision is {last['decision']} (#{last['seq']})" if last else "it has no decision"
        raise TicketLabError(f"only approved tickets can be promoted: {ticket['id']} is not approved ({state}). "
                             f"See `ticketlab review` and `ticketlab decide`.")
    if now == ticket["id"]:
        raise TicketLabError(f"{ticket['id']} is already deployed for dense model {dense[:12]}.")
    return _append(ledger, {"dense_sha256": dense, "action": "promote", "target": ticket["id"], "previous": now,
                            "by_user": by.strip(), "reason": reason.strip(), "decision_hash": approval["row_hash"],
                            "moved_at": _now()})


def _dense_for(ledger: Ledger, model: str | None) -> str:
    have = sorted({m["dense_sha256"] for m in moves(ledger)})
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


def rollback(ledger: Ledger, by: str, reason: str, to: str | None = None, model: str | None = None) -> dict:
    """Return to the previous deployment (or `to`: dense or a ticket deployed before for this model)."""
    _need(by, reason)
    with snapshot(ledger) as db:
        to, dense, now = _rollback_target(db, to, model)
    return _append(ledger, {"dense_sha256": dense, "action": "rollback", "target": to, "previous": now,
                            "by_user": by.strip(), "reason": reason.strip(), "decision_hash": None,
                            "moved_at": _now()})


def _rollback_target(db, to: str | None, model: str | None) -> tuple[str, str, str]:
    """(target, dense model, currently deployed), or a clear error why there is no valid target."""
    if to and to != DENSE:
        ticket = db.get_ticket(to)
        to, dense = ticket["id"], ticket["dense_sha256"]
    else:
        dense = _dense_for(db, model)
    s = stack(db, dense)
    now = s[-1]
    if to is None:
        if len(s) < 2:
            raise TicketLabError(f"nothing to roll back to: the dense model {dense[:12]} itself is deployed.")
        to = s[-2]
    if to == now:
        raise TicketLabError(f"{to} is already deployed for dense model {dense[:12]}.")
    if to != DENSE:
        if to not in {m["target"] for m in moves(db, dense)}:
            raise TicketLabError(f"{to} was never deployed for dense model {dense[:12]}: rollback returns to an "
                                 f"earlier deployment; use `ticketlab promote` for a new one.")
        last = latest_decision(db, to)
        if last is not None and last["decision"] == "reject":
            raise TicketLabError(f"{to} was rejected after it was deployed (decision #{last['seq']} by "
                                 f"{last['reviewer']}); roll back to another one, e.g. --to dense.")
    return to, dense, now


def history(ledger: Ledger, dense_sha256: str | None = None) -> list[dict]:
    rows = moves(ledger, dense_sha256)
    return [{k: r[k] for k in ("seq", "moved_at", "dense_sha256", "action", "previous", "target", "by_user",
                               "reason", "decision_hash", "row_hash")} for r in rows]


def format_history(rows: list[dict]) -> str:
    if not rows:
        return "no deployment moves yet: every dense model serves itself."
    lines = [f"{'#':>3} {'when (UTC)':<19} {'model':<12} {'action':<8} {'from':<16} {'to':<16} {'by':<12} why"]
    for r in rows:
        lines.append(f"{r['seq']:>3} {str(r['moved_at'])[:19]:<19} {r['dense_sha256'][:12]:<12} {r['action']:<8} "
                     f"{r['previous']:<16} {r['target']:<16} {r['by_user']:<12} {r['reason']}")
    return "\n".join(lines)
