"""BBQ's hook: lm-eval's own `bbq` utils, per-category results kept to the document's own category.

lm-eval's `process_results_multiple_choice` returns per-category bias scores for all eleven BBQ
categories, NaN placeholders for the ten a document is not in (its aggregations skip them). Here only
the document's own category's entries are kept and its ambiguous / disambiguated accuracies added the
same way, so a category without documents (not in the data) reports nothing, and the aggregations
(lm-eval's) see exactly the category's documents, with the same result as lm-eval's placeholders give.
Which categories exist is bbq.yaml's list (metadata.ticketlab.categories), not this file's.

lm-eval has no standard error for its custom BBQ aggregations ("N/A"); `bootstrap_stderrs` (bbq.yaml's
`stderr_hook`) gives one by resampling whole BBQ instances (the 4 examples built from one template
fill) within each category, which is how the capped subset was drawn.
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
from lm_eval.tasks.bbq import utils as U

BOOTSTRAP_ITERS = 200
BOOTSTRAP_SEED = 0
_PER_CATEGORY = ("amb_bias_score_", "disamb_bias_score_")


def process_results(doc: dict, results) -> dict:
    out = U.process_results_multiple_choice(doc, results)
    own = doc["category"]
    keep = {k: v for k, v in out.items() if not k.startswith(_PER_CATEGORY) or k.split("bias_score_", 1)[1] == own}
    keep[f"accuracy_amb_{own}"] = out["accuracy_amb"]
    keep[f"accuracy_disamb_{own}"] = out["accuracy_disamb"]
    return keep


def aggregation(metric: str):
    """The aggregation bbq.yaml gives `metric` (None for plain means, which lm-eval handles)."""
    for prefix, fn in (("accuracy_amb", U.agg_accuracy_amb), ("accuracy_disamb", U.agg_accuracy_disamb),
                       ("amb_bias_score", U.agg_amb_bias_scores), ("disamb_bias_score", U.agg_disamb_bias_scores)):
        if metric.startswith(prefix):
            return fn
    return None


def bootstrap_stderrs(samples: list[dict], metrics: list[str], iters: int = BOOTSTRAP_ITERS,
                      seed: int = BOOTSTRAP_SEED) -> dict[str, float | None]:
    """Stratified cluster bootstrap of lm-eval's BBQ aggregations from lm-eval's logged samples. A
    per-category metric is carried by its category's samples only, so its resamples are that stratum's."""
    clusters: dict[str, dict[str, list[int]]] = {}
    for i, s in enumerate(samples):
        doc = s["doc"]
        clusters.setdefault(doc["category"], {}).setdefault(doc.get("instance", str(i)), []).append(i)
    strata = [list(groups.values()) for groups in clusters.values()]
    rng = random.Random(seed)
    draws: list[list[int]] = []
    for _ in range(iters):
        draw = []
        for groups in strata:
            for _ in groups:
                draw += groups[rng.randrange(len(groups))]
        draws.append(draw)
    out: dict[str, float | None] = {}
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty slices: a stratum without ambiguous items
        for metric in metrics:
            fn = aggregation(metric)
            has = [metric in s for s in samples]
            if fn is None or not any(has):
                continue
            stats = []
            for draw in draws:
                values = [samples[i][metric] for i in draw if has[i]]
                if values:
                    stats.append(float(fn(values)))
            stats = [v for v in stats if not math.isnan(v)]
            out[metric] = float(np.std(stats, ddof=1)) if len(stats) > 1 else None
    return out
