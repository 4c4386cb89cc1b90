"""compare: like with like only, deltas, combined stderr, directions; real DuckDB ledgers in a temp dir."""

from __future__ import annotations

import math

import pytest

from analysis import metric_meta
from analysis.evaluate import evaluate
from analysis.ledger import Ledger, MetricRow
from analysis.recording import record_prune
from analysis.side_by_side import compare, format_table
from pruning.errors import TicketLabError
from pruning.prune import make_ticket


def _record(ledger: Ledger, subject: str, sha: str, rows: list[tuple], limit=None, batch="4", setup=None,
            fail: bool = False) -> None:
    def write():
        with ledger.run("eval", "test", subject=subject, dense_sha256=sha) as run:
            for task, metric, value, stderr in rows:
                d, ideal = metric_meta.direction(task, metric)
                run.add_metric(MetricRow("safety", task, metric, value, stderr, d, ideal, limit=limit,
                                         batch_size=batch, dtype="float32", padding="shared-prefix",
                                         extra={"setup": setup or {"source": "local"}}))
            if fail:
                raise RuntimeError("crash")

    if fail:
        with pytest.raises(RuntimeError):
            write()
    else:
        write()


@pytest.fixture
def two(tiny_llama):
    ledger = Ledger()
    ticket = make_ticket(tiny_llama, "magnitude", 0.5)
    record_prune(tiny_llama, ticket, "test", ledger)
    return ledger, ticket, tiny_llama.weights_sha256


def test_side_by_side_with_stderr_and_direction(two):
    ledger, ticket, sha = two
    _record(ledger, "dense", sha, [("crows_pairs_english", "pct_stereotype", 0.60, 0.01),
                                   ("truthfulqa_mc2", "acc", 0.40, 0.02), ("bbq", "amb_bias_score", 0.10, 0.01)])
    _record(ledger, ticket.id, sha, [("crows_pairs_english", "pct_stereotype", 0.55, 0.01),
                                     ("truthfulqa_mc2", "acc", 0.39, 0.02), ("bbq", "amb_bias_score", -0.20, 0.01)])
    out = compare(ticket.id[:8], "dense", ledger)
    rows = {r["task"]: r for r in out["rows"]}
    crows = rows["crows_pairs_english"]
    assert crows["a"] == 0.55 and crows["b"] == 0.60 and crows["delta"] == pytest.approx(0.05)
    assert crows["combined_stderr"] == pytest.approx(math.sqrt(2) * 0.01)
    assert crows["within_stderr"] is False and crows["direction"] == "target" and crows["ideal"] == 0.5
    assert crows["change"] == "worse"  # B (dense) is further from 0.5
    assert rows["truthfulqa_mc2"]["within_stderr"] is True and rows["truthfulqa_mc2"]["change"] == "better"
    assert rows["bbq"]["change"] == "better"  # |0.10| is closer to 0 than |-0.20|: signed, ideal 0
    assert out["a"]["subject"] == ticket.id and out["b"]["dense_sha256"] == sha
    text = format_table(out)
    assert "pct_stereotype" in text and "NO" in text and "target=0.5" in text


def test_only_like_with_like(two):
    ledger, ticket, sha = two
    _record(ledger, "dense", sha, [("crows_pairs_english", "pct_stereotype", 0.6, 0.01)], limit=20)
    _record(ledger, ticket.id, sha, [("crows_pairs_english", "pct_stereotype", 0.5, 0.01)], limit=None)
    _record(ledger, "dense", sha, [("bbq", "acc", 0.5, 0.01)], setup={"source": "local", "bbq_per_category": 240})
    _record(ledger, ticket.id, sha, [("bbq", "acc", 0.4, 0.01)], setup={"source": "local", "bbq_per_category": 40})
    out = compare(ticket.id, "dense", ledger)
    assert out["rows"] == []
    diffs = {r["task"]: r["differs"] for r in out["not_comparable"]}
    assert diffs["crows_pairs_english"] == {"limit": [None, 20]}
    assert diffs["bbq"] == {"bbq_per_category": [40, 240]}
    # a later dense run measured the same way becomes comparable; the newest matching one is used
    _record(ledger, "dense", sha, [("crows_pairs_english", "pct_stereotype", 0.58, 0.01)], limit=None)
    out = compare(ticket.id, "dense", ledger)
    assert [(r["task"], r["b"]) for r in out["rows"]] == [("crows_pairs_english", 0.58)]


def test_failed_runs_and_other_metrics_are_ignored(two):
    ledger, ticket, sha = two
    _record(ledger, "dense", sha, [("winogender_all", "acc", 0.9, 0.01)], fail=True)
    _record(ledger, "dense", sha, [("winogender_all", "acc", 0.5, 0.01)])
    _record(ledger, ticket.id, sha, [("winogender_all", "acc", 0.45, 0.01), ("bbq", "acc", 0.3, 0.01)])
    out = compare(ticket.id, "dense", ledger)
    assert [r["b"] for r in out["rows"]] == [0.5]
    assert out["only_a"] == [{"suite": "safety", "task": "bbq", "metric": "acc"}]


def test_bad_subjects(two):
    ledger, ticket, _ = two
    with pytest.raises(TicketLabError, match="at least one ticket"):
        compare("dense", "dense", ledger)
    with pytest.raises(TicketLabError, match="no ticket 'ffff'"):
        compare("ffff", "dense", ledger)


def test_evaluate_records_then_compares(tiny_llama):
    ledger = Ledger()
    ticket = make_ticket(tiny_llama, "magnitude", 0.9)
    dense = evaluate(tiny_llama, None, suite="ppl", limit=2, ledger=ledger, seq_len=64)
    pruned = evaluate(tiny_llama, ticket, suite="ppl", limit=2, ledger=ledger, seq_len=64)
    assert ledger.query("SELECT id FROM tickets") == [{"id": ticket.id}]  # eval recorded the unknown ticket
    out = compare(ticket.id, "dense", ledger)
    ppl = next(r for r in out["rows"] if r["metric"] == "perplexity")
    assert ppl["a"] == pytest.approx(pruned["results"]["wikitext2"]["perplexity,none"])
    assert ppl["b"] == pytest.approx(dense["results"]["wikitext2"]["perplexity,none"])
    assert ppl["setup"]["seq_len"] == 64 and ppl["setup"]["limit"] == 2
    evaluate(tiny_llama, None, suite="ppl", limit=2, ledger=ledger, seq_len=32)
    out = compare(ticket.id, "dense", ledger)  # the seq_len 32 run is not like the ticket's: still seq 64
    assert next(r for r in out["rows"] if r["metric"] == "perplexity")["setup"]["seq_len"] == 64
