"""When two metric rows were measured the same way: the one rule `compare`, the review, the policy rules, the
report, the export bundle and the audit replay share.

A row's *setup* is everything recorded that changes its score: the limit (None = a full run), batch size,
dtype, padding/scoring, and the row's `extra["setup"]` (perplexity window length, BBQ cap, lm-eval data
source, attribution settings, ...). Two rows are like for like when their setups are equal.

Decisions sign the rule they were evaluated under (`DecisionBody.like_for_like`), because the audit replay
evaluates every signed decision again: RULE 2 (this one) for decisions signed since evidence rows carry
their setup; RULE 1 (same limit, same dtype, a missing dtype matching any) for the decisions signed before,
whose stored rows hold nothing else to compare. Rule 1 is kept only so those records replay as they were
signed; nothing new is judged under it.
"""

from __future__ import annotations

import json
import math

SETUP_FIELDS = ("limit", "batch_size", "dtype", "padding")
RULE_1, RULE_2 = 1, 2
RULE = RULE_2  # the rule new comparisons and new decisions use
RULES = (RULE_1, RULE_2)


def setup_of(row: dict) -> dict:
    """The setup of a ledger row (its columns plus `extra["setup"]`), or of an evidence row signed into a
    decision, which carries it as `row["setup"]`."""
    if isinstance(row.get("setup"), dict):
        return row["setup"]
    extra = row.get("extra")
    extra = json.loads(extra) if isinstance(extra, str) else (extra or {})
    return {**{k: row.get(k) for k in SETUP_FIELDS}, **(extra.get("setup") or {})}


# settings that schedule a generation rather than define it. Greedy decoding with per-row attention masks and
# positions gives each prompt the same tokens whatever its batch-mates (measured: the lab's batched decoding equals
# one prompt at a time on 64/64 prompts; vLLM's continuous batching equals the lab's answers on 36/36), so generated
# rows (their setup names max_new_tokens) are compared without them; what defines the text (dtype, limit, max new
# tokens, chat template, data source) is still compared. Scored rows (log-likelihoods) keep them.
SCHEDULING = ("batch_size", "padding")


def compared(row: dict) -> dict:
    """The settings rule 2 compares: the setup, less the scheduling of a generation."""
    s = dict(setup_of(row))
    if "max_new_tokens" in s:
        for k in SCHEDULING:
            s.pop(k, None)
    return s


def setup_key(row: dict) -> str:
    """A setup as one hashable string: rows with equal keys are like for like (rule 2)."""
    return json.dumps(compared(row), sort_keys=True, default=str)


def differences(a: dict, b: dict, rule: int = RULE) -> dict[str, list]:
    """setting -> [a's value, b's value] for every setting that keeps two rows from being like for like
    ({} when they are)."""
    if rule == RULE_1:
        out = {"limit": [a["limit"], b["limit"]]} if a["limit"] != b["limit"] else {}
        if a["dtype"] is not None and b["dtype"] is not None and a["dtype"] != b["dtype"]:
            out["dtype"] = [a["dtype"], b["dtype"]]
        return out
    sa, sb = compared(a), compared(b)
    return {k: [sa.get(k), sb.get(k)] for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)}


def same(a: dict, b: dict, rule: int = RULE) -> bool:
    return not differences(a, b, rule)


def why_not(differs: dict[str, list], a: str = "ticket", b: str = "baseline") -> str:
    """One line naming the settings that differ and their values on each side."""
    listed = ", ".join(f"{k} {v[0]!r} vs {v[1]!r}" for k, v in differs.items())
    return f"not like for like: measured with different settings ({a} vs {b}: {listed})"


def setup_problem(setup) -> str:
    """Why a setup signed into a decision's evidence row is malformed ('' when it is well-formed): a JSON
    object holding the four recorded settings, of plain values."""
    if not isinstance(setup, dict) or not all(isinstance(k, str) for k in setup):
        return "its setup is not an object of named settings"
    if not set(SETUP_FIELDS) <= set(setup):
        return f"its setup lacks {', '.join(sorted(set(SETUP_FIELDS) - set(setup)))}"
    if not all(_plain(v) for v in setup.values()):
        return "its setup holds a value that is not a plain number, string, boolean or null"
    return ""


def _plain(v) -> bool:
    if isinstance(v, list):
        return all(_plain(x) for x in v)
    return v is None or isinstance(v, str | bool | int) or (isinstance(v, float) and math.isfinite(v))
