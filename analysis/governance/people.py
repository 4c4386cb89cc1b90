"""The registry of people, their public keys and roles, as a replay of the signed governance log.

Nothing here trusts a table that anyone could write: the registry at record N is what the valid
records before N made it. A record is valid when its signature verifies with the key its actor had
registered (and not revoked) at that point, and that actor held the role the record's kind needs.
Invalid records change nothing; `replay.replay` judges each record with these checks and the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import keys
from .chain import body_of, signed_bytes

ROLES = ("admin", "reviewer", "engineer", "deployer")
# kind -> the role its actor must hold when signing it (init is self-signed by the first admin)
NEEDS = {"register": "admin", "roles": "admin", "policy": "admin", "create": "engineer", "decision": "reviewer",
         "promote": "deployer", "rollback": "deployer", "revoke": None}
KINDS = ("init", *NEEDS)


@dataclass
class Person:
    name: str
    roles: set[str] = field(default_factory=set)
    key_id: str | None = None  # the active key; None after a revocation until a new key is registered
    keys: dict[str, str] = field(default_factory=dict)  # every key ever registered: key_id -> PEM
    revoked: set[str] = field(default_factory=set)


@dataclass
class Registry:
    ledger_id: str | None = None
    people: dict[str, Person] = field(default_factory=dict)

    def roles(self) -> dict[str, set[str]]:
        return {n: set(p.roles) for n, p in self.people.items()}

    def active_key(self, name: str) -> str | None:
        p = self.people.get(name)
        return p.keys.get(p.key_id) if p and p.key_id else None

    def trust(self) -> dict:
        """What a verifier needs without the ledger: names, public keys (revoked ones marked) and roles."""
        return {"ledger_id": self.ledger_id,
                "people": {n: {"roles": sorted(p.roles), "key_id": p.key_id,
                               "keys": {k: {"public_key": pem, "revoked": k in p.revoked} for k, pem in p.keys.items()}}
                           for n, p in sorted(self.people.items())}}


def signature_problem(reg: Registry, row: dict) -> tuple[str, bool]:
    """(why `row` is not a record its actor's key signed, attributable): ('', True) when the signature holds.
    attributable: the signature verifies with a key the actor once had (revoked since), so the record is
    void, not a forgery."""
    kind, actor, seq = row["kind"], row["actor"], row["seq"]
    if kind not in KINDS:
        return f"record #{seq} has unknown kind {kind!r}", False
    if kind == "init":
        if seq != 1:
            return f"record #{seq} initialises the ledger again (only record #1 may)", False
        try:
            pem = (body_of(row).get("person") or {}).get("public_key") or ""
            if keys.fingerprint(pem) != row["key_id"]:
                return f"record #1 is signed with key {row['key_id'][:12]}, not the admin key it registers", False
        except Exception as e:  # a damaged PEM is a forged or broken record, not a crash
            return f"record #1 carries no usable public key ({e})", False
        return ("", True) if keys.verify(pem, signed_bytes(row), row["signature"]) else \
            (f"record #1's signature does not verify with the key it registers ({actor})", False)
    if reg.ledger_id is None:
        return f"record #{seq} comes before any ledger initialisation", False
    person = reg.people.get(actor)
    if person is None:
        return f"record #{seq} ({kind}) is signed by {actor!r}, who is not registered", False
    if row["key_id"] in person.revoked:
        if keys.verify(person.keys[row["key_id"]], signed_bytes(row), row["signature"]):
            return f"record #{seq} ({kind}) is signed with {actor}'s revoked key {row['key_id'][:12]}", True
        return f"record #{seq} ({kind}) carries a signature that no key of {actor} made", False
    if person.key_id != row["key_id"]:
        return f"record #{seq} ({kind}) is signed with key {row['key_id'][:12]}, which is not {actor}'s registered key", False
    if not keys.verify(person.keys[person.key_id], signed_bytes(row), row["signature"]):
        return (f"record #{seq} ({kind} by {actor}) has a signature that does not verify with {actor}'s key: "
                f"it was written or changed without that key", False)
    return "", True


def role_needed(kind: str, actor: str, body: dict) -> str | None:
    if kind == "revoke" and body.get("name") != actor:
        return "admin"  # anyone may revoke their own key; only an admin someone else's
    return NEEDS.get(kind)


def role_problem(reg: Registry, kind: str, actor: str, body: dict) -> str:
    """Why the (genuinely signed) record's actor may not sign a record of its kind ('' when they may)."""
    need = None if kind == "init" else role_needed(kind, actor, body)
    if need and need not in reg.people[actor].roles:
        return f"{actor} did not hold the {need} role then"
    return ""


def apply(reg: Registry, kind: str, body: dict) -> None:
    """What a valid record (well-formed: `replay.body_problem`) changes in the registry."""
    if kind == "init":
        reg.ledger_id = body["ledger_id"]
        kind, body = "register", body["person"]
    if kind == "register":
        p = reg.people.setdefault(body["name"], Person(body["name"]))
        kid = keys.fingerprint(body["public_key"])
        p.keys[kid] = body["public_key"]
        p.key_id = kid
        p.roles = set(body.get("roles") or p.roles)
    elif kind == "roles":
        reg.people[body["name"]].roles = set(body["roles"])
    elif kind == "revoke":
        p = reg.people[body["name"]]
        p.revoked.add(body["key_id"])
        if p.key_id == body["key_id"]:
            p.key_id = None
