"""Review decisions: append-only, hash-chained rows in the ledger, each with the policy results it was
made on. Approving a ticket that fails a rule or lacks evidence needs an explicit, recorded override;
separation of duties cannot be overridden."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

from pruning import settings
from pruning.errors import TicketLabError

from ..ledger import Ledger, _now
from . import chain
from .policy import Policy, load_policy
from .reader import snapshot
from .review import FAIL, Review, review_ticket

EXAMPLE_REVIEWERS = Path(__file__).with_name("reviewers.example.toml")

DECISION_FIELDS = ("seq", "ticket_id", "dense_sha256", "decision", "reviewer", "reason", "override",
                   "override_reason", "baseline", "policy_name", "policy_sha256", "policy_results", "passed",
                   "decided_at", "prev_hash")
DEPLOY_FIELDS = ("seq", "dense_sha256", "action", "target", "previous", "by_user", "reason", "decision_hash",
                 "moved_at", "prev_hash")


# --- reviewers -----------------------------------------------------------------------------------------
def reviewers_path(path: str | Path | None = None) -> Path:
    if path:
        return Path(path).expanduser()
    env = os.environ.get("TICKETLAB_REVIEWERS")
    return Path(env).expanduser() if env else settings.state_dir() / "reviewers.toml"


def load_reviewers(path: str | Path | None = None) -> list[str]:
    """The names allowed to decide. There is deliberately no built-in fallback list: a default that lets
    some placeholder name approve anything would defeat the point."""
    p = reviewers_path(path)
    if not p.is_file():
        raise TicketLabError(f"no reviewers file at {p}: copy {EXAMPLE_REVIEWERS} there (or pass --reviewers FILE) "
                             f"and list who may decide.")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TicketLabError(f"reviewers file {p} is not valid TOML: {e}.") from e
    names = data.get("reviewers")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise TicketLabError(f'reviewers file {p} must contain reviewers = ["name", ...] with at least one name.')
    return [n.strip() for n in names]


# --- the chain -----------------------------------------------------------------------------------------
def decision_rows(ledger: Ledger, ticket_id: str | None = None) -> list[dict]:
    if ticket_id:
        return ledger.query("SELECT * FROM decisions WHERE ticket_id = ? ORDER BY seq", [ticket_id])
    return ledger.query("SELECT * FROM decisions ORDER BY seq")


def audit(ledger: Ledger) -> dict:
    """Verify both chains and that every promotion rests on a recorded approval. Returns a report with
    `ok` and, when broken, the first broken row of each table."""
    out = {"ok": True, "tables": {}}
    with snapshot(ledger) as db:
        decisions = decision_rows(db)
        deployments = db.query("SELECT * FROM deployments ORDER BY seq")
    for table, rows, fields, jf in (("decisions", decisions, DECISION_FIELDS, ("policy_results",)),
                                    ("deployments", deployments, DEPLOY_FIELDS, ())):
        row, why = chain.first_break(rows, fields, jf)
        entry = {"rows": len(rows), "ok": row is None}
        if row is not None:
            entry.update(first_broken_seq=row["seq"], problem=why, row=_describe(table, row))
            out["ok"] = False
        out["tables"][table] = entry
    by_hash = {d["row_hash"]: d for d in decisions}
    for dep in deployments:
        if dep["action"] != "promote":
            continue
        d = by_hash.get(dep["decision_hash"])
        if d is None or d["decision"] != "approve" or d["ticket_id"] != dep["target"]:
            out["ok"] = False
            out["tables"]["deployments"].setdefault("anchor_problems", []).append(
                f"deployment #{dep['seq']} promoted {dep['target']} on decision {str(dep['decision_hash'])[:12]}, "
                f"which is no longer an approval of that ticket in the decisions chain")
    return out


def _describe(table: str, row: dict) -> str:
    if table == "decisions":
        return (f"decision #{row['seq']} ({row['decision']} of ticket {row['ticket_id']} by {row['reviewer']} "
                f"at {row['decided_at']})")
    return f"deployment #{row['seq']} ({row['action']} to {row['target']} by {row['by_user']} at {row['moved_at']})"


def audit_message(report: dict) -> str:
    parts = []
    for table, e in report["tables"].items():
        if not e["ok"]:
            parts.append(f"{table}: first broken row is {e['row']}: {e['problem']}")
        parts += e.get("anchor_problems", [])
    return "; ".join(parts)


def require_intact(ledger: Ledger, doing: str) -> None:
    report = audit(ledger)
    if not report["ok"]:
        raise TicketLabError(f"refusing to {doing}: the ledger's governance records fail the audit ({audit_message(report)}). "
                             f"Investigate with `ticketlab audit`; nothing was written.")


def latest_decision(ledger: Ledger, ticket_id: str) -> dict | None:
    rows = ledger.query("SELECT * FROM decisions WHERE ticket_id = ? ORDER BY seq DESC LIMIT 1", [ticket_id])
    return rows[0] if rows else None


def approval_of(ledger: Ledger, ticket_id: str) -> dict | None:
    """The decision row that makes a ticket approved now (its latest decision, if that is an approval)."""
    d = latest_decision(ledger, ticket_id)
    return d if d and d["decision"] == "approve" else None


# --- deciding ------------------------------------------------------------------------------------------
def decide(ledger: Ledger, ticket_ref: str, decision: str, reviewer: str, reason: str, *, override: bool = False,
           override_reason: str | None = None, policy: Policy | str | None = None, baseline: str = "dense",
           reviewers: str | Path | None = None) -> dict:
    if decision not in ("approve", "reject"):
        raise TicketLabError(f"decision must be approve or reject, not {decision!r}.")
    if not (reason or "").strip():
        raise TicketLabError("a decision needs --reason: say why, for whoever audits it later.")
    allowed = load_reviewers(reviewers)
    if reviewer not in allowed:
        raise TicketLabError(f"{reviewer!r} is not on the reviewers list {reviewers_path(reviewers)} "
                             f"({', '.join(allowed)}); ask for it to be added.")
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    with snapshot(ledger) as db:
        ticket = db.get_ticket(ticket_ref)
        require_intact(db, f"record a decision on {ticket['id']}")
        review = review_ticket(db, ticket["id"], baseline=baseline, policy=pol, reviewer=reviewer)
    if override and decision != "approve":
        raise TicketLabError("--override only applies to approvals.")
    if override and not (override_reason or "").strip():
        raise TicketLabError("--override needs --override-reason: why approve despite the policy?")
    if decision == "approve":
        _check_approval(review, override)
    row = {"ticket_id": ticket["id"], "dense_sha256": ticket["dense_sha256"], "decision": decision,
           "reviewer": reviewer, "reason": reason.strip(), "override": bool(override),
           "override_reason": override_reason.strip() if override else None, "baseline": baseline,
           "policy_name": pol.name, "policy_sha256": pol.sha256, "policy_results": review.to_json(),
           "passed": review.passed, "decided_at": _now()}
    with ledger.transaction() as con:
        stored = chain.append(con, "decisions", row, DECISION_FIELDS, ("policy_results",))
    stored["policy_results"] = json.loads(stored["policy_results"])
    return stored


def _check_approval(review: Review, override: bool) -> None:
    hard = [r for r in review.results if r.status == FAIL and not r.overridable]
    if hard:
        raise TicketLabError(f"{review.reviewer} may not approve {review.ticket}: {hard[0].detail} and the policy "
                             f"separates duties ({hard[0].limit}); this cannot be overridden.")
    failing = review.failures
    if failing and not override:
        listed = ", ".join(f"{r.rule} {r.item}: {r.status}" for r in failing[:6])
        more = f" and {len(failing) - 6} more" if len(failing) > 6 else ""
        raise TicketLabError(f"{review.ticket} does not pass policy {review.policy['name']} ({listed}{more}); approving "
                             f"it needs --override --override-reason TEXT, which is recorded. See `ticketlab review`.")
    if override and not failing:
        raise TicketLabError(f"{review.ticket} passes policy {review.policy['name']}: there is nothing to override; "
                             f"drop --override.")
