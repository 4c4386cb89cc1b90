"""The trust anchor: which ledger this is, pinned outside it, in each person's own key directory.

Everything inside the ledger can be replaced as a whole: empty the governance log, move the witness log
aside, `init --admin eve`, and the new trail is internally perfect. What gives it away is a fact kept
elsewhere: the ledger's id, its first record's hash and its first admin's key fingerprint, signed by an
admin and stored in `<key dir>/anchors/<ledger id>.json` (written by `init`, copied to others with
`ticketlab anchor export` / `pin`, or carried in a signed trust file). `audit`, every governance write and
`verify` require the anchor of the ledger they trust and refuse a ledger that does not match it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pruning.durable import atomic_write_json
from pruning.errors import TicketLabError

from . import keys
from .chain import canonical
from .keys import Signer

FIELDS = ("ledger_id", "first_record", "first_admin_key_id")


def anchor_dir() -> Path:
    return keys.key_dir() / "anchors"


def path_of(ledger_id: str) -> Path:
    if not isinstance(ledger_id, str) or not ledger_id.isalnum():
        raise TicketLabError(f"{ledger_id!r} is not a ledger id.")
    return anchor_dir() / f"{ledger_id}.json"


def facts(st) -> dict:
    """The anchor's facts of a loaded trail (`state.GovState`)."""
    first = st.rows[0]
    return {"ledger_id": st.ledger_id, "first_record": first["row_hash"], "first_admin_key_id": first["key_id"]}


def sign(st, signer: Signer) -> dict:
    """An anchor for the trail as it stands, signed by `signer` (an admin of it)."""
    person = st.registry.people.get(signer.name)
    if person is None or person.key_id != signer.key_id or "admin" not in person.roles:
        raise TicketLabError(f"{signer.name} is not an admin of ledger {st.ledger_id} with this key: only an admin "
                             f"vouches for a ledger's trust anchor.")
    body = facts(st)
    return body | {"signer": signer.name, "signer_key_id": signer.key_id, "signer_public_key": signer.public_pem,
                   "signature": signer.sign(canonical(body))}


def check_signed(anchor: dict, where: str) -> dict:
    """The anchor if it is well-formed and its signature verifies with the key it names, else a clear error."""
    ok = isinstance(anchor, dict) and all(isinstance(anchor.get(k), str) for k in
                                          (*FIELDS, "signer", "signer_key_id", "signer_public_key", "signature"))
    if ok:
        try:
            ok = keys.fingerprint(anchor["signer_public_key"]) == anchor["signer_key_id"] and keys.verify(
                anchor["signer_public_key"], canonical({k: anchor[k] for k in FIELDS}), anchor["signature"])
        except TicketLabError:
            ok = False
    if not ok:
        raise TicketLabError(f"{where} is not a signed trust anchor (edited, or not an anchor at all); get a fresh "
                             f"copy from an admin (`ticketlab anchor export`).")
    return anchor


def load(ledger_id: str) -> dict | None:
    p = path_of(ledger_id)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise TicketLabError(f"trust anchor {p} cannot be read ({e}); pin it again with `ticketlab anchor pin`.") from e
    return check_signed(data, f"trust anchor {p}")


def pin(anchor: dict, where: str = "the anchor") -> Path:
    """Store an anchor in this person's key directory; a different anchor for the same ledger id is refused."""
    anchor = check_signed(anchor, where)
    old = load(anchor["ledger_id"])
    if old is not None and any(old[k] != anchor[k] for k in FIELDS):
        raise TicketLabError(f"a different trust anchor for ledger {anchor['ledger_id']} is already pinned at "
                             f"{path_of(anchor['ledger_id'])}: one of the two ledgers is not the one you trusted. "
                             f"Nothing was changed.")
    p = path_of(anchor["ledger_id"])
    if old is None:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_json(p, anchor, indent=2, sort_keys=True)
    return p


def problem(st) -> str:
    """'' when the trail is the one this person's anchor names, else why not."""
    if not st.rows or st.ledger_id is None:
        return ""
    anchor = load(st.ledger_id)
    if anchor is None:
        return (f"no trust anchor for ledger {st.ledger_id} in {anchor_dir()}: nothing outside the ledger says it is "
                f"the ledger you trust (a fresh `init` over an emptied log looks exactly like this). Pin its anchor "
                f"from an admin with `ticketlab anchor pin FILE` (their `ticketlab anchor export`)")
    want = facts(st)
    bad = [k for k in FIELDS if anchor[k] != want[k]]
    if bad:
        return (f"this ledger is not the one your trust anchor {path_of(st.ledger_id)} names ({', '.join(bad)} "
                f"differ): it was re-initialised or replaced")
    return ""
