"""The ledger's SQL for governance: the signed log (`governance_log`), its unsigned predecessors
(`legacy_*`), and the few ledger facts governance reads (a ticket's dense model, a model's spec, survival
tables for the scorecard). Governance modules call these named functions; none of them spells SQL.

`db` is a `Ledger` or a read `Snapshot` (one read-only connection for many questions, below); `con` is a
DuckDB connection inside the caller's write transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .store import Ledger

LOG = "governance_log"
LEGACY = ("legacy_decisions", "legacy_deployments", "legacy_ticket_meta")


class Snapshot:
    """One read-only ledger connection for a multi-query read.

    Opening a DuckDB file costs tens of milliseconds, and a review or an audit asks dozens of questions;
    a snapshot answers them all on one short-lived connection. It quacks like a `Ledger` for reading
    (`query`, `get_ticket`, `path`), so read helpers take either. Close it before writing: DuckDB refuses
    a read-write connection next to a read-only one in the same process.
    """

    def __init__(self, ledger: Ledger, con):
        self.ledger, self.con, self.path = ledger, con, ledger.path

    def query(self, sql: str, params: list | tuple | None = None) -> list[dict]:
        cur = self.con.execute(sql, params or [])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def get_ticket(self, ref: str) -> dict:
        return Ledger.get_ticket(self, ref)  # same lookup and messages, on this connection


@contextlib.contextmanager
def snapshot(ledger: Ledger | Snapshot) -> Iterator[Snapshot]:
    if isinstance(ledger, Snapshot):
        yield ledger
        return
    with ledger.connect(read_only=True) as con:
        yield Snapshot(ledger, con)


# --- the signed log ------------------------------------------------------------------------------------
def log_rows(db) -> list[dict]:
    """Every governance record, oldest first."""
    return db.query(f"SELECT * FROM {LOG} ORDER BY seq")


def first_record(db) -> dict | None:
    rows = db.query(f"SELECT * FROM {LOG} WHERE seq = 1")
    return rows[0] if rows else None


def log_head(con) -> tuple[int, str] | None:
    """(seq, row hash) of the newest record, read inside the writer's transaction; None for an empty log."""
    last = con.execute(f"SELECT seq, row_hash FROM {LOG} ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(last[0]), last[1]) if last else None


def insert_record(con, row: dict) -> None:
    """Append one signed record (its columns as given), inside the writer's transaction."""
    cols = list(row)
    con.execute(f"INSERT INTO {LOG} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [row[c] for c in cols])


# --- ledger facts governance reads ----------------------------------------------------------------------
def ticket_dense_hashes(db) -> dict[str, str]:
    """ticket id -> the sha256 of the dense model it was pruned from."""
    return {r["id"]: r["dense_sha256"] for r in db.query("SELECT id, dense_sha256 FROM tickets")}


def weights_of_spec(db, spec: str) -> list[str]:
    """The weight hashes recorded for a model spec (a name, hub id or folder)."""
    return [r["weights_sha256"] for r in db.query("SELECT weights_sha256 FROM models WHERE spec = ?", [spec])]


def dense_model(db, weights_sha256: str) -> dict | None:
    """A dense model's recorded spec, size and type."""
    rows = db.query("SELECT spec, n_params, model_type FROM models WHERE weights_sha256 = ?", [weights_sha256])
    return rows[0] if rows else None


def survival_by_layer(db, ticket_id: str) -> list[dict]:
    return db.query("SELECT layer, matrix, kept, total FROM survival_layer WHERE ticket_id = ? ORDER BY layer, "
                    "matrix", [ticket_id])


def survival_by_query_head(db, ticket_id: str) -> list[dict]:
    return db.query("SELECT layer, head, kept, total FROM survival_head WHERE ticket_id = ? AND kind = 'q' "
                    "ORDER BY layer, head", [ticket_id])


# --- unsigned history from before signed governance ----------------------------------------------------
def legacy_tables(db) -> dict[str, list[dict]]:
    """`decisions`, `deployments`, `ticket_meta` of the previous schema (empty lists where absent)."""
    have = {r["table_name"] for r in db.query("SELECT table_name FROM information_schema.tables")}
    return {t.removeprefix("legacy_"): db.query(f"SELECT * FROM {t}") if t in have else [] for t in LEGACY}


def legacy_decisions_by_ticket(db) -> dict[str, dict]:
    """ticket id -> its newest unsigned decision from before signed governance."""
    out: dict[str, dict] = {}
    if db.query("SELECT 1 FROM information_schema.tables WHERE table_name = 'legacy_decisions'"):
        for r in db.query("SELECT * FROM legacy_decisions ORDER BY seq"):
            out[r["ticket_id"]] = r
    return out
