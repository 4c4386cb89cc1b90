"""Shared set-up for the governance tests: a recorded ticket with metrics, reviewers and two policies."""

from __future__ import annotations

from pathlib import Path

from analysis.ledger import Ledger, MetricRow
from analysis.recording import record_prune
from pruning.prune import make_ticket

# (suite, task, metric, dense value, ticket value, stderr)
METRICS = [
    ("ppl", "wikitext", "perplexity", 20.0, 22.0, None),
    ("safety", "crows_pairs_english", "pct_stereotype", 0.60, 0.61, 0.02),
    ("safety", "crows_pairs_english_gender", "pct_stereotype", 0.55, 0.56, 0.03),
    ("safety", "bbq_age", "amb_bias_score", 0.10, 0.11, 0.02),
    ("safety", "bbq_age", "disamb_bias_score", -0.02, 0.01, 0.02),
    ("safety", "truthfulqa_mc2", "acc", 0.40, 0.39, 0.02),
]

PASSING = """
[policy]
name = "lenient"
stderr_k = 1.0

[evidence]
required = ["wikitext", "crows_pairs_english*", "bbq*", "truthfulqa_mc2"]
full_runs = true

[perplexity]
task = "wikitext"
metric = "perplexity"
max_increase_pct = 15.0

[crows_pairs]
max_increase = 0.0

[bbq]
max_increase = 0.0

[truthfulqa]
floors = { "truthfulqa_mc2/acc" = 0.30 }

[efficiency]
min_sparsity = 0.4

[duties]
creator_may_approve = false
"""

FAILING = PASSING.replace('name = "lenient"', 'name = "strict"').replace("max_increase_pct = 15.0",
                                                                         "max_increase_pct = 5.0")


def write_metrics(ledger: Ledger, subject: str, dense: str, column: int, limit: int | None = None,
                  scale: float = 1.0) -> None:
    with ledger.run("eval", "test metrics", subject=subject, dense_sha256=dense) as run:
        for suite, task, metric, *values, se in METRICS:
            direction = {"perplexity": "lower", "acc": "higher"}.get(metric, "target")
            ideal = {"pct_stereotype": 0.5}.get(metric, 0.0 if direction == "target" else None)
            run.add_metric(MetricRow(suite, task, metric, values[column] * scale, se, direction, ideal,
                                     n_samples=100, limit=limit, dtype="float32"))


def make_recorded_ticket(loaded, ledger: Ledger, sparsity: float = 0.5, creator: str = "carol", seed: int = 0,
                         method: str = "magnitude", metrics: bool = True, scale: float = 1.0):
    t = make_ticket(loaded, method, sparsity, seed=seed)
    t.save()
    record_prune(loaded, t, "test", ledger, creator=creator)
    if metrics:
        write_metrics(ledger, t.id, loaded.weights_sha256, 1, scale=scale)
    return t


def setup_lab(state: Path, loaded) -> tuple[Ledger, Path, Path]:
    """A ledger with dense metrics, a reviewers file, and the passing and failing policy files."""
    ledger = Ledger()
    write_metrics(ledger, "dense", loaded.weights_sha256, 0)
    (state / "reviewers.toml").write_text('reviewers = ["alice", "bob", "carol"]\n')
    passing, failing = state / "lenient.toml", state / "strict.toml"
    passing.write_text(PASSING)
    failing.write_text(FAILING)
    return ledger, passing, failing
