"""The benchmark registry: what each safety task means, read from its lm-eval YAML alone.

A task belongs to a suite when its YAML carries the suite's lm-eval `tag` (`ticketlab_safety`: the
log-likelihood suite; `ticketlab_instruct`: the generation suite, see SUITE_TAGS). Its
`metadata.ticketlab` block says what Ticket Lab needs to know about it (every key optional):

    metadata:
      version: 1.0
      ticketlab:
        title: CrowS-Pairs (English)      # shown in pickers and reports (default: the task name)
        order: 10                         # listing order of a task family (default 100)
        keep_samples: true                # per-document results go to the ledger (or a list of doc fields)
        breakdown_of: crows_pairs_english # this task is one category of another task ...
        by: bias type                     # ... grouped by this ...
        category: age                     # ... and this is its category
        categories:                       # in-task breakdowns: metric `<metric>_<category>`
          category: [Age, Religion]
        setup: [bbq_per_category]         # run metadata that changes the scores (compared like for like)
        stderr_hook: analysis.safety.bbq.bootstrap_stderrs  # fills stderrs lm-eval cannot give
        derived_from: truthfulqa_mc2      # a Ticket Lab variant of an lm-eval task
        transcript_hook: analysis.safety.ifeval.verdict  # generation tasks: (outcome, reason) of a kept sample
        metrics:
          pct_stereotype: {direction: target, ideal: 0.5, headline: true, label: "..."}
          amb_bias_score: {direction: target, ideal: 0, breakdown: category}

A metric without an entry takes its direction from lm-eval's `higher_is_better`. A breakdown task
without `metrics` takes its parent's (never as headlines).

Folders: the shipped `tasks/`, then every folder in `$TICKETLAB_TASK_PATH` (os.pathsep-separated),
later folders overriding a task of the same name, as lm-eval's `TaskManager(include_path=[...])` does.
The YAML is read here with PyYAML (`!function` kept as text, `include:` merged as lm-eval merges it:
shallowly, the including file's keys winning) because importing lm-eval's task loader costs seconds
and the dashboard reads this registry on every page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pruning.errors import TicketLabError

TAG = "ticketlab_safety"
# A task's suite is its tag: `ticketlab eval --suite safety` runs the log-likelihood tasks,
# `--suite instruct` the generation tasks (IFEval, XSTest), which take minutes, not seconds.
SUITE_TAGS = {TAG: "safety", "ticketlab_instruct": "instruct"}
TASK_DIR = Path(__file__).parent / "tasks"
PATH_ENV = "TICKETLAB_TASK_PATH"
DIRECTIONS = ("higher", "lower", "target")
SAMPLE_DOC_FIELDS = ("bias_type", "category", "context_condition", "question_polarity", "instance", "gender",
                     "gotcha", "sentid", "id", "example_id")
TASK_KEYS = {"title", "order", "keep_samples", "breakdown_of", "by", "category", "categories", "setup",
             "stderr_hook", "derived_from", "metrics", "transcript_hook"}
METRIC_KEYS = {"direction", "ideal", "headline", "label", "breakdown"}


@dataclass(frozen=True)
class MetricInfo:
    name: str
    direction: str | None
    ideal: float | None = None
    headline: bool = False
    label: str = ""
    breakdown: str | None = None  # a key of the task's `categories`: per-category metrics `<name>_<category>`


@dataclass(frozen=True)
class TaskInfo:
    name: str
    path: Path
    title: str
    order: int = 100
    sample_fields: tuple[str, ...] = ()  # empty: no per-document results kept
    breakdown_of: str | None = None
    by: str | None = None
    category: str | None = None
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    stderr_hook: str | None = None
    derived_from: str | None = None
    metrics: dict[str, MetricInfo] = field(default_factory=dict)
    suite: str = "safety"  # from the task's tag (SUITE_TAGS)
    transcript_hook: str | None = None  # generation tasks: record -> (outcome, reason), for transcripts

    @property
    def keep_samples(self) -> bool:
        return bool(self.sample_fields)

    def metric(self, name: str) -> tuple[MetricInfo, str | None, str | None] | None:
        """(metric info, breakdown group, category) for a metric name, per-category names included:
        `amb_bias_score_Age` -> (amb_bias_score's info, "category", "Age")."""
        name = name.split(",", 1)[0]
        if name in self.metrics:
            return self.metrics[name], None, None
        for info in self.metrics.values():
            cats = self.categories.get(info.breakdown or "", ())
            for cat in sorted(cats, key=len, reverse=True):  # Race_x_SES before SES
                if name == f"{info.name}_{cat}":
                    return info, info.breakdown, cat
        return None


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise TicketLabError(f"task YAML {path}: include cycle through {', '.join(map(str, seen))}.")
    try:
        cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (SafeLoader subclass)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise TicketLabError(f"task YAML {path} cannot be read: {e}") from e
    if not isinstance(cfg, dict):
        raise TicketLabError(f"task YAML {path}: expected a mapping of lm-eval task keys.")
    includes = cfg.pop("include", None)
    if includes is None:
        return cfg
    merged: dict = {}
    for inc in includes if isinstance(includes, list) else [includes]:
        inc_path = Path(inc) if Path(inc).is_absolute() else path.parent / inc
        merged.update(_read(inc_path, (*seen, path)))
    merged.update(cfg)
    return merged


def include_paths(extra: list[str | os.PathLike] | None = None) -> list[Path]:
    """The shipped task folder, then `$TICKETLAB_TASK_PATH`'s folders, then `extra`."""
    env = [p for p in os.environ.get(PATH_ENV, "").split(os.pathsep) if p.strip()]
    out = [TASK_DIR]
    for p in [*env, *(extra or [])]:
        path = Path(p).expanduser().resolve()
        if not path.is_dir():
            raise TicketLabError(f"task folder {path} (from ${PATH_ENV} or --task-path) is not a folder of task "
                                 f"YAMLs; fix the path or unset it.")
        if path not in out:
            out.append(path)
    return out


def _yaml_files(paths: list[Path]) -> list[Path]:
    return [f for root in paths for f in sorted(root.glob("**/*.yaml"), key=lambda p: p.as_posix())
            if "__pycache__" not in f.parts]


_cache: dict[tuple, dict[str, TaskInfo]] = {}


def tasks(extra: list[str | os.PathLike] | None = None, suite: str | None = "safety") -> dict[str, TaskInfo]:
    """Every task of `suite` (tagged `ticketlab_safety` for "safety"; None: every suite), in listing
    order (families by `order`, each root first)."""
    every = _all(extra)
    return every if suite is None else {k: v for k, v in every.items() if v.suite == suite}


def _all(extra: list[str | os.PathLike] | None = None) -> dict[str, TaskInfo]:
    paths = include_paths(extra)
    files = _yaml_files(paths)
    stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    if stamp not in _cache:
        if len(_cache) > 16:
            _cache.clear()
        _cache[stamp] = _build(files)
    return _cache[stamp]


def _build(files: list[Path]) -> dict[str, TaskInfo]:
    raw: dict[str, tuple[Path, dict]] = {}
    for f in files:
        cfg = _read(f)
        tags = cfg.get("tag") or []
        tags = [tags] if isinstance(tags, str) else list(tags)
        suite = next((SUITE_TAGS[t] for t in tags if t in SUITE_TAGS), None)
        if suite and isinstance(cfg.get("task"), str):
            raw[cfg["task"]] = (f, {**cfg, "_suite": suite})  # a later folder overrides, as in lm-eval
    infos: dict[str, TaskInfo] = {}
    for name, (path, cfg) in raw.items():
        infos[name] = _info(name, path, cfg, raw)
    for info in infos.values():
        if info.breakdown_of and info.breakdown_of not in infos:
            raise TicketLabError(f"task YAML {info.path}: breakdown_of {info.breakdown_of!r} is not a task tagged "
                                 f"{TAG}; name the task this one is a category of.")

    def family(info: TaskInfo) -> tuple:
        chain = [info]
        while chain[-1].breakdown_of and len(chain) < 8:
            chain.append(infos[chain[-1].breakdown_of])
        root = chain[-1]
        return (root.order, root.name, len(chain) > 1, [c.name for c in reversed(chain)])

    return {i.name: i for i in sorted(infos.values(), key=family)}


def _info(name: str, path: Path, cfg: dict, raw: dict[str, tuple[Path, dict]], depth: int = 0) -> TaskInfo:
    meta = cfg.get("metadata") or {}
    tl = meta.get("ticketlab") or {} if isinstance(meta, dict) else {}

    def bad(problem: str) -> TicketLabError:
        return TicketLabError(f"task YAML {path} (task {name}): metadata.ticketlab {problem}")

    if not isinstance(tl, dict):
        raise bad("must be a mapping")
    unknown = sorted(set(tl) - TASK_KEYS)
    if unknown:
        raise bad(f"has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(TASK_KEYS))}")
    categories = {}
    for group, cats in (tl.get("categories") or {}).items():
        if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            raise bad(f"categories.{group} must be a list of names")
        categories[str(group)] = tuple(cats)
    listed = {m.get("metric"): m for m in cfg.get("metric_list") or [] if isinstance(m, dict)}
    declared = tl.get("metrics")
    if declared is None and tl.get("breakdown_of") in raw:
        if depth > 8:
            raise bad(f"breakdown_of {tl['breakdown_of']!r} makes a cycle")
        parent_path, parent_cfg = raw[tl["breakdown_of"]]
        parent = _info(tl["breakdown_of"], parent_path, {**parent_cfg, "metric_list": []}, raw, depth + 1)
        metrics = {k: MetricInfo(k, v.direction, v.ideal, False, v.label, v.breakdown) for k, v in parent.metrics.items()}
        categories = categories or parent.categories
    else:
        metrics = {}
        for metric, m in (declared or {}).items():
            m = m or {}
            if not isinstance(m, dict) or set(m) - METRIC_KEYS:
                raise bad(f"metrics.{metric}: expected a mapping with keys {', '.join(sorted(METRIC_KEYS))}")
            direction = m.get("direction")
            if direction not in DIRECTIONS:
                raise bad(f"metrics.{metric}.direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
            ideal = m.get("ideal")
            if direction == "target" and not isinstance(ideal, int | float):
                raise bad(f"metrics.{metric}: direction target needs a numeric ideal (the unbiased value)")
            if m.get("breakdown") is not None and m["breakdown"] not in categories:
                raise bad(f"metrics.{metric}.breakdown {m['breakdown']!r} is not a key of categories "
                          f"({', '.join(categories) or 'none given'})")
            if listed and metric not in listed:
                raise bad(f"metrics.{metric}: the task's metric_list has no such metric "
                          f"({', '.join(map(str, listed))})")
            metrics[metric] = MetricInfo(metric, direction, None if ideal is None else float(ideal),
                                         bool(m.get("headline", False)), str(m.get("label", "")), m.get("breakdown"))
    per_category = {f"{i.name}_{c}" for i in metrics.values() for c in categories.get(i.breakdown or "", ())}
    for metric, m in listed.items():  # the rest: lm-eval's own higher_is_better
        if metric not in metrics and metric not in per_category and isinstance(metric, str):
            hib = m.get("higher_is_better")
            metrics[metric] = MetricInfo(metric, None if hib is None else ("higher" if hib else "lower"))
    keep = tl.get("keep_samples", False)
    fields = tuple(keep) if isinstance(keep, list) else (SAMPLE_DOC_FIELDS if keep else ())
    setup = tl.get("setup") or []
    if not isinstance(setup, list):
        raise bad("setup must be a list of run metadata names")
    return TaskInfo(name=name, path=path, title=str(tl.get("title") or name), order=int(tl.get("order", 100)),
                    sample_fields=fields, breakdown_of=tl.get("breakdown_of"), by=tl.get("by"),
                    category=None if tl.get("category") is None else str(tl["category"]), categories=categories,
                    setup=tuple(setup), stderr_hook=tl.get("stderr_hook"), derived_from=tl.get("derived_from"),
                    metrics=metrics, suite=cfg.get("_suite", "safety"), transcript_hook=tl.get("transcript_hook"))


def hook(path: str, key: str):
    """The function a YAML names as `module.function` under `key` (stderr_hook, transcript_hook)."""
    import importlib

    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise TicketLabError(f"{key} {path!r} in a task YAML cannot be imported ({e}); name a function as "
                             f"module.function.") from e


def task(name: str, extra: list[str | os.PathLike] | None = None) -> TaskInfo | None:
    return tasks(extra, suite=None).get(name)


def names(extra: list[str | os.PathLike] | None = None, suite: str | None = "safety") -> tuple[str, ...]:
    return tuple(tasks(extra, suite))


def children(name: str, extra: list[str | os.PathLike] | None = None) -> list[TaskInfo]:
    """The tasks that are categories of `name` (CrowS-Pairs bias types of crows_pairs_english)."""
    return [t for t in tasks(extra, suite=None).values() if t.breakdown_of == name]


def as_dict(info: TaskInfo) -> dict[str, Any]:
    return {"task": info.name, "title": info.title, "path": str(info.path), "breakdown_of": info.breakdown_of,
            "by": info.by, "category": info.category, "keep_samples": info.keep_samples,
            "metrics": {k: v.__dict__ for k, v in info.metrics.items()}}
