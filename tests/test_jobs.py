"""Background jobs (app/jobs.py): structured progress events instead of scraped tqdm redraws, an
explanation while the model loads, one-line errors, and a cancel that never signals a reused pid.
Real runner and CLI subprocesses throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from app import jobs, progress
from pruning.errors import TicketLabError


def _job_dir(name: str = "20200101-000000-abcdef"):
    d = jobs.jobs_dir() / name
    d.mkdir(parents=True)
    return d


def test_a_real_prune_job_writes_progress_events(state, tiny_llama_dir):
    job = jobs.start(["prune", "--model", str(tiny_llama_dir), "--method", "magnitude", "--sparsity", "0.5",
                      "--json"], kind="prune")
    # before the CLI reports anything, the job says what it is doing and why it takes a while
    frac, what = jobs.progress(job["id"])
    assert frac is None and "loading" in what and str(tiny_llama_dir) in what
    done = jobs.wait(job["id"], timeout=180)
    assert done["status"] == "succeeded", done
    events = progress.read_events(progress.events_path(jobs.jobs_dir() / job["id"]))
    bars = [e for e in events if e["kind"] == "progress"]
    assert bars and bars[-1]["desc"] == "prune magnitude" and bars[-1]["done"] == bars[-1]["total"] > 0
    assert events[0]["kind"] == "stage" and events[-1] == {**events[-1], "kind": "stage", "what": "succeeded"}
    assert all(isinstance(e["t"], float) for e in events)


def test_progress_comes_from_events_not_from_the_tqdm_log(state, monkeypatch):
    d = _job_dir()
    (d / "status.json").write_text(json.dumps({"id": d.name, "status": "running", "label": "x"}))
    # a tqdm log alone is no longer read (it was scraped with a regex before)
    (d / "log").write_text("prune wanda:  40%|####      | 12/30 [00:04<00:06, 3.0it/s, layer 11]")
    assert jobs.progress(d.name) == (None, "")
    # the engine's callback, as a command inside a job calls it
    monkeypatch.setenv(progress.EVENTS_ENV, str(progress.events_path(d)))
    bar = progress.progress_bar("prune wanda", quiet=True)
    bar(3, 30, "layer 2")
    time.sleep(progress.MIN_INTERVAL_S + 0.05)
    bar(12, 30, "layer 11")
    frac, what = jobs.progress(d.name)
    assert frac == pytest.approx(0.4)
    assert what.startswith("prune wanda 12/30 · layer 11") and "elapsed" in what and "left" in what
    bar(30, 30)
    assert jobs.progress(d.name)[0] == 1.0 and "recording in the ledger" in jobs.progress(d.name)[1]
    with open(progress.events_path(d), "a") as f:
        f.write('{"t": 1, "kind": "progr')  # a writer killed mid-line: the torn line is skipped
    assert jobs.progress(d.name)[0] == 1.0


def test_a_usage_error_is_one_line_not_a_usage_dump(state):
    # the command line becomes a typed request when the job is asked for: a bad one is refused then
    with pytest.raises(TicketLabError) as refused:
        jobs.start(["eval", "dense", "--limit", "abc", "--json"], kind="eval")
    error = str(refused.value)
    assert error.startswith("argument --limit: ") and "'abc'" in error
    assert "usage" not in error and "\n" not in error
    assert not jobs.list_jobs()


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


@pytest.mark.parametrize("recorded", ["a later start time", "no start time"])
def test_cancel_never_signals_a_pid_given_to_another_process(state, recorded):
    """The job's runner died and the system gave its pid to an unrelated process (here: a sleeper in its
    own session, as the runner was). Cancel must leave that process alone."""
    other = _sleeper()
    try:
        d = _job_dir()
        start = jobs.proc_start(other.pid)
        assert start is not None
        status = {"id": d.name, "status": "running", "label": "x", "argv": ["prune"], "pid": other.pid,
                  "pid_start": start - 1 if recorded == "a later start time" else None}
        (d / "status.json").write_text(json.dumps(status))
        out = jobs.cancel(d.name, grace_s=0.5)
        time.sleep(0.2)
        assert other.poll() is None, "cancel killed a process that is not the job's"
        assert out["status"] == "failed" and "without reporting" in out["error"]  # its runner is gone
        assert not jobs.is_runner(other.pid, d, status["pid_start"])
    finally:
        other.kill()
        other.wait()


def test_cancel_stops_a_real_job_and_its_cli(state, tiny_llama_dir):
    job = jobs.start(["prune", "--model", str(tiny_llama_dir), "--method", "magnitude", "--json"], kind="prune")
    deadline = time.monotonic() + 60
    while jobs.get(job["id"])["status"] == "starting" and time.monotonic() < deadline:
        time.sleep(0.05)
    running = jobs.get(job["id"])
    assert running["pid_start"] == jobs.proc_start(running["pid"])
    assert jobs.is_runner(running["pid"], jobs.jobs_dir() / job["id"], running["pid_start"])
    out = jobs.cancel(job["id"])
    assert out["status"] == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.killpg(running["pid"], 0)
