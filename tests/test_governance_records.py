"""Typed governance records (issue 22): one module spells each record's keys, records stored before it read
back identically, the policy in force has one owner, and one decision evaluates the policy once."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from govern_helpers import make_recorded_ticket, setup_lab

from analysis.governance import chain, decisions, deploy, replay, review
from analysis.governance import state as gstate
from analysis.governance.record_types import (
    BODIES,
    CHOICES,
    Decision,
    DecisionBody,
    PromoteBody,
    RollbackBody,
)
from analysis.ledger import Ledger

FIXTURE = Path(__file__).parent / "fixtures" / "govbase"


def _names(record_type) -> set[str]:
    return {f.name for f in fields(record_type)}


def _build_module():
    spec = importlib.util.spec_from_file_location("govbase_build", FIXTURE / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def old_ledger(tmp_path, monkeypatch) -> Ledger:
    """A copy of the ledger made by the code before typed records (tests/fixtures/govbase/build.py)."""
    folder = tmp_path / "state"
    folder.mkdir()
    with gzip.open(FIXTURE / "ledger.duckdb.gz") as src, open(folder / "ledger.duckdb", "wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copy(FIXTURE / "ledger.duckdb.witness.jsonl", folder)
    shutil.copytree(FIXTURE / "keys", folder / "keys")
    monkeypatch.setenv("TICKETLAB_STATE_DIR", str(folder))
    monkeypatch.setenv("TICKETLAB_KEY_DIR", str(folder / "keys"))
    for var in ("TICKETLAB_LEDGER", "TICKETLAB_WITNESS", "TICKETLAB_PASSPHRASE"):
        monkeypatch.delenv(var, raising=False)
    return Ledger(folder / "ledger.duckdb")


def test_audit_and_replay_of_a_ledger_made_before_are_unchanged(old_ledger):
    golden = json.loads((FIXTURE / "golden.json").read_text())
    got = _build_module().golden_of(old_ledger)
    assert got["audit"] == golden["audit"]
    assert got["replayed"] == golden["replayed"]
    # the trail is the one the fixture describes: a reject, an approval, a promotion and rollback, an override,
    # a second policy, and one void record
    assert [d["decision"] for d in got["replayed"]["decisions"]] == ["reject", "approve", "approve", "approve"]
    assert [m["action"] for m in got["replayed"]["moves"]] == ["promote", "rollback"]
    assert len(got["audit"]["voided"]) == 1


def test_stored_bodies_read_back_through_their_record_types_byte_for_byte(old_ledger):
    """Every valid record of the old ledger, read into its typed body and written back out, is the stored body:
    the canonical bytes that were signed (and so the row hash) are what the typed record produces."""
    st = gstate.load(old_ledger)
    seen = set()
    for row in st.rows:
        if not st.signed(row):
            continue
        body = chain.body_of(row)
        again = BODIES[row["kind"]].from_body(body).to_body()
        assert chain.canonical(again) == row["body"].encode(), row["seq"]
        assert chain.row_hash(row | {"body": chain.canonical(again).decode()}) == row["row_hash"]
        seen.add(row["kind"])
    assert seen >= {"init", "register", "policy", "create", "decision", "promote", "rollback"}


def test_the_record_types_are_the_only_speller_of_their_keys(old_ledger):
    # what the replay requires of a body is what the typed record declares, and nothing else
    assert replay.FIELDS == {kind: body.required() for kind, body in BODIES.items()}
    assert set(replay.FIELDS["decision"]) < _names(DecisionBody)
    # the read model's decision rows are the typed view of the record
    st = gstate.load(old_ledger)
    for d in gstate.decision_rows(st):
        row = next(r for r in st.rows if r["seq"] == d["seq"])
        assert d == Decision.from_row(row, st.signed(row)).as_dict()
    assert CHOICES == ("approve", "reject")


def test_a_decision_and_moves_written_now_are_their_typed_records(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    out = decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "fine")
    row = gstate.load(lab.ledger).rows[-1]
    stored = chain.body_of(row)
    assert DecisionBody.from_body(stored).to_body() == stored
    assert set(stored) == _names(DecisionBody)  # every key it stores is declared there
    # what decide returns is the read model's row of the record it wrote, read back from the ledger
    assert {k: v for k, v in out.items() if k != "repeated"} == gstate.latest_decision(lab.ledger, t.id)
    promoted = deploy.promote(lab.ledger, t.id, lab["dave"], "ship")
    assert set(chain.body_of(gstate.load(lab.ledger).rows[-1])) == _names(PromoteBody)
    assert promoted == gstate.moves(lab.ledger)[-1]
    back = deploy.rollback(lab.ledger, lab["dave"], "undo")
    assert set(chain.body_of(gstate.load(lab.ledger).rows[-1])) == _names(RollbackBody)
    assert back == gstate.moves(lab.ledger)[-1]


def _count_calls(fn, target) -> int:
    """How many times `target` (a function) runs while `fn()` runs: observed with the profiler hook, the
    code itself untouched."""
    code, calls = target.__code__, [0]

    def hook(frame, event, arg):
        if event == "call" and frame.f_code is code:
            calls[0] += 1

    sys.setprofile(hook)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls[0]


def test_one_decision_evaluates_the_policy_once(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    n = _count_calls(lambda: decisions.decide(lab.ledger, t.id, "reject", lab["alice"], "not yet"), review.evaluate)
    assert n == 1  # was 3: the body, the rules before signing, the replay read after the write
    assert gstate.latest_decision(lab.ledger, t.id)["decision"] == "reject"


def test_the_policy_in_force_has_one_owner(tiny_llama, state, monkeypatch):
    from analysis.governance import verdict
    from analysis.governance.policy import load_policy

    assert verdict.policy_in_force is gstate.policy_in_force
    fresh = Ledger()
    assert gstate.policy_in_force(fresh).sha256 == load_policy(None).sha256  # nobody initialised it: default
    lab = setup_lab(state, tiny_llama, monkeypatch)
    assert gstate.policy_in_force(lab.ledger).sha256 == gstate.current_policy(lab.ledger).sha256
    assert gstate.policy_in_force(lab.ledger, str(lab.failing)).name == "strict"  # a what-if preview file


def test_the_cli_decides_and_promotes_through_the_use_cases(tiny_llama, state, monkeypatch, capsys):
    from govern_helpers import passphrase

    from app.cli import main, request_for
    from usecases import USECASES
    from usecases.decide import DecideOutcome, DecideRequest
    from usecases.promote import MoveOutcome, PromoteRequest, RollbackRequest

    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    argv = ["decide", t.id, "approve", "--reason", "within budget", "--as", "alice"]
    request = request_for(argv)
    assert isinstance(request, DecideRequest) and request.argv() == argv
    assert USECASES["decide"].request is DecideRequest and USECASES["promote"].request is PromoteRequest
    monkeypatch.setenv("TICKETLAB_PASSPHRASE", passphrase("alice"))
    assert main([*argv, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    latest = gstate.latest_decision(lab.ledger, t.id)
    assert printed == json.loads(json.dumps({k: v for k, v in latest.items() if k != "record"} | {"repeated": False},
                                            default=str))
    # the outcome is typed and goes to JSON and back (what a job stores)
    again = USECASES["decide"].fn(request)
    assert isinstance(again, DecideOutcome) and again.repeated and again.decision.seq == latest["seq"]
    assert DecideOutcome.model_validate_json(again.model_dump_json()).decision.row_hash == latest["row_hash"]
    from usecases import execute  # what a dashboard job's runner does with the stored request

    assert execute("decide", request.model_dump(mode="json")) == again
    monkeypatch.setenv("TICKETLAB_PASSPHRASE", passphrase("dave"))
    promote = request_for(["promote", t.id, "--reason", "ship", "--as", "dave"])
    assert isinstance(promote, PromoteRequest)
    moved = USECASES["promote"].fn(promote)
    assert isinstance(moved, MoveOutcome) and moved.move.as_dict() == gstate.moves(lab.ledger)[-1]
    assert isinstance(request_for(["rollback", "--reason", "undo", "--to", "dense", "--as", "dave"]), RollbackRequest)
    assert main(["rollback", "--reason", "undo", "--to", "dense", "--as", "dave", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == "dense"
