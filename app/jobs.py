"""Background jobs for the dashboard: engine and evaluation work runs the `ticketlab` CLI in its own
process group, so the page stays responsive, a browser refresh loses nothing, and the CLI records the
results in the ledger exactly as it does from a terminal.

A job is a directory `<state>/jobs/<id>/`:
- `status.json`: id, label, argv, status (starting | running | succeeded | failed | cancelled), pids,
  times, return code, `result` (the CLI's `--json` object) and `error` (its last error line);
- `log`: the CLI's stderr (tqdm progress bars, errors); `stdout`: its stdout;
- `pid`: the runner's pid, which is also the job's process-group id (cancel kills the group).

The runner (`python -m app.jobs JOBDIR`) starts the CLI, waits, and writes the final status, so the
status does not depend on the dashboard process staying alive.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from analysis.ledger import pid_alive
from pruning import settings
from pruning.errors import TicketLabError

REPO = Path(__file__).resolve().parents[1]
FINAL = ("succeeded", "failed", "cancelled")
_CHILDREN: dict[int, subprocess.Popen] = {}  # runners started by this process, polled so they never linger as zombies
_TQDM = re.compile(r"(?P<desc>[^|]*?):?\s*(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)(?P<rest>.*)")


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
    tmp = job_dir / f".status.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(status, indent=2, default=str))
    os.replace(tmp, job_dir / "status.json")


def _read_status(job_dir: Path) -> dict | None:
    try:
        return json.loads((job_dir / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    return pid_alive(pid)


def _job_env() -> dict[str, str]:
    env = dict(os.environ)
    threads = str(job_threads())
    env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1",
                "TICKETLAB_STATE_DIR": str(settings.state_dir()), "TICKETLAB_DATA_DIR": str(settings.data_dir()),
                "TICKETLAB_LEDGER": str(settings.ledger_path()), "TQDM_MININTERVAL": "0.2"})
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def start(argv: list[str], label: str | None = None, kind: str | None = None) -> dict:
    """Start `ticketlab ARGV` in the background and return its status record."""
    if not argv:
        raise TicketLabError("a job needs a ticketlab command to run.")
    job_id = dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    job_dir = jobs_dir() / job_id
    job_dir.mkdir(parents=True)
    status = {"id": job_id, "kind": kind or argv[0], "label": label or "ticketlab " + " ".join(argv),
              "argv": [str(a) for a in argv], "status": "starting", "created_at": _now(), "started_at": None,
              "ended_at": None, "pid": None, "child_pid": None, "returncode": None, "result": None,
              "error": None, "threads": job_threads()}
    _write_status(job_dir, status)
    with open(job_dir / "runner.log", "w") as runner_log:
        proc = subprocess.Popen([sys.executable, "-m", "app.jobs", str(job_dir)], cwd=REPO, env=_job_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=runner_log,
                                start_new_session=True)
    _CHILDREN[proc.pid] = proc
    (job_dir / "pid").write_text(str(proc.pid))
    status["pid"] = proc.pid
    return status


def _refresh(job_dir: Path, status: dict) -> dict:
    """A job whose runner vanished without writing a final status was killed: say so on disk."""
    if status["status"] in FINAL:
        return status
    pid = status.get("pid")
    if pid is None and (job_dir / "pid").exists():
        try:
            pid = int((job_dir / "pid").read_text())
        except ValueError:
            pid = None
    if pid is None:
        return status  # still starting
    if not _alive(pid):
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
    status["pid"] = pid
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
    for d in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True)[:limit]:
        status = _read_status(d)
        if status:
            out.append(_refresh(d, status))
    return out


def cancel(job_id: str, grace_s: float = 3.0) -> dict:
    """Stop a job: SIGTERM to its process group, SIGKILL if it is still there after `grace_s`."""
    job_dir = jobs_dir() / job_id
    status = get(job_id)
    if status["status"] in FINAL:
        return status
    (job_dir / "cancel").write_text(_now())
    pid = status.get("pid")
    if pid:
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 1.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            if not _alive(pid):
                break
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


def progress(job_id: str) -> tuple[float | None, str]:
    """(fraction done or None, what) from the last tqdm redraw in the job's log."""
    path = jobs_dir() / job_id / "log"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None, ""
    for seg in reversed(re.split(r"[\r\n]", text)):
        m = _TQDM.search(seg)
        if m and int(m["total"]) > 0:
            done, total = int(m["n"]), int(m["total"])
            return min(1.0, done / total), _describe(m["desc"].strip(), done, total, m["rest"])
    return None, ""


def _describe(desc: str, done: int, total: int, rest: str) -> str:
    """'prune wanda 18/30 · wanda layer 18/30 · 0:10 elapsed, ~0:06 left' from tqdm's redraw."""
    parts = [f"{desc} {done}/{total}".strip()]
    inside = re.search(r"\[([^\]]*)\]?", rest)
    if inside:
        fields = [f.strip() for f in inside.group(1).split(",")]
        times = fields[0].split("<") if fields and "<" in fields[0] else None
        extra = [f for f in fields[1:] if not re.fullmatch(r"[\d.?]+\s*(it|s)/(s|it)", f)]
        if extra:
            parts.append(", ".join(extra))
        if times and times[1] not in ("?", ""):
            parts.append(f"{times[0]} elapsed, ~{times[1]} left")
    return " · ".join(parts)


# --- the runner: runs in the job's own process group ----------------------------------------------
def _error_from_log(job_dir: Path) -> str:
    text = _tail(job_dir / "log", 6000)
    lines = [ln for ln in text.splitlines() if ln.strip() and not _TQDM.search(ln)]
    errors = [ln for ln in lines if ln.startswith("error:")]
    if errors:
        return errors[-1][len("error:"):].strip()
    return "\n".join(lines[-12:]) or "the command failed without a message"


def _parse_result(job_dir: Path) -> Any:
    """The CLI's `--json` object: the whole stdout, or else its last JSON line."""
    try:
        text = (job_dir / "stdout").read_text()
    except OSError:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return {"output": "\n".join(lines[-20:])} if lines else None


def _reap_ledger() -> None:
    """The CLI was killed mid-run: mark its ledger run failed rather than forever 'running'."""
    try:
        from analysis.ledger import Ledger

        Ledger().reap_stale_runs()
    except Exception as e:  # the job's own outcome is already known; this is housekeeping
        print(f"could not tidy the ledger's runs: {e}", file=sys.stderr)


def run_job(job_dir: Path) -> int:
    status = _read_status(job_dir)
    if status is None:
        print(f"no status.json in {job_dir}", file=sys.stderr)
        return 2
    status["pid"] = os.getpid()
    state: dict[str, Any] = {"stopping": False, "proc": None}

    def on_term(signum, frame):
        # the CLI normally gets the same signal from the group kill; if it started just after, pass it on
        state["stopping"] = True
        if state["proc"] is not None and state["proc"].poll() is None:
            state["proc"].terminate()

    signal.signal(signal.SIGTERM, on_term)
    rc = None
    with open(job_dir / "stdout", "w") as out, open(job_dir / "log", "w") as log:
        if not state["stopping"] and not (job_dir / "cancel").exists():
            state["proc"] = subprocess.Popen([sys.executable, "-m", "app.cli", *status["argv"]], cwd=REPO,
                                             stdin=subprocess.DEVNULL, stdout=out, stderr=log)
            if state["stopping"]:
                state["proc"].terminate()
            status.update(status="running", started_at=_now(), pid=os.getpid(), child_pid=state["proc"].pid)
            _write_status(job_dir, status)
            rc = state["proc"].wait()
    status.update(ended_at=_now(), returncode=rc)
    if state["stopping"] or (job_dir / "cancel").exists():
        status.update(status="cancelled", error="cancelled by the user")
        if rc is not None:
            _reap_ledger()
    elif rc == 0:
        status.update(status="succeeded", result=_parse_result(job_dir))
    else:
        status.update(status="failed", error=_error_from_log(job_dir))
        if rc < 0:
            _reap_ledger()
    _write_status(job_dir, status)
    return 0


if __name__ == "__main__":
    sys.exit(run_job(Path(sys.argv[1])))
