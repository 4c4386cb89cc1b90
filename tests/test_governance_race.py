"""Every signed write retries on a moved trail (issue 19): real processes (promote, rollback, `prune --as`, an
admin's role change, a decision) lined up just before their write and released together all succeed, on one
unforked chain that passes the audit."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from govern_helpers import approved_ticket, make_recorded_ticket, passphrase, setup_lab

from analysis.governance import audit, deploy
from analysis.governance import state as gstate

REPO = Path(__file__).resolve().parents[1]


def test_signed_writes_released_together_all_land_on_one_chain(tiny_llama, tiny_llama_dir, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    a = approved_ticket(lab, tiny_llama, sparsity=0.5)
    b = approved_ticket(lab, tiny_llama, sparsity=0.6)
    c = make_recorded_ticket(tiny_llama, lab.ledger, sparsity=0.55, signer=lab["carol"])
    deploy.promote(lab.ledger, a.id, lab["dave"], "first")
    before = len(gstate.load(lab.ledger).rows)
    go = state / "go"
    commands = {
        "promote": (["promote", b.id, "--reason", "second", "--json"], "dave"),
        "rollback": (["rollback", "--reason", "back", "--json"], "dave"),
        "prune": (["prune", "--model", str(tiny_llama_dir), "--method", "magnitude", "--sparsity", "0.3", "--json"],
                  "carol"),
        "role": (["people", "role", "eve", "--add", "reviewer"], "ada"),
        "decide": (["decide", c.id, "approve", "--reason", "fine", "--json"], "bob"),
    }
    procs = {}
    for name, (argv, user) in commands.items():
        env = {**os.environ, "TICKETLAB_USER": user, "TICKETLAB_PASSPHRASE": passphrase(user), "OMP_NUM_THREADS": "1",
               "TICKETLAB_HOLD_AT": f"governance.prepared={go}", "TICKETLAB_CRASH_TRACE": str(state / f"{name}.trace"),
               "TICKETLAB_LOCK_WAIT_S": "120"}
        procs[name] = subprocess.Popen([sys.executable, "-m", "app.cli", *argv, "--as", user], cwd=REPO, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # every process has checked its write and waits just before it
        ready = [n for n in commands if "governance.prepared" in _read(state / f"{n}.trace")]
        if len(ready) == len(commands) or any(p.poll() is not None for p in procs.values()):
            break
        time.sleep(0.1)
    assert len(ready) == len(commands), {n: p.poll() for n, p in procs.items()}
    go.touch()
    results = {n: (p.wait(timeout=240), *p.communicate()) for n, p in procs.items()}
    assert all(rc == 0 for rc, _, _ in results.values()), results
    st = gstate.load(lab.ledger)
    assert [r["seq"] for r in st.rows] == list(range(1, before + 6))  # one chain: no fork, no gap, none lost
    assert audit.audit(lab.ledger)["ok"]
    kinds = sorted(r["kind"] for r in st.rows[before:])
    assert kinds == ["create", "decision", "promote", "roles", "rollback"]
    assert "reviewer" in gstate.roles(lab.ledger)["eve"]
    created = json.loads(results["prune"][1].strip().splitlines()[-1])
    assert created["creator"] == "carol" and gstate.creator_of(lab.ledger, created["id"]) == "carol"
    # the promotion and the rollback both moved the pointer, in whichever order they landed
    assert deploy.current(lab.ledger, tiny_llama.weights_sha256) in (a.id, b.id)
    assert [m["action"] for m in deploy.history(lab.ledger)][1:] in (["promote", "rollback"], ["rollback", "promote"])


def _read(p: Path) -> str:
    return p.read_text() if p.exists() else ""
