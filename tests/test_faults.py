"""Faults give one clear line (issue 19): a full disk names the file system and the path (on a real small
tmpfs when one can be mounted, else by ENOSPC injected at the same write points), `--out` under a file,
control characters in names and reasons, non-finite policy numbers, and `ticketlab app` stopped by TERM or
HUP leaves no server on the port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from govern_helpers import approved_ticket, make_recorded_ticket, passphrase, setup_lab

from analysis.governance import decisions, deploy
from analysis.governance import state as gstate
from analysis.ledger import Ledger, MetricRow
from app.cli import main
from pruning import durable
from pruning.errors import TicketLabError

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _small_fs(where: Path, mb: int = 24):
    """A real tmpfs of `mb` MB at `where` (None when this machine cannot mount one)."""
    where.mkdir(parents=True, exist_ok=True)
    ok = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(where)],
                                              capture_output=True).returncode == 0
    try:
        yield where if ok else None
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(fs: Path) -> Path:
    """Take every free byte of the file system at `fs`."""
    filler = fs / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1].split("\r")[-1]  # after any progress bar
    assert last.startswith("error: ") and "Traceback" not in err, err
    return last


def test_full_disk_names_the_file_system_for_prune_export_and_the_ledger(tiny_llama, tiny_llama_dir, state,
                                                                          monkeypatch, capsys):
    """On a tmpfs filled to the last byte (or with ENOSPC injected where this machine cannot mount one): prune,
    export and a ledger write each end with one line naming the full file system, and nothing is half there."""
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    with _small_fs(state / "small") as fs:
        if fs is not None:  # the state folder's artifacts go to the small file system, then it is filled
            monkeypatch.setenv("TICKETLAB_STATE_DIR", str(fs))
            _fill(fs)
        monkeypatch.setenv("TICKETLAB_LEDGER", str(lab.ledger.path))
        monkeypatch.setenv("TICKETLAB_PASSPHRASE", passphrase("carol"))
        if fs is None:
            monkeypatch.setenv("TICKETLAB_FAULT_AT", "durable.dir.write")
        assert main(["prune", "--model", str(tiny_llama_dir), "--method", "magnitude", "--sparsity", "0.35",
                     "--as", "carol"]) == 2
        err = _one_line(capsys)
        assert "is full (no space left" in err and "another writer" not in err, err
        tickets = Path(os.environ["TICKETLAB_STATE_DIR"]) / "tickets"
        assert not tickets.exists() or [p for p in tickets.iterdir() if not p.name.startswith(".")] == []
        monkeypatch.setenv("TICKETLAB_PASSPHRASE", passphrase("alice"))
        out = (fs or state) / "bundle"
        assert main(["export", t.id, "--out", str(out), "--format", "masks", "--as", "alice"]) == 2
        assert "is full (no space left" in _one_line(capsys) and not out.exists()
    # the ledger itself on a full file system: a full disk, not "another writer changed the same rows"
    with _small_fs(state / "small-ledger", mb=8) as fs:
        ledger = Ledger((fs or state) / "full.duckdb")
        if fs is not None:
            _fill(fs)
        else:
            monkeypatch.setenv("TICKETLAB_FAULT_AT", "ledger.commit")
        with pytest.raises(TicketLabError) as e, ledger.run("eval", "test") as run:
            for i in range(3000):
                run.add_metric(MetricRow("ppl", "wikitext" * 8, f"m{i}", float(i)))
        assert "is full (no space left" in str(e.value) and "another writer" not in str(e.value)
        assert str(fs or state) in str(e.value)


def test_governance_write_on_a_full_disk_is_one_line_and_records_nothing(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    before = len(gstate.load(lab.ledger).rows)
    monkeypatch.setenv("TICKETLAB_FAULT_AT", "ledger.commit")
    with pytest.raises(TicketLabError, match=f"file system at .* is full .* while writing {lab.ledger.path}"):
        decisions.decide(lab.ledger, t.id, "reject", lab["alice"], "disk full")
    monkeypatch.delenv("TICKETLAB_FAULT_AT")
    assert len(gstate.load(lab.ledger).rows) == before
    decisions.decide(lab.ledger, t.id, "reject", lab["alice"], "disk freed")


def test_out_under_a_file_is_one_clear_line(tiny_llama, state, monkeypatch, capsys):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    (state / "a-file").write_text("x")
    monkeypatch.setenv("TICKETLAB_PASSPHRASE", passphrase("alice"))
    for argv in (["export", t.id, "--out", str(state / "a-file" / "bundle"), "--format", "masks", "--as", "alice"],
                 ["report", t.id, "--out", str(state / "a-file" / "sub" / "r.html")],
                 ["people", "export", "--out", str(state / "a-file" / "trust.json"), "--as", "ada"]):
        if argv[0] == "people":
            monkeypatch.setenv("TICKETLAB_PASSPHRASE", passphrase("ada"))
        assert main(argv) == 2, argv
        assert f"{state / 'a-file'} is a file, not a folder" in _one_line(capsys)


def test_control_characters_in_names_and_reasons_are_refused(tiny_llama, tiny_llama_dir, state, monkeypatch, capsys):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    before = len(gstate.load(lab.ledger).rows)
    assert main(["prune", "--model", str(tiny_llama_dir), "--method", "magnitude", "--name", "ok\x1b[2J\x1b[31mOWNED"]) == 2
    assert "--name contains a control character ('\\x1b')" in _one_line(capsys)
    for reason in ("fine\nrecord #99: approved by ada", "ship\x1b]0;pwned\x07"):
        with pytest.raises(TicketLabError, match="--reason contains a control character"):
            decisions.decide(lab.ledger, t.id, "reject", lab["bob"], reason)
        with pytest.raises(TicketLabError, match="--reason contains a control character"):
            deploy.promote(lab.ledger, t.id, lab["dave"], reason)
    assert len(gstate.load(lab.ledger).rows) == before


def test_non_finite_policy_numbers_are_refused(tiny_llama, state, monkeypatch):
    from analysis.governance import admin
    from analysis.governance.policy import load_policy

    lab = setup_lab(state, tiny_llama, monkeypatch)
    for value in ("nan", "inf", "-inf"):
        bad = state / f"{value}.toml"
        bad.write_text(f'[policy]\nname = "x"\n\n[[rule]]\nkind = "floor"\nmetrics = "truthfulqa_mc2/acc"\n'
                       f"limit = {value}\n")
        with pytest.raises(TicketLabError, match="line 7.*must be a finite number"):
            load_policy(bad)
        with pytest.raises(TicketLabError, match="must be a finite number"):
            admin.set_policy(lab.ledger, lab["ada"], bad)
    bad = state / "ctl.toml"
    bad.write_text('[policy]\nname = "ok\\u001b[2Jstrict"\n')
    with pytest.raises(TicketLabError, match="line 2.*must be plain text: it contains a control character"):
        load_policy(bad)
    assert gstate.pinned_version(lab.ledger) == 1


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["TERM", "HUP", "INT"])
def test_app_stopped_by_a_signal_leaves_no_server_on_the_port(tiny_llama_dir, state, sig):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "app", "--port", str(port), "--model", str(tiny_llama_dir)],
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            # a test runner started under nohup hands down "ignore SIGHUP", and exec keeps it:
                            # the app would then rightly ignore the HUP this test sends
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while _port_free(port) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert not _port_free(port), "the dashboard server never listened"
        proc.send_signal(sig)
        proc.wait(timeout=60)
        with pytest.raises(ProcessLookupError):  # nothing of it is left: not the server, not a child
            os.killpg(proc.pid, 0)
        assert _port_free(port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_is_full_recognises_the_libraries_wordings():
    assert durable.is_full(OSError(28, "No space left on device"))
    assert durable.is_full(RuntimeError('Failed to commit: Could not write file "x.wal": No space left on device'))
    assert durable.is_full(RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"))
    assert not durable.is_full(OSError(13, "Permission denied"))
