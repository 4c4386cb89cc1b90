"""One like-for-like rule (issue 22): `compare`, `review`, the policy rules and the audit replay agree on
which metric rows were measured the same way. Before, review paired rows with the same limit and dtype
whatever else differed (a perplexity window, a BBQ cap) and judged the policy on that pair, while compare
called the same pair not comparable. Decisions signed before keep the rule they were made with."""

import hashlib
import json

import pytest
from govern_helpers import approved_ticket, make_recorded_ticket, setup_lab

from analysis import like_for_like as lfl
from analysis.governance import audit, decisions
from analysis.governance import evidence as ev
from analysis.governance import state as gstate
from analysis.governance.reader import snapshot
from analysis.governance.replay import body_problem
from analysis.governance.review import review_ticket
from analysis.ledger import MetricRow
from analysis.side_by_side import compare


def _ppl(ledger, subject: str, dense: str, value: float, setup: dict) -> None:
    with ledger.run("eval", "test ppl", subject=subject, dense_sha256=dense) as run:
        run.add_metric(MetricRow("ppl", "wikitext", "perplexity", value, None, "lower", None, n_samples=100,
                                 dtype="float32", extra={"setup": setup}))


@pytest.mark.parametrize("ticket_setup, dense_setup, differs", [
    ({"seq_len": 512}, {"seq_len": 2048}, "seq_len 512 (ticket) vs 2048 (baseline)"),  # another perplexity window
    ({"bbq_per_category": 40}, {"bbq_per_category": 240}, "bbq_per_category 40 (ticket) vs 240 (baseline)"),
])
def test_a_pair_measured_differently_is_not_judged_by_review_as_compare_does_not_compare_it(
        tiny_llama, state, monkeypatch, ticket_setup, dense_setup, differs):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    dense = tiny_llama.weights_sha256
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"], metrics=False)
    _ppl(lab.ledger, "dense", dense, 20.0, dense_setup)
    _ppl(lab.ledger, t.id, dense, 40.0, ticket_setup)  # twice dense's perplexity, but on another setup
    review = review_ticket(lab.ledger, t.id)
    ppl = next(r for r in review.results if r.rule == "perplexity")
    assert ppl.status == "missing" and differs in ppl.detail, ppl  # the old rule judged it: "fail" (+100 %)
    result = compare(t.id, "dense", lab.ledger)
    assert not [r for r in result["rows"] if r["task"] == "wikitext"]
    assert any(r["task"] == "wikitext" for r in result["not_comparable"])
    # measured the same way, the pair is judged again, by both
    _ppl(lab.ledger, "dense", dense, 20.0, ticket_setup)
    assert next(r for r in review_ticket(lab.ledger, t.id).results if r.rule == "perplexity").status == "fail"
    assert [r for r in compare(t.id, "dense", lab.ledger)["rows"] if r["task"] == "wikitext"]


SETTINGS = [
    ({}, {}, True),
    ({"limit": 50}, {}, False),
    ({"batch_size": "8"}, {"batch_size": "16"}, False),
    ({"dtype": "bfloat16"}, {"dtype": "float32"}, False),
    ({"padding": "left"}, {"padding": "right"}, False),
    ({"extra": {"setup": {"seq_len": 512}}}, {"extra": {"setup": {"seq_len": 512}}}, True),
    ({"extra": {"setup": {"seq_len": 512}}}, {"extra": {"setup": {}}}, False),
]


@pytest.mark.parametrize("a, b, same", SETTINGS)
def test_compare_and_review_apply_one_rule(a, b, same):
    base = {"task": "wikitext", "metric": "perplexity", "limit": None, "batch_size": None, "dtype": "float32",
            "padding": None, "extra": None}
    ra, rb = base | a, base | b
    found, why = ev.like_for_like(ra, [rb])
    assert (found is not None) == same == (lfl.setup_key(lfl.setup_of(ra)) == lfl.setup_key(lfl.setup_of(rb)))
    assert bool(why) != same
    # an evidence row signed into a decision carries its setup and is judged the same way
    signed = {"task": "wikitext", "metric": "perplexity", "setup": lfl.setup_of(ra)}
    assert (ev.like_for_like(signed, [rb])[0] is not None) == same


def test_new_decisions_sign_the_rule_and_every_rows_setup_and_the_audit_checks_them(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)  # decided through decisions.decide, audited below
    with snapshot(lab.ledger) as db:  # the body a decision on it signs now
        body = decisions.decision_body(db, gstate.load(db), t.id, "approve", "alice", "fine", False, None, "dense")
    evidence = body["evidence"]
    assert evidence[lfl.RULE_KEY] == lfl.CURRENT
    assert all(isinstance(r["setup"], dict) and "limit" in r["setup"] for r in evidence["rows"]["ticket"])
    assert audit.audit(lab.ledger)["ok"]
    # a record claiming the current rule whose rows lack their setups is malformed, not judged under rule 1
    stripped = json.loads(json.dumps(evidence))
    for group in stripped["rows"].values():
        for r in group:
            r.pop("setup")
    forged = body | {"evidence": stripped,
                     "evidence_sha256": hashlib.sha256(json.dumps(stripped, sort_keys=True,
                                                                  separators=(",", ":")).encode()).hexdigest()}
    assert "without the setup it was measured with" in body_problem("decision", forged)
    assert body_problem("decision", forged | {"evidence": stripped | {lfl.RULE_KEY: 7}}).startswith("its evidence")
    # the same evidence without the rule's number is a decision signed before it: valid, judged under rule 1
    old = {k: v for k, v in stripped.items() if k != lfl.RULE_KEY}
    assert body_problem("decision", body | {"evidence": old, "evidence_sha256": hashlib.sha256(json.dumps(
        old, sort_keys=True, separators=(",", ":")).encode()).hexdigest()}) == ""
    # an edited setup after signing no longer matches the signed evidence digest
    edited = json.loads(json.dumps(evidence))
    edited["rows"]["baseline"][0]["setup"]["limit"] = 5
    assert "does not hash to the evidence digest" in body_problem("decision", body | {"evidence": edited})
