"""Opening the ledger file: who may open it when, and what to say when DuckDB refuses.

DuckDB allows one writing process per file (other processes, readers included, are refused with a
lock error), and inside one process it refuses to open a file read-only while it is open read-write
or the other way round. The dashboard runs its tabs and jobs panel as threads of one process, so
this module keeps a gate per ledger file: read-only connections share it, a read-write connection
has it alone, and a thread that asks for the other mode while holding one gets a clear error instead
of a deadlock. Across processes the lock is retried until a deadline.

Every refusal is explained honestly: which process holds the lock and since when (DuckDB names the
pid), the same-process mode conflict, real damage (with a backup command; nothing here ever deletes
or replaces the file) and a file written by a newer DuckDB.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from pruning.errors import TicketLabError
from pruning.procs import process_command, process_started_at


class LedgerLocked(TicketLabError):
    """Another process holds the ledger for writing, for longer than we waited."""


class LedgerBusyHere(TicketLabError):
    """The ledger is open in this process in the other mode (read-only vs read-write)."""


class LedgerDamaged(TicketLabError):
    """The file is not a readable DuckDB database; it was left exactly as it was."""


_HEADER_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file
_CORRUPT = ("corrupt", "checksum", "could not read enough bytes", "not a valid duckdb database",
            "invalid database file", "failed to read database header")
_NEWER = ("serialization error", "storage version", "is newer than", "version number")


# --- in-process gate --------------------------------------------------------------------------------
class _Gate:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.readers = 0
        self.writer: int | None = None
        self.waiting_writers = 0


_gates: dict[str, _Gate] = {}
_gates_lock = threading.Lock()
_held = threading.local()  # per thread: {path: [mode, depth]}


def _gate(key: str) -> _Gate:
    with _gates_lock:
        return _gates.setdefault(key, _Gate())


def _held_map() -> dict[str, list]:
    if not hasattr(_held, "map"):
        _held.map = {}
    return _held.map


def _mode_name(read_only: bool) -> str:
    return "read-only" if read_only else "read-write"


@contextlib.contextmanager
def _gated(path: Path, read_only: bool, deadline: float) -> Iterator[None]:
    key = str(path)
    mode = "ro" if read_only else "rw"
    held = _held_map()
    if key in held:
        if held[key][0] != mode:
            raise LedgerBusyHere(
                f"ledger {path} is already open {_mode_name(not read_only)} in this thread, and DuckDB cannot "
                f"open it {_mode_name(read_only)} alongside. Nothing was changed and the file is fine: finish "
                f"the {_mode_name(not read_only)} work (close its snapshot or transaction) before starting this.")
        held[key][1] += 1
        try:
            yield
        finally:
            held[key][1] -= 1
        return
    gate = _gate(key)
    me = threading.get_ident()
    with gate.cond:
        if mode == "rw":
            gate.waiting_writers += 1
            try:
                ok = gate.cond.wait_for(lambda: gate.readers == 0 and gate.writer is None,
                                        timeout=max(0.0, deadline - time.monotonic()))
            finally:
                gate.waiting_writers -= 1
            if ok:
                gate.writer = me
        else:  # writers first, so a stream of dashboard reads cannot starve a decision being recorded
            ok = gate.cond.wait_for(lambda: gate.writer is None and gate.waiting_writers == 0,
                                    timeout=max(0.0, deadline - time.monotonic()))
            if ok:
                gate.readers += 1
        if not ok:
            gate.cond.notify_all()
            raise LedgerLocked(
                f"ledger {path} is busy in this process: another thread (a dashboard tab or a job) kept it open "
                f"for longer than the wait. Nothing was changed; try again in a moment.")
    held[key] = [mode, 1]
    try:
        yield
    finally:
        del held[key]
        with gate.cond:
            if mode == "rw":
                gate.writer = None
            else:
                gate.readers -= 1
            gate.cond.notify_all()


# --- explaining DuckDB's refusals -----------------------------------------------------------------------
def _backup_hint(path: Path) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return (f"It was not changed. Keep a copy before anything else: `cp -p {path} {path}.damaged-{stamp}`; then "
            f"restore your latest backup to {path}, or point --ledger (or TICKETLAB_LEDGER) at a new file to carry "
            f"on while the damaged one is kept for recovery.")


def lock_holder(message: str) -> str:
    """'pid N (`command`), running since T UTC' from DuckDB's lock message, as far as this host knows."""
    m = re.search(r"PID (\d+)", message)
    if not m:
        h = re.search(r"held in (\S+)", message)
        return f"a process running {h.group(1)}" if h else "another process"
    pid = int(m.group(1))
    parts = [f"pid {pid}"]
    cmd = process_command(pid)
    if cmd:
        parts.append(f"`{cmd}`")
    started = process_started_at(pid)
    text = " ".join(parts)
    if started is not None:
        text += f", running since {started:%Y-%m-%d %H:%M:%S} UTC"
    return text


def is_lock_error(e: Exception) -> bool:
    return isinstance(e, duckdb.IOException) and "lock" in str(e).lower()


def damage(path: Path, e: Exception) -> TicketLabError | None:
    """A LedgerDamaged (or newer-DuckDB) error if `e` says the file's content is bad; None otherwise."""
    text = str(e).lower()
    if any(s in text for s in _NEWER) and "corrupt" not in text:
        return TicketLabError(f"ledger {path} was written by a newer DuckDB than this one ({duckdb.__version__}): "
                              f"{e}. Upgrade duckdb (`pip install -U duckdb`); the file was not changed.")
    if not any(s in text for s in _CORRUPT):
        return None
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        size, head = -1, b""
    if size == 0:
        what = "is empty (0 bytes; probably a crash while it was first created)"
    elif head[8:12] != _HEADER_MAGIC:
        what = "does not start with DuckDB's file header: it is not a DuckDB database, or it was overwritten"
    else:
        what = f"is a DuckDB file whose content is damaged ({e})"
    return LedgerDamaged(f"ledger {path} {what}. {_backup_hint(path)}")


def explain(path: Path, e: duckdb.Error, read_only: bool) -> TicketLabError:
    if isinstance(e, duckdb.ConnectionException) and "different configuration" in str(e):
        return LedgerBusyHere(
            f"ledger {path} is already open in this process in the other mode (read-only vs read-write), by a "
            f"connection outside Ticket Lab's ledger, and DuckDB cannot open it {_mode_name(read_only)} alongside. "
            f"Nothing was changed and the file is fine: close that connection first.")
    return damage(path, e) or TicketLabError(f"ledger {path} cannot be opened: {e}. The file was not changed.")


# --- opening ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def connection(path: Path, read_only: bool, wait_s: float) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection held only for the block, through the in-process gate, retrying a cross-process lock
    for up to wait_s seconds. DuckDB errors that mean damage are explained; others pass through."""
    start = time.monotonic()
    deadline = start + wait_s
    with _gated(path, read_only, deadline):
        while True:
            try:
                con = duckdb.connect(str(path), read_only=read_only and path.exists())
                break
            except duckdb.Error as e:
                if not is_lock_error(e):
                    raise explain(path, e, read_only) from e
                if time.monotonic() > deadline:
                    raise LedgerLocked(
                        f"ledger {path} is locked by another process that is writing to it ({lock_holder(str(e))}); "
                        f"waited {time.monotonic() - start:.0f} s. Try again when that job finishes.") from e
                time.sleep(0.05)
        try:
            yield con
        except duckdb.Error as e:
            bad = damage(path, e)
            if bad is None:
                raise
            raise bad from e
        finally:
            con.close()
