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


def test_damaged_witness_lines_are_named_and_the_heads_they_held_missed(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    wpath = witness.path_for(lab.ledger)
    good = wpath.read_text()
    before = len(_rows(lab.ledger))
    # an edited line is named, skipped, and the record it witnessed has no head any more
    wpath.write_text(good.replace('"seq"', '"sq"', 1))
    heads, bad = witness.scan(wpath)
    assert len(heads) == before - 1 and "line 1 is not a signed head" in bad[0]
    report = audit.audit(lab.ledger)
    assert not report["ok"] and report["unwitnessed"] == [1] and "line 1 is not a signed head" in report["notes"][0]
    # an invented head (edited hash, kept signature) is refused as well
    first = json.loads(good.splitlines()[0])
    first["head"] = "f" * 64
    wpath.write_text(json.dumps(first) + "\n" + "\n".join(good.splitlines()[1:]) + "\n")
    assert "not signed by a registered key" in audit.audit_message(audit.audit(lab.ledger))
    wpath.unlink()
    assert "no witness log at" in audit.audit_message(audit.audit(lab.ledger))
    with pytest.raises(TicketLabError, match="fails the audit.*no witness log"):
        decisions.decide(lab.ledger, t.id, "reject", lab["alice"], "r")
    assert len(_rows(lab.ledger)) == before
    # garbage appended after the last head (a torn append, or by hand) is reported, and fails nothing
    wpath.write_text(good + '{"ledger_id": "x", "se')
    report = audit.audit(lab.ledger)
    assert report["ok"] and "is not a signed head" in report["notes"][0]
    decisions.decide(lab.ledger, t.id, "reject", lab["alice"], "r")  # its head goes on a line of its own
    heads, bad = witness.scan(wpath)
    assert len(heads) == before + 1 and len(bad) == 1 and audit.audit(lab.ledger)["ok"]


def test_a_last_head_without_its_newline_still_counts(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    wpath = witness.path_for(lab.ledger)
    text = wpath.read_text()
    wpath.write_text(text[:-1])  # one byte less: the newest head loses its newline
    assert len(witness.read(wpath)) == len(_rows(lab.ledger)) and audit.audit(lab.ledger)["ok"]


def test_a_record_past_the_witness_fails_the_audit_until_witnessed_again(tiny_llama, state, monkeypatch, capsys):
    """The unwitnessed-record attack: a promotion whose head went to a private copy of the witness log."""
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    wpath = witness.path_for(lab.ledger)
    monkeypatch.setenv("TICKETLAB_WITNESS", str(state / "private.jsonl"))
    with pytest.raises(TicketLabError, match=r"witness log is pinned at .*unset \$TICKETLAB_WITNESS"):
        deploy.promote(lab.ledger, t.id, lab["dave"], "ship")
    monkeypatch.delenv("TICKETLAB_WITNESS")
    # the same promotion with its head cut from the pinned log (as a write killed after its commit leaves it)
    deploy.promote(lab.ledger, t.id, lab["dave"], "ship")
    seq = _rows(lab.ledger)[-1]["seq"]
    wpath.write_text("".join(wpath.read_text().splitlines(keepends=True)[:-1]))
    report = audit.audit(lab.ledger)
    assert not report["ok"] and report["unwitnessed"] == [seq]
    assert main(["audit"]) == 2
    assert f"records #{seq} have no head in the witness log" in capsys.readouterr().err
    # a later write by someone else does not cover it: every record needs its own head
    decisions.decide(lab.ledger, t.id, "approve", lab["bob"], "second opinion")
    assert audit.audit(lab.ledger)["unwitnessed"] == [seq]
    # the signed re-witness step: an admin who checked it signs its head
    with pytest.raises(TicketLabError, match="needs the admin role"):
        main_rewitness(monkeypatch, "alice")
    assert main_rewitness(monkeypatch, "ada") == 0
    assert f"witnessed again: #{seq}" in capsys.readouterr().out
    assert audit.audit(lab.ledger)["ok"]


def main_rewitness(monkeypatch, who: str) -> int:
    from govern_helpers import passphrase

    monkeypatch.setenv("TICKETLAB_PASSPHRASE", passphrase(who))
    from analysis.governance import identity, records
    from analysis.ledger import Ledger

    if who != "ada":
        return records.rewitness(Ledger(), identity.unlock(who))
    return main(["audit", "--rewitness", "--as", who])


def test_witness_location_is_configurable(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch, witness=state / "elsewhere" / "witness.jsonl")
    make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    assert len(witness.read(state / "elsewhere" / "witness.jsonl")) == len(_rows(lab.ledger))
    assert not witness.path_for(lab.ledger).is_relative_to(lab.ledger.path.parent / "ledger.duckdb")
    assert audit.audit(lab.ledger)["ok"]
