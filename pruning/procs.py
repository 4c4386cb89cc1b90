"""What this host knows about a process id: alive, when it started, what it runs.

Used to tell a crashed writer's leftovers from a live one's (temporary folders, `running` runs,
background jobs) and to say who holds the ledger. A pid can be reused after its process ends, so
"alive" alone is not enough: compare the start time with when the work began.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path


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


def process_started_at(pid: int) -> dt.datetime | None:
    """When the process started (naive UTC), from /proc; None where the system does not say."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        seconds = btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).replace(tzinfo=None)


def process_command(pid: int) -> str | None:
    """The process's command line, shortened for a message; None if unknown."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    parts = [p.decode(errors="replace") for p in raw.split(b"\0") if p]
    if not parts:
        return None
    text = " ".join(parts)
    return text if len(text) <= 160 else text[:157] + "..."


def same_process(pid: int, since: dt.datetime | None) -> bool:
    """Whether `pid` is still the process that began work at `since` (naive UTC): alive, and not a
    newer process that reused the number (it would have started after the work began)."""
    if not pid_alive(pid):
        return False
    if since is None:
        return True
    started = process_started_at(pid)
    # clock ticks and timestamp rounding: allow a second of slack
    return started is None or started <= since + dt.timedelta(seconds=1)
