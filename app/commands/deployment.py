"""`ticketlab promote`, `ticketlab rollback` and `ticketlab history`: the per-model deployment pointer.
Moves are signed with a deployer's key (`--as NAME`)."""

from __future__ import annotations

import json


def add_parser(sub, parent):
    p = sub.add_parser("promote", parents=[parent], help="deploy an approved ticket for its dense model (deployer)")
    p.add_argument("ticket", help="ticket id or unique prefix")
    r = sub.add_parser("rollback", parents=[parent], help="go back to the previous deployment (deployer; nothing is "
                                                           "deleted)")
    r.add_argument("--to", help="dense, or a ticket deployed before for the same model (default: the previous one)")
    r.add_argument("--model", help="dense weight hash prefix or spec, when several models have deployments")
    for q in (p, r):
        q.add_argument("--as", "--by", dest="as_name",
                       help="the deployer (default $TICKETLAB_USER or the OS user); their key signs the move")
        q.add_argument("--reason", required=True)
        q.add_argument("--json", action="store_true")
    h = sub.add_parser("history", parents=[parent], help="every deployment move: who, when, why")
    h.add_argument("--model", help="only this dense weight hash (prefix)")
    h.add_argument("--json", action="store_true")
    return [p, r, h]


def run(args) -> int:
    from analysis.governance import deploy
    from analysis.ledger import Ledger

    if args.command == "history":
        rows = deploy.history(Ledger())
        if args.model:
            rows = [r for r in rows if r["dense_sha256"].startswith(args.model)]
        print(json.dumps(rows, indent=2, default=str) if args.json else deploy.format_history(rows))
        return 0
    from usecases import promote as moves

    row = (moves.promote if args.command == "promote" else moves.rollback)(request_from_args(args)).move.as_dict()
    if args.json:
        print(json.dumps(row, indent=2, default=str))
    else:
        print(f"{row['action']} #{row['seq']}: dense model {row['dense_sha256'][:12]} now serves {row['target']} "
              f"(was {row['previous']}), signed by {row['by_user']}")
    return 0


def request_from_args(args):
    """`ticketlab promote` / `rollback`'s typed request (history records nothing)."""
    if args.command not in ("promote", "rollback"):
        return None
    from app.cli import request_of
    from usecases.promote import PromoteRequest, RollbackRequest

    return request_of(PromoteRequest if args.command == "promote" else RollbackRequest, args)
