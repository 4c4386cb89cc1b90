"""Background jobs for the dashboard: a typed use-case request (usecases/) runs in its own process
group, so the page stays responsive, a browser refresh loses nothing, and the use case records the
results in the ledger exactly as the CLI does from a terminal (both call the same function).

A job is a directory `<state>/jobs/<id>/`:
- `status.json`: id, label, `usecase` and `request` (the typed request as JSON), `argv` (the same request
  as a `ticketlab` command line, for people), status (starting | running | succeeded | failed |
  cancelled), pids, times, `result` (the use case's typed outcome as JSON) and `error` (the
  `TicketLabError` message, or the exception's type and message);
- `progress.jsonl`: structured progress events (app/progress.py) the use case writes through the
  engine's callback, and the runner's own stage events; the dashboard reads these;
- `log`: the runner's stderr (tqdm progress bars, warnings, a traceback); `stdout`: its stdout;
- `pid`: the runner's pid, which is also the job's process-group id (cancel kills the group). The
  status also keeps the runner's start time (`pid_start`, from /proc): a pid the system has since
  given to another process is never signalled (cancel checks the start time, or the job's own
  marker in the process environment, before sending anything).

The runner (`python -m app.jobs JOBDIR`) calls the use case in its own process and writes the final
status, so the status does not depend on the dashboard process staying alive. Nothing is parsed from
printed text.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

from analysis.ledger import pid_alive
from app import progress as events
from pruning import settings
from pruning.durable import atomic_write_json, atomic_write_text
from pruning.errors import TicketLabError
from usecases import Request

REPO = Path(__file__).resolve().parents[1]
FINAL = ("succeeded", "failed", "cancelled")
_CHILDREN: dict[int, subprocess.Popen] = {}  # runners started by this process, polled so they never linger as zombies
JOB_DIR_ENV = "TICKETLAB_JOB_DIR"  # in the runner's and the CLI's environment: the job's own marker


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def jobs_dir() -> Path:
    return settings.state_dir() / "jobs"


def job_threads() -> int:
    """Threads a job may use: the job does the heavy work, the dashboard server stays at one thread."""
    for var in ("TICKETLAB_JOB_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var)
        if value and value.isdigit() and int(value) > 0:
            return int(value)
    return os.cpu_count() or 1


def _write_status(job_dir: Path, status: dict) -> None:
    atomic_write_json(job_dir / "status.json", status, indent=2, default=str)


def _read_status(job_dir: Path) -> dict | None:
    try:
        return json.loads((job_dir / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None where
    /proc cannot tell. With the pid it names one process for good: a reused pid has a later start."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _has_marker(pid: int, job_dir: Path) -> bool | None:
    """Whether the process's environment names this job (None when it cannot be read)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return f"{JOB_DIR_ENV}={job_dir}".encode() in env


def is_runner(pid: int | None, job_dir: Path, start: int | None = None) -> bool:
    """Whether `pid` is still this job's runner: alive, and the same process (its start time matches
    the recorded one; without one, its environment carries the job's marker). A pid the system gave to
    another process after the runner died is not the runner."""
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    if not pid_alive(pid):
        return False
    now = proc_start(pid)
    if start is not None and now is not None:
        return now == start
    marker = _has_marker(pid, job_dir)
    return marker is not False  # no way to tell (no /proc): trust the pid, as before


def _job_env(job_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(job_threads())
    env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1",
                "TICKETLAB_STATE_DIR": str(settings.state_dir()), "TICKETLAB_DATA_DIR": str(settings.data_dir()),
                "TICKETLAB_LEDGER": str(settings.ledger_path()), "TQDM_MININTERVAL": "0.2",
                JOB_DIR_ENV: str(job_dir), events.EVENTS_ENV: str(events.events_path(job_dir))})
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def request_from_argv(argv: list[str]) -> Request:
    """The typed request a `ticketlab` command line spells, built by the command's own flags (a bad
    flag or value is one `TicketLabError` now, not a failed job later)."""
    from app.cli import request_for

    return request_for([str(a) for a in argv])


def start(what: Request | list[str], label: str | None = None, kind: str | None = None) -> dict:
    """Start a use case in the background and return its status record. `what`: a typed request, or a
    `ticketlab` command line (turned into its request here)."""
    if not what:
        raise TicketLabError("a job needs a request (or a ticketlab command) to run.")
    request = request_from_argv(what) if isinstance(what, list) else what
    argv = [str(a) for a in what] if isinstance(what, list) else request.argv()
    argv += [] if "--json" in argv else ["--json"]
    job_id = dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    job_dir = jobs_dir() / job_id
    job_dir.mkdir(parents=True)
    status = {"id": job_id, "kind": kind or request.USECASE, "label": label or "ticketlab " + " ".join(argv),
              "usecase": request.USECASE, "request": request.model_dump(mode="json"),
              "argv": [str(a) for a in argv], "status": "starting", "created_at": _now(), "started_at": None,
              "ended_at": None, "pid": None, "pid_start": None,
              "result": None, "error": None, "threads": job_threads()}
    _write_status(job_dir, status)
    events.emit({"kind": "stage", "what": loading_text(status["argv"])}, events.events_path(job_dir))
    with open(job_dir / "runner.log", "w") as runner_log:
        proc = subprocess.Popen([sys.executable, "-m", "app.jobs", str(job_dir)], cwd=REPO, env=_job_env(job_dir),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=runner_log,
                                start_new_session=True)
    _CHILDREN[proc.pid] = proc
    atomic_write_text(job_dir / "pid", f"{proc.pid} {proc_start(proc.pid) or ''}".strip())
    status["pid"], status["pid_start"] = proc.pid, proc_start(proc.pid)
    return status


def loading_text(argv: list[str]) -> str:
    """What a job does before its first progress event, in words."""
    model = argv[argv.index("--model") + 1] if "--model" in argv[:-1] else None
    what = f"the model {model}" if model else ("the ticket's dense model" if argv and argv[0] in ("eval", "export")
                                               else "the model")
    return (f"starting: loading Python libraries (torch, transformers) and {what}, then hashing its weights; "
            "this takes up to half a minute before the first progress appears")


def _pid_file(job_dir: Path) -> tuple[int | None, int | None]:
    try:
        parts = (job_dir / "pid").read_text().split()
        return int(parts[0]), (int(parts[1]) if len(parts) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None, None


def _refresh(job_dir: Path, status: dict) -> dict:
    """A job whose runner vanished without writing a final status was killed: say so on disk."""
    if status["status"] in FINAL:
        return status
    pid, start = status.get("pid"), status.get("pid_start")
    if pid is None:
        pid, start = _pid_file(job_dir)
    if pid is None:
        return status  # still starting
    if not is_runner(pid, job_dir, start):
        time.sleep(0.05)  # the runner may have written its final status just now
        latest = _read_status(job_dir) or status
        if latest["status"] in FINAL:
            return latest
        latest["pid"] = latest.get("pid") or pid
        latest.update(status="cancelled" if (job_dir / "cancel").exists() else "failed", ended_at=_now(),
                      error=latest.get("error") or "the job process ended without reporting a result "
                                                    "(killed, or out of memory?); see its log.")
        _write_status(job_dir, latest)
        _reap_ledger()
        return latest
    status["pid"], status["pid_start"] = pid, start
    return status


def get(job_id: str) -> dict:
    job_dir = jobs_dir() / job_id
    status = _read_status(job_dir)
    if status is None:
        raise TicketLabError(f"no job {job_id!r} under {jobs_dir()}.")
    return _refresh(job_dir, status)


def list_jobs(limit: int = 30) -> list[dict]:
    """Newest first."""
    root = jobs_dir()
    if not root.exists():
        return []
    out = []
    for d in sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True)[:limit]:
        status = _read_status(d)
        if status:
            out.append(_refresh(d, status))
    return out


def cancel(job_id: str, grace_s: float = 3.0) -> dict:
    """Stop a job: SIGTERM to its process group, SIGKILL if it is still there after `grace_s`. Only
    while the recorded pid is still the job's runner (see `is_runner`): a reused pid is left alone."""
    job_dir = jobs_dir() / job_id
    status = get(job_id)
    if status["status"] in FINAL:
        return status
    atomic_write_text(job_dir / "cancel", _now())
    pid, start = status.get("pid"), status.get("pid_start")
    if pid:
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 1.0)):
            if not is_runner(pid, job_dir, start):
                break
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and is_runner(pid, job_dir, start):
                time.sleep(0.05)
    return get(job_id)


def wait(job_id: str, timeout: float = 300.0, poll: float = 0.2) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = get(job_id)
        if status["status"] in FINAL or time.monotonic() > deadline:
            return status
        time.sleep(poll)


def log_tail(job_id: str, chars: int = 4000) -> str:
    """The end of the job's log with progress-bar redraws collapsed to their latest state."""
    return _tail(jobs_dir() / job_id / "log", chars)


def _tail(path: Path, chars: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars * 4))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [seg.split("\r")[-1] for seg in text.split("\n")]
    return "\n".join(line for line in lines if line.strip())[-chars:]


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


def progress(job_id: str) -> tuple[float | None, str]:
    """(fraction done or None, what) from the job's structured progress events: the latest bar's count,
    elapsed time and an estimate of what is left; the latest stage when no bar is running."""
    evs = events.read_events(events.events_path(jobs_dir() / job_id))
    if not evs:
        return None, ""
    last = evs[-1]
    if last.get("kind") != "progress" or not last.get("total"):
        return None, str(last.get("what") or "")
    done, total = int(last["done"]), int(last["total"])
    same = [e for e in evs if e.get("kind") == "progress" and e.get("desc") == last.get("desc")
            and e.get("total") == last["total"]]
    first = same[0]
    elapsed = float(last["t"]) - float(first["t"])
    parts = [f"{last.get('desc') or 'working'} {done}/{total}"]
    if last.get("what"):
        parts.append(str(last["what"]))
    if done >= total:
        parts.append("finishing: saving and recording in the ledger")
    elif done > int(first["done"]) and elapsed > 0:
        rate = (done - int(first["done"])) / elapsed
        parts.append(f"{_clock(elapsed)} elapsed, ~{_clock((total - done) / rate)} left")
    return min(1.0, done / total), " · ".join(parts)


# --- the runner: runs in the job's own process group ----------------------------------------------
class Cancelled(BaseException):
    """SIGTERM from cancel: unwinds the use case (its ledger run is marked failed on the way out)."""


def _reap_ledger() -> None:
    """The use case was interrupted: mark its ledger run failed rather than forever 'running'."""
    try:
        from analysis.ledger import Ledger

        Ledger().reap_stale_runs()
    except Exception as e:  # the job's own outcome is already known; this is housekeeping
        print(f"could not tidy the ledger's runs: {e}", file=sys.stderr)


def _redirect(job_dir: Path) -> None:
    """The use case's prints and tqdm bars go to the job's files (the log is for people only)."""
    sys.stdout.flush()
    sys.stderr.flush()
    for name, fd in (("stdout", 1), ("log", 2)):
        f = os.open(job_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)


def run_job(job_dir: Path) -> int:
    status = _read_status(job_dir)
    if status is None:
        print(f"no status.json in {job_dir}", file=sys.stderr)
        return 2
    status["pid"], status["pid_start"] = os.getpid(), proc_start(os.getpid())

    def on_term(signum, frame):
        raise Cancelled()

    signal.signal(signal.SIGTERM, on_term)
    _redirect(job_dir)
    try:
        if (job_dir / "cancel").exists():
            raise Cancelled()
        status.update(status="running", started_at=_now())
        _write_status(job_dir, status)
        from app.cli import maintain_ledger
        from usecases import execute

        maintain_ledger()  # as the CLI does before each command
        outcome = execute(status["usecase"], status["request"], progress=events_bar)
        status.update(status="succeeded", result=outcome.model_dump(mode="json"))
    except Cancelled:
        status.update(status="cancelled", error="cancelled by the user")
        _reap_ledger()
    except TicketLabError as e:
        status.update(status="failed", error=" ".join(str(e).split()))
    except Exception as e:  # a bug, not bad input: the traceback goes to the log, its last line to the page
        traceback.print_exc()
        status.update(status="failed", error=" ".join(f"{type(e).__name__}: {e}".split())[:500])
        _reap_ledger()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    status["ended_at"] = _now()
    if (job_dir / "cancel").exists() and status["status"] != "succeeded":
        status.update(status="cancelled", error="cancelled by the user")
    events.emit({"kind": "stage", "what": status["status"]}, events.events_path(job_dir))
    _write_status(job_dir, status)
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


def events_bar(desc: str) -> events.Bar:
    """The progress display of a job: events for the dashboard, tqdm into the log."""
    return events.progress_bar(desc)


if __name__ == "__main__":
    sys.exit(run_job(Path(sys.argv[1])))
