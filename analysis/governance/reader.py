"""One read-only ledger connection for a multi-query read (`analysis.ledger.governance_store.Snapshot`).

Opening a DuckDB file costs tens of milliseconds, and a review or an audit asks dozens of questions;
a snapshot answers them all on one short-lived connection. It quacks like a `Ledger` for reading
(`query`, `get_ticket`, `path`), so read helpers take either. Close it before writing: DuckDB refuses
a read-write connection next to a read-only one in the same process.
"""

from __future__ import annotations

from ..ledger.governance_store import Snapshot, snapshot

__all__ = ["Snapshot", "snapshot"]
