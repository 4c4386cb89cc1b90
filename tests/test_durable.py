"""pruning.durable: atomic, durable, shareable writes of files and folders, on the real file system.

Crashes are real: a subprocess kills itself with SIGKILL at a named point (TICKETLAB_CRASH_AT)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pruning import durable


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_file_writes_replace_atomically_with_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        durable.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
        durable.atomic_write_text(tmp_path / "sub" / "b.txt", "héllo")
        durable.atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1.5]}, sort_keys=True)
        durable.atomic_write_json(tmp_path / "c.json", {"z": 2})
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "c.json").read_text()) == {"z": 2}
    assert _mode(tmp_path / "a.bin") == 0o644  # mkstemp alone would give 0o600
    assert _listing(tmp_path) == ["a.bin", "c.json", "sub"]  # no temporary leftovers


def test_dir_is_invisible_until_complete_and_removed_on_error(tmp_path):
    final = tmp_path / "ticket"
    with pytest.raises(RuntimeError):
        with durable.atomic_dir(final) as tmp:
            (tmp / "part").write_bytes(b"x")
            assert not final.exists()
            raise RuntimeError("writer failed")
    assert _listing(tmp_path) == []
    old = os.umask(0o022)
    try:
        with durable.atomic_dir(final) as tmp:
            (tmp / "inner").mkdir()
            (tmp / "inner" / "f").write_bytes(b"1")
            os.chmod(tmp / "inner" / "f", 0o600)
            assert not final.exists()
    finally:
        os.umask(old)
    assert (final / "inner" / "f").read_bytes() == b"1"
    assert _mode(final) == 0o755 and _mode(final / "inner" / "f") == 0o644
    assert _listing(tmp_path) == ["ticket"]


def test_dir_refuses_or_replaces_an_existing_folder(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old").write_text("old")
    with pytest.raises(FileExistsError):
        with durable.atomic_dir(final) as tmp:
            (tmp / "new").write_text("new")
    assert _listing(final) == ["old"] and _listing(tmp_path) == ["out"]
    with durable.atomic_dir(final, replace=True) as tmp:
        (tmp / "new").write_text("new")
    assert _listing(final) == ["new"] and _listing(tmp_path) == ["out"]


def _crash(tmp_path: Path, label: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, durable.CRASH_ENV: label}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("label", ["durable.file.before_rename", "durable.file.after_rename"])
def test_killed_file_writer_leaves_old_or_new_and_leftovers_are_swept(tmp_path, label):
    (tmp_path / "s.json").write_text('{"v": "old"}')
    r = _crash(tmp_path, label, """
        from pruning import durable
        durable.atomic_write_json("s.json", {"v": "new"})
        print("survived")
    """)
    assert r.returncode == -signal.SIGKILL, r.stderr
    value = json.loads((tmp_path / "s.json").read_text())["v"]
    assert value == ("old" if label.endswith("before_rename") else "new")
    durable.remove_stale_temps(tmp_path)
    assert _listing(tmp_path) == ["s.json"]


@pytest.mark.parametrize("label", ["durable.dir.before_rename", "durable.dir.after_rename"])
def test_killed_dir_writer_leaves_nothing_partial(tmp_path, label):
    r = _crash(tmp_path, label, """
        from pathlib import Path
        from pruning import durable
        with durable.atomic_dir(Path("out")) as tmp:
            (tmp / "a").write_bytes(b"a" * 1000)
            (tmp / "b").write_bytes(b"b" * 1000)
    """)
    assert r.returncode == -signal.SIGKILL, r.stderr
    out = tmp_path / "out"
    if label.endswith("before_rename"):
        assert not out.exists()
    else:
        assert (out / "a").read_bytes() == b"a" * 1000 and (out / "b").read_bytes() == b"b" * 1000
    leftovers = [p for p in tmp_path.iterdir() if durable.is_temp_name(p.name)]
    assert len(leftovers) == (1 if label.endswith("before_rename") else 0)
    with durable.atomic_dir(out, replace=True) as tmp:  # the next attempt sweeps what the killed one left
        (tmp / "a").write_bytes(b"again")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "a").read_bytes() == b"again"


def test_sweep_keeps_temps_of_live_writers(tmp_path):
    live = tmp_path / f".x.tmp-{os.getpid()}-abc"
    live.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / f".x.tmp-{dead.stdout.strip()}-abc"
    gone.mkdir()
    assert durable.remove_stale_temps(tmp_path) == [gone]
    assert live.exists() and not gone.exists()


def test_crash_point_counts_hits(tmp_path):
    r = _crash(tmp_path, "here@3", """
        from pruning import durable
        for i in range(5):
            durable.crash_point("here")
            print(i, flush=True)
    """)
    assert r.returncode == -signal.SIGKILL and r.stdout.split() == ["0", "1"]
