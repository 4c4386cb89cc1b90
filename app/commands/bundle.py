"""`ticketlab export`, `ticketlab verify` and `ticketlab report`: bundles for deployers, scorecards for auditors."""

from __future__ import annotations

import json


def add_parser(sub, parent):
    e = sub.add_parser("export", parents=[parent], help="write a verified bundle of a ticket")
    e.add_argument("ticket", help="ticket id or unique prefix")
    e.add_argument("--out", required=True, help="bundle directory (must not exist unless --overwrite)")
    e.add_argument("--format", default="masked-weights", choices=("masks", "masked-weights", "materialized"))
    e.add_argument("--unreviewed", action="store_true", help="export a ticket that is not approved (the manifest says so)")
    e.add_argument("--overwrite", action="store_true", help="replace an earlier bundle at --out")
    e.add_argument("--model", help="where the dense model is now, if not at the ticket's recorded spec")
    e.add_argument("--dtype", default="float32", help="weights dtype in the bundle")
    e.add_argument("--json", action="store_true")
    v = sub.add_parser("verify", parents=[parent], help="recompute every hash of a bundle and its ticket id")
    v.add_argument("dir")
    v.add_argument("--json", action="store_true")
    r = sub.add_parser("report", parents=[parent], help="one self-contained HTML scorecard of a ticket")
    r.add_argument("ticket", help="ticket id or unique prefix")
    r.add_argument("--baseline", default="dense", help="dense, deployed or a ticket id")
    r.add_argument("--policy", help="policy TOML file")
    r.add_argument("--out", required=True, help="FILE.html")
    return [e, v, r]


def run(args) -> int:
    if args.command == "verify":
        from analysis.governance.verify import verify_bundle

        result = verify_bundle(args.dir)
        print(json.dumps(result, indent=2) if args.json else
              f"bundle {result['bundle']} verifies: {result['files']} files match the manifest, ticket id "
              f"{result['ticket']} recomputed from the masks; review status {result['review']}")
        return 0
    from analysis.ledger import Ledger

    ledger = Ledger()
    if args.command == "report":
        from analysis.governance.report import write_report

        print(f"scorecard written to {write_report(ledger, args.ticket, args.out, args.baseline, args.policy)}")
        return 0
    from analysis.governance.export import export_bundle

    m = export_bundle(ledger, args.ticket, args.out, args.format, unreviewed=args.unreviewed,
                      overwrite=args.overwrite, model=args.model, dtype=args.dtype)
    if args.json:
        print(json.dumps({k: m[k] for k in ("bundle_format", "ticket", "review", "deployer")}, indent=2, default=str))
    else:
        d = m["deployer"]
        print(f"bundle {args.out}: {m['bundle_format']} of {m['ticket']['id']} ({m['review']['status']}), "
              f"{len(m['files'])} files, {d['on_disk_bytes']:,} bytes; load with {d['loader']['how']}")
    return 0
