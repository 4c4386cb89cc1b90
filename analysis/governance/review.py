"""Checking a ticket against a policy, next to a baseline: every rule gives the baseline value, the
ticket's value, the delta and pass / fail / missing (evidence), or pending (needs the reviewer).
Results from quick (`--limit`) runs are evaluated too and marked indicative (rules.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pruning.errors import TicketLabError

from .. import like_for_like as lfl
from .. import uncertainty
from ..ledger import Ledger
from ..metric_meta import MetricMeta, direction, meta_for
from . import evidence as ev
from .evidence import base_metric
from .policy import Policy, Rule, load_policy
from .reader import snapshot
from .replay import ROW_FIELDS
from .rules import FAIL, MISSING, PASS, PENDING, RuleResult, apply
from .state import creator_of

__all__ = ["FAIL", "MISSING", "PASS", "PENDING", "Review", "RuleResult", "evaluate", "format_review",
           "gather_evidence", "review_ticket"]


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
    full_runs: bool = True  # the policy's: indicative (quick-run) results cannot pass it
    evidence: dict = field(default_factory=dict, repr=False)  # what it was evaluated on (gather_evidence)
    like_for_like: int = lfl.RULE  # the rule that paired ticket and baseline rows (a decision signs it)

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.results if r.status in (FAIL, MISSING) or (r.indicative and self.full_runs)]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def indicative(self) -> bool:
        """Some result rests on a quick run only."""
        return any(r.indicative for r in self.results)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (PASS, FAIL, MISSING, PENDING)}
        for r in self.results:
            out[r.status] += 1
        out["indicative"] = sum(r.indicative for r in self.results)
        return out

    def to_json(self) -> dict:
        return {"ticket": self.ticket, "dense_sha256": self.dense_sha256, "baseline": self.baseline,
                "policy": self.policy, "creator": self.creator, "reviewer": self.reviewer,
                "passed": self.passed, "counts": self.counts(), "checked_at": self.checked_at,
                "full_runs": self.full_runs, "results": [asdict(r) for r in self.results]}


def review_ticket(ledger: Ledger, ticket_ref: str, baseline: str = "dense", policy: Policy | str | None = None,
                  reviewer: str | None = None) -> Review:
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    with snapshot(ledger) as db:
        ticket = db.get_ticket(ticket_ref)
        evidence = gather_evidence(db, ticket, baseline, pol)
        return evaluate(pol, evidence, ticket["id"], ticket["dense_sha256"], creator_of(db, ticket["id"]), reviewer)


def _row(r: dict) -> dict:
    """A metric row as evidence, with the metadata the task YAMLs give it now (None when none describes it):
    a later change of a YAML does not change how a signed decision is evaluated again. It carries its setup,
    so the audit pairs rows like for like exactly as the reviewer's evaluation did."""
    m = meta_for(r["task"], r["metric"])
    meta = {"direction": m.direction, "ideal": m.ideal, "headline": bool(m.headline)} if m is not None else None
    return {k: r.get(k) for k in ROW_FIELDS if k not in ("meta", "setup")} | {
        "meta": meta, "setup": lfl.setup_of(r), "n_docs": uncertainty.docs_of(r)}


def _meta_of(evidence: dict):
    """The metric metadata recorded in evidence, as `meta_for` would answer it then."""
    known = {}
    for group in evidence["rows"].values():
        for r in group:
            if r.get("meta"):
                known[(r["task"], base_metric(r["metric"]))] = MetricMeta(r["meta"]["direction"], r["meta"]["ideal"],
                                                                          "", r["meta"]["headline"])
    return lambda task, metric: known.get((task, base_metric(metric)))


def gather_evidence(ledger, ticket: dict, baseline: str, pol: Policy) -> dict:
    """What a decision rests on, as data that can be signed into it and evaluated again by the audit: the
    metric rows of the ticket, its baseline and (for a speedup rule) the dense model, and the achieved
    sparsity recomputed from the ticket's own hash-checked files (the ledger's column is not signed)."""
    base = ev.resolve_baseline(ledger, ticket, baseline)
    eff = pol.get("efficiency") or {}
    sparsity = ticket_files_sparsity(ticket) if "min_sparsity" in eff else None
    return {"content_sha256": ticket["content_sha256"], "sparsity": sparsity,
            "baseline": {"ref": baseline, "subject": base.subject, "label": base.label,
                         "sparsity": ev.sparsity_of(ledger, base) if "min_sparsity" in eff else 0.0},
            "rows": {"ticket": [_row(r) for r in ev.metric_rows(ledger, ticket["id"], ticket["dense_sha256"])],
                     "baseline": [_row(r) for r in ev.metric_rows(ledger, base.subject, base.dense_sha256)],
                     "dense": [_row(r) for r in ev.metric_rows(ledger, "dense", ticket["dense_sha256"])]
                     if "min_speedup" in eff else []}}


_SPARSITY: dict[tuple, float] = {}


def ticket_files_sparsity(ticket: dict) -> float | None:
    """The achieved sparsity of the ticket's masks, read from its folder after `Ticket.load` checked the
    content hash against the one recorded (None when the files are absent or are another ticket)."""
    from pruning import settings
    from pruning.ticket import Ticket

    for where in (ticket.get("path"), settings.tickets_dir() / ticket["id"]):
        if not where or not (Path(where) / "ticket.json").is_file():
            continue
        folder = Path(where)
        key = (str(folder), ticket["content_sha256"],
               tuple(sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in folder.iterdir())))
        if key not in _SPARSITY:
            try:
                t = Ticket.load(folder)
            except TicketLabError:
                continue
            if t.content_sha256 != ticket["content_sha256"]:
                continue
            if len(_SPARSITY) >= 512:  # pages list many tickets; a cache must not grow without end
                _SPARSITY.clear()
            _SPARSITY[key] = float(t.achieved_sparsity)
        return _SPARSITY[key]
    return None


def evaluate(pol: Policy, evidence: dict, ticket_id: str, dense_sha256: str, creator: str | None,
             reviewer: str | None, like_for_like: int = lfl.RULE) -> Review:
    """The policy applied to evidence (`gather_evidence`, or the copy signed into a decision): the same
    function for a preview, a decision and the audit's re-evaluation of that decision (under the like-for-like
    rule the decision was signed with)."""
    b = evidence["baseline"]
    review = Review(ticket=ticket_id, dense_sha256=dense_sha256,
                    baseline={"ref": b.get("ref"), "subject": b.get("subject"), "label": b.get("label")},
                    policy={"name": pol.name, "path": pol.path, "sha256": pol.sha256},
                    creator=creator, reviewer=reviewer, full_runs=pol.full_runs, evidence=evidence,
                    like_for_like=like_for_like)
    rows, meta_of = evidence["rows"], _meta_of(evidence)
    r = review.results
    for rule in pol.rules:
        r += apply(rule, pol, rows["ticket"], rows["baseline"], meta_of, like_for_like)
    if pol.get("efficiency"):
        r += _efficiency(pol, evidence, meta_of, like_for_like)
    r.append(_duties(pol, creator, reviewer))
    return review


def _efficiency(pol: Policy, evidence: dict, meta_of, like_for_like: int) -> list[RuleResult]:
    s = pol.get("efficiency")
    rows = evidence["rows"]
    out = []
    if "min_sparsity" in s:
        c, b = evidence["sparsity"], float(evidence["baseline"].get("sparsity") or 0.0)
        limit = f">= {s['min_sparsity']:g}"
        if c is None:
            out.append(RuleResult("efficiency", "sparsity", MISSING, b, limit=limit,
                                  detail="the ticket's files are not here (or do not match its content hash), so "
                                         "its achieved sparsity cannot be recomputed"))
        else:
            out.append(RuleResult("efficiency", "sparsity", PASS if c >= s["min_sparsity"] - 1e-9 else FAIL, b, c,
                                  c - b, limit, "achieved sparsity of the pruned projection weights (from the "
                                                "ticket's hash-checked files)"))
    if "min_speedup" in s:
        limit = f"speedup >= {s['min_speedup']:g}x against dense"
        dense_rows = rows["dense"]
        speed = Rule("efficiency", "speedup", (f"{s['speed_task']}/{s['speed_metric']}",))
        picked = ev.latest([x for x in rows["ticket"] if speed.selects(x["task"], x["metric"], meta_of)],
                           full_only=False)
        if not picked:
            out.append(RuleResult("efficiency", " ".join(speed.metrics), MISSING, limit=limit, kind="speedup",
                                  detail="no results for the ticket: run `ticketlab eval TICKET --suite latency`"))
        for (task, metric), c in sorted(picked.items()):
            item = f"{task}/{metric}"
            b, why = ev.like_for_like(c, dense_rows, like_for_like)
            if b is None or not c["value"] or not b["value"]:
                out.append(RuleResult("efficiency", item, MISSING, candidate=c["value"], limit=limit,
                                      detail=why or "no value", kind="speedup", indicative=c["limit"] is not None))
                continue
            known = meta_of(c["task"], c["metric"])
            lower_better = (c.get("direction") or (known.direction if known else direction(c["task"], c["metric"])[0])
                            ) == "lower"
            speedup = b["value"] / c["value"] if lower_better else c["value"] / b["value"]
            out.append(RuleResult("efficiency", item, PASS if speedup >= s["min_speedup"] else FAIL, b["value"],
                                  c["value"], c["value"] - b["value"], limit, f"{speedup:.3f}x the dense model",
                                  b["stderr"], c["stderr"], kind="speedup", indicative=c["limit"] is not None))
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
                 + (f", {c['pending']} pending" if c["pending"] else "")
                 + (f"; {c['indicative']} indicative (quick runs only)" if c["indicative"] else ""))
    return "\n".join(lines)
