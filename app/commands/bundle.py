"""`ticketlab export`, `ticketlab verify` and `ticketlab report`: signed bundles for deployers, scorecards
for auditors."""

from __future__ import annotations

import json


def add_parser(sub, parent):
    e = sub.add_parser("export", parents=[parent], help="write a signed, verified bundle of a ticket")
    e.add_argument("ticket", help="ticket id or unique prefix")
    e.add_argument("--out", required=True, help="bundle directory (must not exist unless --overwrite)")
    e.add_argument("--format", default="masked-weights", choices=("masks", "masked-weights", "materialized"))
    e.add_argument("--as", dest="as_name", help="who signs the bundle: the approving reviewer or a "
                                                "deployer (default $TICKETLAB_USER)")
    e.add_argument("--unreviewed", action="store_true",
                   help="export a ticket that is not approved (unsigned; the manifest says so)")
    e.add_argument("--overwrite", action="store_true", help="replace an earlier bundle at --out")
    e.add_argument("--model", help="where the dense model is now, if not at the ticket's recorded spec")
    e.add_argument("--dtype", default="float32", help="weights dtype in the bundle")
    e.add_argument("--quantize", default="none", choices=("none", "w8a8", "w4a16"),
                   help="store the surviving weights quantized in compressed-tensors (vLLM's format), round-to-"
                        "nearest: w8a8 int8 weights+activations, w4a16 4-bit weights")
    e.add_argument("--group-size", type=int, help="w4a16: input columns per scale (default 128)")
    e.add_argument("--serve-check", action="store_true",
                   help="serve the bundle in vLLM before sealing it (`make serve-env`): loads? same answers as the "
                        "lab? recorded in the manifest (`ticketlab serve-check` adds the dense comparison)")
    e.add_argument("--json", action="store_true")
    v = sub.add_parser("verify", parents=[parent], help="check a bundle: hashes, ticket id, signature, signer, weights")
    v.add_argument("dir")
    v.add_argument("--trust", help="trusted keys and roles (from `ticketlab people export`); default: the local "
                                   "ledger's registry when the bundle came from it")
    v.add_argument("--dense", help="the dense model (spec or folder) to compare surviving weights with")
    v.add_argument("--json", action="store_true")
    r = sub.add_parser("report", parents=[parent], help="one self-contained HTML scorecard of a ticket")
    r.add_argument("ticket", help="ticket id or unique prefix")
    r.add_argument("--baseline", default="dense", help="dense, deployed or a ticket id")
    r.add_argument("--policy", help="WHAT-IF PREVIEW policy file (default: the pinned policy)")
    r.add_argument("--out", required=True, help="FILE.html")
    return [e, v, r]


def run(args) -> int:
    if args.command == "verify":
        from analysis.governance.verify import local_trust, verify_bundle

        trust, source = (args.trust, f" (keys from {args.trust})") if args.trust else local_trust(args.dir)
        result = verify_bundle(args.dir, trust=trust, dense=args.dense)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"bundle {result['bundle']}: ticket {result['ticket']}, review {result['review']}, signed by "
                  f"{result['signed_by'] or 'nobody'}{source}\n  checked: {', '.join(result['checked'])}")
            for item in result["unchecked"]:
                print(f"  NOT CHECKED: {item}")
            print("verifies" if result["ok"] else "NOT fully verified: see what was not checked above")
        return 0 if result["ok"] else 1
    from analysis.ledger import Ledger

    ledger = Ledger()
    if args.command == "report":
        from analysis.governance import state
        from analysis.governance.report import write_report

        policy = state.policy_in_force(ledger, args.policy)
        print(f"scorecard written to {write_report(ledger, args.ticket, args.out, args.baseline, policy)}"
              + (" (WHAT-IF policy preview)" if args.policy else ""))
        return 0
    from usecases.export import export

    m = export(request_from_args(args))
    if args.json:
        print(json.dumps(m.model_dump(include={"bundle_format", "ticket", "review", "deployer"}), indent=2, default=str))
    else:
        d = m.deployer
        print(f"bundle {args.out}: {m.bundle_format} of {m.ticket['id']} ({m.review['status']}"
              f"{', signed by ' + m.signed_by if m.signed_by else ', UNSIGNED'}), {m.files} files, "
              f"{d['on_disk_bytes']:,} bytes; load with {d['loader']['how']}")
    return 0


def request_from_args(args):
    """`ticketlab export`'s typed request (verify and report run no job)."""
    if args.command != "export":
        return None
    from app.cli import request_of
    from usecases.export import ExportRequest

    return request_of(ExportRequest, args)
