"""The DuckDB ledger: every model, ticket, run, metric and review decision, in one file.

DuckDB lets one process hold a file for writing and then refuses every other process, readers
included. So the ledger never keeps a connection: each operation opens, does its work in one
transaction, and closes; a locked file is retried briefly, then reported clearly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from pruning import settings
from pruning.errors import TicketLabError

from .schema import CURRENT_VERSION, MIGRATIONS

LOCK_WAIT_S = float(os.environ.get("TICKETLAB_LOCK_WAIT_S", "15"))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _j(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def machine_description() -> dict:
    import torch

    d = {"host": socket.gethostname(), "platform": platform.platform(), "processor": platform.processor(),
         "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if torch.cuda.is_available():
        d["cuda_device"] = torch.cuda.get_device_name(0)
    return d


@dataclass
class MetricRow:
    suite: str
    task: str
    metric: str
    value: float | None
    stderr: float | None = None
    direction: str | None = None  # "higher", "lower", "target" (closest to `ideal` is best)
    ideal: float | None = None
    n_samples: int | None = None
    limit: int | None = None
    batch_size: str | None = None
    dtype: str | None = None
    padding: str | None = None
    extra: dict | None = None


@dataclass
class Run:
    """An open run: collects results, written in one transaction when the run succeeds."""

    id: str
    subject: str
    dense_sha256: str | None
    metrics: list[MetricRow] = field(default_factory=list)
    samples: list[tuple[str, int | None, dict]] = field(default_factory=list)  # (task, doc_id, data)
    extra_sql: list[tuple[str, list]] = field(default_factory=list)  # further writes in the same transaction

    def add_metric(self, row: MetricRow) -> None:
        self.metrics.append(row)


class Ledger:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else settings.ledger_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    # --- connections ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only and self.path.exists())
                break
            except duckdb.IOException as e:
                if "lock" not in str(e).lower():
                    raise TicketLabError(f"ledger {self.path} cannot be opened: {e}") from e
                if time.monotonic() > deadline:
                    raise TicketLabError(
                        f"ledger {self.path} is locked by another process that is writing to it; waited "
                        f"{LOCK_WAIT_S:.0f} s. Try again when that job finishes (detail: {e})") from e
                time.sleep(0.1)
            except duckdb.Error as e:
                raise TicketLabError(f"ledger {self.path} is not a readable DuckDB file ({e}); move it aside "
                                     f"and a new one will be created.") from e
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def query(self, sql: str, params: list | tuple | None = None) -> list[dict]:
        with self.connect(read_only=True) as con:
            cur = con.execute(sql, params or [])
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def frame(self, sql: str, params: list | tuple | None = None):
        with self.connect(read_only=True) as con:
            return con.execute(sql, params or []).df()

    # --- schema --------------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self.connect() as con:
            return self._version(con)

    @staticmethod
    def _version(con) -> int:
        has = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name='schema_version'").fetchone()[0]
        if not has:
            return 0
        row = con.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _migrate(self) -> None:
        with self.connect() as con:
            version = self._version(con)
            if version > CURRENT_VERSION:
                raise TicketLabError(
                    f"ledger {self.path} has schema version {version}, newer than this Ticket Lab understands "
                    f"({CURRENT_VERSION}). Upgrade Ticket Lab; the file was not changed.")
            for target in range(version + 1, CURRENT_VERSION + 1):
                con.execute("BEGIN TRANSACTION")
                try:
                    if target == 1:
                        con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, applied_at TIMESTAMP)")
                    con.execute(MIGRATIONS[target - 1])
                    con.execute("INSERT INTO schema_version VALUES (?, ?)", [target, _now()])
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise

    # --- models and tickets --------------------------------------------------------------------
    def record_model(self, loaded) -> None:
        n_params = sum(p.numel() for p in loaded.model.parameters())
        with self.transaction() as con:
            con.execute("INSERT INTO models (weights_sha256, spec, family, model_type, n_params, config, added_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        [loaded.weights_sha256, loaded.spec, loaded.family, loaded.model.config.model_type,
                         n_params, loaded.model.config.to_json_string(), _now()])

    def ticket_rows(self, ticket, survival: dict[str, list[tuple]] | None = None,
                    experiment: str | None = None) -> list[tuple[str, list]]:
        """The statements that record a ticket and its survival tables (for use inside a run)."""
        tid = ticket.id  # a property that re-hashes every mask: compute it once
        stmts = [("INSERT INTO tickets (id, content_sha256, name, dense_sha256, method, params, target_sparsity, "
                  "achieved_sparsity, seed, calibration, parent, lineage, structure, experiment, path, created_at) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                  [tid, ticket.content_sha256, ticket.name, ticket.dense["weights_sha256"], ticket.method,
                   _j(ticket.params), ticket.target_sparsity, ticket.achieved_sparsity, ticket.seed,
                   _j(ticket.calibration), ticket.parent, _j(ticket.lineage), _j(ticket.structure),
                   experiment or ticket.lineage.get("experiment"), str(ticket.path) if ticket.path else None,
                   dt.datetime.fromisoformat(ticket.created_at).replace(tzinfo=None)])]
        for table, rows in (survival or {}).items():
            stmts.append((f"DELETE FROM {table} WHERE ticket_id = ?", [tid]))
            for row in rows:
                marks = ", ".join("?" * (len(row) + 1))
                stmts.append((f"INSERT INTO {table} VALUES ({marks})", [tid, *row]))
        return stmts

    def get_ticket(self, ref: str) -> dict:
        rows = self.query("SELECT * FROM tickets WHERE id = ? OR id LIKE ? ORDER BY id", [ref, ref + "%"])
        exact = [r for r in rows if r["id"] == ref]
        if exact:
            return exact[0]
        if len(rows) == 1:
            return rows[0]
        if not rows:
            raise TicketLabError(f"no ticket {ref!r} in the ledger {self.path}; list them with `ticketlab tickets`.")
        raise TicketLabError(f"ticket prefix {ref!r} is ambiguous: {', '.join(r['id'] for r in rows[:5])}")

    # --- runs ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(self, kind: str, command: str, subject: str = "dense", dense_sha256: str | None = None,
            params: dict | None = None) -> Iterator[Run]:
        """A run row marked 'running' now; its results and 'succeeded' written together in one transaction
        at the end, or 'failed' with the error and no results."""
        run = Run(id=uuid.uuid4().hex[:16], subject=subject, dense_sha256=dense_sha256)
        with self.transaction() as con:
            con.execute("INSERT INTO runs (id, kind, command, subject, dense_sha256, status, started_at, params, "
                        "machine, pid, host) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                        [run.id, kind, command, subject, dense_sha256, _now(), _j(params),
                         _j(machine_description()), os.getpid(), socket.gethostname()])
        try:
            yield run
        except BaseException as e:
            self._fail(run.id, f"{type(e).__name__}: {e}")
            raise
        with self.transaction() as con:
            for sql, args in run.extra_sql:
                con.execute(sql, args)
            for m in run.metrics:
                con.execute(
                    'INSERT INTO metrics (run_id, subject, dense_sha256, suite, task, metric, value, stderr, direction, '
                    'ideal, n_samples, "limit", batch_size, dtype, padding, extra) '
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [run.id, run.subject, run.dense_sha256, m.suite, m.task, m.metric, m.value, m.stderr,
                     m.direction, m.ideal, m.n_samples, m.limit, m.batch_size, m.dtype, m.padding, _j(m.extra)])
            for task, doc_id, data in run.samples:
                con.execute("INSERT INTO eval_samples VALUES (?, ?, ?, ?, ?)",
                            [run.id, run.subject, task, doc_id, _j(data)])
            con.execute("UPDATE runs SET status = 'succeeded', ended_at = ? WHERE id = ?", [_now(), run.id])

    def _fail(self, run_id: str, error: str) -> None:
        with self.transaction() as con:
            con.execute("UPDATE runs SET status = 'failed', ended_at = ?, error = ? WHERE id = ?",
                        [_now(), error[:4000], run_id])

    def reap_stale_runs(self) -> int:
        """Runs left 'running' by a process on this host that no longer exists were interrupted: mark them failed."""
        stale = []
        for r in self.query("SELECT id, pid, host FROM runs WHERE status = 'running'"):
            if r["host"] == socket.gethostname() and r["pid"] and not pid_alive(r["pid"]):
                stale.append(r["id"])
        for run_id in stale:
            self._fail(run_id, "interrupted: the process ended before the run finished")
        return len(stale)

    # --- export --------------------------------------------------------------------------------
    def export_parquet(self, out_dir: str | Path) -> list[Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        with self.connect(read_only=True) as con:
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1").fetchall()]
            for t in tables:
                path = out / f"{t}.parquet"
                con.execute(f"COPY {t} TO '{path.as_posix()}' (FORMAT parquet)")
                written.append(path)
        return written


def pid_alive(pid: int) -> bool:
    """Whether a process on this host still runs (a zombie nobody waited for counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited child that nobody waited for still answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
