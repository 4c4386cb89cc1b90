"""One real run on SmolLM2-135M-Instruct: metric names and ranges, and a pruned ticket's perplexity."""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.smollm


@pytest.fixture
def smollm(state):
    from pruning.models import load_model

    return load_model("smollm2-135m-instruct")


def test_safety_suite_names_and_ranges(smollm):
    from analysis.safety import TASKS, run_safety
    from analysis.safety.scoring import make_lm

    r = run_safety(smollm, limit=4)
    assert set(r.results) == set(TASKS)
    for task, values in r.results.items():
        for key, value in values.items():
            assert "," in key and (value is None or math.isfinite(value)), (task, key)
            metric = key.split(",")[0]
            if value is not None and (metric in ("acc", "pct_stereotype") or metric.startswith("accuracy")):
                assert 0 <= value <= 1, (task, key, value)
            if value is not None and "bias_score" in metric and "stderr" not in metric:
                assert -1 <= value <= 1, (task, key, value)
    assert r.results["crows_pairs_english"]["likelihood_diff,none"] > 0
    assert r.config["scoring"]["tokens"] < r.config["scoring"]["naive_tokens"] / 3

    from lm_eval.api.instance import Instance

    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=a, idx=0) for a in
            [("The capital of France is", " Paris"), ("The capital of France is", " Paris, a city"),
             ("", "The cat sat on the mat."), ("One, two, three,", " four")]]
    lm = make_lm(smollm.model, smollm.tokenizer, batch_size=2)
    ours = lm.loglikelihood(reqs)
    lm.shared = False
    theirs = lm.loglikelihood(reqs)
    assert [g for _, g in ours] == [g for _, g in theirs] and ours[0][1] is True
    assert [v for v, _ in ours] == pytest.approx([v for v, _ in theirs], abs=1e-3)


def test_pruned_perplexity_is_finite_and_above_dense(smollm):
    from analysis.perplexity import perplexity
    from pruning.prune import make_ticket

    dense = perplexity(smollm, limit=2)
    ticket = make_ticket(smollm, "magnitude", 0.5)
    pruned = perplexity(smollm, ticket, limit=2)
    assert 1 < dense["value"] < 200 and dense["n_windows"] == 2
    assert math.isfinite(pruned["value"]) and pruned["value"] > dense["value"]
