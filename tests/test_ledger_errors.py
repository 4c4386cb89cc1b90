"""The ledger says what really happened, never advises destroying data, and keeps finished results.

Real DuckDB files, real competing processes (a subprocess holding the write lock), real threads."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import duckdb
import pytest

import analysis.ledger.store
from analysis.governance.reader import snapshot
from analysis.ledger import Ledger, LedgerLocked, MetricRow
from pruning.errors import TicketLabError

REPO = Path(__file__).resolve().parents[1]

HOLDER = textwrap.dedent("""
    import pathlib, sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    con.execute("BEGIN TRANSACTION")
    print("locked", flush=True)
    if sys.argv[2] == "stdin":
        sys.stdin.readline()
    else:  # hold until the waiting writer has spilled its results, so that path is always taken
        folder, deadline = pathlib.Path(sys.argv[2]), time.time() + 60
        while not list(folder.glob("*.json")) and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
    con.execute("ROLLBACK")
    con.close()
""")


class Holder:
    """Another process holding the ledger's write lock until released."""

    def __init__(self, path: Path, until: str = "stdin"):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), until], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("go\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass
        self.proc.wait(timeout=60)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def ledger(state) -> Ledger:
    led = Ledger()
    with led.run("eval", "seed row") as run:
        run.add_metric(MetricRow("ppl", "wikitext2", "perplexity", 10.0))
    return led


# --- same process, other mode -------------------------------------------------------------------------
def test_same_process_read_only_vs_read_write_is_named_and_touches_nothing(ledger):
    before = _digest(ledger.path)
    foreign = duckdb.connect(str(ledger.path), read_only=True)  # e.g. a page holding a read connection
    try:
        with pytest.raises(TicketLabError) as err:
            with ledger.run("eval", "while a reader is open") as run:
                run.add_metric(MetricRow("ppl", "wikitext2", "perplexity", 1.0))
    finally:
        foreign.close()
    msg = str(err.value)
    assert "already open in this process" in msg and "read-write" in msg, msg
    assert "move it aside" not in msg and "not a readable" not in msg and "new one" not in msg
    assert _digest(ledger.path) == before
    assert [r["command"] for r in ledger.query("SELECT command FROM runs")] == ["seed row"]
    # through the ledger's own API, in one thread: a clear error instead of a deadlock
    with ledger.connect(read_only=True):
        with pytest.raises(TicketLabError, match="already open read-only in this thread"):
            with ledger.transaction():
                pass
    assert _digest(ledger.path) == before


def test_a_read_snapshot_in_another_thread_makes_a_writer_wait_not_fail(ledger):
    opened, release, errors = threading.Event(), threading.Event(), []

    def tab_reading():
        try:
            with snapshot(ledger) as db:
                db.query("SELECT count(*) FROM runs")
                opened.set()
                release.wait(10)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    reader = threading.Thread(target=tab_reading)
    reader.start()
    assert opened.wait(10)
    threading.Timer(0.3, release.set).start()
    with ledger.run("eval", "writer tab") as run:  # waits for the reader, then writes
        run.add_metric(MetricRow("ppl", "wikitext2", "perplexity", 2.0))
    reader.join(10)
    assert not errors
    assert ledger.query("SELECT status FROM runs WHERE command = 'writer tab'") == [{"status": "succeeded"}]


# --- another process --------------------------------------------------------------------------------------
def test_lock_held_by_another_process_names_it(ledger):
    holder = Holder(ledger.path)
    try:
        with pytest.raises(LedgerLocked) as err:
            Ledger(ledger.path, wait_s=0.3).query("SELECT 1")
    finally:
        holder.release()
    msg = str(err.value)
    assert "locked by another process" in msg and f"pid {holder.proc.pid}" in msg, msg
    assert "running since" in msg and "BEGIN TRANSACTION" in msg  # its command line, from /proc
    assert Ledger(ledger.path).query("SELECT count(*) n FROM runs") == [{"n": 1}]


# --- damage, only when it is damage --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["junk", "empty", "truncated", "bit rot"])
def test_a_damaged_file_is_named_kept_and_never_replaced(state, kind):
    path = state / "damaged.duckdb"
    if kind == "junk":
        path.write_bytes(b"this is not a database\n" * 100)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        led = Ledger(path)
        with led.run("eval", "r") as run:
            run.add_metric(MetricRow("ppl", "w", "p", 1.0))
        data = bytearray(path.read_bytes())
        if kind == "truncated":
            data = data[:20000]  # the first data block cut short
        else:
            data[4196:4496] = b"\xff" * 300  # inside a checksummed header block
        path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(TicketLabError) as err:
        Ledger(path).query("SELECT count(*) FROM runs")
    msg = str(err.value)
    assert "not changed" in msg and f"cp -p {path} {path}.damaged-" in msg, msg
    assert "move it aside" not in msg and "new one will be created" not in msg
    assert path.read_bytes() == before and sorted(p.name for p in state.iterdir() if "damaged" in p.name) == \
        ["damaged.duckdb"]
    r = _cli("tickets", "--ledger", str(path), env={"TICKETLAB_STATE_DIR": str(state)})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cp -p" in r.stderr, r.stderr
    assert path.read_bytes() == before


# --- finished results survive a lock at commit time -------------------------------------------------------
def test_lock_held_across_a_runs_commit_keeps_the_results(ledger, monkeypatch):
    monkeypatch.setattr(analysis.ledger.store, "LOCK_WAIT_S", 0.3)
    monkeypatch.setattr(analysis.ledger.store, "COMMIT_WAIT_S", 60.0)
    holder = None
    try:
        with ledger.run("eval", "ten minutes of evaluation") as run:
            run.add_metric(MetricRow("ppl", "wikitext2", "perplexity", 12.5, 0.1, "lower"))
            run.samples.append(("wikitext2", 0, {"nll": 2.5}))
            holder = Holder(ledger.path, until=str(ledger.pending_dir))  # frees the lock once results are spilled
    finally:
        if holder:
            holder.release()
    rows = ledger.query("SELECT r.status, m.value FROM runs r JOIN metrics m ON m.run_id = r.id WHERE r.id = ?",
                        [run.id])
    assert rows == [{"status": "succeeded", "value": 12.5}]
    assert ledger.query("SELECT count(*) n FROM eval_samples WHERE run_id = ?", [run.id]) == [{"n": 1}]
    assert list(ledger.pending_dir.glob("*")) == []


def test_results_spilled_when_the_process_must_exit_are_committed_by_the_next_command(ledger, monkeypatch, state):
    monkeypatch.setattr(analysis.ledger.store, "LOCK_WAIT_S", 0.2)
    monkeypatch.setattr(analysis.ledger.store, "COMMIT_WAIT_S", 0.2)
    holder = None
    try:
        with pytest.raises(LedgerLocked, match="next ticketlab command records them"):
            with ledger.run("eval", "finished while locked") as run:
                run.add_metric(MetricRow("ppl", "wikitext2", "perplexity", 7.0))
                holder = Holder(ledger.path)
    finally:
        if holder:
            holder.release()
    assert [p.name for p in ledger.pending_dir.iterdir()] == [f"{run.id}.json"]
    r = _cli("tickets")  # any command
    assert r.returncode == 0, r.stderr
    assert ledger.query("SELECT status FROM runs WHERE id = ?", [run.id]) == [{"status": "succeeded"}]
    assert ledger.query("SELECT value FROM metrics WHERE run_id = ?", [run.id]) == [{"value": 7.0}]
    assert list(ledger.pending_dir.glob("*")) == []
    r = _cli("tickets")  # committing again would duplicate the metrics: it does not
    assert ledger.query("SELECT count(*) n FROM metrics WHERE run_id = ?", [run.id]) == [{"n": 1}]


# --- stale runs -------------------------------------------------------------------------------------------
def test_every_command_marks_runs_of_dead_or_replaced_processes_failed(ledger, state):
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os, signal
        from analysis.ledger import Ledger, MetricRow
        with Ledger().run("eval", "killed mid-run") as run:
            run.add_metric(MetricRow("ppl", "w", "p", 1.0))
            os.kill(os.getpid(), signal.SIGKILL)
    """)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # a run whose pid now belongs to a younger process (this one): the number was reused
    with ledger.transaction() as con:
        con.execute("INSERT INTO runs (id, kind, command, status, started_at, pid, host) VALUES "
                    "('reused', 'eval', 'pid reused', 'running', ?, ?, ?)",
                    [dt.datetime(2001, 1, 1), os.getpid(), os.uname().nodename])
        con.execute("INSERT INTO runs (id, kind, command, status, started_at, pid, host) VALUES "
                    "('alive', 'eval', 'still going', 'running', ?, ?, ?)",
                    [dt.datetime.now(dt.UTC).replace(tzinfo=None), os.getpid(), os.uname().nodename])
    r = _cli("methods")  # a command that does not otherwise touch the ledger
    assert r.returncode == 0, r.stderr
    status = {x["command"]: (x["status"], x["error"]) for x in ledger.query("SELECT command, status, error FROM runs")}
    assert status["killed mid-run"][0] == "failed" and "interrupted" in status["killed mid-run"][1]
    assert status["pid reused"][0] == "failed"
    assert status["still going"] == ("running", None)
    assert ledger.query("SELECT count(*) n FROM metrics m JOIN runs r ON r.id = m.run_id "
                        "WHERE r.command = 'killed mid-run'") == [{"n": 0}]


# --- concurrent writers -----------------------------------------------------------------------------------
TRAIL = "CREATE TABLE IF NOT EXISTS test_trail (seq BIGINT PRIMARY KEY, prev BIGINT, who VARCHAR)"


def _append(led: Ledger, who: str) -> None:
    """A read-then-append like the decision trail: the next seq follows the last one seen."""
    with led.transaction() as con:
        last = con.execute("SELECT coalesce(max(seq), 0) FROM test_trail").fetchone()[0]
        con.execute("INSERT INTO test_trail VALUES (?, ?, ?)", [last + 1, last, who])


def _check_trail(led: Ledger, n: int) -> None:
    rows = led.query("SELECT seq, prev FROM test_trail ORDER BY seq")
    assert [(r["seq"], r["prev"]) for r in rows] == [(i, i - 1) for i in range(1, n + 1)]  # one line, no fork


def test_dashboard_tabs_writing_and_reading_at_once_never_fail_or_fork(ledger):
    with ledger.transaction() as con:
        con.execute(TRAIL)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def tab(i: int) -> None:
        try:
            start.wait()
            for j in range(4):
                if i % 2:
                    with snapshot(ledger) as db:
                        db.query("SELECT count(*) FROM runs")
                else:
                    _append(ledger, f"tab{i}")
                    with ledger.run("eval", f"tab{i}-{j}") as run:
                        run.add_metric(MetricRow("ppl", "w", "p", float(j)))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=tab, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    _check_trail(ledger, 16)
    assert ledger.query("SELECT count(*) n FROM runs WHERE status = 'succeeded'") == [{"n": 17}]


def test_processes_writing_at_once_never_fail_or_fork(ledger):
    with ledger.transaction() as con:
        con.execute(TRAIL)
    code = textwrap.dedent("""
        import sys
        from analysis.ledger import Ledger, MetricRow
        sys.path.insert(0, sys.argv[2])
        from test_ledger_errors import _append
        led = Ledger(sys.argv[1])
        for j in range(5):
            _append(led, sys.argv[3])
            with led.run("eval", f"{sys.argv[3]}-{j}") as run:
                run.add_metric(MetricRow("ppl", "w", "p", float(j)))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(ledger.path), str(REPO / "tests"), f"p{i}"], cwd=REPO,
                              env={**os.environ, "TICKETLAB_LOCK_WAIT_S": "120"}, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    _check_trail(ledger, 15)
    assert ledger.query("SELECT count(*) n FROM runs WHERE status = 'succeeded'") == [{"n": 16}]


def test_two_decisions_at_the_same_moment_from_two_tabs_are_both_recorded_in_one_trail(state, tiny_llama, monkeypatch):
    from govern_helpers import make_recorded_ticket, setup_lab

    from analysis.governance import decisions

    lab = setup_lab(state, tiny_llama, monkeypatch)
    tickets = [make_recorded_ticket(tiny_llama, lab.ledger, s, signer=lab["carol"]) for s in (0.5, 0.6)]
    start, errors, done = threading.Barrier(4), [], []

    def tab(i: int) -> None:
        reviewer = lab["alice"] if i % 2 else lab["bob"]
        start.wait()
        for _ in range(8):  # a tab told "record it again" (another decision landed first) clicks again
            try:
                done.append(decisions.decide(Ledger(), tickets[i % 2].id, "approve" if i < 2 else "reject",
                                             reviewer, f"tab {i}"))
                return
            except TicketLabError as e:
                if "again" not in str(e):
                    errors.append(e)
                    return
            except BaseException as e:  # noqa: BLE001 - an uncaught error: reported below
                errors.append(e)
                return

    threads = [threading.Thread(target=tab, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(done) == 4
    assert decisions.audit(lab.ledger)["ok"]
    seqs = [r["seq"] for r in lab.ledger.query("SELECT seq FROM governance_log ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))  # one chain: no fork, no gap
