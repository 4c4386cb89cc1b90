"""The DuckDB ledger: every model, ticket, run, metric and review decision, in one file.

DuckDB lets one process hold a file for writing and then refuses every other process, readers
included. So the ledger never keeps a connection: each operation opens, does its work in one
transaction, and closes; a locked file is retried briefly, then reported clearly
(`ledger_access` explains every refusal and serializes the threads of one process).

A finished run's results are never dropped on a lock: its statements are spilled to
`<ledger>.pending/<run id>.json` and committed as soon as the lock frees, by this process if it
can wait, else by the next command (`Ledger.maintain`, which every CLI command calls first).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from pruning import durable, settings
from pruning.errors import TicketLabError
from pruning.procs import pid_alive, same_process
from pruning.refs import resolve_ref

from . import access as ledger_access
from .access import LedgerLocked
from .schema import CURRENT_VERSION, MIGRATIONS

__all__ = ["Ledger", "LedgerLocked", "MetricRow", "Run", "pid_alive"]

LOCK_WAIT_S = float(os.environ.get("TICKETLAB_LOCK_WAIT_S", "15"))
# how long a finished run waits for a locked ledger before leaving its results to the next command
COMMIT_WAIT_S = float(os.environ.get("TICKETLAB_COMMIT_WAIT_S", "300"))


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
    def __init__(self, path: str | Path | None = None, *, wait_s: float | None = None):
        self.path = Path(path).expanduser().resolve() if path else settings.ledger_path()
        self.wait_s = wait_s  # None: LOCK_WAIT_S (read at each call, so a setting made later applies)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    # --- connections ---------------------------------------------------------------------------
    def connect(self, read_only: bool = False, wait_s: float | None = None
                ) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        wait = wait_s if wait_s is not None else self.wait_s if self.wait_s is not None else LOCK_WAIT_S
        return ledger_access.connection(self.path, read_only, wait)

    @contextlib.contextmanager
    def transaction(self, wait_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction. The gate in ledger_access makes writers of this process take turns and
        DuckDB's file lock does so across processes, so a read-then-append (the decision trail) cannot
        interleave with another; a conflict DuckDB still reports becomes a clear error."""
        with self.connect(wait_s=wait_s) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException as e:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                if isinstance(e, duckdb.Error):
                    durable.raise_if_full(e, self._written(e))
                raise
            try:
                durable.crash_point("ledger.commit")
                con.execute("COMMIT")
            except (duckdb.Error, OSError) as e:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                durable.raise_if_full(e, self._written(e))  # a full disk is not a conflict: name it
                if not isinstance(e, duckdb.TransactionException):
                    raise
                raise TicketLabError(f"ledger {self.path}: another writer changed the same rows at the same time "
                                     f"({e}); nothing was written. Try again.") from e

    def _written(self, e: BaseException) -> Path:
        """The file DuckDB failed to write (its message names it: the ledger or its .wal), else the ledger."""
        m = re.search(r'write file "([^"]+)"', str(e))
        return Path(m.group(1)) if m else self.path

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
        if self.path.exists():  # most opens: up to date, and a read-only look does not block other readers
            with self.connect(read_only=True) as con:
                if self._version(con) == CURRENT_VERSION:
                    return
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
        """A ticket row by id or unique prefix (>= 6 hex digits), matched literally; see `resolve_ref`."""
        rows = self.query("SELECT * FROM tickets WHERE id = ? OR starts_with(id, ?) ORDER BY id",
                          [ref, ref.strip().lower()])
        tid = resolve_ref(ref, [r["id"] for r in rows], "ticket", f"the ledger {self.path}")
        return next(r for r in rows if r["id"] == tid)

    # --- runs ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(self, kind: str, command: str, subject: str = "dense", dense_sha256: str | None = None,
            params: dict | None = None) -> Iterator[Run]:
        """A run row marked 'running' now; its results and 'succeeded' written together in one transaction
        at the end, or 'failed' with the error and no results. Results are kept through a locked ledger
        (see the module docstring)."""
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
        durable.crash_point("ledger.run.finished")
        self._finish(run.id, self._result_statements(run))

    @staticmethod
    def _result_statements(run: Run) -> list[tuple[str, list]]:
        stmts = list(run.extra_sql)
        for m in run.metrics:
            stmts.append((
                'INSERT INTO metrics (run_id, subject, dense_sha256, suite, task, metric, value, stderr, direction, '
                'ideal, n_samples, "limit", batch_size, dtype, padding, extra) '
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run.id, run.subject, run.dense_sha256, m.suite, m.task, m.metric, m.value, m.stderr,
                 m.direction, m.ideal, m.n_samples, m.limit, m.batch_size, m.dtype, m.padding, _j(m.extra)]))
        for task, doc_id, data in run.samples:
            stmts.append(("INSERT INTO eval_samples VALUES (?, ?, ?, ?, ?)",
                          [run.id, run.subject, task, doc_id, _j(data)]))
        stmts.append(("UPDATE runs SET status = 'succeeded', ended_at = ?, error = NULL WHERE id = ?",
                      [_now(), run.id]))
        return stmts

    def _apply(self, run_id: str, stmts: list[tuple[str, list]], wait_s: float | None = None) -> None:
        """Write a run's results in one transaction, once: a run already 'succeeded' (committed by
        another command from its spill) is left alone."""
        with self.transaction(wait_s=wait_s) as con:
            row = con.execute("SELECT status FROM runs WHERE id = ?", [run_id]).fetchone()
            if row is not None and row[0] == "succeeded":
                return
            for sql, args in stmts:
                con.execute(sql, args)

    def _finish(self, run_id: str, stmts: list[tuple[str, list]]) -> None:
        try:
            self._apply(run_id, stmts)
            return
        except LedgerLocked:
            pass
        except BaseException as e:
            self._fail(run_id, f"recording the results failed: {type(e).__name__}: {e}")
            raise
        spill = self._spill(run_id, stmts)  # from here on a crash or an exit loses nothing
        print(f"ledger {self.path} is locked; the results of run {run_id} are kept in {spill}. Waiting up to "
              f"{COMMIT_WAIT_S:.0f} s for the lock (or stop: the next ticketlab command records them).", file=sys.stderr)
        try:
            self._apply(run_id, stmts, wait_s=COMMIT_WAIT_S)
        except LedgerLocked as e:
            raise LedgerLocked(f"{e} The finished run {run_id}'s results are kept in {spill}; the next ticketlab "
                               f"command records them.") from e
        spill.unlink(missing_ok=True)

    def _fail(self, run_id: str, error: str) -> None:
        try:
            with self.transaction() as con:
                con.execute("UPDATE runs SET status = 'failed', ended_at = ?, error = ? "
                            "WHERE id = ? AND status = 'running'", [_now(), error[:4000], run_id])
        except TicketLabError:
            # the ledger is locked or damaged: the original error matters more; once this process has
            # ended, any command marks the run failed (reap_stale_runs)
            pass

    # --- pending results and stale runs ------------------------------------------------------------
    @property
    def pending_dir(self) -> Path:
        return self.path.with_name(self.path.name + ".pending")

    def _spill(self, run_id: str, stmts: list[tuple[str, list]]) -> Path:
        path = self.pending_dir / f"{run_id}.json"
        durable.atomic_write_json(path, {"run_id": run_id, "statements": [[s, _encode(a)] for s, a in stmts]})
        durable.crash_point("ledger.spilled")
        return path

    def commit_pending(self) -> list[str]:
        """Commit the results that commands left when the ledger was locked. Returns their run ids."""
        done = []
        folder = self.pending_dir
        if not folder.is_dir():
            return done
        durable.remove_stale_temps(folder)
        for f in sorted(folder.glob("*.json")):
            try:
                spill = json.loads(f.read_text())
                stmts = [(sql, _decode(args)) for sql, args in spill["statements"]]
            except (OSError, ValueError, KeyError, TypeError):
                print(f"warning: {f} is not a readable pending-results file; left in place.", file=sys.stderr)
                continue
            self._apply(spill["run_id"], stmts)
            f.unlink(missing_ok=True)
            done.append(spill["run_id"])
        return done

    def reap_stale_runs(self) -> int:
        """Runs left 'running' by a process on this host that has ended (or whose pid now belongs to a newer
        process) were interrupted: mark them failed. Pending results are committed first."""
        self.commit_pending()
        stale = []
        for r in self.query("SELECT id, pid, host, started_at FROM runs WHERE status = 'running'"):
            if r["host"] == socket.gethostname() and r["pid"] and not same_process(r["pid"], r["started_at"]):
                stale.append(r["id"])
        for run_id in stale:
            self._fail(run_id, "interrupted: the process ended before the run finished")
        return len(stale)

    def maintain(self) -> None:
        """What every command does first: record results left pending, mark dead processes' runs failed."""
        self.reap_stale_runs()

    # --- export --------------------------------------------------------------------------------
    def export_parquet(self, out_dir: str | Path) -> list[Path]:
        """Every table as <table>.parquet in out_dir. Paths and names go to DuckDB as values, never
        pasted into SQL text (a quote in a folder name must not be able to run a statement)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        with self.connect(read_only=True) as con:
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1").fetchall()]
            for t in tables:
                path = out / f"{t}.parquet"
                con.table(t).write_parquet(str(path))
                written.append(path)
        return written


def _encode(args: list) -> list:
    """Statement arguments as JSON: timestamps tagged, numpy scalars as Python numbers."""
    out = []
    for a in args:
        if isinstance(a, dt.datetime):
            out.append({"$datetime": a.isoformat()})
        elif hasattr(a, "item") and not isinstance(a, (str, bytes)):
            out.append(a.item())
        else:
            out.append(a)
    return out


def _decode(args: list) -> list:
    return [dt.datetime.fromisoformat(a["$datetime"]) if isinstance(a, dict) and "$datetime" in a else a
            for a in args]
