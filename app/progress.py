"""Progress of the engine's (done, total, what) callbacks: a tqdm bar for the terminal and, when the
command runs as a dashboard job, structured JSON-lines events the dashboard reads (no scraping of
tqdm's redraws).

The job runner sets `TICKETLAB_PROGRESS_FILE` to `<job>/progress.jsonl`. Each line is one event:
`{"t": unix seconds, "kind": "stage", "what": ...}` (a phase without a count, e.g. loading the model) or
`{"t", "kind": "progress", "desc", "done", "total", "what"}`. Lines are appended whole and flushed, so a
reader sees complete lines (a torn last line of a killed writer is skipped by `read_events`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

EVENTS_ENV = "TICKETLAB_PROGRESS_FILE"
MIN_INTERVAL_S = 0.2  # events per bar at most this often (the last one of a bar always)


def emit(event: dict, path: str | os.PathLike | None = None) -> None:
    """Append one event to the job's events file; nothing when not running as a job."""
    target = path or os.environ.get(EVENTS_ENV)
    if not target:
        return
    line = json.dumps({"t": round(time.time(), 3), **event}, default=str) + "\n"
    try:
        # one write() of a whole line in append mode: concurrent writers never interleave inside a line
        with open(target, "a", encoding="utf-8") as f:
            f.write(line)
    except OSError as e:  # progress is a nicety: never fail the real work over it
        print(f"could not write a progress event to {target}: {e}", file=sys.stderr)


def stage(what: str) -> None:
    """A phase without a count ("loading the model", "recording in the ledger")."""
    emit({"kind": "stage", "what": what})


def read_events(path: str | os.PathLike, max_bytes: int = 65536) -> list[dict]:
    """The complete events at the end of an events file (oldest first)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    lines = raw.split("\n")
    if size > max_bytes:
        lines = lines[1:]  # the first line may start mid-way
    out = []
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # empty, or torn by a killed writer
        if isinstance(event, dict):
            out.append(event)
    return out


class Bar:
    def __init__(self, desc: str, quiet: bool = False):
        self.desc, self.quiet, self.bar = desc, quiet, None
        self._last = 0.0

    def __call__(self, done: int, total: int, what: str = "") -> None:
        now = time.monotonic()
        if done >= total or now - self._last >= MIN_INTERVAL_S:
            self._last = now
            emit({"kind": "progress", "desc": self.desc, "done": int(done), "total": int(total), "what": what})
        if self.quiet:
            return
        if self.bar is None or self.bar.total != total:
            self.close()
            self.bar = tqdm(total=total, desc=self.desc, file=sys.stderr, leave=True, dynamic_ncols=True)
        self.bar.n = done
        if what:
            self.bar.set_postfix_str(what[-40:], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def progress_bar(desc: str, quiet: bool = False) -> Callable[[int, int, str], None]:
    """The callback every command passes to the engine: tqdm on the terminal (unless quiet) and, inside
    a dashboard job, events too (quiet only silences the terminal)."""
    return Bar(desc, quiet)


def events_path(job_dir: Path) -> Path:
    return job_dir / "progress.jsonl"
