"""Reading the evidence a decision rests on: a subject's metric rows, and which baseline to compare with.

Subjects are a ticket id, or "dense" together with the dense model's weight hash. Only rows of
succeeded runs count (failed runs write none, but a row is only evidence if its run finished).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

from pruning.errors import TicketLabError

from .. import like_for_like as lfl
from ..ledger import Ledger, evidence_store
from .state import deployment_pointer


@dataclass(frozen=True)
class Subject:
    ref: str  # what the user asked for: "dense", "deployed" or a ticket reference
    subject: str  # "dense" or a full ticket id
    dense_sha256: str

    @property
    def label(self) -> str:
        if self.ref == "deployed":
            return f"deployed ({self.subject})"
        return self.subject if self.subject != "dense" else f"dense ({self.dense_sha256[:12]})"


def base_metric(name: str) -> str:
    """lm-eval spells metrics `name,filter`; the filter is not part of what a rule means."""
    return name.split(",", 1)[0]


def metric_rows(ledger: Ledger, subject: str, dense_sha256: str) -> list[dict]:
    rows = evidence_store.decision_rows(ledger, subject, dense_sha256)
    for r in rows:  # a NaN is no evidence, and JSON (decisions, manifests) cannot carry it
        for key in ("value", "stderr"):
            if r[key] is not None and not math.isfinite(r[key]):
                r[key] = None
    return rows


def matches(row: dict, task_glob: str, metric_glob: str = "*") -> bool:
    return fnmatch.fnmatchcase(row["task"], task_glob) and fnmatch.fnmatchcase(base_metric(row["metric"]), metric_glob)


def split_pattern(pattern: str) -> tuple[str, str]:
    task, _, metric = pattern.partition("/")
    return task, metric or "*"


def latest(rows: list[dict], full_only: bool) -> dict[tuple[str, str], dict]:
    """One row per (task, metric): the newest full run, else (unless full_only) the newest limited one."""
    best: dict[tuple[str, str], dict] = {}
    for r in rows:  # oldest first, so later rows replace earlier ones
        key = (r["task"], base_metric(r["metric"]))
        full = r["limit"] is None
        if full_only and not full:
            continue
        old = best.get(key)
        if old is None or full or old["limit"] is not None:
            best[key] = r
    return best


def like_for_like(candidate: dict, rows: list[dict], rule: int = lfl.RULE) -> tuple[dict | None, str]:
    """The baseline row to compare a candidate row with: same task and metric, measured the same way
    (`analysis.like_for_like`, under `rule`: a signed decision is evaluated again under the rule it was signed
    with); newest first. Returns (row, '') or (None, why not)."""
    same = [r for r in rows if r["task"] == candidate["task"]
            and base_metric(r["metric"]) == base_metric(candidate["metric"])]
    if not same:
        return None, "no baseline result"
    ok = [r for r in same if lfl.same(candidate, r, rule)]
    if not ok:
        return None, lfl.why_not(lfl.differences(candidate, same[-1], rule))
    return ok[-1], ""


def resolve_baseline(ledger: Ledger, ticket: dict, ref: str) -> Subject:
    dense = ticket["dense_sha256"]
    if ref == "dense":
        return Subject("dense", "dense", dense)
    if ref == "deployed":
        return Subject("deployed", deployment_pointer(ledger, dense), dense)
    other = ledger.get_ticket(ref)
    if other["dense_sha256"] != dense:
        raise TicketLabError(f"baseline ticket {other['id']} was pruned from a different dense model "
                             f"({other['dense_sha256'][:12]}) than {ticket['id']} ({dense[:12]}); compare like with like.")
    if other["id"] == ticket["id"]:
        raise TicketLabError(f"the baseline is the ticket itself ({ticket['id']}); use dense, deployed or another id.")
    return Subject(ref, other["id"], dense)


def sparsity_of(ledger: Ledger, subject: Subject) -> float:
    if subject.subject == "dense":
        return 0.0
    return float(ledger.get_ticket(subject.subject)["achieved_sparsity"] or 0.0)


def match_any(rows: list[dict], pattern: str) -> list[dict]:
    task, metric = split_pattern(pattern)
    return [r for r in rows if matches(r, task, metric)]
