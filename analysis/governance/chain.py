"""The governance log: one append-only chain of signed records in the ledger (`governance_log`).

Every governance record (ledger initialisation, people and roles, key revocation, policy, ticket
creation, decision, promotion, rollback) is one row. Its `row_hash` is sha256 over the canonical JSON
of its content, which includes the previous row's hash; its `signature` is the actor's P-256 ECDSA
signature over the same bytes. Rewriting rows therefore needs the actors' private keys, and deleting
the newest rows is caught by the witness log (`witness.py`) and by the heads carried in bundles.
Whether the actor was allowed to sign a record, and whether it keeps the rules, is judged by `replay.replay`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from ..ledger import governance_store as store
from .keys import Signer

GENESIS = "0" * 64
TABLE = store.LOG
FIELDS = ("seq", "kind", "actor", "key_id", "subject", "body", "signed_at", "prev_hash")


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _at(value: Any) -> str:
    return value.isoformat(timespec="microseconds") if isinstance(value, dt.datetime) else str(value)


def signed_bytes(row: dict) -> bytes:
    """What the row hash and the signature cover. `body` is stored as canonical JSON text and hashed as such."""
    content = {f: row.get(f) for f in FIELDS}
    content["signed_at"] = _at(content["signed_at"])
    return canonical(content)


def row_hash(row: dict) -> str:
    return hashlib.sha256(signed_bytes(row)).hexdigest()


def body_of(row: dict) -> dict:
    """The record's body; {} when a hand-made record carries something else (the replay voids it)."""
    try:
        body = json.loads(row["body"]) if isinstance(row["body"], str) else row["body"]
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def head(con) -> tuple[int, str]:
    return store.log_head(con) or (0, GENESIS)


def append(con, signer: Signer, kind: str, body: dict, subject: str | None = None) -> dict:
    """Sign and insert one record at the end of the chain, inside the caller's transaction."""
    seq, prev = head(con)
    row = {"seq": seq + 1, "kind": kind, "actor": signer.name, "key_id": signer.key_id, "subject": subject,
           "body": canonical(body).decode(), "signed_at": now(), "prev_hash": prev}
    data = signed_bytes(row)
    row["row_hash"] = hashlib.sha256(data).hexdigest()
    row["signature"] = signer.sign(data)
    store.insert_record(con, row)
    return row


def rows(ledger) -> list[dict]:
    return store.log_rows(ledger)


def link_problem(rows_: list[dict]) -> tuple[dict | None, str]:
    """The first row where the chain of hashes breaks and why; (None, '') when every link holds."""
    prev, expected = GENESIS, 1
    for row in rows_:
        if row["seq"] != expected:
            return row, (f"record #{expected} is missing (the log jumps from #{expected - 1} to #{row['seq']}): "
                         f"a record was deleted")
        if row["prev_hash"] != prev:
            return row, (f"record #{row['seq']} does not follow record #{row['seq'] - 1} (its prev_hash "
                         f"{row['prev_hash'][:12]} is not #{row['seq'] - 1}'s hash {prev[:12]}): the record before "
                         f"it was changed or replaced")
        try:
            actual = row_hash(row)
        except (ValueError, TypeError) as e:
            return row, f"record #{row['seq']} cannot be read back ({e})"
        if actual != row["row_hash"]:
            return row, (f"record #{row['seq']} was changed after it was written (its content hashes to "
                         f"{actual[:12]}, the stored row_hash is {row['row_hash'][:12]})")
        prev, expected = row["row_hash"], expected + 1
    return None, ""
