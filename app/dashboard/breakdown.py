"""Per-category breakdowns of metric rows (CrowS-Pairs bias types, BBQ categories): each row gets a
metric family, a category and whether it is the overall value (order 0) or one category's (order 1).

The grouping is the benchmarks' own (their YAML metadata, through analysis.metric_meta's
`category_of` and `breakdowns`), never guessed from the names here.
"""

from __future__ import annotations

import pandas as pd

from analysis import metric_meta


def breakdown(df: pd.DataFrame) -> pd.DataFrame:
    """`df` (rows with task and metric) with family, category and order (0 overall, 1 a category)."""
    out = df.copy()
    base = out["metric"].astype(str).str.split(",").str[0]
    split: dict[str, set[str]] = {}  # task -> metrics that have a breakdown
    fam, cat, order = [], [], []
    for task, metric in zip(out["task"], base, strict=True):
        part = metric_meta.category_of(task, metric)
        if part is not None:
            fam.append(part.metric)
            cat.append(str(part.category))
            order.append(1)
            continue
        if task not in split:
            split[task] = {b.metric for b in metric_meta.breakdowns(task) if b.parts}
        fam.append(metric)
        cat.append("overall" if metric in split[task] else task)
        order.append(0)
    out["family"], out["category"], out["order"] = fam, cat, order
    return out
