"""Review policies: a TOML file of rules, validated with the line of every problem.

The shipped `default_policy.toml` documents every key. `load_policy(None)` uses `$TICKETLAB_POLICY`,
then `<state>/policy.toml`, then the shipped default.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pruning import settings
from pruning.errors import TicketLabError

DEFAULT_POLICY = Path(__file__).with_name("default_policy.toml")

NUM, STR, BOOL, STRLIST, FLOORS = "number", "string", "boolean", "list of strings", "table of task/metric = number"

# section -> key -> type; keys marked required must be present when the section is.
SCHEMA: dict[str, dict[str, str]] = {
    "policy": {"name": STR, "description": STR, "stderr_k": NUM},
    "evidence": {"required": STRLIST, "full_runs": BOOL},
    "perplexity": {"task": STR, "metric": STR, "max_increase_pct": NUM},
    "crows_pairs": {"tasks": STR, "metric": STR, "ideal": NUM, "max_increase": NUM},
    "bbq": {"tasks": STR, "metrics": STR, "ideal": NUM, "max_increase": NUM},
    "truthfulqa": {"floors": FLOORS},
    "efficiency": {"min_sparsity": NUM, "min_speedup": NUM, "speed_task": STR, "speed_metric": STR},
    "duties": {"creator_may_approve": BOOL},
}
REQUIRED = {"perplexity": ("max_increase_pct",), "crows_pairs": ("max_increase",), "bbq": ("max_increase",),
            "truthfulqa": ("floors",)}
DEFAULTS: dict[str, dict[str, Any]] = {
    "policy": {"name": None, "description": "", "stderr_k": 1.0},
    "evidence": {"required": [], "full_runs": True},
    "perplexity": {"task": "wikitext*", "metric": "*perplexity"},
    "crows_pairs": {"tasks": "crows_pairs_english*", "metric": "pct_stereotype", "ideal": 0.5},
    "bbq": {"tasks": "bbq*", "metrics": "*bias_score*", "ideal": 0.0},
    "efficiency": {"speed_task": "*", "speed_metric": "*tokens_per_s*"},
    "duties": {"creator_may_approve": False},
}
NON_NEGATIVE = {("policy", "stderr_k"), ("perplexity", "max_increase_pct"), ("crows_pairs", "max_increase"),
                ("bbq", "max_increase"), ("efficiency", "min_speedup")}


@dataclass
class Policy:
    name: str
    path: str
    sha256: str
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # present sections, defaults filled in

    def get(self, section: str) -> dict[str, Any] | None:
        return self.sections.get(section)

    @property
    def stderr_k(self) -> float:
        return float(self.sections["policy"]["stderr_k"])

    @property
    def full_runs(self) -> bool:
        return bool(self.sections["evidence"]["full_runs"])

    @property
    def creator_may_approve(self) -> bool:
        return bool(self.sections["duties"]["creator_may_approve"])

    def summary(self) -> dict:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "rules": self.sections}


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

    def fail(section: str, key: str | None, problem: str) -> TicketLabError:
        line = _line_of(lines, section, key)
        where = f"line {line}" if line else "(line not found)"
        name = f"[{section}] {key}" if key else f"[{section}]"
        return TicketLabError(f"policy file {path}, {where}: {name}: {problem}")

    sections: dict[str, dict[str, Any]] = {}
    for section, body in data.items():
        if section not in SCHEMA:
            raise fail(section, None, f"unknown section; known sections: {', '.join(SCHEMA)}")
        if not isinstance(body, dict):
            raise fail(section, None, "must be a table ([section] with key = value lines)")
        for key, value in body.items():
            kind = SCHEMA[section].get(key)
            if kind is None:
                raise fail(section, key, f"unknown key; [{section}] takes {', '.join(SCHEMA[section])}")
            problem = _type_problem(kind, value)
            if problem is None and (section, key) in NON_NEGATIVE and value < 0:
                problem = f"must be >= 0, got {value}"
            if problem is None and key == "min_sparsity" and not 0 <= value < 1:
                problem = f"must be in [0, 1), got {value}"
            if problem:
                raise fail(section, key, problem)
        for key in REQUIRED.get(section, ()):
            if key not in body:
                raise fail(section, None, f"missing required key {key!r}")
        sections[section] = {**DEFAULTS.get(section, {}), **body}
    for section in ("policy", "evidence", "duties"):  # always present, so their settings are explicit
        sections.setdefault(section, dict(DEFAULTS[section]))
    name = sections["policy"].get("name") or Path(path).stem
    sections["policy"]["name"] = name
    digest = sha256 or hashlib.sha256(text.encode()).hexdigest()
    return Policy(name=name, path=path, sha256=digest, sections=sections)


def _type_problem(kind: str, value: Any) -> str | None:
    def is_num(v):
        return isinstance(v, int | float) and not isinstance(v, bool)

    if kind == NUM and not is_num(value):
        return f"must be a number, got {type(value).__name__} {value!r}"
    if kind == STR and not isinstance(value, str):
        return f"must be a string, got {type(value).__name__} {value!r}"
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
                return f"floor for {k!r} must be a number, got {v!r}"
    return None


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _line_of(lines: list[str], section: str, key: str | None) -> int | None:
    """1-based line of `key` inside `[section]` (or of the header when key is None); tomllib gives no
    positions for values it parsed, so find them in the text."""
    current = None
    key_re = re.compile(r'^\s*("?)' + re.escape(key or "") + r'\1\s*=') if key else None
    for i, line in enumerate(lines, 1):
        m = _HEADER.match(line)
        if m:
            current = m.group(1).strip().strip('"')
            if key is None and current == section:
                return i
            continue
        if key_re and current == section and key_re.match(line):
            return i
        if key is None and current is None and re.match(r'^\s*"?' + re.escape(section) + r'"?\s*=', line):
            return i  # a top-level `section = value` instead of a table
    return None
