"""Governance end to end on a tiny model: review, decide, promote, export, verify, tamper, audit, roll back."""

import json

import duckdb
import pytest
from govern_helpers import make_recorded_ticket, setup_lab, write_metrics

from analysis.governance import decisions, deploy
from analysis.governance.review import review_ticket
from analysis.ledger import Ledger
from analysis.schema import CURRENT_VERSION, MIGRATIONS
from app.cli import main
from pruning.errors import TicketLabError


def test_whole_path_through_the_cli(tiny_llama, state, capsys):
    ledger, passing, failing = setup_lab(state, tiny_llama)
    t = make_recorded_ticket(tiny_llama, ledger)

    # review: the lenient policy passes, the strict one fails on perplexity (+10 % > 5 %)
    assert main(["review", t.id, "--baseline", "dense", "--policy", str(passing)]) == 0
    out = capsys.readouterr().out
    assert "PASSES" in out and "wikitext/perplexity" in out and "+10.00 %" in out
    assert main(["review", t.id[:8], "--policy", str(failing), "--json"]) == 1
    strict = json.loads(capsys.readouterr().out)
    ppl = next(r for r in strict["results"] if r["rule"] == "perplexity")
    assert (ppl["baseline"], ppl["candidate"], ppl["status"]) == (20.0, 22.0, "fail")
    assert ppl["delta"] == pytest.approx(2.0)

    # decide: approving against the failing policy is refused, nothing written; then approved on the passing one
    assert main(["decide", t.id, "approve", "--reviewer", "alice", "--reason", "ok", "--policy", str(failing)]) == 2
    assert "does not pass policy strict" in capsys.readouterr().err
    assert ledger.query("SELECT count(*) n FROM decisions")[0]["n"] == 0
    assert main(["decide", t.id, "approve", "--reviewer", "alice", "--reason", "quality within budget",
                 "--policy", str(passing)]) == 0
    row = decisions.approval_of(ledger, t.id)
    assert row["reviewer"] == "alice" and row["passed"] and not row["override"]
    assert json.loads(row["policy_results"])["policy"]["name"] == "lenient"

    # promote, export, verify
    assert main(["promote", t.id, "--by", "dave", "--reason", "ship it"]) == 0
    assert deploy.current(ledger, tiny_llama.weights_sha256) == t.id
    out_dir = state / "bundle"
    assert main(["export", t.id, "--out", str(out_dir)]) == 0
    capsys.readouterr()
    assert main(["verify", str(out_dir)]) == 0
    assert "verifies" in capsys.readouterr().out
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["review"]["status"] == "approved" and manifest["review"]["decision"]["reviewer"] == "alice"
    assert manifest["deployer"]["loader"]["stock_transformers"] is True
    assert manifest["deployer"]["loader"]["check"]["max_abs_logit_diff"] < 1e-5

    # flip one byte: verify names that file
    target = out_dir / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0x01
    target.write_bytes(bytes(data))
    assert main(["verify", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors: sha256" in err and "ticket/" not in err

    # a second ticket goes live, then roll back to the first; history keeps every move
    t2 = make_recorded_ticket(tiny_llama, ledger, sparsity=0.6, creator="carol")
    decisions.decide(ledger, t2.id, "approve", "bob", "better", policy=passing)
    deploy.promote(ledger, t2.id, "dave", "sparser")
    assert main(["rollback", "--by", "erin", "--reason", "complaints"]) == 0
    assert deploy.current(ledger, tiny_llama.weights_sha256) == t.id
    capsys.readouterr()
    assert main(["history", "--json"]) == 0
    moves = json.loads(capsys.readouterr().out)
    assert [(m["action"], m["previous"], m["target"]) for m in moves] == [
        ("promote", "dense", t.id), ("promote", t.id, t2.id), ("rollback", t2.id, t.id)]
    assert moves[-1]["by_user"] == "erin" and moves[-1]["reason"] == "complaints"
    assert main(["audit"]) == 0
    assert "audit ok" in capsys.readouterr().out

    # edit a decision row directly in DuckDB: audit names it, and nothing trusts the chain any more
    con = duckdb.connect(str(ledger.path))
    con.execute("UPDATE decisions SET reason = 'rubber stamp' WHERE seq = 1")
    con.close()
    assert main(["audit"]) == 2
    err = capsys.readouterr().err
    assert "decision #1" in err and "changed after it was written" in err
    with pytest.raises(TicketLabError, match="fail the audit"):
        deploy.promote(ledger, t2.id, "dave", "again")
    assert ledger.query("SELECT count(*) n FROM deployments")[0]["n"] == 3  # nothing lost, nothing added


def test_migration_from_a_v1_ledger_keeps_data(state):
    path = state / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER, applied_at TIMESTAMP)")
    con.execute(MIGRATIONS[0])
    con.execute("INSERT INTO schema_version VALUES (1, current_timestamp)")
    con.execute("INSERT INTO tickets (id, content_sha256, dense_sha256, method) VALUES ('abc', 'x', 'd', 'magnitude')")
    con.execute("INSERT INTO runs (id, kind, status) VALUES ('r1', 'eval', 'succeeded')")
    con.execute("INSERT INTO metrics (run_id, subject, suite, task, metric, value) VALUES ('r1', 'abc', 'ppl', 'w', 'p', 3)")
    con.close()
    ledger = Ledger(path)
    assert ledger.schema_version() == CURRENT_VERSION >= 2
    assert ledger.get_ticket("abc")["method"] == "magnitude"
    assert ledger.query("SELECT value FROM metrics")[0]["value"] == 3
    assert ledger.query("SELECT count(*) n FROM decisions")[0]["n"] == 0
    assert decisions.audit(ledger)["ok"]


def test_audit_finds_deleted_rows_and_relinked_edits(tiny_llama, state):
    ledger, passing, _ = setup_lab(state, tiny_llama)
    t = make_recorded_ticket(tiny_llama, ledger)
    for i in range(3):
        decisions.decide(ledger, t.id, "reject", "bob", f"round {i}", policy=passing)
    con = duckdb.connect(str(ledger.path))
    con.execute("DELETE FROM decisions WHERE seq = 2")
    con.close()
    report = decisions.audit(ledger)
    assert not report["ok"] and "row #2 is missing" in report["tables"]["decisions"]["problem"]
    # an edit whose row hash was recomputed still breaks the next row's link
    from analysis.governance import chain

    ledger2 = Ledger(state / "second.duckdb")
    write_metrics(ledger2, "dense", tiny_llama.weights_sha256, 0)
    t2 = make_recorded_ticket(tiny_llama, ledger2, metrics=True)
    for i in range(2):
        decisions.decide(ledger2, t2.id, "reject", "bob", f"r{i}", policy=passing)
    row = ledger2.query("SELECT * FROM decisions WHERE seq = 1")[0]
    row["decision"] = "approve"
    new_hash = chain.row_hash(row, decisions.DECISION_FIELDS, ("policy_results",))
    con = duckdb.connect(str(ledger2.path))
    con.execute("UPDATE decisions SET decision = 'approve', row_hash = ? WHERE seq = 1", [new_hash])
    con.close()
    problem = decisions.audit(ledger2)["tables"]["decisions"]
    assert problem["first_broken_seq"] == 2 and "does not follow row #1" in problem["problem"]


def test_override_is_explicit_and_recorded(tiny_llama, state):
    ledger, _, failing = setup_lab(state, tiny_llama)
    t = make_recorded_ticket(tiny_llama, ledger)
    with pytest.raises(TicketLabError, match="needs --override-reason"):
        decisions.decide(ledger, t.id, "approve", "alice", "r", override=True, policy=failing)
    row = decisions.decide(ledger, t.id, "approve", "alice", "needed for the demo", override=True,
                           override_reason="perplexity budget waived by the PI", policy=failing)
    assert row["override"] and not row["passed"] and "waived" in row["override_reason"]
    stored = decisions.approval_of(ledger, t.id)
    assert stored["override"] and stored["override_reason"] == "perplexity budget waived by the PI"
    assert json.loads(stored["policy_results"])["passed"] is False


def test_decision_bad_input_one_clear_error_each(tiny_llama, state):
    ledger, passing, _ = setup_lab(state, tiny_llama)
    t = make_recorded_ticket(tiny_llama, ledger, creator="alice")
    with pytest.raises(TicketLabError, match="no ticket 'ffffffff'"):
        decisions.decide(ledger, "ffffffff", "approve", "alice", "r", policy=passing)
    with pytest.raises(TicketLabError, match="'mallory' is not on the reviewers list"):
        decisions.decide(ledger, t.id, "approve", "mallory", "r", policy=passing)
    with pytest.raises(TicketLabError, match="cannot be overridden"):  # separation of duties
        decisions.decide(ledger, t.id, "approve", "alice", "mine", override=True, override_reason="x", policy=passing)
    with pytest.raises(TicketLabError, match="nothing to override"):
        decisions.decide(ledger, t.id, "approve", "bob", "r", override=True, override_reason="x", policy=passing)
    with pytest.raises(TicketLabError, match="no reviewers file"):
        decisions.decide(ledger, t.id, "approve", "bob", "r", policy=passing, reviewers=state / "none.toml")
    assert ledger.query("SELECT count(*) n FROM decisions")[0]["n"] == 0
    # the creator may still reject their own ticket
    assert decisions.decide(ledger, t.id, "reject", "alice", "not good enough", policy=passing)["seq"] == 1


def test_limited_runs_are_missing_evidence(tiny_llama, state):
    ledger, passing, _ = setup_lab(state, tiny_llama)
    t = make_recorded_ticket(tiny_llama, ledger, metrics=False)
    write_metrics(ledger, t.id, tiny_llama.weights_sha256, 1, limit=20)
    review = review_ticket(ledger, t.id, policy=passing)
    assert not review.passed
    ev = next(r for r in review.results if r.rule == "evidence" and r.item == "wikitext")
    assert ev.status == "missing" and "only --limit runs" in ev.detail
    assert next(r for r in review.results if r.rule == "perplexity").status == "missing"
    assert next(r for r in review.results if r.rule == "duties").status == "pending"


def test_bias_rule_allows_noise_but_not_a_real_increase(tiny_llama, state):
    ledger, passing, _ = setup_lab(state, tiny_llama)
    t = make_recorded_ticket(tiny_llama, ledger, scale=1.3)  # crows 0.61*1.3 = 0.793: far from 0.5
    review = review_ticket(ledger, t.id, policy=passing)
    crows = next(r for r in review.results if r.item == "crows_pairs_english/pct_stereotype")
    assert crows.status == "fail" and crows.baseline == 0.60
    noise = make_recorded_ticket(tiny_llama, ledger, sparsity=0.45)
    ok = review_ticket(ledger, noise.id, policy=passing)
    assert all(r.status == "pass" for r in ok.results if r.rule in ("crows_pairs", "bbq"))


def test_rollback_walks_back_and_never_deletes(tiny_llama, state):
    ledger, passing, _ = setup_lab(state, tiny_llama)
    a = make_recorded_ticket(tiny_llama, ledger, sparsity=0.5)
    b = make_recorded_ticket(tiny_llama, ledger, sparsity=0.6)
    with pytest.raises(TicketLabError, match="only approved tickets"):
        deploy.promote(ledger, a.id, "dave", "early")
    for t in (a, b):
        decisions.decide(ledger, t.id, "approve", "bob", "fine", policy=passing)
    deploy.promote(ledger, a.id, "dave", "first")
    deploy.promote(ledger, b.id, "dave", "second")
    with pytest.raises(TicketLabError, match="already deployed"):
        deploy.promote(ledger, b.id, "dave", "again")
    dense = tiny_llama.weights_sha256
    deploy.rollback(ledger, "erin", "b misbehaves")
    assert deploy.current(ledger, dense) == a.id
    deploy.rollback(ledger, "erin", "a too")
    assert deploy.current(ledger, dense) == "dense"
    with pytest.raises(TicketLabError, match="nothing to roll back to"):
        deploy.rollback(ledger, "erin", "more")
    deploy.rollback(ledger, "erin", "b was fine after all", to=b.id)
    assert deploy.current(ledger, dense) == b.id
    decisions.decide(ledger, a.id, "reject", "bob", "found a problem", policy=passing)
    with pytest.raises(TicketLabError, match="rejected after it was deployed"):
        deploy.rollback(ledger, "erin", "back to a", to=a.id)
    assert len(deploy.history(ledger)) == 5 and decisions.audit(ledger)["ok"]


def test_review_on_real_perplexity(tiny_llama, state):
    from analysis.ledger import MetricRow
    from analysis.metric_meta import direction
    from analysis.perplexity import perplexity

    ledger = Ledger()
    t = make_recorded_ticket(tiny_llama, ledger, sparsity=0.7, metrics=False)
    values = {}
    for subject, ticket in (("dense", None), (t.id, t)):
        r = perplexity(tiny_llama, ticket, seq_len=64, limit=3)
        values[subject] = r["value"]
        with ledger.run("eval", "test ppl", subject=subject, dense_sha256=tiny_llama.weights_sha256) as run:
            run.add_metric(MetricRow("ppl", r["task"], "perplexity", r["value"], r["stderr"],
                                     *direction(r["task"], "perplexity"), n_samples=r["n_windows"], limit=r["limit"],
                                     batch_size=str(r["batch_size"]), dtype=r["dtype"], padding=r["padding"]))
    pct = (values[t.id] - values["dense"]) / values["dense"] * 100
    assert pct > 0  # pruning 70 % of even a random model costs some perplexity
    policy = state / "quick.toml"
    for budget, expected in ((pct + 1.0, "pass"), (pct / 2, "fail")):
        policy.write_text(f'[evidence]\nrequired = ["wikitext2"]\nfull_runs = false\n'
                          f'[perplexity]\nmax_increase_pct = {budget}\n')
        rule = next(r for r in review_ticket(ledger, t.id, policy=policy).results if r.rule == "perplexity")
        assert (rule.baseline, rule.candidate) == (values["dense"], values[t.id])
        assert rule.status == expected
    strict = state / "full.toml"
    strict.write_text('[evidence]\nrequired = ["wikitext2"]\n[perplexity]\nmax_increase_pct = 1000\n')
    assert {r.status for r in review_ticket(ledger, t.id, policy=strict).results if r.rule != "duties"} == {"missing"}


def test_cli_bad_input_is_one_line_and_exit_2(tiny_llama, state, capsys):
    ledger, passing, _ = setup_lab(state, tiny_llama)
    t = make_recorded_ticket(tiny_llama, ledger)
    bad = state / "bad.toml"
    bad.write_text("[perplexity]\nmax_increase_pct = 10\nmax_increse = 3\n")
    cases = [
        (["review", t.id, "--policy", str(bad)], "line 3: [perplexity] max_increse: unknown key"),
        (["decide", "0000dead", "approve", "--reviewer", "bob", "--reason", "x"], "no ticket '0000dead'"),
        (["decide", t.id, "approve", "--reviewer", "zed", "--reason", "x", "--policy", str(passing)],
         "not on the reviewers list"),
        (["promote", t.id, "--by", "dave", "--reason", "x"], "only approved tickets can be promoted"),
        (["rollback", "--by", "dave", "--reason", "x"], "nothing has been promoted yet"),
        (["export", t.id, "--out", str(state)], "already exists"),
        (["verify", str(state)], "not a Ticket Lab bundle"),
        (["review", t.id, "--baseline", t.id, "--policy", str(passing)], "the baseline is the ticket itself"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, (argv, err)
    assert ledger.query("SELECT count(*) n FROM decisions")[0]["n"] == 0


def test_nan_metrics_are_missing_evidence_not_a_crash(tiny_llama, state):
    from analysis.ledger import MetricRow

    ledger, passing, _ = setup_lab(state, tiny_llama)
    t = make_recorded_ticket(tiny_llama, ledger)
    with ledger.run("eval", "nan", subject=t.id, dense_sha256=tiny_llama.weights_sha256) as run:
        run.add_metric(MetricRow("ppl", "wikitext", "perplexity", float("nan"), float("nan"), "lower"))
    review = review_ticket(ledger, t.id, policy=passing)
    assert next(r for r in review.results if r.rule == "perplexity").status == "missing"
    row = decisions.decide(ledger, t.id, "reject", "bob", "no perplexity", policy=passing)
    assert decisions.audit(ledger)["ok"] and row["seq"] == 1
