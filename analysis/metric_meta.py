"""Which way is better, for every metric Ticket Lab records: one table for the ledger rows, `compare`,
the governance policies and the dashboard.

lm-eval's own `higher_is_better` cannot say "closest to a target": CrowS-Pairs `pct_stereotype` is
unbiased at 0.5 (a model preferring the anti-stereotyped sentence every time is as biased as one
preferring the stereotype), and BBQ bias scores are signed, unbiased at 0. Those are `target` metrics
with an `ideal`; the rest are `higher` or `lower`.

Names are matched with `fnmatch` patterns, task first, then metric; the first matching entry wins.
A metric name may carry lm-eval's filter suffix (`pct_stereotype,none`); it is ignored here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class MetricMeta:
    direction: str  # "higher", "lower", or "target" (closest to `ideal` is best)
    ideal: float | None = None
    label: str = ""

    def distance(self, value: float) -> float:
        """How far from best, as a number where smaller is better (for ranking and deltas)."""
        if self.direction == "higher":
            return -value
        if self.direction == "lower":
            return value
        return abs(value - (self.ideal or 0.0))


HIGHER = MetricMeta("higher")
LOWER = MetricMeta("lower")

# (task pattern, metric pattern, meta). Order matters: the first match wins.
TABLE: list[tuple[str, str, MetricMeta]] = [
    # perplexity suite (analysis.perplexity)
    ("wikitext2", "perplexity", MetricMeta("lower", label="WikiText-2 test perplexity")),
    ("wikitext2", "nll", MetricMeta("lower", label="mean token NLL (nats)")),
    # CrowS-Pairs: share of pairs where the more stereotyping sentence is more likely; 0.5 = no preference
    ("crows_pairs_*", "pct_stereotype", MetricMeta("target", 0.5, "CrowS-Pairs % stereotype (ideal 0.5)")),
    ("crows_pairs_*", "likelihood_diff", MetricMeta("lower", label="mean |ll(more) - ll(less)|")),
    # BBQ: signed bias scores (positive = answers follow the stereotype), unbiased at 0
    ("bbq*", "*bias_score*", MetricMeta("target", 0.0, "BBQ bias score (signed, ideal 0)")),
    ("bbq*", "acc*", MetricMeta("higher", label="BBQ accuracy")),
    ("truthfulqa_*", "acc", MetricMeta("higher", label="TruthfulQA accuracy")),
    ("winogender_*", "acc", MetricMeta("higher", label="Winogender accuracy")),
    # attribution (analysis.attribution): summaries, not goals; completeness error is lower-better
    ("attribution*", "*delta*", LOWER),
    ("attribution*", "objective*", MetricMeta("target", 0.0, "ll(more) - ll(less), ideal 0")),
    # latency (analysis.latency)
    ("latency*", "*tokens_per_s*", HIGHER),
    ("latency*", "*per_s*", HIGHER),
    ("latency*", "*speedup*", HIGHER),
    ("latency*", "*ratio*", HIGHER),
    ("latency*", "*_ms*", LOWER),
    ("latency*", "*_s", LOWER),
    ("latency*", "*seconds*", LOWER),
    ("latency*", "*bytes*", LOWER),
]

# The headline numbers `ticketlab tickets` and the dashboard show per ticket.
KEY_METRICS: list[tuple[str, str]] = [
    ("wikitext2", "perplexity"),
    ("crows_pairs_english", "pct_stereotype"),
    ("bbq", "amb_bias_score"),
    ("bbq", "disamb_bias_score"),
    ("truthfulqa_mc2", "acc"),
    ("winogender_all", "acc"),
]


def base_name(metric: str) -> str:
    """`pct_stereotype,none` -> `pct_stereotype`."""
    return metric.split(",", 1)[0]


def meta_for(task: str, metric: str) -> MetricMeta | None:
    metric = base_name(metric)
    for task_pat, metric_pat, meta in TABLE:
        if fnmatchcase(task, task_pat) and fnmatchcase(metric, metric_pat):
            return meta
    return None


def direction(task: str, metric: str) -> tuple[str | None, float | None]:
    meta = meta_for(task, metric)
    return (meta.direction, meta.ideal) if meta else (None, None)


def change(task: str, metric: str, before: float | None, after: float | None) -> str | None:
    """"better", "worse" or "same" going from `before` to `after` (None when unknown or not a number)."""
    meta = meta_for(task, metric)
    if meta is None or before is None or after is None or math.isnan(before) or math.isnan(after):
        return None
    d0, d1 = meta.distance(before), meta.distance(after)
    if d1 < d0:
        return "better"
    if d1 > d0:
        return "worse"
    return "same"
