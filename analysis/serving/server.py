"""A vLLM server's lifecycle: started on 127.0.0.1 in its own process group, waited on until healthy,
and stopped with everything it spawned, on every exit path.

vLLM forks an API server, an engine core and workers. They all run in one new session (process group)
whose leader is the `vllm serve` process, so stopping signals the whole group: SIGTERM, a grace period,
then SIGKILL, then it waits until no process of the group is left. `Server` is a context manager and
`stop()` is idempotent; `on_signals()` turns SIGTERM/SIGHUP into an exception so the `finally` blocks run
(Ctrl-C already arrives as KeyboardInterrupt; the engine, in its own session, does not receive the
terminal's SIGINT and is stopped by us). A peak-memory sampler sums the group's resident memory.

An engine that does not start is one TicketLabError: the engine's own last error line and the log path.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from pruning.errors import TicketLabError

from .env import serve_python, vllm_command

HOST = "127.0.0.1"
SERVED_NAME = "ticketlab"  # the model name requests use, whatever folder is served
_ERROR_LINE = re.compile(r"\b(\w*(?:Error|Exception)):\s*(.+)")


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def group_pids(pgid: int) -> list[int]:
    """Live processes of a process group (zombies excluded), from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def _rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return total


def _max_positions(model_dir: Path) -> int | None:
    """The checkpoint's own context length: vLLM refuses a --max-model-len beyond it."""
    import json

    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("max_position_embeddings") or config.get("n_positions")


def engine_error(log: Path) -> str:
    """The engine's own reason for failing: the last `...Error: message` line of its log."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log was written"
    for i in range(len(lines) - 1, -1, -1):
        m = _ERROR_LINE.search(lines[i])
        if m and "WARNING" not in lines[i]:
            message = m.group(2).strip()
            if re.match(r"\d+ validation errors? for", message) and i + 1 < len(lines):  # pydantic: reason follows
                message += ": " + lines[i + 1].strip()
            return f"{m.group(1)}: {message}"[:400]
    tail = [ln.strip() for ln in lines if ln.strip()][-1:] or ["(empty log)"]
    return tail[0][:400]


class Server:
    """`with Server(model_dir, log=path) as s:` ... `s.base_url`. Everything started is stopped on exit."""

    def __init__(self, model_dir: str | Path, log: str | Path, *, port: int | None = None, dtype: str = "auto",
                 max_model_len: int = 1024, kv_cache_bytes: str = "512M", startup_timeout: float = 900.0,
                 extra_args: list[str] | None = None):
        self.model_dir = Path(model_dir).resolve()
        self.log = Path(log)
        self.port = port
        self.dtype, self.max_model_len, self.kv_cache_bytes = dtype, max_model_len, kv_cache_bytes
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self.peak_rss_bytes = 0
        self._sampling = threading.Event()
        self._stopping = False

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self.port is None:
            self.port = free_port()
        elif not port_free(self.port):
            raise TicketLabError(f"port {self.port} on {HOST} is in use: stop what listens there, or leave out "
                                 f"--port to take a free one.")
        self.max_model_len = min(self.max_model_len, _max_positions(self.model_dir) or self.max_model_len)
        cmd = vllm_command(serve_python()) + [
            "serve", str(self.model_dir), "--host", HOST, "--port", str(self.port),
            "--served-model-name", SERVED_NAME, "--dtype", self.dtype, "--max-model-len", str(self.max_model_len),
            # an explicit KV cache size: the default reserves a fraction of all memory, refused on a busy host
            "--kv-cache-memory-bytes", self.kv_cache_bytes, "--disable-log-stats", *self.extra_args]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}
        for key in ("PYTHONPATH", "VIRTUAL_ENV"):  # the engine runs in its own venv, never on ours
            env.pop(key, None)
        started = time.monotonic()
        with open(self.log, "ab") as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        self._sampling.set()
        threading.Thread(target=self._sample, daemon=True).start()
        self._wait_healthy(started)
        self.startup_s = time.monotonic() - started

    def _sample(self) -> None:
        proc = self.proc
        while self._sampling.is_set() and proc is not None:
            self.peak_rss_bytes = max(self.peak_rss_bytes, _rss_bytes(group_pids(proc.pid)))
            time.sleep(0.5)

    def _wait_healthy(self, started: float) -> None:
        while True:
            proc = self.proc
            if proc is None or self._stopping:
                raise TicketLabError(f"vLLM start-up was interrupted (log: {self.log})")
            code = proc.poll()
            if code is not None:
                raise TicketLabError(f"vLLM did not start (exit {code}): {engine_error(self.log)} (log: {self.log})")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - started > self.startup_timeout:
                self.stop()
                raise TicketLabError(f"vLLM did not become healthy within {self.startup_timeout:.0f} s; last engine "
                                     f"message: {engine_error(self.log)} (log: {self.log}). On a busy machine "
                                     f"start-up compiles slowly: pass a larger --startup-timeout.")
            time.sleep(1.0)

    def gone(self) -> str | None:
        """One line when the engine this object started has exited on its own: exit code, its own last
        error, the log path. None while it runs (or once `stop()` has stopped it)."""
        proc = self.proc
        code = proc.poll() if proc is not None and not self._stopping else None
        if code is None:
            return None
        return f"vLLM stopped (exit {code}) while serving: {engine_error(self.log)} (log: {self.log})"

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the whole group, SIGKILL what is left after `grace` seconds, wait until none is left."""
        self._sampling.clear()
        self._stopping = True
        if self.proc is None:
            return
        pgid = self.proc.pid  # the session leader: its pid is the group's id
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.2)
                if not group_pids(pgid):
                    self.proc = None
                    return
        self.proc = None


@contextlib.contextmanager
def on_signals():
    """SIGTERM and SIGHUP raise SystemExit here, so context managers stop what they started."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
