"""`ticketlab audit`: is the governance trail what its signers wrote, complete, and rule-abiding?

Checked: every hash link; every signature against the key its actor had registered at that record,
and the role that record needs (`people.replay`); that decisions rest on a signed creation and the
policy pinned at the time, with separation of duties when that policy asks for it; that promotions
rest on a signed approval of their ticket under the pinned policy; and that the ledger still holds
every head the witness log (and any bundle given with `--against`) saw.
"""

from __future__ import annotations

import json
from pathlib import Path

from pruning.errors import TicketLabError

from . import chain, state, witness
from .policy import parse_policy
from .reader import snapshot


def _semantic(st: state.GovState) -> list[str]:
    """Rules about what records mean, over the valid records only (an invalid one is reported already)."""
    problems, pinned, creations, latest = [], None, {}, {}
    by_hash = {r["row_hash"]: r for r in st.rows if st.signed(r)}
    for r in st.rows:
        if not st.signed(r):
            continue
        b = chain.body_of(r)
        if r["kind"] == "policy":
            pinned = b
        elif r["kind"] == "create":
            creations.setdefault(r["subject"], r)
        elif r["kind"] == "decision":
            tid, where = r["subject"], f"decision #{r['seq']} ({b.get('decision')} of {r['subject']} by {r['actor']})"
            latest[tid] = r
            if pinned is None or b.get("policy_sha256") != pinned["sha256"]:
                problems.append(f"{where} was made under policy {str(b.get('policy_sha256'))[:12]}, not the policy "
                                f"pinned at the time ({pinned['sha256'][:12] if pinned else 'none'})")
                continue
            if b.get("decision") != "approve":
                continue
            created = creations.get(tid)
            if created is None or b.get("creation_hash") != created["row_hash"]:
                problems.append(f"{where} approves a ticket that nobody had signed as creator")
            elif created["actor"] == r["actor"] and not parse_policy(pinned["text"], "pinned", pinned["sha256"]).creator_may_approve:
                problems.append(f"{where}: {r['actor']} approved their own ticket, which the pinned policy forbids")
        elif r["kind"] == "promote":
            where = f"promotion #{r['seq']} of {b.get('target')} by {r['actor']}"
            d = by_hash.get(b.get("decision_hash"))
            if d is None or d["kind"] != "decision" or d["subject"] != b.get("target") \
                    or chain.body_of(d).get("decision") != "approve":
                problems.append(f"{where} does not rest on a signed approval of that ticket")
            elif latest.get(b.get("target")) is not d:
                problems.append(f"{where} rests on decision #{d['seq']}, which a later decision had replaced")
    return problems


def _bundle_head(path: str | Path) -> dict:
    mf = Path(path) / "manifest.json"
    try:
        head = json.loads(mf.read_text()).get("ledger_head")
    except (OSError, ValueError) as e:
        raise TicketLabError(f"--against {path}: no readable bundle manifest ({e}).") from e
    if not head:
        raise TicketLabError(f"--against {path}: the bundle carries no signed ledger head (exported before signed "
                             f"governance, or unreviewed).")
    return head


def audit(ledger, against: list[str | Path] | tuple = ()) -> dict:
    with snapshot(ledger) as db:  # one connection for the whole audit
        return _audit(db, against)


def _audit(ledger, against) -> dict:
    st = state.load(ledger)
    log_problems = [st.link[1]] if st.link else []
    log_problems += [st.problems[s] for s in sorted(st.problems)]
    log_problems += _semantic(st)
    wpath = witness.path_for(ledger)
    heads: list[dict] = []
    witness_problem = ""
    try:
        heads = witness.read(wpath)
    except TicketLabError as e:
        witness_problem = str(e)
    if not witness_problem and st.rows and not heads:
        witness_problem = (f"no witness log at {wpath} although the ledger holds {len(st.rows)} signed records: it was "
                           f"deleted or is elsewhere (set $TICKETLAB_WITNESS); truncation cannot be ruled out")
    w_problems = ([witness_problem] if witness_problem else []) + witness.check(st, heads, f"witness log {wpath}")
    for b in against:
        w_problems += witness.check(st, [_bundle_head(b)], f"bundle {b}")
    problems = log_problems + w_problems
    notes = []
    if heads and heads[-1]["seq"] < st.head[0]:
        notes.append(f"records #{heads[-1]['seq'] + 1}..#{st.head[0]} are not yet witnessed (a write crashed after "
                     f"its commit); the next governance write witnesses them")
    legacy = state.legacy_history(ledger)
    if any(legacy.values()):
        notes.append(f"{len(legacy['decisions'])} decisions and {len(legacy['deployments'])} deployment moves from before "
                     f"signed governance are kept as unsigned history; they count for nothing")
    return {"ok": not problems, "initialised": st.ledger_id is not None, "ledger_id": st.ledger_id,
            "records": len(st.rows), "head": {"seq": st.head[0], "hash": st.head[1]},
            "witnessed": len(heads), "witness_path": str(wpath), "against": [str(b) for b in against],
            "problems": problems, "notes": notes,
            "tables": {"governance_log": {"rows": len(st.rows), "ok": not log_problems, "problem": "; ".join(log_problems)},
                       "witness": {"rows": len(heads), "ok": not w_problems, "problem": "; ".join(w_problems)}}}


def audit_message(report: dict) -> str:
    shown = report["problems"][:5]
    more = f" (and {len(report['problems']) - 5} more)" if len(report["problems"]) > 5 else ""
    return "; ".join(shown) + more


def require_intact(ledger, doing: str) -> None:
    report = audit(ledger)
    if not report["ok"]:
        raise TicketLabError(f"refusing to {doing}: the governance trail fails the audit ({audit_message(report)}). "
                             f"Investigate with `ticketlab audit`; nothing was written.")
