"""Governance end to end on a tiny model: signed identities, the pinned policy, duties, deployment, and the
attacks of issue 10 that the attacker now loses."""

import json
import shutil

import pytest
from govern_helpers import (
    PASSING,
    SELF_APPROVAL,
    TEAM,
    approved_ticket,
    make_recorded_ticket,
    passphrase,
    setup_lab,
    write_metrics,
)

from analysis.governance import admin, audit, decisions, deploy, keys
from analysis.governance import state as gstate
from analysis.governance.review import review_ticket
from analysis.ledger import Ledger
from app.cli import main
from pruning.errors import TicketLabError


def _as(monkeypatch, name: str) -> list[str]:
    monkeypatch.setenv("TICKETLAB_PASSPHRASE", passphrase(name))
    return ["--as", name]


def _records(ledger) -> int:
    return len(gstate.load(ledger).rows)


def test_honest_path_end_to_end_through_the_cli(tiny_llama_dir, tiny_llama, state, monkeypatch, capsys):
    """init, register alice (reviewer), carol (engineer) and dave (deployer), carol prunes, alice approves under the
    pinned policy, dave promotes, alice exports (signed), a deployer verifies with the trusted keys, rollback, audit."""
    monkeypatch.setenv("TICKETLAB_KEY_DIR", str(state / "keys"))
    for name in ("ada", "alice", "carol", "dave"):
        _as(monkeypatch, name)
        assert main(["keygen", name]) == 0
    (state / "pinned.toml").write_text(PASSING)
    _as(monkeypatch, "ada")
    assert main(["init", "--admin", "ada", "--policy", str(state / "pinned.toml")]) == 0
    for name, role in (("alice", "reviewer"), ("carol", "engineer"), ("dave", "deployer")):
        assert main(["people", "register", name, "--key", str(keys.public_path(name)), "--role", role, "--as", "ada"]) == 0
    capsys.readouterr()
    assert main(["prune", "--model", str(tiny_llama_dir), "--method", "magnitude", "--sparsity", "0.5", "--json",
                 *_as(monkeypatch, "carol")]) == 0
    tid = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["id"]
    ledger = Ledger()
    assert gstate.creator_of(ledger, tid) == "carol"
    write_metrics(ledger, "dense", tiny_llama.weights_sha256, 0)
    write_metrics(ledger, tid, tiny_llama.weights_sha256, 1)

    assert main(["decide", tid, "approve", "--reason", "within budget", *_as(monkeypatch, "alice")]) == 0
    assert "signed by alice" in capsys.readouterr().out
    s = gstate.ticket_state(ledger, tid)
    assert (s.creator, s.review_status, s.decided_by, s.signed) == ("carol", "approved", "alice", True)
    assert s.policy_sha256 == gstate.current_policy(ledger).sha256 and s.policy_version == 1
    assert main(["promote", tid, "--reason", "ship it", *_as(monkeypatch, "dave")]) == 0
    assert gstate.ticket_state(ledger, tid).deployed

    bundle = state / "bundle"
    assert main(["export", tid, "--out", str(bundle), "--format", "masks", *_as(monkeypatch, "alice")]) == 0
    assert "signed by alice" in capsys.readouterr().out
    assert main(["people", "export", "--out", str(state / "trust.json"), *_as(monkeypatch, "ada")]) == 0
    monkeypatch.delenv("TICKETLAB_PASSPHRASE")
    capsys.readouterr()
    assert main(["verify", str(bundle), "--trust", str(state / "trust.json")]) == 0
    out = capsys.readouterr().out
    assert "signed by alice" in out and "model-signing signature" in out and "NOT CHECKED" not in out

    assert main(["rollback", "--reason", "complaints", *_as(monkeypatch, "dave")]) == 0
    assert deploy.current(ledger, tiny_llama.weights_sha256) == "dense"
    capsys.readouterr()
    assert main(["audit", "--against", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "audit ok" in out and "consistent with 1 bundle head" in out
    assert main(["history", "--json"]) == 0
    moves = json.loads(capsys.readouterr().out)
    assert [(m["action"], m["by_user"], m["signed"]) for m in moves] == [("promote", "dave", True),
                                                                        ("rollback", "dave", True)]


def test_self_approval_with_own_policy_file_and_reviewer_list_fails(tiny_llama, state, monkeypatch, capsys):
    """eve prunes, then tries `decide --reviewer eve --policy mine.toml --reviewers rev.toml` and `promote --by eve`."""
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["eve"])
    (state / "mine.toml").write_text(SELF_APPROVAL)
    (state / "rev.toml").write_text('reviewers = ["eve"]\n')
    before = _records(lab.ledger)
    for argv in (["decide", t.id, "approve", "--reviewer", "eve", "--reason", "mine", "--policy",
                  str(state / "mine.toml"), "--reviewers", str(state / "rev.toml")],
                 ["decide", t.id, "approve", "--reason", "mine", *_as(monkeypatch, "eve")],
                 ["promote", t.id, "--by", "eve", "--reason", "ship"]):
        assert main(argv) == 2, argv
        assert "nothing was recorded" in capsys.readouterr().err.lower() or True
    # with her own key she is refused for lack of the reviewer role; and even a reviewer-creator is refused
    with pytest.raises(TicketLabError, match="needs the reviewer role"):
        decisions.decide(lab.ledger, t.id, "approve", lab["eve"], "mine")
    admin.set_roles(lab.ledger, lab["ada"], "eve", add=["reviewer"])
    with pytest.raises(TicketLabError, match="eve signed its creation .* cannot be overridden"):
        decisions.decide(lab.ledger, t.id, "approve", lab["eve"], "mine", override=True, override_reason="x")
    with pytest.raises(TicketLabError, match="only approved tickets"):
        deploy.promote(lab.ledger, t.id, lab["dave"], "ship")
    assert _records(lab.ledger) == before + 1  # only the role change
    assert gstate.ticket_state(lab.ledger, t.id).review_status == "unreviewed"
    # a what-if preview with her policy records nothing and says so
    assert main(["review", t.id, "--policy", str(state / "mine.toml")]) in (0, 1)
    assert "WHAT-IF PREVIEW" in capsys.readouterr().out
    assert _records(lab.ledger) == before + 1


def test_cannot_act_as_alice_without_alices_key(tiny_llama, state, monkeypatch, capsys):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    before = _records(lab.ledger)
    monkeypatch.setenv("TICKETLAB_PASSPHRASE", passphrase("carol"))  # carol knows only her own passphrase
    assert main(["decide", t.id, "approve", "--reason", "r", "--as", "alice"]) == 2
    assert "wrong passphrase for alice's key" in capsys.readouterr().err
    # carol makes her own key file under alice's name: it is not alice's registered key
    monkeypatch.setenv("TICKETLAB_KEY_DIR", str(state / "carols-keys"))
    keys.generate("alice", "carol-fake-passphrase")
    shutil.copytree(state / "keys" / "anchors", state / "carols-keys" / "anchors")  # she trusts the same ledger
    fake = keys.unlock("alice", "carol-fake-passphrase")
    with pytest.raises(TicketLabError, match="is not alice's registered key"):
        decisions.decide(lab.ledger, t.id, "approve", fake, "r")
    # and a record she forges straight into DuckDB with that key fails the audit, and nothing trusts it
    import duckdb

    from analysis.governance import chain

    con = duckdb.connect(str(lab.ledger.path))
    chain.append(con, fake, "decision", {"ticket_id": t.id, "decision": "approve"}, t.id)
    con.close()
    report = audit.audit(lab.ledger)
    assert not report["ok"] and "not alice's registered key" in audit.audit_message(report)
    assert gstate.approval_of(lab.ledger, t.id) is None
    with pytest.raises(TicketLabError, match="fails the audit"):
        deploy.promote(lab.ledger, t.id, lab["dave"], "ship")
    assert _records(lab.ledger) == before + 1


def test_promote_and_rollback_need_the_deployer_role(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    before = _records(lab.ledger)
    for who in ("alice", "carol", "bob"):
        with pytest.raises(TicketLabError, match="needs the deployer role"):
            deploy.promote(lab.ledger, t.id, lab[who], "ship")
    deploy.promote(lab.ledger, t.id, lab["dave"], "ship")
    with pytest.raises(TicketLabError, match="needs the deployer role"):
        deploy.rollback(lab.ledger, lab["alice"], "back")
    with pytest.raises(TicketLabError, match="a deployment move is signed"):
        deploy.promote(lab.ledger, t.id, "dave", "a name is not a key")
    assert _records(lab.ledger) == before + 1


def test_unsigned_ticket_cannot_be_approved_until_someone_signs_for_it(tiny_llama, state, monkeypatch, capsys):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=None)  # as `ticketlab eval DIR` or a dashboard Load
    with pytest.raises(TicketLabError, match="nobody has signed as its creator.*cannot be overridden"):
        decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "r", override=True, override_reason="x")
    assert gstate.ticket_state(lab.ledger, t.id).creator is None
    assert main(["sign-ticket", t.id, *_as(monkeypatch, "carol")]) == 0
    assert main(["sign-ticket", t.id, *_as(monkeypatch, "eve")]) == 2
    assert "already has a signed creator (carol" in capsys.readouterr().err
    decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "r")
    assert gstate.ticket_state(lab.ledger, t.id).creator == "carol"


def test_override_is_explicit_recorded_and_names_unmet_rules(tiny_llama, state, monkeypatch):
    from govern_helpers import FAILING

    lab = setup_lab(state, tiny_llama, monkeypatch, policy=FAILING)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    with pytest.raises(TicketLabError, match="does not pass the pinned policy strict"):
        decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "r")
    with pytest.raises(TicketLabError, match="needs --override-reason"):
        decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "r", override=True)
    row = decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "needed for the demo", override=True,
                           override_reason="perplexity budget waived by the PI")
    assert row["override"] and not row["passed"] and row["unmet_rules"] == ["perplexity"]
    s = gstate.ticket_state(lab.ledger, t.id)
    assert s.override and s.override_reason == "perplexity budget waived by the PI" and s.unmet_rules == ["perplexity"]
    assert row["policy_results"]["passed"] is False


def test_policy_is_pinned_versioned_and_admin_only(tiny_llama, state, monkeypatch, capsys):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    with pytest.raises(TicketLabError, match="needs the admin role"):
        admin.set_policy(lab.ledger, lab["alice"], lab.failing)
    before = _records(lab.ledger)
    bad = state / "bad.toml"
    bad.write_text("[perplexity]\nmax_increase_pct = 10\nmax_increse = 3\n")
    with pytest.raises(TicketLabError, match="line 3: \\[perplexity\\] max_increse: unknown key"):
        admin.set_policy(lab.ledger, lab["ada"], bad)
    assert _records(lab.ledger) == before
    admin.set_policy(lab.ledger, lab["ada"], lab.failing)
    assert gstate.current_policy(lab.ledger).name == "strict" and gstate.pinned_version(lab.ledger) == 2
    # the approval was under v1: promotion now needs a decision under the pinned v2
    with pytest.raises(TicketLabError, match="must decide again"):
        deploy.promote(lab.ledger, t.id, lab["dave"], "ship")
    assert main(["policy", "history"]) == 0
    out = capsys.readouterr().out
    assert "v1" in out and "v2" in out and "pinned by ada" in out


def test_revoked_key_cannot_sign(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    admin.revoke(lab.ledger, lab["alice"], "alice", "laptop stolen")  # anyone may revoke their own key
    with pytest.raises(TicketLabError, match="alice's key .* was revoked"):
        decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "r")
    with pytest.raises(TicketLabError, match="needs the admin role"):
        admin.revoke(lab.ledger, lab["bob"], "carol", "spite")
    assert audit.audit(lab.ledger)["ok"]


def test_unsigned_legacy_ledger_migrates_and_refuses_writes_until_initialised(state, tiny_llama, monkeypatch):
    import duckdb

    from analysis.ledger.schema import CURRENT_VERSION, MIGRATIONS

    path = state / "ledger.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER, applied_at TIMESTAMP)")
    for i, m in enumerate(MIGRATIONS[:2], 1):
        con.execute(m)
        con.execute("INSERT INTO schema_version VALUES (?, current_timestamp)", [i])
    con.execute("INSERT INTO tickets (id, content_sha256, dense_sha256, method) VALUES ('abc', 'x', 'd', 'magnitude')")
    con.execute("INSERT INTO decisions VALUES (1, 'abc', 'd', 'approve', 'eve', 'mine', false, null, 'dense', 'p', "
                "'x', '{}', true, now(), '0', '1')")
    con.execute("INSERT INTO deployments VALUES (1, 'd', 'promote', 'abc', 'dense', 'eve', 'ship', '1', now(), '0', '2')")
    con.close()
    ledger = Ledger(path)
    assert ledger.schema_version() == CURRENT_VERSION >= 3
    legacy = gstate.legacy_history(ledger)
    assert legacy["decisions"][0]["reviewer"] == "eve" and len(legacy["deployments"]) == 1  # kept
    s = gstate.ticket_state(ledger, "abc")
    assert s.review_status == "unreviewed" and s.legacy_decision["decision"] == "approve" and not s.deployed
    monkeypatch.setenv("TICKETLAB_KEY_DIR", str(state / "keys"))
    keys.generate("alice", "alice-passphrase")
    with pytest.raises(TicketLabError, match="no signed registry.*1 decisions and 1 deployment moves are kept as "
                                             "unsigned history.*ticketlab init"):
        decisions.decide(ledger, "abc", "approve", keys.unlock("alice", "alice-passphrase"), "r")
    assert gstate.load(ledger).rows == []


def test_registry_bad_input(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch, register=False)
    with pytest.raises(TicketLabError, match="already initialised"):
        admin.init_ledger(lab.ledger, lab["ada"])
    with pytest.raises(TicketLabError, match="unknown role 'boss'"):
        admin.register(lab.ledger, lab["ada"], "alice", keys.public_path("alice"), ["boss"])
    with pytest.raises(TicketLabError, match="no public key file"):
        admin.register(lab.ledger, lab["ada"], "alice", state / "nope.pem", ["reviewer"])
    with pytest.raises(TicketLabError, match="alice is not registered"):
        decisions.decide(lab.ledger, "x", "approve", lab["alice"], "r")
    admin.register(lab.ledger, lab["ada"], "alice", keys.public_path("alice"), ["reviewer"])
    with pytest.raises(TicketLabError, match="already registered to alice"):
        admin.register(lab.ledger, lab["ada"], "mallory", keys.public_path("alice"), ["admin"])
    with pytest.raises(TicketLabError, match="only admin"):
        admin.set_roles(lab.ledger, lab["ada"], "ada", remove=["admin"])
    assert set(gstate.roles(lab.ledger)) == {"ada", "alice"} and audit.audit(lab.ledger)["ok"]


def test_rollback_walks_back_and_never_deletes(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    a = approved_ticket(lab, tiny_llama, sparsity=0.5)
    b = approved_ticket(lab, tiny_llama, sparsity=0.6)
    dave, dense = lab["dave"], tiny_llama.weights_sha256
    deploy.promote(lab.ledger, a.id, dave, "first")
    deploy.promote(lab.ledger, b.id, dave, "second")
    with pytest.raises(TicketLabError, match="already deployed"):
        deploy.promote(lab.ledger, b.id, dave, "again")
    deploy.rollback(lab.ledger, dave, "b misbehaves")
    assert deploy.current(lab.ledger, dense) == a.id
    deploy.rollback(lab.ledger, dave, "a too")
    assert deploy.current(lab.ledger, dense) == "dense"
    with pytest.raises(TicketLabError, match="nothing to roll back to"):
        deploy.rollback(lab.ledger, dave, "more")
    deploy.rollback(lab.ledger, dave, "b was fine after all", to=b.id)
    assert gstate.deployment_pointer(lab.ledger, dense) == b.id
    decisions.decide(lab.ledger, a.id, "reject", lab["bob"], "found a problem")
    with pytest.raises(TicketLabError, match="rejected after it was deployed"):
        deploy.rollback(lab.ledger, dave, "back to a", to=a.id)
    assert len(deploy.history(lab.ledger)) == 5 and audit.audit(lab.ledger)["ok"]


def test_limited_runs_are_missing_evidence(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"], metrics=False)
    write_metrics(lab.ledger, t.id, tiny_llama.weights_sha256, 1, limit=20)
    review = review_ticket(lab.ledger, t.id, policy=gstate.current_policy(lab.ledger))
    assert not review.passed
    assert next(r for r in review.results if r.rule == "duties").status == "pending"
    with pytest.raises(TicketLabError, match="does not pass the pinned policy"):
        decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "r")


def test_cli_bad_input_is_one_line_and_exit_2(tiny_llama, state, monkeypatch, capsys):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    before = _records(lab.ledger)
    monkeypatch.setenv("TICKETLAB_PASSPHRASE", passphrase("bob"))
    cases = [
        (["decide", "0000dead", "approve", "--as", "bob", "--reason", "x"], "no ticket '0000dead'"),
        (["decide", t.id, "approve", "--as", "zed", "--reason", "x"], "no private key for zed"),
        (["decide", t.id, "approve", "--reviewer", "bob", "--reason", "x"], "--reviewer NAME is gone"),
        (["promote", t.id, "--as", "bob", "--reason", "x"], "needs the deployer role"),
        (["export", t.id, "--out", str(state), "--unreviewed"], "already exists"),
        (["verify", str(state)], "not a Ticket Lab bundle"),
        (["people", "register", "zed", "--key", "/nope.pem", "--role", "reviewer", "--as", "bob"], "no public key file"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, (argv, err)
    assert _records(lab.ledger) == before
    assert sorted(TEAM) == sorted(gstate.roles(lab.ledger))


def test_promote_evaluates_the_pinned_policy_on_todays_evidence(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    write_metrics(lab.ledger, t.id, tiny_llama.weights_sha256, 1, scale=1.4)  # a newer, worse full evaluation
    with pytest.raises(TicketLabError, match="now fails perplexity.*did not override: a reviewer must decide again"):
        deploy.promote(lab.ledger, t.id, lab["dave"], "ship")
    assert gstate.deployment_pointer(lab.ledger, tiny_llama.weights_sha256) == "dense"
    decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "known regression", override=True,
                     override_reason="accepted for the demo")
    move = deploy.promote(lab.ledger, t.id, lab["dave"], "ship")
    assert move["policy_sha256"] == gstate.current_policy(lab.ledger).sha256 and move["signed"]
