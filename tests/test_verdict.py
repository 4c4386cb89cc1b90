"""The verdict's statistics: t-intervals against hand-computed numbers, paired differences, and the verdict
on synthetic per-seed losses (a planted gap is reported, a null one is not)."""

import math
import random

import pytest

from analysis.lottery.lottery_verdict import INCONCLUSIVE, paired, t_interval, verdict


def test_t_interval_matches_a_hand_computed_example():
    # values 1, 2, 3, 4: mean 2.5, sd sqrt(5/3) = 1.290994, t(0.975, 3) = 3.182446, half = 3.182446 * 1.290994 / 2
    iv = t_interval([1, 2, 3, 4])
    assert iv.mean == 2.5 and iv.n == 4
    assert iv.sd == pytest.approx(1.290994, abs=1e-6)
    assert iv.low == pytest.approx(2.5 - 2.054261, abs=1e-5) and iv.high == pytest.approx(2.5 + 2.054261, abs=1e-5)
    one = t_interval([3.0])
    assert one.n == 1 and math.isnan(one.low) and not one.excludes_zero()
    assert t_interval([]).n == 0


def test_paired_difference_by_seed():
    rows = [{"arm": "ticket", "seed": s, "round": 0, "sparsity": 0.0, "value": v} for s, v in enumerate([5.0, 5.1, 5.2])]
    rows += [{"arm": "ticket", "seed": s, "round": 1, "sparsity": 0.5, "value": v}
             for s, v in enumerate([5.01, 5.10, 5.22])]
    rows.append({"arm": "ticket", "seed": 9, "round": 1, "sparsity": 0.5, "value": 1.0})  # no dense partner: dropped
    d = paired(rows, ("ticket", 1), ("ticket", 0))
    # differences 0.01, 0.00, 0.02: mean 0.01, sd 0.01, half = t(0.975, 2) * 0.01 / sqrt(3) = 0.0248414
    assert d.n == 3 and d.mean == pytest.approx(0.01) and d.high == pytest.approx(0.0348414, abs=1e-6)
    v = verdict(rows, delta=0.02)
    assert v["rounds"][0]["matching"] is False  # the upper bound 0.035 is not below delta 0.02
    assert verdict(rows, delta=0.04)["rounds"][0]["matching"] is True


def _synthetic(ticket_gap: float, random_gap: float | tuple[float, float], empty_gap: float | None, n: int = 5,
               noise: float = 0.005) -> list[dict]:
    """Per-seed losses: dense, ticket at 50% and 75% (gap x round), random (gap per round), empty (the old check)."""
    rng = random.Random(0)
    gaps = random_gap if isinstance(random_gap, tuple) else (random_gap, random_gap)
    rows = []
    for s in range(n):
        dense = 5.0 + rng.gauss(0, 0.05)  # seeds differ a lot; the pairing removes it
        rows.append({"arm": "ticket", "seed": s, "round": 0, "sparsity": 0.0, "value": dense})
        if empty_gap is not None:
            rows.append({"arm": "empty", "seed": s, "round": 0, "sparsity": 1.0, "value": dense + empty_gap})
        for rnd, sp in ((1, 0.5), (2, 0.75)):
            t = dense + ticket_gap * rnd + rng.gauss(0, noise)
            rows.append({"arm": "ticket", "seed": s, "round": rnd, "sparsity": sp, "value": t})
            rows.append({"arm": "random", "seed": s, "round": rnd, "sparsity": sp,
                         "value": t + gaps[rnd - 1] + rng.gauss(0, noise)})
    return rows


def test_a_planted_winning_ticket_is_reported():
    v = verdict(_synthetic(ticket_gap=-0.02, random_gap=0.2, empty_gap=1.5), delta=0.02)
    assert [e["matching"] for e in v["rounds"]] == [True, True]
    assert [e["winning"] for e in v["rounds"]] == [True, True]
    assert v["largest_matching_sparsity"] == 0.75 and v["sanity"]["passed"]
    assert "matches dense up to 75.0%" in v["sentence"] and "winning ticket" in v["sentence"]
    assert "delta = 0.02 nats" in v["sentence"] and "95%" in v["sentence"] and "n = 5" in v["sentence"]


def test_a_null_gap_is_not_reported_as_a_difference():
    v = verdict(_synthetic(ticket_gap=0.3, random_gap=0.0, empty_gap=1.5), delta=0.02)
    assert not any(e["matching"] for e in v["rounds"]) and not any(e["winning"] for e in v["rounds"])
    random_vs_ticket = v["rounds"][0]["controls"]["random"]["minus_ticket"]
    assert random_vs_ticket["low"] < 0 < random_vs_ticket["high"]  # no difference between random and ticket
    assert v["largest_matching_sparsity"] is None and "matches dense at none" in v["sentence"]


def test_matching_ticket_with_an_equally_good_random_control_is_not_winning():
    # random matches at 50% (no win there) and is clearly worse at 75% (so the budget does see capacity)
    v = verdict(_synthetic(ticket_gap=-0.01, random_gap=(0.0, 0.2), empty_gap=1.5), delta=0.02)
    assert v["rounds"][0]["matching"] and not v["rounds"][0]["winning"] and v["rounds"][1]["winning"]
    assert v["sanity"]["kind"] == "random_at_highest_sparsity" and v["sanity"]["passed"]
    assert v["separation_sparsity"] == 0.75 and "separate (random - ticket > 0 at 95%) first at 75.0%" in v["sentence"]


def test_a_ticket_matching_where_random_matches_everywhere_is_not_a_winning_ticket_but_inconclusive():
    """Finding 5: every arm matching, the random mask at the highest sparsity included, says the budget cannot
    tell sparse from dense; the old check (every linear removed is worse by 0.1) passed here."""
    v = verdict(_synthetic(ticket_gap=-0.02, random_gap=0.0, empty_gap=1.5), delta=0.02)
    assert v["rounds"][0]["matching"] and not v["rounds"][0]["winning"]
    assert not v["sanity"]["passed"] and INCONCLUSIVE in v["sentence"] and "random mask at 75.0%" in v["sentence"]


def test_a_budget_that_cannot_show_capacity_is_inconclusive():
    v = verdict(_synthetic(ticket_gap=-0.02, random_gap=(0.2, 0.01), empty_gap=None), delta=0.02)
    assert not v["sanity"]["passed"] and INCONCLUSIVE in v["sentence"]
    assert "winning" not in v["sentence"]
    # an experiment recorded with the older empty arm and no random control keeps that check
    old = [r for r in _synthetic(ticket_gap=-0.02, random_gap=0.2, empty_gap=0.05) if r["arm"] != "random"]
    w = verdict(old, delta=0.02, sanity_margin=0.1)
    assert w["sanity"]["kind"] == "empty" and not w["sanity"]["passed"] and INCONCLUSIVE in w["sentence"]


def test_barrier_from_k_against_from_0():
    barriers = [{"seed": s, "rewind_step": k, "barrier": b} for s in range(3)
                for k, b in ((0, 0.30 + 0.01 * s), (20, 0.02 + 0.01 * s))]
    v = verdict(_synthetic(0.0, 0.1, 1.0, n=3), barriers=barriers, rewind_step=20)
    assert v["barrier"]["by_rewind_step"]["0"]["mean"] == pytest.approx(0.31)
    assert v["barrier"]["k_minus_0"]["mean"] == pytest.approx(-0.28) and v["barrier"]["k_minus_0"]["high"] < 0
    assert "from step 20" in v["sentence"]


def test_fewer_than_two_seeds_gives_no_verdict():
    v = verdict(_synthetic(-0.02, 0.2, 1.5, n=1))
    assert "no verdict" in v["sentence"] and not any(e["matching"] for e in v["rounds"])


def test_a_ticket_that_beats_a_random_control_which_also_matches_is_not_winning_but_said_so():
    v = verdict(_synthetic(ticket_gap=-0.05, random_gap=(0.03, 0.2), empty_gap=1.5), delta=0.02)
    e = v["rounds"][0]
    assert e["matching"] and e["controls"]["random"]["matching"] and e["controls"]["random"]["worse_than_ticket"]
    assert not e["winning"] and "does beat the random-mask control" in v["sentence"]


def test_a_verdict_without_the_sanity_check_says_it_was_not_run():
    rows = [r for r in _synthetic(ticket_gap=-0.02, random_gap=0.2, empty_gap=None) if r["arm"] != "random"]
    v = verdict(rows, delta=0.02)
    assert v["sanity"] is None and "matches dense up to 75.0%" in v["sentence"]
    assert "Sanity check not run" in v["sentence"]
    with_it = verdict(_synthetic(ticket_gap=-0.02, random_gap=0.2, empty_gap=1.5), delta=0.02)
    assert "Sanity check passed" in with_it["sentence"] and "not run" not in with_it["sentence"]


def test_the_sentence_states_the_matching_rule_it_applies():
    """Matching is TOST's upper one-sided test (not worse by delta). The sentence used to call it "TOST
    equivalence within +-delta (or better by more than delta)" and to show TOST's max p beside a level it
    declared matching (p = 0.42 beside "matches" for a ticket 0.019 nats better than dense)."""
    v = verdict(_synthetic(ticket_gap=-0.01, random_gap=0.2, empty_gap=1.5), delta=0.02)
    top = v["rounds"][1]
    assert top["matching"] and top["tost"]["outcome"] == "not worse" and top["tost"]["p"] > v["alpha"]
    assert "TOST equivalence within" not in v["sentence"]
    assert "matching = not worse than dense by more than delta" in v["sentence"]
    assert f"not-worse p = {top['tost']['p_upper']:.3g}" in v["sentence"]
