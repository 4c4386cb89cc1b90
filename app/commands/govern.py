"""`ticketlab review`, `ticketlab decide` and `ticketlab audit`: policy checks, signed decisions, the audit.

`decide` evaluates the policy pinned in the ledger and is signed with the reviewer's key (`--as`);
`review --policy FILE` is a what-if preview that records nothing."""

from __future__ import annotations

import json

from analysis.governance.record_types import CHOICES
from pruning.errors import TicketLabError


def add_parser(sub, parent):
    r = sub.add_parser("review", parents=[parent], help="check a ticket against the pinned policy, next to a baseline")
    r.add_argument("ticket", help="ticket id or unique prefix")
    r.add_argument("--baseline", default="dense", help="dense, deployed or a ticket id (default dense)")
    r.add_argument("--policy", help="WHAT-IF PREVIEW: check against this policy file instead of the pinned one "
                                    "(records nothing; decisions always use the pinned policy)")
    r.add_argument("--reviewer", help="check separation of duties for this reviewer too")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    d = sub.add_parser("decide", parents=[parent], help="record a signed approve/reject decision (pinned policy)")
    d.add_argument("ticket", help="ticket id or unique prefix")
    d.add_argument("decision", choices=CHOICES)
    d.add_argument("--as", dest="as_name", help="the reviewer (default $TICKETLAB_USER); their key signs the decision")
    d.add_argument("--reason", required=True, help="why; kept forever")
    d.add_argument("--override", action="store_true", help="approve although the policy fails (needs --override-reason)")
    d.add_argument("--override-reason", help="why the policy is overridden; recorded with the decision")
    d.add_argument("--baseline", default="dense", help="baseline the policy compares with (default dense)")
    for flag in ("--policy", "--reviewers", "--reviewer"):  # the old free-text controls: refused with a reason
        d.add_argument(flag, dest=f"old_{flag[2:]}", help="no longer accepted (see `ticketlab policy` and `--as`)")
    d.add_argument("--json", action="store_true")
    a = sub.add_parser("audit", parents=[parent], help="verify every signature, role and the witness log")
    a.add_argument("--against", action="append", default=[], metavar="BUNDLE",
                   help="also check the ledger against the signed head carried by this export bundle (repeatable)")
    a.add_argument("--rewitness", action="store_true",
                   help="after checking the records the audit lists as unwitnessed (a write killed after its commit), "
                        "sign their heads into the witness log (admin, --as)")
    a.add_argument("--as", dest="as_name", help="the admin who signs the re-witnessed heads")
    a.add_argument("--json", action="store_true")
    return [r, d, a]


def _policy_for_review(ledger, path: str | None):
    from analysis.governance import state

    pol = state.policy_in_force(ledger, path)
    if path:
        return pol, f"WHAT-IF PREVIEW against {path}: nothing is recorded; decisions use the pinned policy"
    if state.initialised(ledger):
        return pol, ""
    return pol, ("this ledger has no pinned policy (not initialised with `ticketlab init`): previewing "
                 "with the default policy")


def run(args) -> int:
    from analysis.governance import audit as audit_mod
    from analysis.governance import identity
    from analysis.governance.review import format_review, review_ticket
    from analysis.ledger import Ledger

    ledger = Ledger()
    if args.command == "review":
        pol, label = _policy_for_review(ledger, args.policy)
        review = review_ticket(ledger, args.ticket, baseline=args.baseline, policy=pol, reviewer=args.reviewer)
        if args.json:
            print(json.dumps(review.to_json() | {"preview": label or None}, indent=2, default=str))
        else:
            print((f"[{label}]\n" if label else "") + format_review(review))
        return 0 if review.passed else 1
    if args.command == "decide":
        if args.old_policy or args.old_reviewers:
            raise TicketLabError("decide evaluates the policy pinned in the ledger and checks roles in its signed "
                                 "registry: --policy and --reviewers are no longer accepted (preview a policy with "
                                 "`ticketlab review --policy FILE`; an admin pins one with `ticketlab policy set`). "
                                 "Nothing was recorded.")
        if args.old_reviewer:
            raise TicketLabError("--reviewer NAME is gone: a decision is signed with the reviewer's key; use --as NAME "
                                 "and unlock it. Nothing was recorded.")
        from usecases.decide import decide

        row = decide(request_from_args(args)).as_dict()
        if args.json:
            print(json.dumps({k: v for k, v in row.items() if k != "record"}, indent=2, default=str))
        else:
            how = " (OVERRIDE: " + row["override_reason"] + ")" if row["override"] else ""
            print(f"decision #{row['seq']}: {row['decision']} {row['ticket_id']} signed by {row['reviewer']}{how}; "
                  f"pinned policy {row['policy_name']} v{row['policy_version']} "
                  f"{'passed' if row['passed'] else 'failed'}; hash {row['row_hash'][:16]}")
        return 0
    if args.rewitness:
        from analysis.governance.records import rewitness

        done = rewitness(ledger, identity.unlock(args.as_name))
        print(f"witnessed again: {', '.join(f'#{s}' for s in done) or 'nothing (every record has its head)'}")
    report = audit_mod.audit(ledger, against=args.against)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0 if report["ok"] and report["initialised"] else 1
    if not report["initialised"]:
        from analysis.governance.records import not_initialised

        raise not_initialised(ledger)
    if not report["ok"]:
        raise TicketLabError("audit failed: " + audit_mod.audit_message(report))
    against = f"; consistent with {len(args.against)} bundle head(s)" if args.against else ""
    print(f"audit ok: {report['records']} signed records (head #{report['head']['seq']} "
          f"{report['head']['hash'][:12]}), every signature and role valid against the registry as it stood, "
          f"{report['witnessed']} witnessed heads present in the ledger{against}.")
    for note in report["notes"]:
        print(f"note: {note}")
    return 0


def request_from_args(args):
    """`ticketlab decide`'s typed request (review and audit record nothing and run no job)."""
    if args.command != "decide":
        return None
    from app.cli import request_of
    from usecases.decide import DecideRequest

    return request_of(DecideRequest, args)
