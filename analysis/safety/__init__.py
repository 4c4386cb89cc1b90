"""The safety and bias suite through lm-eval, offline: every task YAML tagged `ticketlab_safety`
(CrowS-Pairs with its bias types, BBQ by category (capped, stratified), TruthfulQA mc1/mc2 and a
null-prompt mc2 variant, Winogender), run on the in-memory model with a ticket applied. See
`runner.run_safety`; what each task means is its YAML's metadata (`registry`).

Names are imported on first use: the registry and the metric table (analysis.metric_meta) read task
YAMLs without importing lm-eval or torch, which the runner needs."""

from __future__ import annotations

import importlib

_WHERE = {"BBQ_CATEGORIES": "loaders", "BBQ_PER_CATEGORY": "loaders", "DEFAULT_BATCH_SIZE": "runner",
          "PRIMARY_TASKS": "runner", "QUICK_LIMIT": "runner", "INSTRUCT_QUICK_LIMIT": "runner", "TASKS": "runner", "SafetyResult": "runner",
          "resolve_tasks": "runner", "run_safety": "runner"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(name)
