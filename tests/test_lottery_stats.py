"""The lottery-ticket statistics with power (issue 18, finding 4): TOST against hand-computed numbers, the power
analysis that picks seeds, the fixed testing order, and planted effects on synthetic per-seed numbers found at
the stated power."""

import math
import random

import pytest

from analysis.lottery.lottery_verdict import verdict
from pruning.errors import TicketLabError
from pruning.lottery.stats import fixed_sequence, seeds_for_power, tost, tost_power


def t2_cdf(t: float) -> float:
    """Student's t with 2 degrees of freedom has a closed-form CDF: 1/2 + t / (2 sqrt(2 + t^2))."""
    return 0.5 + t / (2.0 * math.sqrt(2.0 + t * t))


def test_tost_matches_hand_computed_numbers():
    # differences 0.01, 0.00, 0.02: mean 0.01, sd 0.01, se = 0.01 / sqrt(3), df = 2
    se = 0.01 / math.sqrt(3)
    r = tost([0.01, 0.00, 0.02], delta=0.05, alpha=0.05)
    assert r.mean == pytest.approx(0.01) and r.sd == pytest.approx(0.01) and r.n == 3
    # H0 mean <= -0.05: t = 0.06 / se = 6 sqrt(3); H0 mean >= 0.05: t = -0.04 / se = -4 sqrt(3)
    assert r.p_lower == pytest.approx(1 - t2_cdf(6 * math.sqrt(3)), abs=1e-9)  # 0.0045663
    assert r.p_upper == pytest.approx(t2_cdf(-4 * math.sqrt(3)), abs=1e-9)  # 0.0101021
    assert r.p_upper == pytest.approx(0.0101021, abs=1e-6) and r.p == r.p_upper
    assert r.equivalent and r.matching and r.outcome == "equivalent"
    # the decision equals "the 90% interval lies inside (-delta, delta)": t(0.95, 2) = 2.919986
    assert r.low == pytest.approx(0.01 - 2.919986 * se, abs=1e-6) and r.high == pytest.approx(0.01 + 2.919986 * se,
                                                                                               abs=1e-6)
    narrow = tost([0.01, 0.00, 0.02], delta=0.02, alpha=0.05)
    # H0 mean >= 0.02: t = -0.01 / se = -sqrt(3): p = 1/2 - sqrt(3) / (2 sqrt(5)) = 0.1127017
    assert narrow.p_upper == pytest.approx(0.5 - math.sqrt(3) / (2 * math.sqrt(5)), abs=1e-9)
    assert not narrow.equivalent and not narrow.matching and narrow.outcome == "undecided"


def test_tost_outcomes_better_worse_and_degenerate():
    better = tost([-0.10, -0.11, -0.09, -0.10], delta=0.02)
    assert better.outcome == "better" and better.matching and not better.equivalent
    worse = tost([0.10, 0.11, 0.09, 0.10], delta=0.02)
    assert worse.outcome == "worse" and not worse.matching
    same = tost([0.0, 0.0, 0.0], delta=0.02)  # zero spread: decided by the mean alone
    assert same.equivalent and same.p == 0.0
    assert tost([0.0], delta=0.02).outcome == "undecided"
    with pytest.raises(TicketLabError, match="delta"):
        tost([0.0, 0.1], delta=0.0)


def test_the_testing_order_stops_at_the_first_failure():
    asked = []

    def passes(level):
        asked.append(level)
        return level in (0.2, 0.36, 0.59)

    r = fixed_sequence([0.738, 0.2, 0.488, 0.36, 0.59], passes)  # given out of order: tested from low to high
    assert asked == [0.2, 0.36, 0.488]  # 0.59 would pass but is never tested: it comes after a failure
    assert r.largest == 0.36 and r.stopped_at == 0.488 and r.untested == [0.59, 0.738]
    first = fixed_sequence([0.2, 0.36], lambda level: False)
    assert first.largest is None and first.stopped_at == 0.2
    assert fixed_sequence([0.2, 0.36], lambda level: True).largest == 0.36


def _rows(diffs_by_round: dict[int, list[float]], random_gap: float = 0.3) -> list[dict]:
    rows = []
    for s in range(len(next(iter(diffs_by_round.values())))):
        dense = 5.0 + 0.1 * s
        rows.append({"arm": "ticket", "seed": s, "round": 0, "sparsity": 0.0, "value": dense})
        for rnd, diffs in diffs_by_round.items():
            sp = 1 - 0.8 ** rnd
            rows.append({"arm": "ticket", "seed": s, "round": rnd, "sparsity": sp, "value": dense + diffs[s]})
            rows.append({"arm": "random", "seed": s, "round": rnd, "sparsity": sp,
                         "value": dense + diffs[s] + random_gap + 0.001 * s})
    return rows


def test_the_verdict_claims_no_level_beyond_the_first_failure():
    ok, bad = [0.0, 0.004, -0.003, 0.001, -0.002], [0.2, 0.25, 0.18, 0.22, 0.21]
    v = verdict(_rows({1: ok, 2: bad, 3: ok}), delta=0.02)
    assert [e["matching"] for e in v["rounds"]] == [True, False, True]  # level 3 matches on its own ...
    assert [e["tested"] for e in v["rounds"]] == [True, True, False]  # ... but is after the stop: not claimed
    assert v["largest_matching_sparsity"] == pytest.approx(0.2) and v["stopping_sparsity"] == pytest.approx(0.36)
    assert not v["rounds"][2]["winning"]
    assert "matches dense up to 20.0%" in v["sentence"] and "testing stopped at 36.0%" in v["sentence"]
    assert "TOST" in v["sentence"] and "familywise error" in v["sentence"]


def test_the_sentence_says_why_each_level_that_beats_random_is_not_a_winning_ticket():
    ok, bad = [0.0, 0.004, -0.003, 0.001, -0.002], [0.2, 0.25, 0.18, 0.22, 0.21]
    v = verdict(_rows({1: ok, 2: bad, 3: ok}), delta=0.02)
    assert v["winning_sparsities"] == [pytest.approx(0.2)]
    assert "36.0% (+0.302 [" in v["sentence"] and "the ticket does not match dense);" in v["sentence"]
    assert "48.8% (+0.302 [" in v["sentence"] and "the testing order stopped before this level)" in v["sentence"]


def test_power_analysis_picks_seeds_warns_and_refuses():
    plan = seeds_for_power(sd=0.005, delta=0.02)  # tiny noise: the minimum of 5 already has power ~1
    assert plan.needed == 5 and plan.enough
    noisy = seeds_for_power(sd=0.02, delta=0.02, given=3)
    assert noisy.needed > 5 and tost_power(noisy.needed, 0.02, 0.02) >= 0.8 > tost_power(noisy.needed - 1, 0.02, 0.02)
    assert not noisy.enough and noisy.achieved == pytest.approx(tost_power(3, 0.02, 0.02))
    warning = noisy.warning()
    assert f"{noisy.achieved:.2f}" in warning and f"{noisy.needed} are needed" in warning and "seeds" in warning
    with pytest.raises(TicketLabError, match="seeds: 1 seed"):
        seeds_for_power(sd=0.02, delta=0.02, given=1)
    hopeless = seeds_for_power(sd=1.0, delta=0.001, given=5, maximum=20)  # warned about, not refused
    assert hopeless.needed is None and not hopeless.enough and "no seed count" in hopeless.warning()
    # the verdict states the power of the seeds it used
    v = verdict(_rows({1: [0.0, 0.004, -0.003]}), delta=0.02, seed_sd=0.02)
    assert v["power"]["given"] == 3 and not v["power"]["enough"]
    assert f"3 seeds give {noisy.achieved:.2f} power" in v["sentence"]


def _simulated_rate(n: int, sd: float, delta: float, true_diff: float, trials: int, rule: str) -> float:
    rng = random.Random(1234)
    hits = 0
    for _ in range(trials):
        r = tost([rng.gauss(true_diff, sd) for _ in range(n)], delta)
        hits += r.equivalent if rule == "equivalence" else r.matching
    return hits / trials


@pytest.mark.parametrize("rule", ["equivalence", "matching"])
def test_planted_effects_are_found_at_the_stated_power(rule):
    """Synthetic per-seed differences: a ticket exactly as good as dense (planted difference 0) is declared
    matching at the power the analysis states, and one worse by exactly delta (the margin) at most at rate alpha."""
    sd, delta, trials = 0.015, 0.02, 3000
    plan = seeds_for_power(sd, delta)
    n = plan.needed
    stated = tost_power(n, sd, delta, test=rule)
    found = _simulated_rate(n, sd, delta, 0.0, trials, rule)
    mc = math.sqrt(stated * (1 - stated) / trials)
    assert abs(found - stated) < 4 * mc + 0.005, (found, stated)
    assert found >= 0.8 - 4 * mc  # planned for equivalence, so matching (its upper test alone) has at least it
    # small n, where a noncentral-t approximation is poor, is exact too
    assert abs(_simulated_rate(3, sd, delta, 0.0, trials, rule) - tost_power(3, sd, delta, test=rule)) < 0.03
    at_margin = tost_power(n, sd, delta, true_diff=delta, test=rule)
    assert at_margin == pytest.approx(0.05, abs=1e-3) if rule == "matching" else at_margin <= 0.05  # the size
    worse = _simulated_rate(n, sd, delta, delta, trials, rule)
    assert abs(worse - at_margin) < 4 * math.sqrt(0.05 * 0.95 / trials)
