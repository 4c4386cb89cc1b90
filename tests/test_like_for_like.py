"""One like-for-like rule (issue 22): `compare`, the review, the policy rules and the audit replay pair a ticket's
row with a baseline row only when both were measured the same way (`analysis.like_for_like`). Decisions sign
the rule they were evaluated under; those signed before it (rule 1: limit and dtype) replay as they were
signed. Real DuckDB ledgers, real signed records, the real CLI."""

import json

import duckdb
import pytest
from govern_helpers import METRICS, make_recorded_ticket, setup_lab
from test_governance_records import old_ledger  # noqa: F401  (the ledger the code before typed records made)

from analysis import like_for_like as lfl
from analysis.governance import audit, chain, decisions, records, replay, witness
from analysis.governance import state as gstate
from analysis.governance.policy import parse_policy
from analysis.governance.reader import snapshot
from analysis.governance.review import review_ticket
from analysis.ledger import MetricRow
from analysis.side_by_side import compare
from app.cli import main
from pruning.errors import TicketLabError


def _record(ledger, subject: str, dense: str, rows: list[tuple]) -> None:
    """One eval run of `subject`: (task, value, limit, batch_size, dtype, padding, extra setup) per row."""
    with ledger.run("eval", "test metrics", subject=subject, dense_sha256=dense) as run:
        for task, value, limit, batch, dtype, padding, setup in rows:
            run.add_metric(MetricRow("ppl", task, "perplexity", value, 0.1, "lower", None, n_samples=100,
                                     limit=limit, batch_size=batch, dtype=dtype, padding=padding,
                                     extra={"setup": setup}))


def _ticket_with_ppl_window(lab, loaded, seq_len: int, metrics: bool = True, seed: int = 0):
    """A signed ticket whose newest wikitext perplexity was measured with a `seq_len`-token window (and, with
    `metrics`, every metric as dense's); dense's newest was measured with a 1024-token window, 10 % lower."""
    _record(lab.ledger, "dense", loaded.weights_sha256, [("wikitext", 20.0, None, "1", "float32", "none",
                                                          {"seq_len": 1024})])
    t = make_recorded_ticket(loaded, lab.ledger, signer=lab["carol"], metrics=metrics, seed=seed)
    _record(lab.ledger, t.id, loaded.weights_sha256, [("wikitext", 22.0, None, "1", "float32", "none",
                                                       {"seq_len": seq_len})])
    return t


def test_review_pairs_no_rows_compare_calls_not_comparable(tiny_llama, state, monkeypatch, capsys):
    """The finding: review paired a perplexity measured with a 512-token window with dense's 1024-token one and
    judged the rule on it, while compare called the pair not comparable. Now both say so."""
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = _ticket_with_ppl_window(lab, tiny_llama, 512, metrics=False)
    assert main(["compare", t.id, "dense"]) == 0
    out = capsys.readouterr().out
    assert "not comparable: wikitext perplexity" in out and "seq_len: 512 vs 1024" in out
    assert main(["review", t.id, "--json"]) == 1  # the pinned (passing) policy lacks like-for-like evidence
    got = json.loads(capsys.readouterr().out)
    ppl = next(r for r in got["results"] if r["rule"] == "perplexity")
    assert ppl["status"] == "missing" and ppl["baseline"] is None and ppl["delta"] is None, ppl
    assert "not like for like" in ppl["detail"] and "seq_len 512 vs 1024" in ppl["detail"], ppl["detail"]
    # measured the same way, the pair is judged (and passes: +10 % against a 15 % budget)
    t2 = _ticket_with_ppl_window(lab, tiny_llama, 1024, seed=1)
    ok = next(r for r in review_ticket(lab.ledger, t2.id).results if r.rule == "perplexity")
    assert ok.status == "pass" and ok.baseline == 20.0 and ok.candidate == 22.0
    with snapshot(lab.ledger) as db:  # what a decision on the first would sign: the rule unmet, not judged
        body = decisions.decision_body(db, gstate.load(db), t.id, "reject", "alice", "no", False, None, "dense")
    assert "perplexity" in body["unmet_rules"]
    decisions.decide(lab.ledger, t2.id, "approve", lab["alice"], "fine")
    assert audit.audit(lab.ledger)["ok"]


# (task, limit, batch size, dtype, padding, extra setup) of the ticket's row; dense's is REFERENCE
REFERENCE = (None, "1", "float32", "none", {"seq_len": 1024})
TABLE = [
    ("t_same", None, "1", "float32", "none", {"seq_len": 1024}),
    ("t_window", None, "1", "float32", "none", {"seq_len": 512}),
    ("t_limit", 10, "1", "float32", "none", {"seq_len": 1024}),
    ("t_batch", None, "8", "float32", "none", {"seq_len": 1024}),
    ("t_dtype", None, "1", "bfloat16", "none", {"seq_len": 1024}),
    ("t_no_dtype", None, "1", None, "none", {"seq_len": 1024}),
    ("t_padding", None, "1", "float32", "right", {"seq_len": 1024}),
    ("t_more_setup", None, "1", "float32", "none", {"seq_len": 1024, "source": "hub"}),
    ("t_no_setup", None, "1", "float32", "none", {}),
]

TABLE_POLICY = """
[policy]
name = "table"
full_runs = false
[[rule]]
name = "ppl"
kind = "max_increase_pct"
metrics = ["t_*/perplexity"]
limit = 100.0
"""


def test_compare_and_review_agree_on_every_pair(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    dense = tiny_llama.weights_sha256
    _record(lab.ledger, "dense", dense, [(task, 10.0, *REFERENCE) for task, *_ in TABLE])
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"], metrics=False)
    _record(lab.ledger, t.id, dense, [(task, 11.0, *setup) for task, *setup in TABLE])
    side = compare(t.id, "dense", lab.ledger)
    compared = {r["task"] for r in side["rows"]}
    differs = {r["task"]: r["differs"] for r in side["not_comparable"]}
    review = {r.item.split("/")[0]: r for r in review_ticket(lab.ledger, t.id, policy=parse_policy(TABLE_POLICY)).results
              if r.rule == "ppl"}
    assert set(review) == {task for task, *_ in TABLE} == compared | set(differs)
    for task, *setup in TABLE:
        paired = review[task].baseline is not None
        assert paired == (task in compared) == (tuple(setup) == REFERENCE), task  # one rule
        if not paired:  # the same settings named on both sides
            assert review[task].status == "missing"
            for k, (mine, theirs) in differs[task].items():
                assert f"{k} {mine!r} vs {theirs!r}" in review[task].detail, (task, review[task].detail)


def _decision_rows(ledger) -> list[dict]:
    return [r for r in gstate.load(ledger).rows if r["kind"] == "decision"]


def test_decisions_signed_before_replay_under_rule_1(old_ledger):  # noqa: F811
    report, st = audit.audit(old_ledger), gstate.load(old_ledger)
    assert report["intact"]
    signed = [row for row in _decision_rows(old_ledger) if st.signed(row)]
    assert len(signed) >= 3  # a reject and two approvals (the fourth decision is the void record)
    for row in signed:
        body = chain.body_of(row)
        assert "like_for_like" not in body and replay.like_for_like_rule(body) == lfl.RULE_1
        assert all("setup" not in r for group in body["evidence"]["rows"].values() for r in group)
        assert replay.body_problem("decision", body) == ""
    # the one void record the fixture holds is void for its own reason, none for like for like
    assert len(report["voided"]) == 1 and "like" not in report["voided"][0]


def _rechain_with(ledger, seq: int, body: dict) -> None:
    """What an insider with the database file does: store another body in record `seq` and recompute every row
    hash from there on, so only the signature can tell."""
    rows, prev = gstate.load(ledger).rows, chain.GENESIS
    con = duckdb.connect(str(ledger.path))
    for r in rows:
        if r["seq"] == seq:
            r["body"] = chain.canonical(body).decode()
        r["prev_hash"] = prev
        r["row_hash"] = prev = chain.row_hash(r)
        con.execute("UPDATE governance_log SET body = ?, prev_hash = ?, row_hash = ? WHERE seq = ?",
                    [r["body"], r["prev_hash"], r["row_hash"], r["seq"]])
    con.close()


def test_new_decisions_sign_rule_2_and_the_setup_of_every_row(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = _ticket_with_ppl_window(lab, tiny_llama, 1024)
    decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "fine")
    assert audit.audit(lab.ledger)["ok"]
    row = _decision_rows(lab.ledger)[-1]
    body = chain.body_of(row)
    assert body["like_for_like"] == lfl.RULE_2
    rows = body["evidence"]["rows"]["ticket"]
    assert len(rows) == len(METRICS) + 1 and all(lfl.setup_problem(r["setup"]) == "" for r in rows)
    assert {"seq_len": 1024, "limit": None, "batch_size": "1", "dtype": "float32", "padding": "none"} in \
        [r["setup"] for r in rows]
    # the stored setup edited after signing: the signature no longer verifies
    edited = json.loads(json.dumps(body))
    next(r for r in edited["evidence"]["rows"]["ticket"] if r["setup"].get("seq_len"))["setup"]["seq_len"] = 512
    _rechain_with(lab.ledger, row["seq"], edited)
    report = audit.audit(lab.ledger)
    assert not report["ok"]
    assert any(f"record #{row['seq']} (decision by alice) has a signature that does not verify" in p
               for p in report["problems"]), report["problems"]


def _sign_directly(lab, body: dict) -> dict:
    with lab.ledger.transaction() as con:
        row = chain.append(con, lab["alice"], "decision", body, body["ticket_id"])
    witness.append(witness.path_for(lab.ledger), witness.signed_head(lab["alice"], gstate.load(lab.ledger).ledger_id,
                                                                       row))
    return row


def _resealed(body: dict, evidence: dict, **kw) -> dict:
    out = body | {"evidence": evidence, "evidence_sha256": replay.evidence_digest(evidence)} | kw
    return out | {"request": decisions.request_key(out, "alice")}


def test_a_rule_2_record_without_setups_or_back_under_rule_1_is_void(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = _ticket_with_ppl_window(lab, tiny_llama, 1024)
    with snapshot(lab.ledger) as db:
        body = decisions.decision_body(db, gstate.load(db), t.id, "approve", "alice", "fine", False, None, "dense")
    bare = json.loads(json.dumps(body["evidence"]))
    for group in bare["rows"].values():
        for r in group:
            del r["setup"]
    lacking = _resealed(body, bare)  # claims rule 2, rows shaped as rule 1's
    with pytest.raises(TicketLabError, match="malformed metric row"):
        records.write(lab.ledger, lab["alice"], "decision", lacking, t.id, doing="decide")
    odd = json.loads(json.dumps(body["evidence"]))
    odd["rows"]["ticket"][0]["setup"] = {"seq_len": 1024}  # the recorded settings left out
    r1 = _sign_directly(lab, lacking)
    r2 = _sign_directly(lab, _resealed(body, odd))
    r3 = _sign_directly(lab, _resealed(body, body["evidence"], like_for_like=1))  # rule 1 is named by absence
    voided = audit.audit(lab.ledger)["voided"]
    assert any(v.startswith(f"record #{r1['seq']} ") and "malformed metric row" in v for v in voided), voided
    assert any(v.startswith(f"record #{r2['seq']} ") and "its setup lacks" in v for v in voided), voided
    assert any(v.startswith(f"record #{r3['seq']} ") and "like-for-like rule 1" in v for v in voided), voided
    # once a ledger holds a rule-2 decision, a new one signed under rule 1 (no rule named, no setups) is void
    decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "fine")
    old_style = {k: v for k, v in _resealed(body, bare).items() if k != "like_for_like"}
    r4 = _sign_directly(lab, old_style | {"request": decisions.request_key(old_style, "alice")})
    voided = audit.audit(lab.ledger)["voided"]
    assert any(v.startswith(f"record #{r4['seq']} ") and "use rule 2 since record" in v for v in voided), voided


def test_generated_rows_are_compared_without_their_scheduling_scored_rows_with_it():
    """A generation's batch size and padding schedule it (vLLM's continuous batching, the lab's left-padded
    batches) but do not define its text; dtype, limit and decoding settings do. Log-likelihood rows keep them."""
    from analysis import like_for_like as lfl

    lab = {"task": "ifeval", "limit": 2, "batch_size": "32", "dtype": "float32", "padding": "left (generation)",
           "extra": {"setup": {"source": "local", "max_new_tokens": 512, "chat_template": True}}}
    engine = lab | {"batch_size": "4", "padding": "none (vLLM: continuous batching, paged KV cache)"}
    assert lfl.same(lab, engine) and lfl.setup_key(lab) == lfl.setup_key(engine)
    assert lfl.differences(lab, engine | {"dtype": "bfloat16"}) == {"dtype": ["float32", "bfloat16"]}
    longer = engine | {"extra": {"setup": {"source": "local", "max_new_tokens": 128, "chat_template": True}}}
    assert lfl.differences(lab, longer) == {"max_new_tokens": [512, 128]}
    scored = {"task": "bbq", "limit": 2, "batch_size": "32", "dtype": "float32", "padding": "right",
              "extra": {"setup": {"source": "local"}}}
    assert lfl.differences(scored, scored | {"batch_size": "4"}) == {"batch_size": ["32", "4"]}
    # an evidence row signed into a decision carries the whole setup; it is compared the same way
    signed = {"setup": lfl.setup_of(engine)}
    assert lfl.same(lab, signed) and "batch_size" in signed["setup"]
