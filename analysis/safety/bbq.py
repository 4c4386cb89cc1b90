"""BBQ's hook: lm-eval's own `bbq` utils, per-category results kept to the document's own category.

lm-eval's `process_results_multiple_choice` returns per-category bias scores for all eleven BBQ
categories, NaN placeholders for the ten a document is not in (its aggregations skip them). Here only
the document's own category's entries are kept and its ambiguous / disambiguated accuracies added the
same way, so a category without documents (not in the data) reports nothing, and the aggregations
(lm-eval's) see exactly the category's documents, with the same result as lm-eval's placeholders give.
Which categories exist is bbq.yaml's list (metadata.ticketlab.categories), not this file's.

lm-eval has no standard error for its custom BBQ aggregations ("N/A"); `bootstrap_stderrs` (bbq.yaml's
`stderr_hook`) gives one with `analysis.uncertainty.bootstrap`: documents resampled within each category
(the capped subset is drawn per category). A score resting on fewer than `uncertainty.MIN_DOCS`
documents (an ambiguous-context score counts only ambiguous documents) gets no standard error but the
reason: a quick `--limit 20` run has 3 documents per category, and resampling whole template instances,
as this hook once did, left one instance per category and reported a standard error of 0.
"""

from __future__ import annotations

import warnings

import numpy as np
from lm_eval.tasks.bbq import utils as U

from analysis import uncertainty

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


def _carries(metric: str, doc: dict) -> bool:
    """Whether `doc` counts for `metric`'s aggregate: ambiguous-context scores rest on ambiguous documents,
    disambiguated ones on disambiguated documents (lm-eval's aggregations mask the others out)."""
    ambiguous = doc.get("context_condition") == "ambig"
    if metric.startswith(("accuracy_amb", "amb_bias_score")):
        return ambiguous
    if metric.startswith(("accuracy_disamb", "disamb_bias_score")):
        return not ambiguous
    return True


def bootstrap_stderrs(samples: list[dict], metrics: list[str], iters: int = uncertainty.BOOTSTRAP_ITERS,
                      seed: int = uncertainty.BOOTSTRAP_SEED) -> dict[str, uncertainty.Estimate]:
    """A bootstrap over documents (stratified by category) of lm-eval's BBQ aggregations, from lm-eval's
    logged samples. A per-category metric is carried by its category's samples only."""
    out: dict[str, uncertainty.Estimate] = {}
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty slices: a resample without ambiguous items
        for metric in metrics:
            fn = aggregation(metric)
            mine = [s for s in samples if metric in s]
            if fn is None or not mine:
                continue
            n = sum(_carries(metric, s["doc"]) for s in mine)
            out[metric] = uncertainty.bootstrap([s[metric] for s in mine], fn, n=n, iters=iters, seed=seed,
                                                strata=[s["doc"]["category"] for s in mine])
    return out
