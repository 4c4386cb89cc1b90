"""One read-only ledger connection for a multi-query read.

Opening a DuckDB file costs tens of milliseconds, and a review or an audit asks dozens of questions;
a snapshot answers them all on one short-lived connection. It quacks like a `Ledger` for reading
(`query`, `get_ticket`, `path`), so read helpers take either. Close it before writing: DuckDB refuses
a read-write connection next to a read-only one in the same process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..ledger import Ledger


class Snapshot:
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
