"""Crash consistency: `kill -9` at chosen points of prune, eval, export, materialize and a decision.

Each command first runs cleanly (in this process) with TICKETLAB_CRASH_TRACE, which lists the named
points it passes (`pruning.durable.crash_point`: durable renames, ticket writing, ledger commits,
spilled results); from that list the matrix picks a few kill points per command. Each kill is a
real subprocess on a copy of one prepared lab (tiny model, signed team, tickets) that SIGKILLs
itself at the point (TICKETLAB_CRASH_AT=label@N). The subprocesses are forked from one warm
interpreter that has imported the CLI once (importing torch and every command takes seconds; the
killed process is still a separate process, killed for real). Afterwards:
- no partial ticket, bundle, materialized model or run result is visible;
- the ledger and the signed decision trail verify (`ticketlab audit`);
- every command works, and rerunning the killed one finishes with the same ids as the clean run;
- nothing is left `running` and no temporary folder remains where the rerun wrote.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from govern_helpers import make_recorded_ticket, passphrase, setup_lab

REPO = Path(__file__).resolve().parents[1]

# A warm interpreter: imports the CLI once, then for each request forks a child that runs one command
# with the given environment (output to a log file) and reports how the child ended.
ZYGOTE = """
import json, os, sys, traceback
from app import cli
cli.build_parser()
print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        rc = 99
        try:
            os.environ.clear()
            os.environ.update(req["env"])
            fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            rc = cli.main(req["argv"])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(rc or 0))
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                      "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)
"""


class Zygote:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
        assert self.proc.stdout.readline().strip() == "ready"

    def run(self, argv: list[str], env: dict, log: Path) -> dict:
        self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


# --- the prepared lab -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_llama_dir, embedded_dir, data_dir):
    """A state folder with a signed team, an approved ticket (to export), a ticket with passing metrics (to
    decide on) and a structured ticket (to materialize). Copied for every case."""
    from pruning import settings
    from pruning.models import load_model
    from pruning.prune import make_ticket

    base = tmp_path_factory.mktemp("crash-lab") / "state"
    (base / "models").mkdir(parents=True)
    (base / "models" / embedded_dir.name).symlink_to(embedded_dir)
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, base, data_dir)
        settings._overrides.clear()
        loaded = load_model(str(tiny_llama_dir))
        team = setup_lab(base, loaded, mp)
        from analysis.governance import decisions
        from analysis.recording import record_prune

        approved = make_recorded_ticket(loaded, team.ledger, 0.5, signer=team["carol"])
        decisions.decide(team.ledger, approved.id, "approve", team["alice"], "quality within budget")
        pending = make_recorded_ticket(loaded, team.ledger, 0.6, signer=team["carol"])
        structured = make_ticket(loaded, "neurons", 0.5)
        structured.save()
        record_prune(loaded, structured, "test", team.ledger, signer=team["carol"])
        settings._overrides.clear()
    return {"base": base, "data": data_dir, "model": str(tiny_llama_dir), "approved": approved.id,
            "pending": pending.id, "structured": structured.id}


def _env(mp, state: Path, data_dir: Path, **extra: str) -> None:
    mp.setenv("TICKETLAB_STATE_DIR", str(state))
    mp.setenv("TICKETLAB_DATA_DIR", str(data_dir))
    mp.setenv("TICKETLAB_KEY_DIR", str(state / "keys"))
    for k in ("TICKETLAB_LEDGER", "TICKETLAB_WITNESS", "TICKETLAB_CRASH_AT", "TICKETLAB_CRASH_TRACE",
              "TICKETLAB_PASSPHRASE", "TICKETLAB_USER"):
        mp.delenv(k, raising=False)
    for k, v in extra.items():
        mp.setenv(k, v)


def _copy(lab: dict, dest: Path) -> Path:
    shutil.copytree(lab["base"], dest, symlinks=True)
    return dest


def _cli(argv: list[str]) -> tuple[int, str, str]:
    """`ticketlab ARGV` in this process; (exit code, stdout, stderr)."""
    from app.cli import main
    from pruning import settings

    settings._overrides.clear()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = int(e.code or 0)
    settings._overrides.clear()
    return rc, out.getvalue(), err.getvalue()


# --- the commands -----------------------------------------------------------------------------------------
def _commands(lab: dict) -> dict:
    """name -> (argv, the user who runs it, where its artifact goes, keys of its JSON output that are ids)."""
    return {
        "prune": (["prune", "--model", lab["model"], "--method", "magnitude", "--sparsity", "0.3", "--json"],
                  "carol", "tickets", ("id", "path")),
        "eval": (["eval", lab["approved"], "--suite", "ppl", "--limit", "1", "--seq-len", "32", "--json"],
                 "carol", None, ("subject", "model")),
        # --overwrite: a rerun after a kill that came after the rename finds the finished artifact in place
        "export": (["export", lab["approved"], "--format", "masks", "--as", "alice", "--out", "{state}/exports/b",
                    "--overwrite", "--json"], "alice", "exports", ("ticket",)),
        "materialize": (["materialize", lab["structured"], "--out", "{state}/materialized/m", "--overwrite", "--json"],
                        "carol", "materialized", ("path", "ticket")),
        "decision": (["decide", lab["pending"], "approve", "--as", "bob", "--reason", "fine", "--json"],
                     "bob", None, ("ticket_id", "decision", "seq")),
        "promote": (["promote", lab["approved"], "--as", "dave", "--reason", "ship", "--json"],
                    "dave", None, ("target", "seq", "action")),
    }


# which named points to kill at, per command: (label, which hit: first, last or a number)
POINTS = {
    "prune": [("ticket.save.partial", "first"), ("ledger.commit", "last"), ("governance.committed", "first")],
    "eval": [("ledger.run.finished", "first"), ("ledger.commit", "last")],
    "export": [("durable.dir.before_rename", "last"), ("durable.dir.after_rename", "last")],
    "materialize": [("durable.dir.before_rename", "first"), ("durable.dir.after_rename", "first")],
    # governance.committed: after the commit, before the witness; the rerun must not record a second
    # decision or promotion (idempotent) and must witness the one the killed run committed
    "decision": [("ledger.commit", "first"), ("ledger.commit", "last"), ("governance.committed", "first")],
    "promote": [("ledger.commit", "first"), ("governance.committed", "first")],
}


def _ids(out: str, keys: tuple[str, ...], state: Path) -> dict:
    data = json.loads(out[out.index("{"):])
    if isinstance(data.get("ticket"), dict):
        data["ticket"] = data["ticket"].get("id")
    return {k: str(data.get(k)).replace(str(state), "<state>") for k in keys}


@pytest.fixture(scope="module")
def clean(lab, tmp_path_factory):
    """Each command run once without a crash: its output ids and the named points it passed."""
    results = {}
    for name, (argv, user, _where, keys) in _commands(lab).items():
        state = _copy(lab, tmp_path_factory.mktemp(f"clean-{name}") / "state")
        trace = state.parent / "trace.txt"
        with pytest.MonkeyPatch.context() as mp:
            _env(mp, state, lab["data"], TICKETLAB_USER=user, TICKETLAB_PASSPHRASE=passphrase(user),
                 TICKETLAB_CRASH_TRACE=str(trace))
            rc, out, err = _cli([a.format(state=state) for a in argv])
        assert rc == 0, (name, err)
        labels = trace.read_text().split() if trace.exists() else []
        results[name] = {"ids": _ids(out, keys, state), "labels": labels}
    return results


def _hit(labels: list[str], label: str, which) -> int:
    n = labels.count(label)
    assert n, f"the clean run never passes {label}: {labels}"
    return {"first": 1, "last": n}.get(which, which)


CASES = [(name, label, which) for name, points in POINTS.items() for label, which in points]


@pytest.mark.parametrize("name,label,which", CASES, ids=[f"{n}-{lb}-{w}" for n, lb, w in CASES])
def test_kill_9_then_everything_works_and_nothing_partial_is_visible(lab, clean, zygote, tmp_path, name, label,
                                                                   which):
    argv, user, where, keys = _commands(lab)[name]
    nth = _hit(clean[name]["labels"], label, which)
    state = _copy(lab, tmp_path / "state")
    argv = [a.format(state=state) for a in argv]
    env = {**os.environ, "TICKETLAB_STATE_DIR": str(state), "TICKETLAB_DATA_DIR": str(lab["data"]),
           "TICKETLAB_KEY_DIR": str(state / "keys"), "TICKETLAB_USER": user,
           "TICKETLAB_PASSPHRASE": passphrase(user), "TICKETLAB_CRASH_AT": f"{label}@{nth}", "OMP_NUM_THREADS": "1"}
    for k in ("TICKETLAB_LEDGER", "TICKETLAB_WITNESS", "TICKETLAB_CRASH_TRACE", "PYTEST_CURRENT_TEST"):
        env.pop(k, None)
    log = tmp_path / "killed.log"
    killed = zygote.run(argv, env, log)
    assert killed["signal"] == signal.SIGKILL, (killed, log.read_text()[-3000:])

    with pytest.MonkeyPatch.context() as mp:
        _env(mp, state, lab["data"], TICKETLAB_USER=user, TICKETLAB_PASSPHRASE=passphrase(user))
        _nothing_partial(state)
        rc, out, err = _cli(["audit"])
        if label == "governance.committed":  # committed, never witnessed: named until the rerun witnesses it
            assert rc == 2 and "have no head in the witness log" in err, f"audit after the kill: {err}{out}"
        else:
            assert rc == 0, f"audit after the kill: {err}{out}"
        rc, out, err = _cli(argv)  # rerun: finishes, with the clean run's ids
        assert rc == 0, err
        assert _ids(out, keys, state) == clean[name]["ids"]
        _nothing_partial(state)
        rc, out, err = _cli(["audit"])
        assert rc == 0, f"audit after the rerun: {err}{out}"
        from analysis.ledger import Ledger

        assert Ledger().query("SELECT id FROM runs WHERE status = 'running'") == []
        if where:
            leftovers = [p.name for p in (state / where).iterdir() if p.name.startswith(".")]
            assert leftovers == [], leftovers
        assert _cli(["tickets", "--json"])[0] == 0


def _nothing_partial(state: Path) -> None:
    from analysis.governance.verify import verify_bundle
    from analysis.ledger import Ledger
    from pruning.models import load_model
    from pruning.ticket import Ticket

    ledger = Ledger()
    for d in sorted((state / "tickets").iterdir()):
        if not d.name.startswith("."):
            Ticket.load(d)  # every visible ticket is whole
    for row in ledger.query("SELECT id FROM tickets"):
        Ticket.load(state / "tickets" / row["id"])  # and every recorded one is there
    for d in sorted((state / "exports").iterdir()) if (state / "exports").exists() else []:
        if not d.name.startswith("."):
            verify_bundle(d)
    for d in sorted((state / "materialized").iterdir()) if (state / "materialized").exists() else []:
        if not d.name.startswith("."):
            load_model(str(d))
    partial = ledger.query("SELECT r.id, r.status FROM runs r WHERE r.status <> 'succeeded' AND "
                           "(EXISTS (SELECT 1 FROM metrics m WHERE m.run_id = r.id) OR "
                           "EXISTS (SELECT 1 FROM eval_samples s WHERE s.run_id = r.id))")
    assert partial == [], partial
