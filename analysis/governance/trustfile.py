"""Trust files (`ticketlab people export`): the registry's names, public keys and roles for verifying
bundles away from the ledger, with the ledger's trust anchor, signed by an admin of that ledger.

An unsigned list of keys is whatever whoever last edited it wanted; a signed one names who vouched for
it. On reading, the admin's signature must verify with the admin key the file itself lists, the anchor
must be signed and name the same ledger, and when this person has pinned that ledger's anchor (`anchor
pin`), the file's anchor must be that one.
"""

from __future__ import annotations

from pruning.errors import TicketLabError

from . import anchor
from .chain import canonical
from .keys import Signer, verify

SIGNED = ("signed_by", "key_id", "signature")


def export(st, signer: Signer) -> dict:
    """The trust file of a loaded trail, signed by `signer` (an admin of it, holding its pinned anchor)."""
    person = st.registry.people.get(signer.name)
    if person is None or person.key_id != signer.key_id or "admin" not in person.roles:
        raise TicketLabError(f"{signer.name} is not an admin of ledger {st.ledger_id} with this key: a trust "
                                    f"file is signed by an admin (`--as ADMIN`).")
    pinned = anchor.load(st.ledger_id)
    if pinned is None or anchor.problem(st):
        raise TicketLabError(anchor.problem(st) + "; nothing was written.")
    body = st.registry.trust() | {"anchor": pinned}
    return body | {"signed_by": signer.name, "key_id": signer.key_id, "signature": signer.sign(canonical(body))}


def check(trust: dict, where: str) -> dict:
    """The trust file if an admin it lists signed it and its anchor holds; else one clear error."""
    body = {k: v for k, v in trust.items() if k not in SIGNED}
    person = trust.get("people", {}).get(trust.get("signed_by") or "")
    key = ((person or {}).get("keys") or {}).get(trust.get("key_id") or "") or {}
    if not (person and "admin" in person.get("roles", []) and not key.get("revoked")
            and isinstance(key.get("public_key"), str) and isinstance(trust.get("signature"), str)
            and verify(key["public_key"], canonical(body), trust["signature"])):
        raise TicketLabError(f"trust file {where} is not signed by an admin it lists (unsigned, edited, or "
                                    f"from before trust files were signed): ask an admin for a fresh one "
                                    f"(`ticketlab people export --as ADMIN`).")
    a = anchor.check_signed(trust.get("anchor"), f"the anchor in trust file {where}")
    if a["ledger_id"] != trust.get("ledger_id"):
        raise TicketLabError(f"trust file {where} carries the anchor of ledger {a['ledger_id']}, but lists the "
                                    f"people of ledger {trust.get('ledger_id')}.")
    mine = anchor.load(a["ledger_id"])
    if mine is not None and any(mine[k] != a[k] for k in anchor.FIELDS):
        raise TicketLabError(f"trust file {where} names a ledger {a['ledger_id']} other than the one your "
                                    f"pinned anchor {anchor.path_of(a['ledger_id'])} names: it was re-initialised.")
    return trust
