"""The generic rule kinds of a policy, applied to a ticket's and its baseline's metric rows.

Each rule selects rows by its "task/metric" globs (and `where`, from the task YAML's metadata); each
selected metric of the ticket is one result. The ticket's newest full run is used, else its newest
`--limit` run: a quick run is evaluated like a full one (a failure shows as a failure) and marked
`indicative`; the review does not let indicative results pass a policy that requires full runs. The
baseline row is the like-for-like one (measured the same way: `analysis.like_for_like`, the rule `compare`
uses; a signed decision is evaluated again under the rule it was signed with).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import like_for_like as lfl
from .. import uncertainty
from ..metric_meta import MetricMeta, meta_for
from . import evidence as ev
from .policy import Policy, Rule

PASS, FAIL, MISSING, PENDING = "pass", "fail", "missing", "pending"


@dataclass
class RuleResult:
    rule: str  # the rule's name (for translated old policies, the old section: "perplexity", "bbq")
    item: str  # what was checked, e.g. "wikitext/perplexity"
    status: str
    baseline: float | None = None
    candidate: float | None = None
    delta: float | None = None
    limit: str = ""  # the rule's bound, in words
    detail: str = ""
    baseline_stderr: float | None = None
    candidate_stderr: float | None = None
    overridable: bool = True  # separation of duties is not
    kind: str = ""  # the rule kind (max_increase_pct, max_distance_growth, floor, evidence_required, ...)
    indicative: bool = False  # evaluated on a quick (--limit) run: shows the trend, not decision evidence


def _bound(rule: Rule, ideal: float | None = None) -> str:
    if rule.kind == "max_increase_pct":
        return f"increase <= {rule.limit:g} %"
    if rule.kind == "floor":
        return f">= {rule.limit:g}"
    slack = f" + {rule.slack:g}" if rule.slack else ""
    what = f"|x - {ideal:g}|" if ideal is not None else "distance from best"
    return f"{what} grows <= {rule.limit:g}·stderr{slack}"


def _pairs(pol: Policy, rule: Rule, cand_rows: list[dict], base_rows: list[dict], meta_of=None,
           like_for_like: int = lfl.RULE):
    """(item, candidate row, baseline row or None, why) for every selected candidate metric, or one
    'missing' entry when the ticket has no such result."""
    picked = ev.latest([x for x in cand_rows if rule.selects(x["task"], x["metric"], meta_of)], full_only=False)
    if not picked:
        return [(" ".join(rule.metrics), None, None, "no results for the ticket: run `ticketlab eval`")]
    out = []
    for (task, metric), row in sorted(picked.items()):
        b, why = ev.like_for_like(row, base_rows, like_for_like)
        out.append((f"{task}/{metric}", row, b, why))
    return out


def _missing(rule: Rule, item: str, limit: str, why: str, cand: dict | None) -> RuleResult:
    return RuleResult(rule.name, item, MISSING, candidate=cand["value"] if cand else None,
                      candidate_stderr=cand["stderr"] if cand else None, limit=limit, detail=why, kind=rule.kind,
                      indicative=bool(cand and cand["limit"] is not None))


def _quick(pol: Policy, row: dict) -> str:
    if row["limit"] is None:
        return ""
    need = "; the policy requires a full run for decisions" if pol.full_runs else ""
    return f" [indicative: --limit {row['limit']} run{need}]"


def _meta(rule: Rule, row: dict, meta_of=None) -> MetricMeta | None:
    if rule.ideal is not None:
        return MetricMeta("target", rule.ideal)
    meta = (meta_of or meta_for)(row["task"], row["metric"])
    if meta is None and row.get("direction"):  # a row recorded with its direction, for a task no YAML describes
        meta = MetricMeta(row["direction"], row.get("ideal"))
    return meta


def apply(rule: Rule, pol: Policy, cand_rows: list[dict], base_rows: list[dict], meta_of=None,
          like_for_like: int = lfl.RULE) -> list[RuleResult]:
    """`meta_of(task, metric)`: metric metadata (default the task YAMLs; see `Rule.selects`); `like_for_like`:
    the rule that pairs a ticket row with its baseline row (`analysis.like_for_like`)."""
    if rule.kind == "evidence_required":
        return evidence(rule, pol, cand_rows, base_rows)
    out = []
    for item, c, b, why in _pairs(pol, rule, cand_rows, base_rows, meta_of, like_for_like):
        meta = _meta(rule, c, meta_of) if c else None
        ideal = meta.ideal if meta is not None and meta.direction == "target" else None
        limit = _bound(rule, ideal)
        if c is None or c["value"] is None:
            out.append(_missing(rule, item, limit, why or "no value", c))
            continue
        tag, quick = _quick(pol, c), c["limit"] is not None
        bv = b["value"] if b else None
        if rule.kind == "floor":  # the baseline is context only
            out.append(RuleResult(rule.name, item, PASS if c["value"] >= rule.limit else FAIL, bv, c["value"],
                                  None if bv is None else c["value"] - bv, limit,
                                  ("" if b else f"(baseline shown only for context: {why})") + tag,
                                  b["stderr"] if b else None, c["stderr"], kind=rule.kind, indicative=quick))
            continue
        if b is None or bv is None or (rule.kind == "max_increase_pct" and not bv):
            out.append(_missing(rule, item, limit, why or "no baseline value", c))
            continue
        if rule.kind == "max_increase_pct":
            pct = (c["value"] - bv) / abs(bv) * 100.0
            ok, detail = pct <= rule.limit, f"{pct:+.2f} % against the baseline"
        else:  # max_distance_growth
            if meta is None:
                out.append(_missing(rule, item, limit, "which way is better is unknown: give the metric a direction "
                                    "in its task YAML (metadata.ticketlab.metrics) or an ideal in the rule", c))
                continue
            few = [f"{who}: {uncertainty.TOO_FEW} ({uncertainty.documents(n)}; at least {uncertainty.MIN_DOCS} needed)"
                   for who, row in (("ticket", c), ("baseline", b)) if uncertainty.too_few(n := uncertainty.docs_of(row))]
            if few:  # the noise cannot be sized, so neither "within" nor "beyond" it can be said
                out.append(_missing(rule, item, limit, "; ".join(few) + ": evaluate on more examples" + tag, c))
                continue
            d0, d1 = meta.distance(bv), meta.distance(c["value"])
            grow = d1 - d0
            noise = math.hypot(c["stderr"] or 0.0, b["stderr"] or 0.0)
            allowed = rule.slack + rule.limit * noise
            ok = grow <= allowed + 1e-12
            unknown = "" if (c["stderr"] is not None and b["stderr"] is not None) else " (a stderr is unknown: counted as 0)"
            if ideal is not None:
                detail = (f"distance from {ideal:g}: {abs(d0):.4f} -> {abs(d1):.4f} ({grow:+.4f}; allowed {allowed:.4f})"
                          f"{unknown}")
            else:
                detail = f"{meta.direction} is better: moved {grow:+.4g} the wrong way (allowed {allowed:.4g}){unknown}"
        out.append(RuleResult(rule.name, item, PASS if ok else FAIL, bv, c["value"], c["value"] - bv, limit,
                              detail + tag, b["stderr"], c["stderr"], kind=rule.kind, indicative=quick))
    return out


def evidence(rule: Rule, pol: Policy, cand_rows: list[dict], base_rows: list[dict]) -> list[RuleResult]:
    out = []
    for pattern in rule.metrics:
        parts, worst, counts = [], PASS, {}
        for who, rows in (("ticket", cand_rows), ("baseline", base_rows)):
            found = ev.match_any(rows, pattern)
            full = [x for x in found if x["limit"] is None]
            counts[who] = len(full)
            if not found:
                parts.append(f"{who}: no results")
                worst = MISSING
            elif pol.full_runs and not full:
                limits = sorted({x["limit"] for x in found})
                parts.append(f"{who}: only --limit runs (limit {', '.join(map(str, limits))}); a full run is required")
                worst = MISSING
            else:
                parts.append(f"{who}: {len(full)} full result(s)" + ("" if full else f", {len(found)} limited"))
        out.append(RuleResult(rule.name, pattern, worst, baseline=counts["baseline"], candidate=counts["ticket"],
                              limit="full run required" if pol.full_runs else "results required",
                              detail="; ".join(parts), kind=rule.kind))
    return out
