"""Policy files in the old vocabulary (one section per benchmark: `[perplexity]`, `[crows_pairs]`,
`[bbq]`, `[truthfulqa]`), validated as before and translated to the generic rule kinds.

Translation keeps what each old section meant, to the number:
- `[perplexity] task, metric, max_increase_pct` -> a `max_increase_pct` rule on `task/metric`;
- `[crows_pairs]` / `[bbq] tasks, metric(s), ideal, max_increase` -> `max_distance_growth` with the same
  ideal, `limit` = `[policy] stderr_k` (stderr units) and `slack` = `max_increase`;
- `[truthfulqa] floors = {"task/metric" = x}` -> one `floor` rule per entry;
- `[evidence] required, full_runs` -> an `evidence_required` rule and `[policy] full_runs`.
Each translated rule keeps its old section's name, so results read as before ("perplexity", "bbq").
"""

from __future__ import annotations

import math
from typing import Any

from pruning.text import control_problem

NUM, STR, BOOL, STRLIST, FLOORS = "number", "string", "boolean", "list of strings", "table of task/metric = number"

SCHEMA: dict[str, dict[str, str]] = {
    "evidence": {"required": STRLIST, "full_runs": BOOL},
    "perplexity": {"task": STR, "metric": STR, "max_increase_pct": NUM},
    "crows_pairs": {"tasks": STR, "metric": STR, "ideal": NUM, "max_increase": NUM},
    "bbq": {"tasks": STR, "metrics": STR, "ideal": NUM, "max_increase": NUM},
    "truthfulqa": {"floors": FLOORS},
}
SECTIONS = ("perplexity", "crows_pairs", "bbq", "truthfulqa")  # their presence marks an old-format file
REQUIRED = {"perplexity": ("max_increase_pct",), "crows_pairs": ("max_increase",), "bbq": ("max_increase",),
            "truthfulqa": ("floors",)}
DEFAULTS: dict[str, dict[str, Any]] = {
    "evidence": {"required": [], "full_runs": True},
    "perplexity": {"task": "wikitext*", "metric": "*perplexity"},
    "crows_pairs": {"tasks": "crows_pairs_english*", "metric": "pct_stereotype", "ideal": 0.5},
    "bbq": {"tasks": "bbq*", "metrics": "*bias_score*", "ideal": 0.0},
}
NON_NEGATIVE = {("perplexity", "max_increase_pct"), ("crows_pairs", "max_increase"), ("bbq", "max_increase")}


def is_legacy(data: dict) -> bool:
    return any(s in data for s in SECTIONS)


def translate(sections: dict[str, dict[str, Any]], stderr_k: float) -> list[dict[str, Any]]:
    """Rule tables (as a new-format file would spell them) for validated old sections, in the old order."""
    rules: list[dict[str, Any]] = []
    ev = sections.get("evidence")
    if ev and ev["required"]:
        rules.append({"name": "evidence", "kind": "evidence_required", "metrics": list(ev["required"])})
    if "perplexity" in sections:
        s = sections["perplexity"]
        rules.append({"name": "perplexity", "kind": "max_increase_pct", "metrics": [f"{s['task']}/{s['metric']}"],
                      "limit": s["max_increase_pct"]})
    for name, key in (("crows_pairs", "metric"), ("bbq", "metrics")):
        if name in sections:
            s = sections[name]
            rules.append({"name": name, "kind": "max_distance_growth", "metrics": [f"{s['tasks']}/{s[key]}"],
                          "ideal": s["ideal"], "limit": stderr_k, "slack": s["max_increase"]})
    if "truthfulqa" in sections:
        for pattern, floor in sections["truthfulqa"]["floors"].items():
            rules.append({"name": "truthfulqa", "kind": "floor", "metrics": [pattern], "limit": floor})
    return rules


def type_problem(kind: str, value: Any) -> str | None:
    def is_num(v):  # TOML has nan and inf; a limit of nan passes or fails everything silently
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if kind == NUM and not is_num(value):
        return f"must be a {'finite ' if isinstance(value, float) else ''}number, got {type(value).__name__} {value!r}"
    if kind == STR and not isinstance(value, str):
        return f"must be a string, got {type(value).__name__} {value!r}"
    if kind == STR and control_problem(value, "it"):  # names and descriptions are shown in terminals and pages
        return control_problem(value, "must be plain text: it")
    if kind == BOOL and not isinstance(value, bool):
        return f"must be true or false, got {value!r}"
    if kind == STRLIST and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return f"must be a list of strings, got {value!r}"
    if kind == FLOORS:
        if not isinstance(value, dict) or not value:
            return 'must be a table like { "truthfulqa_mc2/acc" = 0.35 }'
        for k, v in value.items():
            if "/" not in k:
                return f"key {k!r} must be \"task/metric\""
            if not is_num(v):
                return f"floor for {k!r} must be a finite number, got {v!r}"
    return None
