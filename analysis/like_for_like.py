"""When two metric rows were measured the same way, so that comparing them means something: the one rule
`compare`, `review`, the policy rules, the report and export apply (issue 22).

A row's *setup* is every setting that changes its score: the document limit (or the full set), batch size,
dtype, padding/scoring, and the suite's own settings in `extra["setup"]` (perplexity window length, BBQ's
per-category cap, lm-eval's data source, attribution settings, a generation task's max new tokens and chat
template...). An evidence row signed into a decision carries its setup as `setup`.

Rule 2 (current): two rows are like for like when every setting is equal. Rule 1 is what decisions signed
before this module used (same limit, and the same dtype where both rows know theirs); the audit replays a
decision under the rule it was made with (`RULE_KEY` in its signed evidence; absent = 1), so an existing
ledger audits as it did, while every new decision rests on rule 2.
"""

from __future__ import annotations

import json
from typing import Any

CURRENT = 2
RULES = (1, 2)
RULE_KEY = "like_for_like"  # the rule's number, in a decision's signed evidence
SETUP_FIELDS = ("limit", "batch_size", "dtype", "padding")


def setup_of(row: dict) -> dict[str, Any]:
    """Every setting a row was measured with (an evidence row's signed `setup`, or a ledger row's columns and
    `extra["setup"]`)."""
    if isinstance(row.get("setup"), dict):
        return dict(row["setup"])
    extra = row.get("extra")
    extra = json.loads(extra) if isinstance(extra, str) else (extra or {})
    return {**{k: row.get(k) for k in SETUP_FIELDS}, **(extra.get("setup") or {})}


def setup_key(setup: dict[str, Any]) -> str:
    """A setup as one comparable string (values by their JSON text, so 512 and 512.0 are not confused with "512")."""
    return json.dumps(setup, sort_keys=True, default=str)


def _text(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def differences(a: dict, b: dict, rule: int = CURRENT) -> list[tuple[str, Any, Any]]:
    """(setting, a's value, b's value) for every setting in which the two rows differ under `rule`."""
    if rule not in RULES:
        raise ValueError(f"like-for-like rule {rule!r}: known rules are {RULES}")
    if rule == 1:
        out = [] if a.get("limit") == b.get("limit") else [("limit", a.get("limit"), b.get("limit"))]
        # rows recorded before dtype existed (None) matched any dtype under rule 1
        if a.get("dtype") is not None and b.get("dtype") is not None and a["dtype"] != b["dtype"]:
            out.append(("dtype", a["dtype"], b["dtype"]))
        return out
    sa, sb = setup_of(a), setup_of(b)
    return [(k, sa.get(k), sb.get(k)) for k in sorted(set(sa) | set(sb)) if _text(sa.get(k)) != _text(sb.get(k))]


def comparable(a: dict, b: dict, rule: int = CURRENT) -> bool:
    return not differences(a, b, rule)


def why_not(diffs: list[tuple[str, Any, Any]], a: str = "ticket", b: str = "baseline") -> str:
    """The differing settings in words: `not like for like: limit 50 (ticket) vs full (baseline), ...`."""
    def show(k: str, v: Any) -> str:
        return ("full" if k == "limit" else "unset") if v is None else str(v)

    return "not like for like: " + ", ".join(f"{k} {show(k, x)} ({a}) vs {show(k, y)} ({b})" for k, x, y in diffs)
