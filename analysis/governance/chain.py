"""Append-only hash chains over ledger tables (decisions, deployments).

Each row stores `prev_hash` (the previous row's `row_hash`, or GENESIS for the first) and its own
`row_hash`: sha256 over the canonical JSON of its hashed columns, prev_hash included. Editing a row
breaks its own hash; editing it and recomputing the hash breaks the next row's link; deleting a row
leaves a gap in `seq`. Only the newest row can be removed without a trace: deployments record the
hash of the decision they rely on, which anchors approvals that led to a promotion.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

GENESIS = "0" * 64


def _canon(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="microseconds")
    return value


def row_hash(row: dict, fields: tuple[str, ...], json_fields: tuple[str, ...] = ()) -> str:
    content = {}
    for f in fields:
        v = row.get(f)
        if f in json_fields and isinstance(v, str):
            v = json.loads(v)  # hash the JSON value, not DuckDB's spelling of it
        content[f] = _canon(v)
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def append(con, table: str, row: dict, fields: tuple[str, ...], json_fields: tuple[str, ...] = ()) -> dict:
    """Insert `row` at the end of the chain inside the caller's transaction; returns the stored row."""
    last = con.execute(f"SELECT seq, row_hash FROM {table} ORDER BY seq DESC LIMIT 1").fetchone()
    row = dict(row)
    row["seq"] = (last[0] + 1) if last else 1
    row["prev_hash"] = last[1] if last else GENESIS
    for f in json_fields:
        if not isinstance(row.get(f), str):
            row[f] = json.dumps(row[f], sort_keys=True, default=str)
    row["row_hash"] = row_hash(row, fields, json_fields)
    cols = list(row)
    con.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [row[c] for c in cols])
    return row


def first_break(rows: list[dict], fields: tuple[str, ...], json_fields: tuple[str, ...] = ()) -> tuple[dict | None, str]:
    """The first row (in seq order) where the chain is broken and why; (None, '') when intact."""
    prev_hash, expected_seq = GENESIS, 1
    for row in rows:
        if row["seq"] != expected_seq:
            return row, (f"row #{expected_seq} is missing (the chain jumps from #{expected_seq - 1} to "
                         f"#{row['seq']}): a row was deleted")
        if row["prev_hash"] != prev_hash:
            return row, (f"row #{row['seq']} does not follow row #{row['seq'] - 1} (its prev_hash "
                         f"{row['prev_hash'][:12]} is not #{row['seq'] - 1}'s hash {prev_hash[:12]}): "
                         f"the row before it was changed or replaced")
        try:
            actual = row_hash(row, fields, json_fields)
        except (ValueError, TypeError) as e:
            return row, f"row #{row['seq']} cannot be read back ({e})"
        if actual != row["row_hash"]:
            return row, (f"row #{row['seq']} was changed after it was written (its content hashes to "
                         f"{actual[:12]}, the stored row_hash is {row['row_hash'][:12]})")
        prev_hash, expected_seq = row["row_hash"], expected_seq + 1
    return None, ""
