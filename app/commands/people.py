"""`ticketlab keygen`, `init`, `people ...`, `policy ...` and `sign-ticket`: keys, the registry and the
pinned policy. Every change is a record signed by an admin's key (`--as NAME`, passphrase from
$TICKETLAB_PASSPHRASE or a prompt)."""

from __future__ import annotations

import json


def _as(p, what: str) -> None:
    p.add_argument("--as", dest="as_name", help=f"{what} (default $TICKETLAB_USER or the OS user); their key is unlocked")


def add_parser(sub, parent):
    k = sub.add_parser("keygen", parents=[parent], help="make your signing key pair (P-256, passphrase-encrypted)")
    k.add_argument("name", help="your name in the registry")
    k.add_argument("--replace", action="store_true",
                   help="overwrite an existing key; a key registered and active in the ledger must be unlocked first "
                        "($TICKETLAB_OLD_PASSPHRASE) and is revoked, signed by itself")
    i = sub.add_parser("init", parents=[parent], help="initialise a ledger's signed registry with its first admin")
    i.add_argument("--admin", required=True, help="the first admin (their key must exist: `ticketlab keygen NAME`)")
    i.add_argument("--role", action="append", default=[], help="further roles for the admin (repeatable)")
    i.add_argument("--policy", help="policy TOML to pin (default: the shipped default policy)")
    p = sub.add_parser("people", parents=[parent], help="the registry: list, register, role, revoke, export")
    ps = p.add_subparsers(dest="people_action", required=True, metavar="ACTION")
    ls = ps.add_parser("list", parents=[parent], help="who is registered, with which key and roles")
    ls.add_argument("--json", action="store_true", help="print the trust file's JSON")
    r = ps.add_parser("register", parents=[parent], help="register a person's public key and roles (admin)")
    r.add_argument("name")
    r.add_argument("--key", required=True, help="their public key file (NAME.pub.pem from `ticketlab keygen`)")
    r.add_argument("--role", action="append", default=[], required=True,
                   help="admin, reviewer, engineer or deployer (repeatable)")
    _as(r, "the admin")
    ro = ps.add_parser("role", parents=[parent], help="grant or take away roles (admin)")
    ro.add_argument("name")
    ro.add_argument("--add", action="append", default=[])
    ro.add_argument("--remove", action="append", default=[])
    _as(ro, "the admin")
    rv = ps.add_parser("revoke", parents=[parent], help="revoke a key (your own, or anyone's as admin)")
    rv.add_argument("name")
    rv.add_argument("--reason", required=True)
    _as(rv, "who revokes")
    ex = ps.add_parser("export", parents=[parent], help="write the trusted keys, roles and the ledger's anchor for "
                                                        "`ticketlab verify --trust`, signed by an admin")
    ex.add_argument("--out", required=True, help="FILE.json")
    _as(ex, "the admin who signs the trust file")
    po = sub.add_parser("policy", parents=[parent], help="the pinned policy: show, history, set (admin)")
    pos = po.add_subparsers(dest="policy_action", required=True, metavar="ACTION")
    pos.add_parser("show", parents=[parent], help="print the policy in force (TOML)")
    hi = pos.add_parser("history", parents=[parent], help="every pinned version")
    hi.add_argument("--json", action="store_true")
    s = pos.add_parser("set", parents=[parent], help="pin a new policy version (admin)")
    s.add_argument("file")
    _as(s, "the admin")
    c = sub.add_parser("sign-ticket", parents=[parent], help="sign as the creator of a ticket nobody has signed for")
    c.add_argument("ticket")
    _as(c, "the creator (engineer role)")
    an = sub.add_parser("anchor", parents=[parent], help="the ledger's trust anchor, kept in your key directory")
    ans = an.add_subparsers(dest="anchor_action", required=True, metavar="ACTION")
    ans.add_parser("show", parents=[parent], help="print this ledger's pinned anchor")
    ae = ans.add_parser("export", parents=[parent], help="write this ledger's pinned anchor for a colleague")
    ae.add_argument("--out", required=True, help="FILE.json")
    ap = ans.add_parser("pin", parents=[parent], help="pin an anchor (or the anchor in a signed trust file)")
    ap.add_argument("file")
    ac = ans.add_parser("create", parents=[parent], help="sign and pin the anchor of this ledger as it stands (admin; "
                                                         "for ledgers initialised before anchors)")
    _as(ac, "the admin")
    return [k, i, p, po, c, an]


def run(args) -> int:
    from analysis.governance import admin, identity, keys, state
    from analysis.ledger import Ledger

    if args.command == "keygen":
        from pruning import settings

        retired = ""
        if args.replace:  # the registered key is not destroyed by whoever can write the key directory
            retired = identity.retire_for_replacement(Ledger() if settings.ledger_path().exists() else None,
                                                      args.name)
        pw = keys.passphrase(args.name, confirm=True)
        path, pem = keys.generate(args.name, pw, overwrite=args.replace)
        if retired:
            print(retired)
        print(f"key for {args.name}: {path} (private, mode 600) and {keys.public_path(args.name)} (public); id "
              f"{keys.fingerprint(pem)[:16]}. Send the public file to an admin: `ticketlab people register "
              f"{args.name} --key {keys.public_path(args.name)} --role ROLE`.")
        return 0
    ledger = Ledger()
    if args.command == "init":
        row = admin.init_ledger(ledger, identity.unlock(args.admin), policy_file=args.policy, roles=["admin", *args.role])
        pol = state.current_policy(ledger)
        print(f"ledger {ledger.path} initialised: id {json.loads(row['body'])['ledger_id']}, first admin {args.admin}; "
              f"policy {pol.name} {pol.sha256[:12]} pinned as version 1.")
        return 0
    if args.command == "sign-ticket":
        row = identity.sign_creation(ledger, identity.unlock(args.as_name), args.ticket)
        print(f"record #{row['seq']}: {row['actor']} signed as creator of {row['subject']}")
        return 0
    if args.command == "policy":
        return _policy(args, ledger)
    if args.command == "anchor":
        return _anchor(args, ledger)
    action = args.people_action
    if action == "list":
        reg = state.load(ledger).registry
        if getattr(args, "json", False):
            print(json.dumps(reg.trust(), indent=2))
            return 0
        for n, p in sorted(reg.people.items()):
            print(f"{n:<16} {', '.join(sorted(p.roles)) or '-':<32} key {(p.key_id or 'REVOKED')[:16]}")
        return 0
    if action == "export":
        from analysis.governance import trustfile
        from pruning.durable import atomic_write_json

        trust = trustfile.export(state.load(ledger), identity.unlock(args.as_name))
        atomic_write_json(args.out, trust, indent=2, sort_keys=True)
        print(f"trusted keys of {len(trust['people'])} people (ledger {trust['ledger_id']}, signed by "
              f"{trust['signed_by']}) written to {args.out}")
        return 0
    who = identity.unlock(args.as_name)
    if action == "register":
        admin.register(ledger, who, args.name, args.key, args.role)
    elif action == "role":
        admin.set_roles(ledger, who, args.name, add=args.add, remove=args.remove)
    else:
        admin.revoke(ledger, who, args.name, args.reason)
    p = state.load(ledger).registry.people[args.name]
    print(f"{args.name}: roles {', '.join(sorted(p.roles)) or 'none'}; key {(p.key_id or 'revoked')[:16]} (signed by {who.name})")
    return 0


def _policy(args, ledger) -> int:
    from analysis.governance import admin, identity, state

    if args.policy_action == "set":
        admin.set_policy(ledger, identity.unlock(args.as_name), args.file)
    versions = state.policy_versions(ledger)
    if args.policy_action == "show":
        if not versions:
            state.current_policy(ledger)  # raises the clear "no policy pinned" error
        print(versions[-1]["text"])
    elif getattr(args, "json", False):
        print(json.dumps([{k: v for k, v in x.items() if k != "text"} for x in versions], indent=2, default=str))
    else:
        for v in versions:
            print(f"v{v['version']:<3} {v['name'] or '':<16} {v['sha256'][:16]}  pinned by {v['by']} at {str(v['at'])[:19]}")
    return 0


def _anchor(args, ledger) -> int:
    from analysis.governance import anchor, identity, state
    from pruning.durable import atomic_write_json
    from pruning.errors import TicketLabError

    action = args.anchor_action
    if action == "pin":
        data = _read_json(args.file)
        pinned = anchor.pin(data.get("anchor", data) if isinstance(data, dict) else data, args.file)
        a = anchor.load(pinned.stem)
        print(f"pinned the trust anchor of ledger {a['ledger_id']} (first admin key {a['first_admin_key_id'][:16]}, "
              f"vouched for by {a['signer']}, key {a['signer_key_id'][:16]}) at {pinned}")
        return 0
    st = state.load(ledger)
    if st.ledger_id is None:
        from analysis.governance.records import not_initialised

        raise not_initialised(ledger)
    if action == "create":
        anchor.pin(anchor.sign(st, identity.unlock(args.as_name)), "the anchor")
    a = anchor.load(st.ledger_id)
    if a is None:
        raise TicketLabError(anchor.problem(st) + ".")
    if action == "export":
        atomic_write_json(args.out, a, indent=2, sort_keys=True)
        print(f"trust anchor of ledger {a['ledger_id']} written to {args.out}")
    else:
        print(json.dumps(a, indent=2, sort_keys=True))
    return 0


def _read_json(path: str):
    from pathlib import Path

    from pruning.errors import TicketLabError

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise TicketLabError(f"{path} cannot be read as JSON ({e}).") from e
