"""Who is acting: a registered person proven by their unlocked key, never a name typed or set in the
environment. `$TICKETLAB_USER` (or the OS account) only chooses *which* key to unlock by default.

A ticket's creator is the signer of its creation record (`sign_creation`), written when the ticket is
recorded by someone holding a key, or later by an engineer who signs for a ticket loaded from elsewhere.
"""

from __future__ import annotations

import getpass
import os
import sys

from pruning.errors import TicketLabError

from . import admin, keys, records, state
from .keys import Signer
from .record_types import CreateBody


def current_user() -> str:
    """The default name whose key is unlocked; it proves nothing by itself."""
    name = os.environ.get("TICKETLAB_USER", "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        return "unknown"


def unlock(name: str | None = None, passphrase: str | None = None) -> Signer:
    return keys.unlock(name or current_user(), passphrase)


def creator_of(ledger, ticket_id: str) -> str | None:
    """The signed creator, or None when nobody has signed for the ticket."""
    return state.creator_of(ledger, ticket_id)


def check_can_create(ledger, signer: Signer) -> None:
    st = state.load(ledger)
    if st.ledger_id is None:
        raise records.not_initialised(ledger)
    records.require_actor(st, signer, "create")


def creation_signer(ledger, name: str | None = None) -> Signer | None:
    """Who signs a new ticket's creation: `name`'s key (an error if it cannot), else $TICKETLAB_USER's key when
    one is in the key directory, else nobody (the ticket stays unsigned until `ticketlab sign-ticket`).
    Checked before any work is done, so a refusal costs nothing."""
    if not name:
        default = current_user()
        if not keys.NAME_RE.match(default) or not keys.private_path(default).is_file() or not state.initialised(ledger):
            return None  # nobody asked to sign: an uninitialised ledger or no key means an unsigned ticket
    signer = unlock(name)
    check_can_create(ledger, signer)
    return signer


def sign_creation(ledger, signer: Signer, ticket_id: str, how: str = "claim") -> dict:
    """Record `signer` as the creator of an already recorded ticket. The first signer stays the creator:
    re-recording the same ticket (a resumed run) keeps it; a claim on a ticket with a creator is refused
    (`replay.create_problem`). Retried when another record lands first."""
    found: dict = {}

    def prepare(db, st):
        ticket = db.get_ticket(ticket_id)
        first = found["first"] = state.creation_of(st, ticket["id"])
        if first is not None and how != "claim":
            return None
        return CreateBody(ticket_id=ticket["id"], dense_sha256=ticket["dense_sha256"],
                          content_sha256=ticket["content_sha256"], method=ticket["method"], how=how).to_body(), ticket["id"]

    row = records.write(ledger, signer, "create", prepare, doing=f"sign as creator of {ticket_id}")
    return row if row is not None else found["first"]


OLD_PASSPHRASE_ENV = "TICKETLAB_OLD_PASSPHRASE"


def retire_for_replacement(ledger, name: str) -> str:
    """Before `keygen NAME --replace` overwrites NAME's key file: when that key is NAME's registered, active
    key, NAME must unlock it (`$TICKETLAB_OLD_PASSPHRASE` or a prompt) and it signs its own revocation, so
    nobody else with access to the key directory can destroy it. Returns what was done, in words."""
    path = keys.private_path(name)
    if not path.is_file() or ledger is None:
        return ""
    st = state.load(ledger)
    person = st.registry.people.get(name)
    if person is None or person.key_id is None:
        return ""  # not registered, or revoked already: nothing in the ledger rests on this file
    pw = os.environ.get(OLD_PASSPHRASE_ENV)
    if pw is None and sys.stdin.isatty():
        pw = getpass.getpass(f"current passphrase of {name}'s registered key: ")
    if pw is None:
        raise TicketLabError(f"{path} holds {name}'s registered key ({person.key_id[:12]}) in ledger {ledger.path}: "
                             f"replacing it needs {name} to unlock it ($TICKETLAB_OLD_PASSPHRASE or a terminal), "
                             f"or an admin to revoke it first (`ticketlab people revoke {name}`); nothing was written.")
    current = keys.unlock(name, pw)
    if current.key_id != person.key_id:
        return ""  # the file holds some other key; the registered one is elsewhere
    admin.revoke(ledger, current, name, "replaced with `ticketlab keygen --replace`")
    return f"{name}'s registered key {person.key_id[:12]} revoked (signed by {name}); have an admin register the new one"
