"""Run the safety and bias suite through lm-eval's `simple_evaluate` on the in-memory model.

The suite is every task tagged `ticketlab_safety` in the task folders (analysis.safety.benchmark_registry: the
shipped `tasks/` and `$TICKETLAB_TASK_PATH`); what the runner does per task (keep per-document
samples, fill missing stderrs, record run settings in the setup) is read from the task's YAML metadata.

Offline (the default) those folders are the only tasks lm-eval indexes
(`TaskManager(include_path=[...], include_defaults=False)`), their data comes from the data setting, and
the hub is switched off for the duration (`HF_HUB_OFFLINE`, `HF_DATASETS_OFFLINE`, also in the already
imported libraries' constants). `hub=True` runs lm-eval's built-in tasks of the same names on their hub
datasets instead (needs the network; BBQ then has all eleven categories and no cap).

lm-eval's response cache is never used (no `use_cache`, no request cache): it is keyed by request
only, so one ticket's answers would serve another's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from pruning.errors import TicketLabError
from pruning.ticket import Ticket, applied

from .. import uncertainty
from . import benchmark_registry
from .loaders import BBQ_PER_CATEGORY
from .scoring import DEFAULT_ROW_TOKENS, SCORING, make_lm

TASK_DIR = benchmark_registry.TASK_DIR
DEFAULT_BATCH_SIZE = 4  # packed rows (of up to 512 tokens) per forward pass; see benchmarks/eval_speed.py
QUICK_LIMIT = 20  # the stated quick subset: the first 20 documents of every task (BBQ interleaves categories)
# the instruct suite's quick subset: 18 IFEval prompts and 18 XSTest prompts (one of each prompt type,
# safe and unsafe); measured in benchmarks/generation.py to stay under 3 minutes on 2 cores
INSTRUCT_QUICK_LIMIT = 18
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1"}

Progress = Callable[[int, int, str], None]


@dataclass
class SafetyResult:
    results: dict[str, dict[str, float | None]]  # task -> {"metric,filter": value, "metric_stderr,filter": ...}
    n_samples: dict[str, int]
    higher_is_better: dict[str, dict[str, bool]]
    samples: dict[str, list[dict]]  # compact per-document records of the tasks that keep samples
    config: dict = field(default_factory=dict)
    n_docs: dict[str, dict[str, int]] = field(default_factory=dict)  # task -> metric -> documents it rests on


def __getattr__(name: str):
    # read from the task YAMLs when asked, so a task folder added at run time is seen
    if name == "TASKS":
        return benchmark_registry.names()
    if name == "PRIMARY_TASKS":  # tasks whose documents go to the ledger; the others are subsets of these
        return tuple(t.name for t in benchmark_registry.tasks().values() if t.keep_samples)
    raise AttributeError(name)


def resolve_tasks(names: list[str] | str | None, suite: str = "safety") -> list[str]:
    known = benchmark_registry.names(suite=suite)
    if names is None:
        return list(known)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        tag = next(t for t, s in benchmark_registry.SUITE_TAGS.items() if s == suite)
        raise TicketLabError(f"unknown {suite} task(s) {', '.join(unknown)}; choose from: {', '.join(known)} "
                             f"(tasks tagged {tag} in {', '.join(map(str, benchmark_registry.include_paths()))}).")
    if not names:
        raise TicketLabError(f"no {suite} tasks given.")
    return list(dict.fromkeys(names))


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """No hub access inside the block: the environment and the constants libraries read at import."""
    saved_env = {k: os.environ.get(k) for k in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    patched = []
    for module, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                         ("datasets.config", "HF_DATASETS_OFFLINE"), ("transformers.utils.hub", "_is_offline_mode")):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, attr):
            patched.append((mod, attr, getattr(mod, attr)))
            setattr(mod, attr, True)
    try:
        yield
    finally:
        for mod, attr, value in patched:
            setattr(mod, attr, value)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Our progress callback reports the scoring; lm-eval's per-task bars, its warnings about passing a
    loaded model, and numpy's empty-slice warnings (BBQ aggregations under a small --limit) are noise."""
    import datasets
    import lm_eval.api.task as lm_task

    loggers = [logging.getLogger(n) for n in ("lm-eval", "lm_eval", "datasets", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    task_tqdm = lm_task.tqdm
    lm_task.tqdm = functools.partial(task_tqdm, disable=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        lm_task.tqdm = task_tqdm
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if bars:
            datasets.enable_progress_bars()


def _num(value) -> float | None:
    if value is None or isinstance(value, str):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value


def _compact(sample: dict, fields: tuple[str, ...]) -> dict:
    """What the ledger keeps of a logged lm-eval sample: scores, labels and the YAML's doc fields, not prompts."""
    doc = sample["doc"]
    resps = sample["filtered_resps"]
    if resps and isinstance(resps[0], str):  # a generated completion (kept for the transcript set)
        out = {"completion": resps[0], "prompt": sample["arguments"][0][0],
               "max_gen_toks": (sample["arguments"][0][1] or {}).get("max_gen_toks")}
    else:
        out = {"target": _jsonable(sample["target"]), "lls": [round(float(r[0]), 5) for r in resps]}
    out.update({k: _jsonable(doc[k]) for k in fields if k in doc})
    for metric in sample.get("metrics", []):
        out[metric] = _jsonable(sample[metric])
    return out


def _hook(path: str):
    return benchmark_registry.hook(path, "stderr_hook")


def run_safety(loaded, ticket: Ticket | None = None, tasks: list[str] | str | None = None, limit: int | None = None,
               batch_size: int = DEFAULT_BATCH_SIZE, bbq_per_category: int | None = BBQ_PER_CATEGORY,
               hub: bool = False, progress: Progress | None = None,
               row_tokens: int = DEFAULT_ROW_TOKENS, plan_only: bool = False, suite: str = "safety",
               chat: bool = True, gen_batch_size: int | None = None, lm=None) -> SafetyResult:
    """Run the named tasks (default: the whole suite) on `loaded` with `ticket` applied in place.

    Generation tasks (`suite="instruct"`) decode greedily through analysis.generation with the model's
    chat template (`chat=False`: the plain prompt), `gen_batch_size` prompts at a time; the checkpoint
    files of a finished run are in `config["partials"]` for the caller to remove once it is recorded.

    `plan_only` (for benchmarks) builds and packs every request but runs no model: the metrics are
    meaningless, `config["scoring"]` says how many tokens a real run would compute. `lm`: an lm-eval model
    that scores instead of `loaded.model` (e.g. `local-completions` against a served artifact,
    analysis.serving.shipped); `ticket` must then be None (the artifact already is the ticket)."""
    names = resolve_tasks(tasks, suite)
    infos = benchmark_registry.tasks(suite=None)
    if hub:  # lm-eval's hub tasks: Ticket Lab's own variants have no hub counterpart
        own = [n for n in names if infos[n].derived_from]
        if own and tasks is not None:
            raise TicketLabError(f"{', '.join(own)}: Ticket Lab's own task(s), not on the hub; run them without --hub.")
        names = [n for n in names if n not in own]
    folders = [str(p) for p in benchmark_registry.include_paths()]
    if limit is not None and limit < 1:
        raise TicketLabError(f"limit must be at least 1 document per task (got {limit}).")
    if batch_size < 1:
        raise TicketLabError(f"batch size must be at least 1 (got {batch_size}).")
    guard = contextlib.nullcontext() if hub else offline()
    with guard, _quiet(), applied(loaded, ticket):
        import lm_eval
        from lm_eval.tasks import TaskManager

        metadata = {"bbq_per_category": bbq_per_category or 0}
        tm = TaskManager(metadata=metadata) if hub else TaskManager(
            include_path=folders, include_defaults=False, metadata=metadata)
        if lm is None:
            lm = make_lm(loaded.model, loaded.tokenizer, batch_size=batch_size, row_tokens=row_tokens,
                         progress=progress, plan_only=plan_only)
            lm.identity = f"{loaded.weights_sha256}:{ticket.id if ticket is not None else 'dense'}"
            lm.chat, lm.gen_batch_size = chat, gen_batch_size
        out = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=tm, limit=limit, log_samples=True,
                                      bootstrap_iters=1000, use_cache=None, cache_requests=False)
    if out is None:
        raise TicketLabError("lm-eval returned no results.")
    results: dict[str, dict[str, float | None]] = {}
    for task in names:
        raw = out["results"].get(task, {})
        results[task] = {k: _num(v) for k, v in raw.items() if "," in k}
    n_docs: dict[str, dict[str, int]] = {}  # task -> metric -> documents it rests on (where a hook counted)
    for task in names:
        hook = None if hub else infos[task].stderr_hook
        logged = out.get("samples", {}).get(task)
        if hook and logged:
            metrics = [k.split(",")[0] for k in results[task] if "_stderr" not in k]
            for metric, est in _hook(hook)(logged, metrics).items():
                if not isinstance(est, uncertainty.Estimate):  # a hook may give plain numbers
                    est = uncertainty.Estimate(_num(est), None)
                if results[task].get(f"{metric}_stderr,none") is None:
                    results[task][f"{metric}_stderr,none"] = est.se
                if est.n is not None:
                    n_docs.setdefault(task, {})[metric] = est.n
    samples = {t: [{"doc_id": s["doc_id"], **_compact(s, infos[t].sample_fields)}
                   for s in out.get("samples", {}).get(t, [])] for t in names if infos[t].keep_samples}
    run_meta = {"bbq_per_category": None if hub else (bbq_per_category or None)}
    task_setup = {t: {k: run_meta.get(k) for k in infos[t].setup} for t in names if infos[t].setup}
    n_samples = {t: int(out.get("n-samples", {}).get(t, {}).get("effective", 0)) for t in names}
    stats = getattr(lm, "stats", None)
    config = {"source": "hub" if hub else "local", "limit": limit, "batch_size": batch_size,
              "dtype": str(loaded.dtype), "padding": SCORING if getattr(lm, "shared", False) else "right",
              "bbq_per_category": None if hub else (bbq_per_category or None), "tasks": names,
              "lm_eval": lm_eval.__version__, "versions": out.get("versions", {}),
              "scoring": stats.to_dict() if stats else None, "row_tokens": row_tokens,
              "task_setup": task_setup, "task_folders": folders}
    # which of a YAML's listed categories had documents (BBQ: those with a data file), per task and group
    config["categories"] = {t: {g: [c for c in cats if c in {s["doc"].get(g) for s in out["samples"][t]}]
                                for g, cats in infos[t].categories.items()}
                            for t in names if infos[t].categories and out.get("samples", {}).get(t)}
    config["stderr_hooks"] = {t: infos[t].stderr_hook for t in names if infos[t].stderr_hook and not hub}
    gens = getattr(lm, "generations", [])
    if gens:
        config["generation"] = {"settings": [g.settings for g in gens], "prompts": sum(len(g.prompts) for g in gens),
                                "prompt_tokens": sum(g.prompt_tokens for g in gens),
                                "generated_tokens": sum(g.generated_tokens for g in gens),
                                "seconds": sum(g.seconds for g in gens), "resumed": sum(g.resumed for g in gens),
                                "batch_size": gen_batch_size, "chat_template": chat}
        config["partials"] = [str(p) for p in getattr(lm, "partials", [])]
    return SafetyResult(results=results, n_samples=n_samples, higher_is_better=out.get("higher_is_better", {}),
                        samples=samples, config=config, n_docs=n_docs)
