"""Honest error bars (issue 21): a bootstrap over documents for aggregate scores, "too few examples to tell"
below the minimum sample size, and one "within noise" rule that compare, the policy and the cards use."""

import json

import pytest

from analysis import uncertainty
from analysis.ledger import Ledger
from analysis.side_by_side import compare, format_table


def _bbq_samples(ledger: Ledger, subject: str) -> list[dict]:
    rows = ledger.query("SELECT data FROM eval_samples WHERE subject = ? AND task = 'bbq' ORDER BY doc_id", [subject])
    return [json.loads(r["data"]) if isinstance(r["data"], str) else r["data"] for r in rows]


def _row(result: dict, metric: str) -> dict:
    return next(r for r in result["rows"] if r["task"] == "bbq" and r["metric"] == metric)


@pytest.mark.smollm
def test_quick_bbq_standard_error_is_positive_and_within_noise_matches_a_bootstrap(state):
    """SmolLM2 on BBQ with --limit 20 (3 documents per category): the old cluster bootstrap resampled one
    template instance per category and reported 0 or 1e-16 for every aggregate."""
    from analysis.evaluate import evaluate
    from analysis.recording import record_prune
    from analysis.safety import bbq
    from analysis.safety.bbq import aggregation
    from pruning.models import load_model
    from pruning.prune import make_ticket

    loaded = load_model("smollm2-135m-instruct")
    ticket = make_ticket(loaded, "magnitude", 0.5)
    ticket.save()
    ledger = Ledger()
    record_prune(loaded, ticket, "test", ledger)
    for t in (None, ticket):
        evaluate(loaded, t, suite="safety", tasks="bbq", limit=20, ledger=ledger)
    result = compare("dense", ticket.id, ledger)

    amb = _row(result, "amb_bias_score")  # rests on the 12 ambiguous documents of the 20
    assert amb["a_n"] == 12 and amb["a_stderr"] > 1e-6 and amb["b_stderr"] > 1e-6
    # the call agrees with an independent bootstrap (other seed, more resamples) of the documents themselves
    ses = []
    for subject in ("dense", ticket.id):
        samples = [s for s in _bbq_samples(ledger, subject) if "amb_bias_score" in s]
        carried = sum(s["context_condition"] == "ambig" for s in samples)
        est = uncertainty.bootstrap([s["amb_bias_score"] for s in samples], aggregation("amb_bias_score"),
                                    strata=[s["category"] for s in samples], n=carried, iters=4000, seed=7)
        ses.append(est.se)
    assert ses[0] == pytest.approx(amb["a_stderr"], rel=0.15) and ses[1] == pytest.approx(amb["b_stderr"], rel=0.15)
    assert amb["within_stderr"] == (abs(amb["delta"]) <= (ses[0] ** 2 + ses[1] ** 2) ** 0.5)

    # 8 disambiguated documents, 2 per category: no number, the reason instead
    dis = _row(result, "disamb_bias_score")
    assert dis["a_stderr"] is None and dis["within_stderr"] is None and "too few examples to tell" in dis["noise"]
    cat = _row(result, "accuracy_amb_Age")
    assert cat["a_n"] == 2 and cat["within_stderr"] is None
    assert "cannot tell" in format_table(result) and "1e-16" not in format_table(result)
    assert bbq.bootstrap_stderrs([], ["amb_bias_score"]) == {}


def test_bootstrap_rules_on_real_bbq_samples_of_the_tiny_model(tiny_llama):
    """The tiny random model answers every ambiguous question alike: no spread, so no standard error
    (not 0); a per-category score on 2 documents is too few; lm-eval's own plain-mean stderr is kept."""
    from analysis.safety.runner import run_safety

    r = run_safety(tiny_llama, tasks="bbq", limit=40)
    res, n = r.results["bbq"], r.n_docs["bbq"]
    assert n["amb_bias_score"] == 22 and n["accuracy_amb_Age"] == 4  # ambiguous documents only
    assert res["accuracy_amb_Age_stderr,none"] is None and res["amb_bias_score_stderr,none"] is None
    assert res["acc_stderr,none"] > 0
    assert uncertainty.describe(None, 4) == "too few examples to tell (4 documents)"
    assert uncertainty.describe(0.0312, 40) == "± 0.031"
    assert uncertainty.within_noise(0.5, None, 4, 0.1, 40) is None
    assert uncertainty.within_noise(0.05, 0.03, 40, 0.04, 40) is True
    assert uncertainty.within_noise(0.06, 0.03, 40, 0.04, 40) is False


def test_model_card_and_report_say_too_few_instead_of_a_number(tiny_llama, state, monkeypatch):
    """A quick run on 4 documents: the model card and the scorecard print the reason, not a standard error."""
    from govern_helpers import approved_ticket, setup_lab

    from analysis.governance.export import export_bundle
    from analysis.governance.report import write_report
    from analysis.ledger import MetricRow

    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    for subject, value in (("dense", 0.10), (t.id, 0.30)):
        with lab.ledger.run("eval", "test", subject=subject, dense_sha256=tiny_llama.weights_sha256) as run:
            run.add_metric(MetricRow("safety", "bbq", "amb_bias_score", value, 0.0, "target", 0.0, n_samples=4,
                                     limit=4, dtype="float32"))
    card = export_bundle(lab.ledger, t.id, state / "b", "masks", signer=lab["alice"], loaded=tiny_llama)
    assert "too few examples to tell (4 documents)" in (state / "b" / "README.md").read_text()
    assert any(m["n_docs"] == 4 for m in card["metrics"])
    html = write_report(lab.ledger, t.id, state / "r.html", "dense", None)
    assert "too few examples to tell (4 documents)" in html.read_text()
