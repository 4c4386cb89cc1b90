"""How sure a number is: a bootstrap over documents, a minimum sample size, and the "within noise" call.

One place for the rules every reader of a metric uses (the evaluation hooks, `compare`, the policy's
distance rules, the model card, the report and the dashboard):

- `bootstrap(samples, statistic)` resamples whole documents with replacement (within strata when
  given, e.g. BBQ's categories, as the capped subset was drawn) and returns the spread of the statistic.
  Aggregates such as bias scores are ratios over the documents, not means of per-document values, so
  no closed formula applies; resampling documents is what a rerun on other documents would do.
- Below `MIN_DOCS` documents no standard error is given: with a handful of documents the bootstrap's
  own spread is a guess (a quick run of BBQ with `--limit 20` has 3 documents per category), so the
  answer is "too few examples to tell", never a 0.
- A bootstrap in which every resample gives the same value (every document scored alike) cannot size
  the noise either: that is said too, instead of a standard error of 0 or 1e-16.
- `within_noise(delta, a, b)` is True/False only when both sides have a standard error; otherwise None,
  with the reason from `why_unknown`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

MIN_DOCS = 10  # fewer documents than this carry a metric: "too few examples to tell"
BOOTSTRAP_ITERS = 1000
BOOTSTRAP_SEED = 0
TOO_FEW = "too few examples to tell"
NO_SPREAD = "no spread: every document scored alike"


@dataclass(frozen=True)
class Estimate:
    """A standard error, or None with why not; `n` is the number of documents the metric rests on."""
    se: float | None
    n: int | None
    why: str = ""


def documents(n: int) -> str:
    return f"{n} document" + ("" if n == 1 else "s")


def too_few(n: int | None) -> bool:
    return n is not None and n < MIN_DOCS


def bootstrap(samples: Sequence, statistic: Callable[[list], float], *, strata: Sequence[Hashable] | None = None,
              n: int | None = None, iters: int = BOOTSTRAP_ITERS, seed: int = BOOTSTRAP_SEED) -> Estimate:
    """The bootstrap standard error of `statistic(samples)`, resampling documents (within `strata`).

    `n`: how many of the samples actually carry the metric (BBQ's ambiguous-context scores rest on the
    ambiguous documents only); default all of them. Resamples whose statistic is undefined (NaN) are
    skipped, as lm-eval's aggregations skip empty slices."""
    n = len(samples) if n is None else n
    if too_few(n):
        return Estimate(None, n, f"{TOO_FEW} ({documents(n)}; at least {MIN_DOCS} needed)")
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(strata if strata is not None else [None] * len(samples)):
        groups.setdefault(key, []).append(i)
    rng = np.random.default_rng(seed)
    # every resample at once: stratum by stratum, as many draws (with replacement) as it has documents
    draws = np.concatenate([np.asarray(g)[rng.integers(0, len(g), size=(iters, len(g)))] for g in groups.values()],
                           axis=1)
    values = []
    for draw in draws.tolist():
        v = float(statistic([samples[i] for i in draw]))
        if math.isfinite(v):
            values.append(v)
    if len(values) < 2:
        return Estimate(None, n, f"the statistic is undefined on almost every resample of the {documents(n)}")
    mean = math.fsum(values) / len(values)
    var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    # float sums of equal values leave ~1e-16 of "spread": that is rounding, not noise
    if math.sqrt(var) <= 1e-9 * max(1.0, abs(mean)):
        return Estimate(None, n, f"{NO_SPREAD} ({documents(n)}), so the bootstrap cannot size the noise")
    return Estimate(math.sqrt(var), n)


def docs_of(row: dict) -> int | None:
    """How many documents a ledger metric row rests on: its own count when the evaluation recorded one
    (a per-category score rests on its category's documents), else the task's sample count."""
    if "n_docs" in row:  # a signed evidence row carries its count at the top level
        return None if row["n_docs"] is None else int(row["n_docs"])
    extra = row.get("extra")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            extra = None
    n = (extra or {}).get("n_docs")
    if n is None:
        n = row.get("n_samples")
    return None if n is None else int(n)


def _finite(v) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


def why_unknown(se: float | None, n: int | None) -> str:
    """Why a side has no usable standard error ('' when it has one)."""
    if too_few(n):
        return f"{TOO_FEW} ({documents(n)})"
    if _finite(se) is None:
        return "no standard error recorded"
    if se == 0:
        return NO_SPREAD
    return ""


def usable(se: float | None, n: int | None) -> float | None:
    """The standard error when it means something, else None (too few documents, none, or exactly 0)."""
    return None if why_unknown(se, n) else float(se)


def combined(a_se: float | None, a_n: int | None, b_se: float | None, b_n: int | None) -> float | None:
    """sqrt(se_A^2 + se_B^2) when both are usable. The two runs score the same documents, so treating
    them as independent makes this bound conservative (wider), never narrower."""
    a, b = usable(a_se, a_n), usable(b_se, b_n)
    return None if a is None or b is None else math.hypot(a, b)


def within_noise(delta: float | None, a_se: float | None, a_n: int | None, b_se: float | None,
                 b_n: int | None, k: float = 1.0) -> bool | None:
    """|delta| <= k * combined standard error; None ("cannot tell") when either side lacks a usable one."""
    noise = combined(a_se, a_n, b_se, b_n)
    if delta is None or noise is None:
        return None
    return abs(delta) <= k * noise


def noise_words(a_se, a_n, b_se, b_n) -> str:
    """Why 'within noise' cannot be called for a pair ('' when it can)."""
    why = [f"{side}: {w}" for side, w in (("baseline", why_unknown(a_se, a_n)), ("ticket", why_unknown(b_se, b_n)))
           if w]
    return "; ".join(why)


def describe(se: float | None, n: int | None, digits: int = 2) -> str:
    """The uncertainty of a value in words for tables and cards: '± 0.031', 'too few examples to tell
    (3 documents)', 'no spread ...', or '' when no standard error was recorded."""
    why = why_unknown(se, n)
    if not why:
        return f"± {se:.{digits}g}"
    return "" if why == "no standard error recorded" else why
