"""`ticketlab review`, `ticketlab decide` and `ticketlab audit`: policy checks and tamper-evident decisions."""

from __future__ import annotations

import json

from pruning.errors import TicketLabError


def add_parser(sub, parent):
    r = sub.add_parser("review", parents=[parent], help="check a ticket against a policy, next to a baseline")
    r.add_argument("ticket", help="ticket id or unique prefix")
    r.add_argument("--baseline", default="dense", help="dense, deployed or a ticket id (default dense)")
    r.add_argument("--policy", help="policy TOML file (default $TICKETLAB_POLICY, <state>/policy.toml or the shipped one)")
    r.add_argument("--reviewer", help="check separation of duties for this reviewer too")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    d = sub.add_parser("decide", parents=[parent], help="record an approve/reject decision (append-only)")
    d.add_argument("ticket", help="ticket id or unique prefix")
    d.add_argument("decision", choices=("approve", "reject"))
    d.add_argument("--reviewer", required=True, help="your name, as listed in the reviewers file")
    d.add_argument("--reason", required=True, help="why; kept forever")
    d.add_argument("--override", action="store_true", help="approve although the policy fails (needs --override-reason)")
    d.add_argument("--override-reason", help="why the policy is overridden; recorded with the decision")
    d.add_argument("--baseline", default="dense", help="baseline the policy compares with (default dense)")
    d.add_argument("--policy", help="policy TOML file")
    d.add_argument("--reviewers", help="reviewers TOML file (default $TICKETLAB_REVIEWERS or <state>/reviewers.toml)")
    d.add_argument("--json", action="store_true")
    a = sub.add_parser("audit", parents=[parent], help="verify the decision and deployment hash chains")
    a.add_argument("--json", action="store_true")
    return [r, d, a]


def run(args) -> int:
    from analysis.governance import decisions
    from analysis.governance.review import format_review, review_ticket
    from analysis.ledger import Ledger

    ledger = Ledger()
    if args.command == "review":
        review = review_ticket(ledger, args.ticket, baseline=args.baseline, policy=args.policy, reviewer=args.reviewer)
        print(json.dumps(review.to_json(), indent=2, default=str) if args.json else format_review(review))
        return 0 if review.passed else 1
    if args.command == "decide":
        row = decisions.decide(ledger, args.ticket, args.decision, args.reviewer, args.reason, override=args.override,
                               override_reason=args.override_reason, policy=args.policy, baseline=args.baseline,
                               reviewers=args.reviewers)
        if args.json:
            print(json.dumps(row, indent=2, default=str))
        else:
            how = " (OVERRIDE: " + row["override_reason"] + ")" if row["override"] else ""
            print(f"decision #{row['seq']}: {row['decision']} {row['ticket_id']} by {row['reviewer']}{how}; "
                  f"policy {row['policy_name']} {'passed' if row['passed'] else 'failed'}; hash {row['row_hash'][:16]}")
        return 0
    report = decisions.audit(ledger)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0 if report["ok"] else 1
    if not report["ok"]:
        raise TicketLabError("audit failed: " + decisions.audit_message(report))
    t = report["tables"]
    print(f"audit ok: {t['decisions']['rows']} decisions and {t['deployments']['rows']} deployment moves, "
          f"both hash chains intact; every promotion rests on a recorded approval.")
    return 0
