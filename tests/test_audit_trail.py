"""The anchored trail: rewriting, truncating or restoring the ledger is found by `audit` and named, and no
governance write proceeds on a trail that fails it."""

import json
import shutil

import duckdb
import pytest
from govern_helpers import approved_ticket, make_recorded_ticket, setup_lab

from analysis.governance import audit, chain, decisions, deploy, witness
from analysis.governance import state as gstate
from app.cli import main
from pruning.errors import TicketLabError


def _rows(ledger) -> list[dict]:
    return gstate.load(ledger).rows


def test_every_row_rewritten_with_recomputed_hashes_is_caught(tiny_llama, state, monkeypatch, capsys):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    decisions.decide(lab.ledger, t.id, "reject", lab["alice"], "too lossy")
    rows = _rows(lab.ledger)
    target = next(r for r in rows if r["kind"] == "decision")
    # the insider flips the rejection to an approval and re-chains every row from there on, consistently
    con = duckdb.connect(str(lab.ledger.path))
    prev = chain.GENESIS
    for r in rows:
        if r["seq"] == target["seq"]:
            body = json.loads(r["body"])
            body["decision"], body["reason"] = "approve", "rubber stamp"
            r["body"] = chain.canonical(body).decode()
        r["prev_hash"] = prev
        r["row_hash"] = chain.row_hash(r)
        prev = r["row_hash"]
        con.execute("UPDATE governance_log SET body = ?, prev_hash = ?, row_hash = ? WHERE seq = ?",
                    [r["body"], r["prev_hash"], r["row_hash"], r["seq"]])
    con.close()
    assert gstate.load(lab.ledger).link is None  # the hash chain alone is consistent again
    assert main(["audit"]) == 2
    err = capsys.readouterr().err
    assert f"record #{target['seq']} (decision by alice) has a signature that does not verify" in err
    assert f"record #{target['seq']} is not the one witness log" in err
    assert gstate.approval_of(lab.ledger, t.id) is None  # an unsigned approval approves nothing
    with pytest.raises(TicketLabError, match="fails the audit"):
        deploy.promote(lab.ledger, t.id, lab["dave"], "ship")


def test_deleting_the_newest_rows_is_caught_by_the_witness(tiny_llama, state, monkeypatch, capsys):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    deploy.promote(lab.ledger, t.id, lab["dave"], "ship")
    last = _rows(lab.ledger)[-1]["seq"]
    con = duckdb.connect(str(lab.ledger.path))
    con.execute("DELETE FROM governance_log WHERE seq >= ?", [last - 1])  # the approval and the promotion
    con.close()
    report = audit.audit(lab.ledger)
    assert not report["ok"]
    msg = audit.audit_message(report)
    assert f"the ledger ends at record #{last - 2}" in msg and f"saw record #{last - 1}" in msg
    assert "newest records were deleted, or an older copy of the ledger was restored" in msg
    before = len(_rows(lab.ledger))
    with pytest.raises(TicketLabError, match="fails the audit"):
        decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "again")
    assert len(_rows(lab.ledger)) == before


def test_an_older_ledger_copy_restored_is_caught(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    shutil.copy(lab.ledger.path, state / "backup.duckdb")  # before the rejection
    decisions.decide(lab.ledger, t.id, "reject", lab["alice"], "bias got worse")
    shutil.copy(state / "backup.duckdb", lab.ledger.path)  # restore the copy that has no rejection
    msg = audit.audit_message(audit.audit(lab.ledger))
    assert "older copy of the ledger was restored" in msg
    # even if the restored copy is written to with a forged record, the fork is named
    con = duckdb.connect(str(lab.ledger.path))
    chain.append(con, lab["alice"], "decision", {"ticket_id": t.id, "decision": "approve"}, t.id)
    con.close()
    msg = audit.audit_message(audit.audit(lab.ledger))
    assert "is not the one witness log" in msg and "an older copy was restored and written to" in msg


def test_witness_truncated_too_but_a_bundle_remembers(tiny_llama, state, monkeypatch, capsys):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    deploy.promote(lab.ledger, t.id, lab["dave"], "ship")
    from analysis.governance.export import export_bundle

    bundle = state / "bundle"
    export_bundle(lab.ledger, t.id, bundle, "masks", signer=lab["alice"], loaded=tiny_llama)
    head = _rows(lab.ledger)[-1]["seq"]
    # the insider deletes the promotion and the approval from the ledger *and* the witness log
    con = duckdb.connect(str(lab.ledger.path))
    con.execute("DELETE FROM governance_log WHERE seq >= ?", [head - 1])
    con.close()
    wpath = witness.path_for(lab.ledger)
    lines = wpath.read_text().splitlines()
    wpath.write_text("\n".join(lines[:-2]) + "\n")
    assert audit.audit(lab.ledger)["ok"]  # both agree now ...
    assert main(["audit", "--against", str(bundle)]) == 2  # ... but the bundle saw the head
    err = capsys.readouterr().err
    assert f"bundle {bundle}" in err and f"saw record #{head}" in err


def test_corrupt_or_missing_witness_log_one_message_nothing_recorded(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    wpath = witness.path_for(lab.ledger)
    good = wpath.read_text()
    before = len(_rows(lab.ledger))
    wpath.write_text(good.replace('"seq"', '"sq"', 1))
    with pytest.raises(TicketLabError, match=f"witness log {wpath} line 1 is corrupt.*nothing was recorded"):
        witness.read(wpath)
    with pytest.raises(TicketLabError, match="fails the audit.*line 1 is corrupt"):
        decisions.decide(lab.ledger, t.id, "reject", lab["alice"], "r")
    # an invented head (edited hash, kept signature) is refused as well
    first = json.loads(good.splitlines()[0])
    first["head"] = "f" * 64
    wpath.write_text(json.dumps(first) + "\n" + "\n".join(good.splitlines()[1:]) + "\n")
    assert "not signed by a registered key" in audit.audit_message(audit.audit(lab.ledger))
    wpath.unlink()
    assert "no witness log at" in audit.audit_message(audit.audit(lab.ledger))
    assert len(_rows(lab.ledger)) == before
    # a head lost to a crash between commit and witness is only a note; the next write covers it
    wpath.write_text("\n".join(good.splitlines()[:-1]) + "\n")
    report = audit.audit(lab.ledger)
    assert report["ok"] and "not yet witnessed" in report["notes"][0]
    decisions.decide(lab.ledger, t.id, "reject", lab["alice"], "r")
    assert audit.audit(lab.ledger)["notes"] == []
    # a half-written last line (a crash during the append) is ignored, not fatal
    with open(wpath, "a") as f:
        f.write('{"ledger_id": "x", "se')
    assert audit.audit(lab.ledger)["ok"]


def test_witness_location_is_configurable(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch, witness=state / "elsewhere" / "witness.jsonl")
    make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    assert len(witness.read(state / "elsewhere" / "witness.jsonl")) == len(_rows(lab.ledger))
    assert not witness.path_for(lab.ledger).is_relative_to(lab.ledger.path.parent / "ledger.duckdb")
    assert audit.audit(lab.ledger)["ok"]
