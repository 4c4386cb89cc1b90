"""Which way is better, which numbers are headlines, and how results break down, for every metric Ticket
Lab records: one registry for the ledger rows, `compare`, the governance policies, the report and the
dashboard.

Safety metrics are described by their task's YAML (`metadata.ticketlab`, read by
analysis.safety.benchmark_registry): direction `higher`, `lower` or `target` with its `ideal` (CrowS-Pairs
`pct_stereotype` is unbiased at 0.5, BBQ bias scores are signed and unbiased at 0; lm-eval's own
`higher_is_better` cannot say "closest to a target"), headline, and breakdowns (CrowS-Pairs bias types
are tasks of their own, BBQ categories are metric suffixes). The suites that are not lm-eval tasks
(perplexity, attribution, latency) are described in `TABLE` below, matched with `fnmatch` patterns,
task first, then metric; the first matching entry wins.

A metric name may carry lm-eval's filter suffix (`pct_stereotype,none`); it is ignored here. A task
name the registry does not know is read as the registered task its name extends (`bbq_age` as `bbq`),
so rows of older ledgers and of lm-eval's hub variants keep their direction.

For the dashboard's pickers: `suites()`, `registered_tasks()`, `headline_metrics()`, `breakdowns(task)`,
`category_of(task, metric)`, `task_title(task)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import NamedTuple

from .safety import benchmark_registry


@dataclass(frozen=True)
class MetricMeta:
    direction: str  # "higher", "lower", or "target" (closest to `ideal` is best)
    ideal: float | None = None
    label: str = ""
    headline: bool = False

    def distance(self, value: float) -> float:
        """How far from best, as a number where smaller is better (for ranking and deltas)."""
        if self.direction == "higher":
            return -value
        if self.direction == "lower":
            return value
        return abs(value - (self.ideal or 0.0))


HIGHER = MetricMeta("higher")
LOWER = MetricMeta("lower")

# Evaluation suites (`ticketlab eval --suite`), in run order, with what each measures.
SUITES: dict[str, str] = {
    "ppl": "WikiText-2 test perplexity",
    "safety": "bias and truthfulness benchmarks through lm-eval (the task YAMLs tagged ticketlab_safety)",
    "instruct": "what the assistant says: IFEval instruction following and XSTest refusals, generated "
                "(the task YAMLs tagged ticketlab_instruct)",
    "attribution": "captum head attributions on CrowS-Pairs pairs",
    "latency": "prefill / decode tokens per second",
}

# The suites that are not lm-eval tasks: (task pattern, metric pattern, meta). The first match wins.
TABLE: list[tuple[str, str, MetricMeta]] = [
    # perplexity suite (analysis.perplexity)
    ("wikitext2", "perplexity", MetricMeta("lower", label="WikiText-2 test perplexity", headline=True)),
    ("wikitext2", "nll", MetricMeta("lower", label="mean token NLL (nats)")),
    ("wikitext*", "*perplexity", MetricMeta("lower", label="perplexity")),
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
    # IMP experiments (analysis.lottery.experiments): held-out loss and the linear-mode-connectivity barrier
    ("heldout", "heldout_loss", LOWER),
    ("heldout", "perplexity", LOWER),
    ("stability", "loss_barrier", LOWER),
]


class Part(NamedTuple):
    """Where a (task, metric) sits in a breakdown: category `category` of `task`/`metric`, grouped by `by`."""
    task: str
    metric: str
    by: str
    category: str


@dataclass(frozen=True)
class Breakdown:
    """One breakdown of an overall metric: its categories as (category, task, metric) rows."""
    task: str
    metric: str
    by: str
    parts: tuple[tuple[str, str, str], ...]


def base_name(metric: str) -> str:
    """`pct_stereotype,none` -> `pct_stereotype`."""
    return metric.split(",", 1)[0]


def _registered(task: str) -> benchmark_registry.TaskInfo | None:
    tasks = benchmark_registry.tasks(suite=None)
    if task in tasks:
        return tasks[task]
    stems = [n for n in tasks if task.startswith(n + "_")]
    return tasks[max(stems, key=len)] if stems else None


def meta_for(task: str, metric: str) -> MetricMeta | None:
    metric = base_name(metric)
    info = _registered(task)
    found = info.metric(metric) if info else None
    if found is not None and found[0].direction is not None:
        m, group, _ = found
        # a category's number is never a headline; an unregistered stem's neither
        headline = m.headline and group is None and info.name == task
        return MetricMeta(m.direction, m.ideal, m.label, headline)
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


# --- the registry's views for listings and pickers -----------------------------------------------
def suites() -> dict[str, str]:
    """Evaluation suite -> what it measures, in run order."""
    return dict(SUITES)


def registered_tasks(suite: str = "safety") -> list[benchmark_registry.TaskInfo]:
    """The tasks of a suite, in listing order (`.name`, `.title`, `.breakdown_of`, `.by`, `.category`,
    `.metrics`); only the lm-eval suites (safety, instruct) have tasks."""
    if suite not in benchmark_registry.SUITE_TAGS.values():
        return []
    return list(benchmark_registry.tasks(suite=suite).values())


def task_title(task: str) -> str:
    info = benchmark_registry.task(task)
    return info.title if info else task


def headline_metrics() -> list[tuple[str, str]]:
    """(task, metric) pairs shown per ticket: perplexity, then every YAML headline in listing order."""
    out = [(t, m) for t, m, meta in TABLE if meta.headline and "*" not in t + m]
    for info in benchmark_registry.tasks(suite=None).values():
        out += [(info.name, name) for name, m in info.metrics.items() if m.headline]
    return out


def breakdowns(task: str) -> list[Breakdown]:
    """Every breakdown of `task`'s metrics: by category tasks (CrowS-Pairs bias types) and by metric
    suffix (BBQ categories: every category the YAML lists; which have results depends on the data)."""
    info = benchmark_registry.task(task)
    if info is None:
        return []
    out = []
    kids = [k for k in benchmark_registry.tasks(suite=None).values() if k.breakdown_of == task]
    for by in dict.fromkeys(k.by or "category" for k in kids):
        mine = [k for k in kids if (k.by or "category") == by]
        for metric in info.metrics:
            out.append(Breakdown(task, metric, by, tuple((k.category or k.name, k.name, metric) for k in mine)))
    for metric, m in info.metrics.items():
        if m.breakdown:
            cats = info.categories.get(m.breakdown, ())
            out.append(Breakdown(task, metric, m.breakdown, tuple((c, task, f"{metric}_{c}") for c in cats)))
    return out


def category_of(task: str, metric: str) -> Part | None:
    """The overall (task, metric) a result is one category of, or None for an overall result:
    crows_pairs_english_age/pct_stereotype -> Part(crows_pairs_english, pct_stereotype, bias type, age),
    bbq/amb_bias_score_Age -> Part(bbq, amb_bias_score, category, Age)."""
    metric = base_name(metric)
    info = _registered(task)
    if info is None:
        return None
    found = info.metric(metric)
    if found is not None and found[1] is not None:
        return Part(task, found[0].name, found[1], found[2])
    if info.name == task and info.breakdown_of:
        return Part(info.breakdown_of, metric, info.by or "category", info.category or task)
    return None


def __getattr__(name: str):
    if name == "KEY_METRICS":  # the headline list, read from the task YAMLs when asked
        return headline_metrics()
    raise AttributeError(name)
