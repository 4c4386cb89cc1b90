"""The statistics of a lottery-ticket verdict, as pure functions of per-seed numbers.

- `t_interval`: mean and two-sided Student-t interval.
- `tost`: Schuirmann's two one-sided tests for "ticket - dense lies within +-delta" on paired
  differences (one per seed). Equivalent at level alpha iff both one-sided nulls are rejected, i.e.
  iff the (1 - 2 alpha) t-interval lies inside (-delta, delta). The same statistics say whether the
  ticket is *better* than dense by more than delta (H0: mean >= -delta rejected) or worse.
- `tost_power`: the exact probability that TOST declares equivalence when the true paired difference
  is `true_diff` and the per-seed sd is `sd` (integrating the normal sample mean over the chi
  distribution of the sample sd, so no noncentral-t approximation, which is poor at n = 3..6).
- `seeds_for_power`: the smallest seed count reaching the target power (at least `minimum`).
- `fixed_sequence`: the testing order from low to high sparsity that stops at the first failure. Each
  level is tested at alpha; because a level is only tested when every earlier one passed, the chance
  of declaring any non-matching level matching is at most alpha (the fixed-sequence procedure,
  Maurer, Hothorn & Lehmacher 1995), so the largest matching sparsity has a stated error rate.

scipy.special supplies the distribution functions (not scipy.stats, whose import costs the dashboard 0.8 s).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from ..errors import TicketLabError

# outcomes of one level's equivalence test
EQUIVALENT, BETTER, NOT_WORSE, WORSE, UNDECIDED = "equivalent", "better", "not worse", "worse", "undecided"


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided quantile: t such that P(|T_df| < t) = confidence."""
    from scipy.special import stdtrit

    return float(stdtrit(df, (1.0 + confidence) / 2.0))


def _t_cdf(t: float, df: int) -> float:
    from scipy.special import stdtr

    return float(stdtr(df, t))


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int
    sd: float
    confidence: float

    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def text(self, signed: bool = True) -> str:
        if self.n == 0:
            return "n/a"
        fmt = "{:+.3f}" if signed else "{:.3f}"
        if self.n < 2:
            return f"{fmt.format(self.mean)} (n=1, no interval)"
        return (f"{fmt.format(self.mean)} [{fmt.format(self.low)}, {fmt.format(self.high)}] "
                f"(n={self.n})")

    def to_dict(self) -> dict:
        return asdict(self)


def _clean(values: Iterable[float]) -> list[float]:
    return [float(x) for x in values if x is not None and not math.isnan(float(x))]


def t_interval(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """Mean and two-sided Student-t interval of `values` (NaNs dropped); n < 2 gives NaN bounds."""
    v = _clean(values)
    n = len(v)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan, confidence)
    mean = sum(v) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1, math.nan, confidence)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd, confidence)


@dataclass(frozen=True)
class Tost:
    """Two one-sided tests on paired differences d (ticket - dense, one per seed) against margin delta.

    p_lower: H0 mean <= -delta; p_upper: H0 mean >= delta; p = max of the two (equivalent when p < alpha).
    `p_better`: H0 mean >= -delta (rejected: better than dense by more than delta); `p_worse`: H0 mean <= delta.

    `matching` is TOST's upper test alone (p_upper < alpha: not worse than dense by delta): a ticket that is
    better than dense matches it. Requiring both tests would leave a dead zone where a ticket better than
    dense by about delta is neither "equivalent" nor "better" and so would count as a failure to match.
    `outcome`: equivalent, better, not worse (matching; within delta or better, undecided which), worse,
    undecided."""
    mean: float
    sd: float
    n: int
    delta: float
    alpha: float
    p_lower: float
    p_upper: float
    p_better: float
    p_worse: float
    low: float  # the (1 - 2 alpha) interval, the one TOST's decision is equivalent to
    high: float

    @property
    def p(self) -> float:
        return max(self.p_lower, self.p_upper)

    @property
    def equivalent(self) -> bool:
        return self.n >= 2 and self.p < self.alpha

    @property
    def outcome(self) -> str:
        if self.n < 2:
            return UNDECIDED
        if self.equivalent:
            return EQUIVALENT
        if self.p_better < self.alpha:
            return BETTER
        if self.p_upper < self.alpha:
            return NOT_WORSE
        if self.p_worse < self.alpha:
            return WORSE
        return UNDECIDED

    @property
    def matching(self) -> bool:
        """Not worse than dense by delta (TOST's upper one-sided test at alpha)."""
        return self.n >= 2 and self.p_upper < self.alpha

    def to_dict(self) -> dict:
        return {**asdict(self), "p": self.p, "equivalent": self.equivalent, "outcome": self.outcome,
                "matching": self.matching}


def tost(diffs: Iterable[float], delta: float, alpha: float = 0.05) -> Tost:
    """TOST of paired differences against +-delta at level alpha (Schuirmann 1987)."""
    if delta <= 0:
        raise TicketLabError(f"the equivalence margin delta must be > 0 nats (got {delta}).")
    if not 0.0 < alpha < 0.5:
        raise TicketLabError(f"alpha {alpha} must be in (0, 0.5).")
    v = _clean(diffs)
    n = len(v)
    if n < 2:
        mean = v[0] if v else math.nan
        return Tost(mean, math.nan, n, delta, alpha, 1.0, 1.0, 1.0, 1.0, math.nan, math.nan)
    mean = sum(v) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    df = n - 1
    se = sd / math.sqrt(n)
    if se == 0.0:  # identical differences: each one-sided test is decided by the sign alone
        def p0(rejected: bool) -> float:
            return 0.0 if rejected else 1.0
        return Tost(mean, sd, n, delta, alpha, p0(mean > -delta), p0(mean < delta), p0(mean < -delta),
                    p0(mean > delta), mean, mean)
    p_lower = 1.0 - _t_cdf((mean + delta) / se, df)   # H0: mean <= -delta
    p_upper = _t_cdf((mean - delta) / se, df)         # H0: mean >= delta
    p_better = _t_cdf((mean + delta) / se, df)        # H0: mean >= -delta
    p_worse = 1.0 - _t_cdf((mean - delta) / se, df)   # H0: mean <= delta
    half = t_quantile(1.0 - 2.0 * alpha, df) * se
    return Tost(mean, sd, n, delta, alpha, p_lower, p_upper, p_better, p_worse, mean - half, mean + half)


def tost_power(n: int, sd: float, delta: float, alpha: float = 0.05, true_diff: float = 0.0,
               grid: int = 4000, test: str = "equivalence") -> float:
    """P(TOST declares equivalence) with n seeds, per-seed sd of the difference `sd` and true mean `true_diff`
    (`test="matching"`: P(its upper test alone rejects), the verdict's matching rule).

    Given the sample sd s, TOST passes iff the sample mean satisfies mean + c s < delta and mean - c s > -delta
    with c = t_{1-alpha, n-1} / sqrt(n); the sample mean is N(true_diff, sd^2 / n) independent of s, and
    (n - 1) s^2 / sd^2 is chi-square with n - 1 df. The expectation over s is a midpoint rule on its
    quantiles (`grid` points; error well below 1e-3)."""
    if n < 2:
        return 0.0
    if test not in ("equivalence", "matching"):
        raise TicketLabError(f"power of {test!r}: choose equivalence or matching.")
    if sd <= 0:
        return 1.0 if (abs(true_diff) < delta if test == "equivalence" else true_diff < delta) else 0.0
    from scipy.special import chdtri, ndtr

    df = n - 1
    c = float(_t_quantile_one_sided(1.0 - alpha, df)) / math.sqrt(n)
    se = sd / math.sqrt(n)
    total = 0.0
    for i in range(grid):
        u = (i + 0.5) / grid
        s = sd * math.sqrt(float(chdtri(df, 1.0 - u)) / df)
        hi = delta - c * s
        if test == "matching":
            total += float(ndtr((hi - true_diff) / se))
        elif hi > -hi:
            total += float(ndtr((hi - true_diff) / se) - ndtr((-hi - true_diff) / se))
    return total / grid


def _t_quantile_one_sided(p: float, df: int) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


@dataclass(frozen=True)
class PowerPlan:
    """The seeds a verdict needs: `needed` reaches `target` power for `true_diff` = 0 (a ticket exactly as good
    as dense) with the pilot's sd; `achieved` is the power of the `given` seeds. Planned for TOST equivalence,
    which is stricter than the verdict's matching rule (its upper test alone), so the stated power is a floor."""
    sd: float
    delta: float
    alpha: float
    target: float
    minimum: int
    needed: int | None  # None: not even `maximum` seeds reach the target
    given: int | None
    achieved: float | None
    source: str

    @property
    def enough(self) -> bool:
        return self.given is None or (self.needed is not None and self.given >= self.needed)

    def warning(self) -> str | None:
        if self.enough:
            return None
        head = (f"seeds: {self.given} give power {self.achieved:.2f} to declare a ticket exactly as good as dense "
                f"matching (TOST, delta {self.delta:g} nats, alpha {self.alpha:g}, per-seed sd {self.sd:.4f} from "
                f"{self.source}); ")
        if self.needed is None:
            return head + (f"no seed count up to 200 reaches {self.target:.2f}: widen delta or reduce the noise "
                           f"(a longer budget, more validation windows).")
        return head + f"{self.needed} are needed for {self.target:.2f}. Pass --seeds with {self.needed} seeds."

    def to_dict(self) -> dict:
        return {**asdict(self), "enough": self.enough, "warning": self.warning()}


def seeds_for_power(sd: float, delta: float, alpha: float = 0.05, target: float = 0.8, minimum: int = 5,
                    given: int | None = None, source: str = "the pilot", maximum: int = 200) -> PowerPlan:
    """The smallest n >= max(minimum, 2) with TOST power >= target at a true difference of 0 (None when even
    `maximum` seeds do not reach it).

    `given` seeds below 2 are refused (no interval exists); fewer than needed are allowed with a warning
    that states their achieved power."""
    if given is not None and given < 2:
        raise TicketLabError(f"protocol setting seeds: {given} seed(s); a verdict needs at least 2 (the power "
                             f"analysis asks for at least {max(minimum, 2)}).")
    if not 0.0 < target < 1.0:
        raise TicketLabError(f"power target {target} must be in (0, 1), e.g. 0.8.")
    if not math.isfinite(sd) or sd < 0:
        raise TicketLabError(f"the pilot's seed sd is {sd}; the power analysis needs a finite sd >= 0.")
    n: int | None = max(minimum, 2)
    while tost_power(n, sd, delta, alpha) < target:
        n += 1
        if n > maximum:
            n = None
            break
    achieved = tost_power(given, sd, delta, alpha) if given is not None else None
    return PowerPlan(sd, delta, alpha, target, minimum, n, given, achieved, source)


@dataclass(frozen=True)
class SequenceResult:
    """`tested`: levels in testing order with their decision; `stopped_at`: the first failing level's key
    (None when all passed); `largest`: the last passing level before the stop (None if the first failed)."""
    tested: list[tuple[float, bool]]
    untested: list[float]
    stopped_at: float | None
    largest: float | None


def fixed_sequence(levels: Sequence[float], passes: Callable[[float], bool]) -> SequenceResult:
    """Test `levels` from the lowest to the highest, stopping at the first that does not pass."""
    order = sorted(levels)
    tested: list[tuple[float, bool]] = []
    largest = None
    for i, level in enumerate(order):
        ok = bool(passes(level))
        tested.append((level, ok))
        if not ok:
            return SequenceResult(tested, order[i + 1:], level, largest)
        largest = level
    return SequenceResult(tested, [], None, largest)
