"""A ticket against its baseline, metric by metric, as a reviewer reads it: baseline | ticket | delta |
delta % | within noise?, with which way each change goes (by the metric's direction and ideal) and
how bad it is, for sorting by severity.

Built on `analysis.side_by_side.compare` (which pairs only like with like); this module adds the reading
of each pair. `severity` is how much further from best the ticket is than the baseline, in units of
the combined standard error when both stderrs are known, else in percent of the baseline's distance
from best: positive = worse, negative = better, so sorting by it descending puts the worst first.
"""

from __future__ import annotations

import math

from . import metric_meta, uncertainty
from .ledger import Ledger
from .side_by_side import compare

COLUMNS = ("suite", "task", "metric", "baseline", "baseline_stderr", "ticket", "ticket_stderr", "delta", "delta_pct",
           "within_noise", "noise", "change", "severity", "direction", "ideal", "limit", "baseline_n", "ticket_n")


def _finite(v) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


def reading(task: str, metric: str, a: float | None, b: float | None, a_se: float | None = None,
            b_se: float | None = None, a_n: int | None = None, b_n: int | None = None) -> dict:
    """delta, delta %, within noise, change (better / worse / same) and severity of going a -> b.
    `a_n`, `b_n`: documents each side rests on; too few give no "within noise" call (None) and `noise`
    says why (analysis.uncertainty)."""
    a, b, a_se, b_se = map(_finite, (a, b, a_se, b_se))
    out = {"delta": None, "delta_pct": None, "within_noise": None, "change": None, "severity": None,
           "noise": uncertainty.noise_words(a_se, a_n, b_se, b_n)}
    if a is None or b is None:
        return out
    delta = b - a
    out["delta"] = delta
    out["delta_pct"] = delta / abs(a) * 100.0 if a != 0 else None
    combined = uncertainty.combined(a_se, a_n, b_se, b_n)
    out["within_noise"] = uncertainty.within_noise(delta, a_se, a_n, b_se, b_n)
    meta = metric_meta.meta_for(task, metric)
    out["change"] = metric_meta.change(task, metric, a, b)
    if meta is not None:
        worse_by = meta.distance(b) - meta.distance(a)
        if combined:
            out["severity"] = worse_by / combined
        else:
            base = abs(meta.distance(a)) or abs(a) or 1.0
            out["severity"] = worse_by / base * 100.0
    return out


def comparison_rows(result: dict) -> list[dict]:
    """Rows of `compare(baseline, ticket)` read as a review table (compare's A = baseline, B = ticket)."""
    rows = []
    for r in result["rows"]:
        rows.append({"suite": r["suite"], "task": r["task"], "metric": metric_meta.base_name(r["metric"]),
                     "baseline": _finite(r["a"]), "baseline_stderr": _finite(r["a_stderr"]),
                     "ticket": _finite(r["b"]), "ticket_stderr": _finite(r["b_stderr"]),
                     **reading(r["task"], r["metric"], r["a"], r["b"], r["a_stderr"], r["b_stderr"], r.get("a_n"),
                               r.get("b_n")),
                     "baseline_n": r.get("a_n"), "ticket_n": r.get("b_n"),
                     "direction": r.get("direction"), "ideal": _finite(r.get("ideal")),
                     "limit": (r.get("setup") or {}).get("limit")})
    rows.sort(key=lambda x: (-(x["severity"] if x["severity"] is not None else -math.inf), x["task"], x["metric"]))
    return rows


def compare_to_baseline(baseline: str, ticket: str, ledger: Ledger | None = None) -> dict:
    """{"rows": comparison rows (worst first), "a": baseline subject, "b": ticket subject,
    "not_comparable", "only_a", "only_b"} for `ticketlab compare`-style references."""
    result = compare(baseline, ticket, ledger)
    return {**result, "rows": comparison_rows(result)}


def headline(rows: list[dict]) -> list[dict]:
    """The rows of the headline metrics (metric_meta.headline_metrics()), in that order."""
    keys = list(metric_meta.headline_metrics())
    picked = {(r["task"], r["metric"]): r for r in rows if (r["task"], r["metric"]) in keys}
    return [picked[k] for k in keys if k in picked]
