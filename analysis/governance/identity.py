"""Who did something: the user name recorded as a ticket's creator and as the default actor.

There is no authentication here: the name comes from `$TICKETLAB_USER` or the OS account. The
separation-of-duties rule compares these names, so a shared lab should set `TICKETLAB_USER`.
"""

from __future__ import annotations

import getpass
import os
import socket

from ..ledger import Ledger, _now


def current_user() -> str:
    name = os.environ.get("TICKETLAB_USER", "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        return "unknown"


def creator_rows(ticket_id: str, user: str | None = None) -> list[tuple[str, list]]:
    """Statements recording who made a ticket; for `Run.extra_sql`, so the creator lands in the same
    transaction as the ticket itself. The first recorder wins: re-recording never changes the creator."""
    return [("INSERT INTO ticket_meta (ticket_id, created_by, host, recorded_at) VALUES (?, ?, ?, ?) "
             "ON CONFLICT DO NOTHING", [ticket_id, user or current_user(), socket.gethostname(), _now()])]


def record_creator(ledger: Ledger, ticket_id: str, user: str | None = None) -> None:
    with ledger.transaction() as con:
        for sql, args in creator_rows(ticket_id, user):
            con.execute(sql, args)


def creator_of(ledger: Ledger, ticket_id: str) -> str | None:
    rows = ledger.query("SELECT created_by FROM ticket_meta WHERE ticket_id = ?", [ticket_id])
    return rows[0]["created_by"] if rows else None
