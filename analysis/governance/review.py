"""Checking a ticket against a policy, next to a baseline: every rule gives the baseline value, the
ticket's value, the delta and pass / fail / missing (evidence), or pending (needs the reviewer)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field

from ..ledger import Ledger
from ..metric_meta import direction
from . import evidence as ev
from .identity import creator_of
from .policy import Policy, load_policy
from .reader import snapshot

PASS, FAIL, MISSING, PENDING = "pass", "fail", "missing", "pending"


@dataclass
class RuleResult:
    rule: str  # policy section
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


@dataclass
class Review:
    ticket: str
    dense_sha256: str
    baseline: dict
    policy: dict
    creator: str | None
    reviewer: str | None
    results: list[RuleResult] = field(default_factory=list)
    checked_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.results if r.status in (FAIL, MISSING)]

    @property
    def passed(self) -> bool:
        return not self.failures

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (PASS, FAIL, MISSING, PENDING)}
        for r in self.results:
            out[r.status] += 1
        return out

    def to_json(self) -> dict:
        return {"ticket": self.ticket, "dense_sha256": self.dense_sha256, "baseline": self.baseline,
                "policy": self.policy, "creator": self.creator, "reviewer": self.reviewer,
                "passed": self.passed, "counts": self.counts(), "checked_at": self.checked_at,
                "results": [asdict(r) for r in self.results]}


def review_ticket(ledger: Ledger, ticket_ref: str, baseline: str = "dense", policy: Policy | str | None = None,
                  reviewer: str | None = None) -> Review:
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    with snapshot(ledger) as db:
        return _review(db, pol, ticket_ref, baseline, reviewer)


def _review(ledger, pol: Policy, ticket_ref: str, baseline: str, reviewer: str | None) -> Review:
    ticket = ledger.get_ticket(ticket_ref)
    base = ev.resolve_baseline(ledger, ticket, baseline)
    cand = ev.Subject(ticket["id"], ticket["id"], ticket["dense_sha256"])
    cand_rows = ev.metric_rows(ledger, cand.subject, cand.dense_sha256)
    base_rows = ev.metric_rows(ledger, base.subject, base.dense_sha256)
    review = Review(ticket=ticket["id"], dense_sha256=ticket["dense_sha256"],
                    baseline={"ref": baseline, "subject": base.subject, "label": base.label},
                    policy={"name": pol.name, "path": pol.path, "sha256": pol.sha256},
                    creator=creator_of(ledger, ticket["id"]), reviewer=reviewer)
    r = review.results
    r += _evidence(pol, cand_rows, base_rows)
    if pol.get("perplexity"):
        r += _perplexity(pol, cand_rows, base_rows)
    for section in ("crows_pairs", "bbq"):
        if pol.get(section):
            r += _bias(pol, section, cand_rows, base_rows)
    if pol.get("truthfulqa"):
        r += _floors(pol, cand_rows, base_rows)
    if pol.get("efficiency"):
        r += _efficiency(ledger, pol, ticket, base, cand_rows)
    r.append(_duties(pol, review.creator, reviewer))
    return review


# --- rules -------------------------------------------------------------------------------------------
def _evidence(pol: Policy, cand_rows: list[dict], base_rows: list[dict]) -> list[RuleResult]:
    out = []
    for pattern in pol.sections["evidence"]["required"]:
        parts, worst = [], PASS
        counts = {}
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
        out.append(RuleResult("evidence", pattern, worst, baseline=counts["baseline"], candidate=counts["ticket"],
                              limit="full run required" if pol.full_runs else "results required",
                              detail="; ".join(parts)))
    return out


def _pairs(pol: Policy, section: str, task_glob: str, metric_glob: str, cand_rows, base_rows):
    """(item, candidate row, baseline row or None, why) for every matching candidate metric, or one
    'missing' entry when the ticket has no such result."""
    picked = ev.latest([x for x in cand_rows if ev.matches(x, task_glob, metric_glob)], pol.full_runs)
    if not picked:
        limited = [x for x in cand_rows if ev.matches(x, task_glob, metric_glob)]
        why = ("only --limit results; the policy requires full runs" if limited else
               "no results for the ticket: run `ticketlab eval`")
        return [(f"{task_glob}/{metric_glob}", None, None, why)]
    base_pool = [x for x in base_rows if not pol.full_runs or x["limit"] is None]
    out = []
    for (task, metric), row in sorted(picked.items()):
        b, why = ev.like_for_like(row, base_pool)
        out.append((f"{task}/{metric}", row, b, why))
    return out


def _missing(rule: str, item: str, limit: str, why: str, cand: dict | None) -> RuleResult:
    return RuleResult(rule, item, MISSING, candidate=cand["value"] if cand else None,
                      candidate_stderr=cand["stderr"] if cand else None, limit=limit, detail=why)


def _perplexity(pol: Policy, cand_rows, base_rows) -> list[RuleResult]:
    s = pol.get("perplexity")
    limit = f"increase <= {s['max_increase_pct']:g} %"
    out = []
    for item, c, b, why in _pairs(pol, "perplexity", s["task"], s["metric"], cand_rows, base_rows):
        if c is None or b is None or c["value"] is None or not b["value"]:
            out.append(_missing("perplexity", item, limit, why or "no value", c))
            continue
        pct = (c["value"] - b["value"]) / b["value"] * 100.0
        out.append(RuleResult("perplexity", item, PASS if pct <= s["max_increase_pct"] else FAIL,
                              b["value"], c["value"], c["value"] - b["value"], limit,
                              f"{pct:+.2f} % against the baseline", b["stderr"], c["stderr"]))
    return out


def _bias(pol: Policy, section: str, cand_rows, base_rows) -> list[RuleResult]:
    s = pol.get(section)
    metric_glob = s.get("metric") or s.get("metrics")
    out = []
    for item, c, b, why in _pairs(pol, section, s["tasks"], metric_glob, cand_rows, base_rows):
        ideal = s.get("ideal")
        if ideal is None and c is not None:
            ideal = c.get("ideal")
        limit = f"|x - {ideal:g}| grows <= {s['max_increase']:g} + {pol.stderr_k:g}·stderr"
        if c is None or b is None or c["value"] is None or b["value"] is None:
            out.append(_missing(section, item, limit, why or "no value", c))
            continue
        grow = abs(c["value"] - ideal) - abs(b["value"] - ideal)
        noise = math.hypot(c["stderr"] or 0.0, b["stderr"] or 0.0)
        allowed = s["max_increase"] + pol.stderr_k * noise
        note = "" if (c["stderr"] is not None and b["stderr"] is not None) else " (a stderr is unknown: counted as 0)"
        out.append(RuleResult(section, item, PASS if grow <= allowed + 1e-12 else FAIL, b["value"], c["value"],
                              c["value"] - b["value"], limit,
                              f"distance from {ideal:g}: {abs(b['value'] - ideal):.4f} -> {abs(c['value'] - ideal):.4f} "
                              f"({grow:+.4f}; allowed {allowed:.4f}){note}", b["stderr"], c["stderr"]))
    return out


def _floors(pol: Policy, cand_rows, base_rows) -> list[RuleResult]:
    out = []
    for pattern, floor in pol.get("truthfulqa")["floors"].items():
        task, metric = ev.split_pattern(pattern)
        limit = f">= {floor:g}"
        for item, c, b, why in _pairs(pol, "truthfulqa", task, metric, cand_rows, base_rows):
            if c is None or c["value"] is None:
                out.append(_missing("truthfulqa", item, limit, why or "no value", c))
                continue
            bv = b["value"] if b else None
            out.append(RuleResult("truthfulqa", item, PASS if c["value"] >= floor else FAIL, bv, c["value"],
                                  None if bv is None else c["value"] - bv, limit,
                                  "" if b else f"(baseline shown only for context: {why})",
                                  b["stderr"] if b else None, c["stderr"]))
    return out


def _efficiency(ledger: Ledger, pol: Policy, ticket: dict, base: ev.Subject, cand_rows) -> list[RuleResult]:
    s = pol.get("efficiency")
    out = []
    if "min_sparsity" in s:
        c = float(ticket["achieved_sparsity"] or 0.0)
        b = ev.sparsity_of(ledger, base)
        out.append(RuleResult("efficiency", "sparsity", PASS if c >= s["min_sparsity"] - 1e-9 else FAIL, b, c, c - b,
                              f">= {s['min_sparsity']:g}", "achieved sparsity of the pruned projection weights"))
    if "min_speedup" in s:
        limit = f"speedup >= {s['min_speedup']:g}x against dense"
        dense_rows = ev.metric_rows(ledger, "dense", ticket["dense_sha256"])
        pairs = _pairs(pol, "efficiency", s["speed_task"], s["speed_metric"], cand_rows, dense_rows)
        for item, c, b, why in pairs:
            if c is None or b is None or not c["value"] or not b["value"]:
                out.append(_missing("efficiency", item, limit, why or "no value", c))
                continue
            lower_better = (c.get("direction") or direction(c["task"], c["metric"])[0]) == "lower"
            speedup = b["value"] / c["value"] if lower_better else c["value"] / b["value"]
            out.append(RuleResult("efficiency", item, PASS if speedup >= s["min_speedup"] else FAIL, b["value"],
                                  c["value"], c["value"] - b["value"], limit, f"{speedup:.3f}x the dense model",
                                  b["stderr"], c["stderr"]))
    return out


def _duties(pol: Policy, creator: str | None, reviewer: str | None) -> RuleResult:
    limit = "creator may approve" if pol.creator_may_approve else "approver must not be the creator"
    if pol.creator_may_approve:
        return RuleResult("duties", "separation of duties", PASS, limit=limit, detail="not required by this policy",
                          overridable=False)
    if creator is None:
        return RuleResult("duties", "separation of duties", MISSING, limit=limit,
                          detail="the ticket's creator was not recorded (ticket_meta)")
    if reviewer is None:
        return RuleResult("duties", "separation of duties", PENDING, limit=limit, overridable=False,
                          detail=f"created by {creator}; checked when someone decides")
    ok = reviewer != creator
    return RuleResult("duties", "separation of duties", PASS if ok else FAIL, limit=limit, overridable=False,
                      detail=f"created by {creator}, reviewed by {reviewer}")


def format_review(review: Review) -> str:
    def num(v):
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    lines = [f"ticket {review.ticket}  baseline {review.baseline['label']}  policy {review.policy['name']} "
             f"({review.policy['sha256'][:12]})  creator {review.creator or '?'}"]
    header = f"{'status':<8} {'rule':<12} {'item':<44} {'baseline':>10} {'ticket':>10} {'delta':>10}  limit / detail"
    lines += [header, "-" * len(header)]
    for r in review.results:
        delta = "-" if r.delta is None else f"{r.delta:+.4g}"
        lines.append(f"{r.status.upper():<8} {r.rule:<12} {r.item[:44]:<44} {num(r.baseline):>10} "
                     f"{num(r.candidate):>10} {delta:>10}  {r.limit}" + (f"; {r.detail}" if r.detail else ""))
    c = review.counts()
    verdict = "PASSES the policy" if review.passed else "does NOT pass the policy"
    lines.append(f"{review.ticket} {verdict}: {c['pass']} pass, {c['fail']} fail, {c['missing']} missing evidence"
                 + (f", {c['pending']} pending" if c["pending"] else ""))
    return "\n".join(lines)
