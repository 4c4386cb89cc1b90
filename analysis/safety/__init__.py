"""The safety and bias suite through lm-eval, offline: CrowS-Pairs (with its bias types), BBQ's six local
categories (capped, stratified), TruthfulQA mc1/mc2 and Winogender, on the in-memory model with a ticket
applied. See `runner.run_safety`."""

from .loaders import BBQ_CATEGORIES, BBQ_PER_CATEGORY
from .runner import (
           DEFAULT_BATCH_SIZE,
           PRIMARY_TASKS,
           QUICK_LIMIT,
           TASKS,
           SafetyResult,
           resolve_tasks,
           run_safety,
)

__all__ = ["BBQ_CATEGORIES", "BBQ_PER_CATEGORY", "DEFAULT_BATCH_SIZE", "PRIMARY_TASKS", "QUICK_LIMIT", "TASKS",
           "SafetyResult", "resolve_tasks", "run_safety"]
