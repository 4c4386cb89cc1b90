"""Admin actions on the registry and the policy: each one a signed record (`records.write`).

`init_ledger` writes record #1: a fresh ledger id and the first admin, self-signed, then pins the
policy (the shipped default unless given). After that only an admin changes people, roles and policy.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from pruning import text as plain
from pruning.errors import TicketLabError

from . import anchor, keys, records, state, witness
from .keys import Signer
from .people import ROLES
from .policy import DEFAULT_POLICY, parse_policy
from .record_types import InitBody, PolicyBody, RegisterBody, RevokeBody, RolesBody


def _roles(roles) -> list[str]:
    roles = sorted({r.strip() for r in roles if r and r.strip()})
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise TicketLabError(f"unknown role {bad[0]!r}: roles are {', '.join(ROLES)}; nothing was recorded.")
    return roles


def _public_key(key: str | Path) -> str:
    p = Path(key).expanduser()
    if not p.is_file():
        raise TicketLabError(f"no public key file at {p}: the person creates it with `ticketlab keygen NAME` "
                             f"({keys.key_dir()}/NAME.pub.pem) and sends it to you.")
    pem = p.read_text()
    keys.load_public(pem)  # refuses anything but a P-256 public key, clearly
    return pem


def init_ledger(ledger, admin: Signer, policy_file: str | Path | None = None, roles=("admin",)) -> dict:
    """Record #1 (a fresh ledger id, the first admin, the witness location), the policy, and the first admin's
    trust anchor. Refused over any history: a ledger with governance records, or a witness log with heads
    (an emptied log and a moved witness must not become a fresh start)."""
    st = state.load(ledger)
    if st.rows:
        raise TicketLabError(f"ledger {ledger.path} is already initialised (ledger id {st.ledger_id}); nothing was "
                             f"recorded.")
    wpath = witness.configured_path(ledger)
    heads, bad = witness.scan(wpath)
    if heads or bad:
        raise TicketLabError(f"the witness location {wpath} already holds {len(heads)} heads (of ledger "
                             f"{heads[0]['ledger_id'] if heads else '?'}): this ledger had a history. Restore it, or "
                             f"choose a fresh witness location with $TICKETLAB_WITNESS; nothing was recorded.")
    text = _policy_text(policy_file or DEFAULT_POLICY)  # checked before anything is written
    person = {"name": admin.name, "public_key": admin.public_pem, "roles": _roles({"admin", *roles})}
    body = InitBody(ledger_id=uuid.uuid4().hex, person=person, witness=witness.to_pin(ledger, wpath)).to_body()
    row = records.write(ledger, admin, "init", body, admin.name, doing="initialise the ledger")
    anchor.pin(anchor.sign(state.load(ledger), admin), "the new ledger's anchor")
    set_policy(ledger, admin, text=text)
    return row


def register(ledger, admin: Signer, name: str, public_key: str | Path, roles) -> dict:
    name = keys.check_name(name)
    pem = _public_key(public_key)
    roles = _roles(roles)

    def prepare(db, st):  # one key one person, no second active key: replay.registry_problem
        existing = st.registry.people.get(name)
        return RegisterBody(name=name, public_key=pem,
                            roles=roles or sorted(existing.roles if existing else [])).to_body(), name

    return records.write(ledger, admin, "register", prepare, doing=f"register {name}")


def set_roles(ledger, admin: Signer, name: str, add=(), remove=()) -> dict:
    add, remove = set(_roles(add)), set(_roles(remove))

    def prepare(db, st):
        person = st.registry.people.get(name)
        if person is None:
            raise TicketLabError(f"{name} is not registered; register them first with `ticketlab people register`.")
        return RolesBody(name=name, roles=sorted((person.roles | add) - remove)).to_body(), name

    return records.write(ledger, admin, "roles", prepare, doing=f"change {name}'s roles")


def revoke(ledger, actor: Signer, name: str, reason: str) -> dict:
    if not (reason or "").strip():
        raise TicketLabError("a key revocation needs --reason (lost, leaked, left the team...).")
    plain.require_plain(reason, "--reason")

    def prepare(db, st):
        person = st.registry.people.get(name)
        if person is None or person.key_id is None:
            raise TicketLabError(f"{name} has no active key to revoke.")
        return RevokeBody(name=name, key_id=person.key_id, reason=reason.strip()).to_body(), name

    return records.write(ledger, actor, "revoke", prepare, doing=f"revoke {name}'s key")


def _policy_text(path: str | Path) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise TicketLabError(f"policy file {p} does not exist; start from the shipped {DEFAULT_POLICY}.")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TicketLabError(f"policy file {p} is not UTF-8 text ({e}).") from e
    parse_policy(text, str(p), hashlib.sha256(text.encode()).hexdigest())  # a broken policy is never pinned
    return text


def set_policy(ledger, admin: Signer, path: str | Path | None = None, text: str | None = None) -> dict:
    text = _policy_text(path) if text is None else text
    sha = hashlib.sha256(text.encode()).hexdigest()
    pol = parse_policy(text, str(path or "<policy>"), sha)

    def prepare(db, st):  # the next version, not the one pinned now: replay.policy_problem
        version = (st.trail.pinned_version() or 0) + 1
        return PolicyBody(version=version, name=pol.name, sha256=sha, text=text).to_body(), f"policy v{version}"

    return records.write(ledger, admin, "policy", prepare, doing="pin a policy")
