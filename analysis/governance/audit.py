"""`ticketlab audit`: is the governance trail what its signers wrote, complete, and rule-abiding?

Checked: every hash link; every signature against the key its actor had registered at that record;
every rule, replayed from signed data only (`replay.py`: roles, well-formed bodies, decisions under the
policy pinned at the time and re-evaluated on the evidence they sign, promotions of approved tickets onto
their own model's pointer, rollbacks to earlier deployments); and that the ledger still holds every head
the witness log (and any bundle given with `--against`) saw.

Two grades of problem: a trail that is not what its signers wrote (a broken link, a signature no
registered key made, a witness mismatch) stops every governance write until investigated; a genuinely
signed record that breaks a rule is void (it changes nothing), fails the audit and is named, but does
not stop the others from working.
"""

from __future__ import annotations

import json
from pathlib import Path

from pruning.errors import TicketLabError

from . import anchor, state, witness
from .reader import snapshot


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
    voided = [st.voided[s] for s in sorted(st.voided)]
    anchored = anchor.problem(st)
    log_problems += [anchored] if anchored else []
    heads: list[dict] = []
    witness_problem, bad_lines = "", []
    try:
        wpath = witness.path_for(ledger, st.rows[0] if st.rows else None)
        heads, bad_lines = witness.scan(wpath)
    except TicketLabError as e:
        wpath, witness_problem = witness.configured_path(ledger), str(e)
    if not witness_problem and st.rows and not heads:
        witness_problem = (f"no witness log at {wpath} although the ledger holds {len(st.rows)} signed records: it was "
                           f"deleted or moved; truncation cannot be ruled out")
    seen = witness.witnessed(st, heads)
    w_problems = ([witness_problem] if witness_problem else []) + witness.check(st, heads, f"witness log {wpath}", seen)
    for b in against:
        w_problems += witness.check(st, [_bundle_head(b)], f"bundle {b}")
    unwitnessed = [r["seq"] for r in st.rows if r["seq"] not in seen] if heads and not w_problems else []
    late = ([f"records {', '.join(f'#{s}' for s in unwitnessed[:8])}{' ...' if len(unwitnessed) > 8 else ''} have no "
             f"head in the witness log {wpath}: written past the witness (a write killed after its commit, or a "
             f"witness bypassed). Rerunning the killed command, or `ticketlab audit --rewitness --as ADMIN` after "
             f"checking them, witnesses them"] if unwitnessed else [])
    problems = log_problems + w_problems + late + voided
    notes = list(bad_lines)
    legacy = state.legacy_history(ledger)
    if any(legacy.values()):
        notes.append(f"{len(legacy['decisions'])} decisions and {len(legacy['deployments'])} deployment moves from before "
                     f"signed governance are kept as unsigned history; they count for nothing")
    return {"ok": not problems, "initialised": st.ledger_id is not None, "ledger_id": st.ledger_id,
            "records": len(st.rows), "head": {"seq": st.head[0], "hash": st.head[1]},
            "witnessed": len(heads), "witness_path": str(wpath), "against": [str(b) for b in against],
            "problems": problems, "notes": notes, "voided": voided, "unwitnessed": unwitnessed,
            "intact": not (log_problems or w_problems), "integrity_problems": log_problems + w_problems,
            "tables": {"governance_log": {"rows": len(st.rows), "ok": not (log_problems or voided),
                                          "problem": "; ".join(log_problems + voided)},
                       "witness": {"rows": len(heads), "ok": not (w_problems or late),
                                   "problem": "; ".join(w_problems + late)}}}


def audit_message(report: dict, key: str = "problems") -> str:
    shown = report[key][:5]
    more = f" (and {len(report[key]) - 5} more)" if len(report[key]) > 5 else ""
    return "; ".join(shown) + more


def require_intact(ledger, doing: str) -> dict:
    """Refuse a governance write on a trail that is not what its signers wrote, or not the ledger this
    person's trust anchor names. Void and unwitnessed records do not stop it: the audit names them.
    Returns the audit report."""
    report = audit(ledger)
    if not report["intact"]:
        raise TicketLabError(f"refusing to {doing}: the governance trail fails the audit "
                             f"({audit_message(report, 'integrity_problems')}). "
                             f"Investigate with `ticketlab audit`; nothing was written.")
    return report
