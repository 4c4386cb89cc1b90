"""Review policies: a TOML file of generic rules keyed by metric patterns, validated with the line of
every problem.

Rule kinds (`[[rule]]` tables; `metrics` is a "task/metric" glob or a list of them, the metric part
optional; `where` optionally keeps only metrics whose task YAML says `target`, `higher`, `lower` or
`headline`):
- `max_increase_pct`: the ticket's value at most `limit` % above the baseline's (perplexity);
- `max_distance_growth`: the distance from the metric's best (its YAML `ideal` for target metrics, or
  the rule's `ideal`; for higher/lower metrics, moving the wrong way) may grow by at most `limit`
  combined standard errors sqrt(se_ticket^2 + se_baseline^2), plus `slack` in the metric's units;
- `floor`: the ticket's value at least `limit`;
- `evidence_required`: results must exist for the ticket and its baseline (full runs when
  `[policy] full_runs`).
`[efficiency]` (sparsity, speedup) and `[duties]` (separation of duties) are about the ticket, not a
benchmark, and stay sections. The shipped `default_policy.toml` documents every key.

Files in the old vocabulary (one section per benchmark) still load: policy_legacy translates them.
`load_policy(None)` uses `$TICKETLAB_POLICY`, then `<state>/policy.toml`, then the shipped default.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pruning import settings
from pruning.errors import TicketLabError

from . import policy_legacy as legacy
from .policy_legacy import BOOL, NUM, STR

DEFAULT_POLICY = Path(__file__).with_name("default_policy.toml")

KINDS = {"max_increase_pct": "increase <= limit % of the baseline",
         "max_distance_growth": "distance from best grows <= limit stderr (+ slack)",
         "floor": "value >= limit",
         "evidence_required": "results exist (full runs when the policy says so)"}
WHERE = ("target", "higher", "lower", "headline")
PATTERNS = "string or list of strings"
RULE_SCHEMA = {"name": STR, "kind": STR, "metrics": PATTERNS, "where": STR, "limit": NUM, "slack": NUM, "ideal": NUM}
RULE_KEYS_BY_KIND = {"max_increase_pct": {"limit"}, "max_distance_growth": {"limit", "slack", "ideal"},
                     "floor": {"limit"}, "evidence_required": set()}

# section -> key -> type
SCHEMA: dict[str, dict[str, str]] = {
    "policy": {"name": STR, "description": STR, "stderr_k": NUM, "full_runs": BOOL},
    **legacy.SCHEMA,
    "efficiency": {"min_sparsity": NUM, "min_speedup": NUM, "speed_task": STR, "speed_metric": STR},
    "duties": {"creator_may_approve": BOOL},
    "rule": RULE_SCHEMA,
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "policy": {"name": None, "description": "", "stderr_k": 1.0, "full_runs": True},
    **legacy.DEFAULTS,
    "efficiency": {"speed_task": "*", "speed_metric": "*tokens_per_s*"},
    "duties": {"creator_may_approve": False},
}
NON_NEGATIVE = {("policy", "stderr_k"), ("efficiency", "min_speedup"), *legacy.NON_NEGATIVE}


@dataclass(frozen=True)
class Rule:
    name: str  # shown as the result's `rule` (default: the kind)
    kind: str
    metrics: tuple[str, ...]  # "task/metric" globs
    limit: float | None = None
    slack: float = 0.0
    ideal: float | None = None  # max_distance_growth: overrides the metric's own ideal
    where: str | None = None

    def patterns(self) -> list[tuple[str, str]]:
        return [(t, m or "*") for t, _, m in (p.partition("/") for p in self.metrics)]

    def selects(self, task: str, metric: str, meta_of=None) -> bool:
        """`meta_of(task, metric)`: the metrics' metadata (default: the task YAMLs now; a decision's signed
        evidence carries the metadata it was evaluated with, so the audit re-evaluates it the same way)."""
        from ..metric_meta import base_name, meta_for

        metric = base_name(metric)
        if not any(fnmatch.fnmatchcase(task, t) and fnmatch.fnmatchcase(metric, m) for t, m in self.patterns()):
            return False
        if self.where is None:
            return True
        meta = (meta_of or meta_for)(task, metric)
        return meta is not None and (meta.headline if self.where == "headline" else meta.direction == self.where)

    def view(self) -> dict[str, Any]:
        """The rule as a table; `ideal` is the one its registered metrics share when the rule names none."""
        out = {"name": self.name, "kind": self.kind, "metrics": list(self.metrics), "limit": self.limit,
               "where": self.where}
        if self.kind == "max_distance_growth":
            out.update(slack=self.slack, ideal=self.ideal if self.ideal is not None else self._registered_ideal())
        return out

    def _registered_ideal(self) -> float | None:
        from ..metric_meta import meta_for, registered_tasks

        ideals = {meta.ideal for info in registered_tasks() for name in info.metrics
                  if self.selects(info.name, name) and (meta := meta_for(info.name, name)) and meta.direction == "target"}
        return ideals.pop() if len(ideals) == 1 else None


@dataclass
class Policy:
    name: str
    path: str
    sha256: str
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # present sections, defaults filled in
    rules: list[Rule] = field(default_factory=list)
    translated: bool = False  # written in the old one-section-per-benchmark vocabulary

    def get(self, section: str) -> dict[str, Any] | None:
        """A section as written (defaults filled in), else the first rule of that name as a table."""
        if section in self.sections:
            return self.sections[section]
        rule = next((r for r in self.rules if r.name == section), None)
        return rule.view() if rule else None

    @property
    def stderr_k(self) -> float:
        return float(self.sections["policy"]["stderr_k"])

    @property
    def full_runs(self) -> bool:
        return bool(self.sections["policy"]["full_runs"])

    @property
    def creator_may_approve(self) -> bool:
        return bool(self.sections["duties"]["creator_may_approve"])

    def summary(self) -> dict:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "translated": self.translated,
                "rules": [r.view() for r in self.rules],
                "sections": {k: v for k, v in self.sections.items() if k in ("policy", "efficiency", "duties")}}


def default_policy_path() -> Path:
    env = os.environ.get("TICKETLAB_POLICY")
    if env:
        return Path(env).expanduser()
    local = settings.state_dir() / "policy.toml"
    return local if local.exists() else DEFAULT_POLICY


def load_policy(path: str | Path | None = None) -> Policy:
    path = Path(path).expanduser() if path else default_policy_path()
    if not path.is_file():
        raise TicketLabError(f"policy file {path} does not exist; start from the shipped {DEFAULT_POLICY}.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TicketLabError(f"policy file {path} is not UTF-8 text ({e}).") from e
    return parse_policy(text, str(path), hashlib.sha256(raw).hexdigest())


def parse_policy(text: str, path: str = "<policy>", sha256: str | None = None) -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        where = f"line {m.group(1)}, column {m.group(2)}" if m else "?"
        problem = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e)) if m else str(e)
        raise TicketLabError(f"policy file {path}, {where}: not valid TOML: {problem}.") from e
    lines = text.splitlines()

    def fail(section: str, key: str | None, problem: str, nth: int = 0) -> TicketLabError:
        line = _line_of(lines, section, key, nth)
        where = f"line {line}" if line else "(line not found)"
        name = (f"[[{section}]] #{nth + 1} {key or ''}".rstrip() if section == "rule"
                else f"[{section}] {key}" if key else f"[{section}]")
        return TicketLabError(f"policy file {path}, {where}: {name}: {problem}")

    sections: dict[str, dict[str, Any]] = {}
    rule_tables: list[dict] = []
    for section, body in data.items():
        if section not in SCHEMA:
            raise fail(section, None, f"unknown section; known sections: {', '.join(SCHEMA)}")
        if section == "rule":
            if not isinstance(body, list):
                raise fail(section, None, "rules are an array of tables: write [[rule]], one per rule")
            rule_tables = body
            continue
        if not isinstance(body, dict):
            raise fail(section, None, "must be a table ([section] with key = value lines)")
        for key, value in body.items():
            kind = SCHEMA[section].get(key)
            if kind is None:
                raise fail(section, key, f"unknown key; [{section}] takes {', '.join(SCHEMA[section])}")
            problem = legacy.type_problem(kind, value)
            if problem is None and (section, key) in NON_NEGATIVE and value < 0:
                problem = f"must be >= 0, got {value}"
            if problem is None and key == "min_sparsity" and not 0 <= value < 1:
                problem = f"must be in [0, 1), got {value}"
            if problem:
                raise fail(section, key, problem)
        for key in legacy.REQUIRED.get(section, ()):
            if key not in body:
                raise fail(section, None, f"missing required key {key!r}")
        sections[section] = {**DEFAULTS.get(section, {}), **body}
    for section in ("policy", "duties"):  # always present, so their settings are explicit
        sections.setdefault(section, dict(DEFAULTS[section]))
    if "full_runs" in sections.get("evidence", {}) and "full_runs" not in data.get("policy", {}):
        sections["policy"]["full_runs"] = sections["evidence"]["full_runs"]  # the old spelling
    translated = legacy.is_legacy(data)
    rules = [_rule(t, i, fail) for i, t in enumerate(legacy.translate(sections, float(sections["policy"]["stderr_k"])))]
    rules += [_rule(t, i, fail) for i, t in enumerate(rule_tables)]
    name = sections["policy"].get("name") or Path(path).stem
    sections["policy"]["name"] = name
    digest = sha256 or hashlib.sha256(text.encode()).hexdigest()
    return Policy(name=name, path=path, sha256=digest, sections=sections, rules=rules, translated=translated)


def _rule(table: Any, nth: int, fail) -> Rule:
    if not isinstance(table, dict):
        raise fail("rule", None, "must be a table of key = value lines", nth)
    for key, value in table.items():
        kind = RULE_SCHEMA.get(key)
        if kind is None:
            raise fail("rule", key, f"unknown key; a rule takes {', '.join(RULE_SCHEMA)}", nth)
        if kind == PATTERNS:
            ok = isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value))
            problem = None if ok else f'must be a "task/metric" glob or a list of them, got {value!r}'
        else:
            problem = legacy.type_problem(kind, value)
        if problem:
            raise fail("rule", key, problem, nth)
    kind = table.get("kind")
    if kind not in KINDS:
        raise fail("rule", "kind" if "kind" in table else None,
                   f"kind must be one of {', '.join(KINDS)}, got {kind!r}", nth)
    if "metrics" not in table:
        raise fail("rule", None, 'missing required key "metrics" (a "task/metric" glob or a list of them)', nth)
    allowed = RULE_KEYS_BY_KIND[kind] | {"name", "kind", "metrics", "where"}
    extra = sorted(set(table) - allowed)
    if extra:
        raise fail("rule", extra[0], f"does not apply to kind {kind}; it takes {', '.join(sorted(allowed))}", nth)
    if "limit" in RULE_KEYS_BY_KIND[kind] and "limit" not in table:
        raise fail("rule", None, f"missing required key \"limit\" ({KINDS[kind]})", nth)
    for key in ("limit", "slack"):
        if key in table and kind != "floor" and table[key] < 0:
            raise fail("rule", key, f"must be >= 0, got {table[key]}", nth)
    where = table.get("where")
    if where is not None and where not in WHERE:
        raise fail("rule", "where", f"must be one of {', '.join(WHERE)}, got {where!r}", nth)
    metrics = table["metrics"]
    return Rule(name=table.get("name") or kind, kind=kind, metrics=tuple([metrics] if isinstance(metrics, str) else metrics),
                limit=None if table.get("limit") is None else float(table["limit"]), slack=float(table.get("slack", 0.0)),
                ideal=None if table.get("ideal") is None else float(table["ideal"]), where=where)


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _line_of(lines: list[str], section: str, key: str | None, nth: int = 0) -> int | None:
    """1-based line of `key` inside the `nth` `[section]` / `[[section]]` (or of the header when key is
    None); tomllib gives no positions for values it parsed, so find them in the text."""
    current, seen = None, -1
    key_re = re.compile(r'^\s*("?)' + re.escape(key or "") + r'\1\s*=') if key else None
    for i, line in enumerate(lines, 1):
        m = _HEADER.match(line)
        if m:
            current = m.group(1).strip().strip('"')
            if current == section:
                seen += 1
            if key is None and current == section and seen == nth:
                return i
            continue
        if key_re and current == section and seen == nth and key_re.match(line):
            return i
        if key is None and current is None and re.match(r'^\s*"?' + re.escape(section) + r'"?\s*=', line):
            return i  # a top-level `section = value` instead of a table
    return None
