"""Who is acting: a registered person proven by their unlocked key, never a name typed or set in the
environment. `$TICKETLAB_USER` (or the OS account) only chooses *which* key to unlock by default.

A ticket's creator is the signer of its creation record (`sign_creation`), written when the ticket is
recorded by someone holding a key, or later by an engineer who signs for a ticket loaded from elsewhere.
"""

from __future__ import annotations

import getpass
import os

from . import keys, records, state
from .keys import Signer


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
        return {"ticket_id": ticket["id"], "dense_sha256": ticket["dense_sha256"],
                "content_sha256": ticket["content_sha256"], "method": ticket["method"], "how": how}, ticket["id"]

    row = records.write(ledger, signer, "create", prepare, doing=f"sign as creator of {ticket_id}")
    return row if row is not None else found["first"]
