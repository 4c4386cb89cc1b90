"""A ticket's verdict in one line, the same words on every page and in the CLI: its review state and
how it was reached, the policy result, the headline deltas against the baseline (each with which way
it went), and whether the evidence is full or quick.

    approved with override by alice (unmet: perplexity) · does not pass the policy default
    (1 fail, 2 missing) · vs dense: perplexity +80.2 % (worse), pct_stereotype +0.012 (within noise)
    · quick evidence only (--limit 20)

`verdict_of` is pure (state, review, comparison rows -> Verdict); `verdict` reads them from the
ledger. Each part carries a tone (good / bad / neutral / warn) so the dashboard can colour it; the
plain text is `Verdict.text`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .state import policy_in_force  # noqa: F401  (the one owner of the policy in force; re-exported)

GOOD, BAD, NEUTRAL, WARN = "good", "bad", "neutral", "warn"


@dataclass(frozen=True)
class Part:
    text: str
    tone: str = NEUTRAL


@dataclass
class Verdict:
    ticket: str
    review: Part
    policy: Part | None
    deltas: list[Part] = field(default_factory=list)
    evidence: Part = field(default_factory=lambda: Part("no evaluations", WARN))
    baseline: str = "dense"

    def parts(self) -> list[Part]:
        out = [self.review]
        if self.policy is not None:
            out.append(self.policy)
        if self.deltas:
            out.append(Part(f"vs {self.baseline}:"))
            out += self.deltas
        out.append(self.evidence)
        return out

    @property
    def text(self) -> str:
        head = [self.review.text] + ([self.policy.text] if self.policy else [])
        deltas = f"vs {self.baseline}: " + ", ".join(p.text for p in self.deltas) if self.deltas else None
        return " · ".join(head + ([deltas] if deltas else []) + [self.evidence.text])


def review_words(state) -> Part:
    """'unreviewed', 'approved by alice', 'approved with override by alice (unmet: perplexity)',
    'rejected by bob'; a record whose signature does not verify says so."""
    status = getattr(state, "review_status", "unreviewed") or "unreviewed"
    who = getattr(state, "decided_by", None)
    if status == "approved":
        if getattr(state, "override", False):
            unmet = list(getattr(state, "unmet_rules", None) or [])
            text = f"approved with override by {who}" + (f" (unmet: {', '.join(unmet)})" if unmet else "")
            part = Part(text, WARN)
        else:
            part = Part(f"approved by {who}", GOOD)
    elif status == "rejected":
        part = Part(f"rejected by {who}", BAD)
    else:
        legacy = getattr(state, "legacy_decision", None)
        extra = ""
        if legacy:
            extra = (f" (an unsigned {legacy.get('decision', 'decision')} by {legacy.get('reviewer', '?')} from before "
                     "signed governance does not count)")
        part = Part("unreviewed" + extra, NEUTRAL)
    if not getattr(state, "signed", True):
        part = Part(part.text + " — a governance record does not verify", BAD)
    return part


def policy_words(review) -> Part | None:
    """'passes the policy NAME' / 'does not pass the policy NAME (1 fail: refusals; 2 missing: evidence)'; failures of
    rules evaluated on quick runs are counted as indicative."""
    if review is None:
        return None
    name = (getattr(review, "policy", None) or {}).get("name") or "?"
    results = list(getattr(review, "results", []) or [])
    fails = [r for r in results if r.status == "fail"]
    indicative = [r for r in fails if getattr(r, "indicative", False)]
    missing = [r for r in results if r.status == "missing"]
    if not fails and not missing:
        quick = any(getattr(r, "indicative", False) for r in results)
        return Part(f"passes the policy {name}" + (" (indicative: quick runs)" if quick else ""), WARN if quick else GOOD)
    def named(rs) -> str:  # the rules by name ("refusals", "perplexity"), so the line says which
        return ", ".join(dict.fromkeys(r.rule for r in rs))

    counts = []
    hard = [r for r in fails if r not in indicative]
    if hard:
        counts.append(f"{len(hard)} fail: {named(hard)}")
    if indicative:
        counts.append(f"{len(indicative)} fail (indicative): {named(indicative)}")
    if missing:
        counts.append(f"{len(missing)} missing: {named(missing)}")
    return Part(f"does not pass the policy {name} ({'; '.join(counts)})", BAD)


def _fmt_delta(row: dict) -> str:
    pct, delta = row.get("delta_pct"), row.get("delta")
    if row.get("direction") != "target" and pct is not None and math.isfinite(pct):
        return f"{pct:+.1f} %"
    return f"{delta:+.3g}"


def delta_words(rows: list[dict]) -> list[Part]:
    """The headline rows (analysis.baseline_review.headline) as 'perplexity +80.2 % (worse)'."""
    out = []
    names = [r["metric"] for r in rows]
    for r in rows:
        if r.get("delta") is None:
            continue
        # a name two headlines share (acc) says whose it is
        name = r["metric"] if names.count(r["metric"]) == 1 else f"{r['task']} {r['metric']}"
        if r.get("within_noise"):
            out.append(Part(f"{name} {_fmt_delta(r)} (within noise)", NEUTRAL))
        elif r.get("within_noise") is None and "too few" in (r.get("noise") or ""):
            out.append(Part(f"{name} {_fmt_delta(r)} (too few examples to tell)", WARN))
        elif r.get("change") in ("better", "worse"):
            out.append(Part(f"{name} {_fmt_delta(r)} ({r['change']})", GOOD if r["change"] == "better" else BAD))
        else:
            out.append(Part(f"{name} {_fmt_delta(r)}", NEUTRAL))
    return out


def evidence_words(rows: list[dict]) -> Part:
    """Full or quick, from the limits of the compared metrics."""
    if not rows:
        return Part("no evaluations shared with the baseline", WARN)
    limits = sorted({int(r["limit"]) for r in rows if r.get("limit") is not None})
    if not limits:
        return Part("full evidence", GOOD)
    if len(limits) and all(r.get("limit") is not None for r in rows):
        return Part(f"quick evidence only (--limit {', '.join(map(str, limits))})", WARN)
    return Part(f"full and quick evidence (some --limit {', '.join(map(str, limits))})", WARN)


def verdict_of(ticket: str, state, review=None, rows: list[dict] | None = None, baseline: str = "dense") -> Verdict:
    """The verdict from a TicketState, an optional Review and comparison rows (baseline -> ticket)."""
    from ..baseline_review import headline

    rows = rows or []
    return Verdict(ticket=ticket, review=review_words(state), policy=policy_words(review),
                   deltas=delta_words(headline(rows)), evidence=evidence_words(rows), baseline=baseline)


def verdict(ledger, ticket_id: str, baseline: str = "dense", policy=None, review=None, state=None) -> Verdict:
    """Read everything from the ledger (a review against the policy in force is run when none is given)."""
    from pruning.errors import TicketLabError

    from ..baseline_review import compare_to_baseline
    from .review import review_ticket
    from .state import ticket_state

    state = state if state is not None else ticket_state(ledger, ticket_id)
    if review is None:
        review = review_ticket(ledger, ticket_id, baseline=baseline, policy=policy_in_force(ledger, policy))
    subject = (getattr(review, "baseline", None) or {}).get("subject", baseline)
    label = (getattr(review, "baseline", None) or {}).get("label", baseline)
    try:
        rows = compare_to_baseline(subject, ticket_id, ledger)["rows"]
    except TicketLabError:
        rows = []
    return verdict_of(ticket_id, state, review, rows, baseline="dense" if subject == "dense" else label)
