"""The lottery-ticket verdict: paired differences over seeds with t-intervals, and one sentence.

Inputs are per-seed held-out losses (nats/token at each run's validation-selected step) keyed by
(arm, seed, round); the dense network is the ticket arm's round 0 and every difference is paired
by seed (same initialisation), so the interval is on the mean of per-seed differences:
mean +/- t_{(1+c)/2, n-1} * sd / sqrt(n) (Student's t, two-sided, level c).

Per sparsity (round):
- *matching*: not worse than dense by more than delta (default 0.02 nats): the upper one-sided test of TOST
  (pruning.lottery.stats.tost) of (ticket - dense) rejects "mean >= delta" at alpha = 1 - confidence. The
  full TOST outcome (equivalent within +-delta, better, not worse) is reported beside it; equivalence itself
  is not required, since a ticket better than dense matches it;
- the testing order: sparsities from low to high, stopping at the first that does not match, so the
  largest matching sparsity is wrong with probability at most alpha;
- *winning ticket*: matching, the random-mask control is not matching, and (random - ticket) > 0 at
  the confidence level (its lower bound is above zero);
- the largest matching sparsity;
- the sanity check: the random mask at the highest sparsity tested must be worse than dense by more than
  delta (one-sided, at alpha), otherwise the verdict is "inconclusive: the budget cannot show a capacity
  difference" (older experiments: the network with every prunable linear removed, margin `sanity_margin`);
- the power analysis, given the pilot's per-seed sd: the power of the seeds used, and the seeds needed;
- the instability barrier from K against from 0 (Frankle et al. 2020), each with its interval.
"""

from __future__ import annotations

import math

from pruning.lottery.stats import (
    Interval,
    Tost,
    fixed_sequence,
    seeds_for_power,
    t_interval,
    t_quantile,
    tost,
)

__all__ = ["INCONCLUSIVE", "Interval", "paired", "rows_table", "sanity_text", "sentence", "t_interval", "t_quantile", "verdict"]

INCONCLUSIVE = "inconclusive: the budget cannot show a capacity difference"


def _by_seed(rows: list[dict], arm: str, rnd: int) -> dict[int, float]:
    return {int(r["seed"]): float(r["value"]) for r in rows if r["arm"] == arm and int(r["round"]) == rnd}


def paired(rows: list[dict], a: tuple[str, int], b: tuple[str, int], confidence: float = 0.95) -> Interval:
    """Interval of (a - b) over the seeds that have both."""
    xa, xb = _by_seed(rows, *a), _by_seed(rows, *b)
    return t_interval([xa[s] - xb[s] for s in sorted(set(xa) & set(xb))], confidence)


def _tost(rows: list[dict], a: tuple[str, int], b: tuple[str, int], delta: float, alpha: float) -> Tost:
    xa, xb = _by_seed(rows, *a), _by_seed(rows, *b)
    return tost([xa[s] - xb[s] for s in sorted(set(xa) & set(xb))], delta, alpha)


def verdict(rows: list[dict], *, delta: float = 0.02, confidence: float = 0.95, sanity_margin: float = 0.1,
            barriers: list[dict] | None = None, rewind_step: int | None = None, seed_sd: float | None = None,
            power_target: float = 0.8, min_seeds: int = 5, sd_source: str = "the pilot") -> dict:
    """rows: {arm, seed, round, sparsity, value}; barriers: {seed, rewind_step, barrier[, round]}.

    Per level: the paired (ticket - dense) interval at `confidence`, its TOST against +-delta at
    alpha = 1 - confidence, and the same for every control. Levels are tested from low to high sparsity and
    the testing stops at the first level where the ticket does not match (fixed sequence: the largest
    matching sparsity is wrong with probability at most alpha). `seed_sd` (the per-seed sd of a paired
    difference, from the pilot) adds the power analysis for the seeds used."""
    alpha = 1.0 - confidence
    dense = ("ticket", 0)
    rounds = sorted({int(r["round"]) for r in rows if r["arm"] == "ticket" and int(r["round"]) > 0})
    arms = sorted({r["arm"] for r in rows if int(r["round"]) > 0} - {"ticket"})
    per_round = []
    for rnd in rounds:
        sp = [float(r["sparsity"]) for r in rows if r["arm"] == "ticket" and int(r["round"]) == rnd]
        td = paired(rows, ("ticket", rnd), dense, confidence)
        test = _tost(rows, ("ticket", rnd), dense, delta, alpha)
        entry = {"round": rnd, "sparsity": sum(sp) / len(sp), "ticket_minus_dense": td.to_dict(),
                 "tost": test.to_dict(), "matching": test.matching, "controls": {}}
        for arm in arms:
            vs_dense = paired(rows, (arm, rnd), dense, confidence)
            vs_ticket = paired(rows, (arm, rnd), ("ticket", rnd), confidence)
            ctl = _tost(rows, (arm, rnd), dense, delta, alpha)
            entry["controls"][arm] = {"minus_dense": vs_dense.to_dict(), "minus_ticket": vs_ticket.to_dict(),
                                      "tost": ctl.to_dict(), "matching": ctl.matching,
                                      "worse_than_ticket": bool(vs_ticket.n >= 2 and vs_ticket.low > 0)}
        rnd_ctl = entry["controls"].get("random")
        entry["winning"] = bool(entry["matching"] and rnd_ctl is not None and not rnd_ctl["matching"]
                                and rnd_ctl["worse_than_ticket"])
        per_round.append(entry)
    by_sparsity = {e["sparsity"]: e for e in per_round}
    order = fixed_sequence(list(by_sparsity), lambda sp: by_sparsity[sp]["matching"])
    tested = {sp for sp, _ in order.tested}
    for e in per_round:
        e["tested"] = e["sparsity"] in tested
        e["winning"] = e["winning"] and e["tested"]
    winning = [e["sparsity"] for e in per_round if e["winning"]]
    n = len(_by_seed(rows, *dense))
    power = None
    if seed_sd is not None and n >= 2:
        power = seeds_for_power(seed_sd, delta, alpha, power_target, min_seeds, given=n, source=sd_source).to_dict()
    out = {"delta": delta, "confidence": confidence, "alpha": alpha, "n_seeds": n, "rounds": per_round,
           "testing_order": {"tested": [sp for sp, _ in order.tested], "untested": order.untested,
                             "stopped_at": order.stopped_at,
                             "rule": "from low to high sparsity, each level by TOST's upper one-sided test (not worse "
                                     "than dense by delta) at alpha, stopping at the first "
                                     "level where the ticket does not match; familywise error <= alpha"},
           "largest_matching_sparsity": order.largest, "stopping_sparsity": order.stopped_at,
           "separation_sparsity": next((e["sparsity"] for e in per_round
                                        if e["controls"].get("random", {}).get("worse_than_ticket")), None),
           "winning_sparsities": winning, "sanity": _sanity(rows, per_round, delta, confidence, sanity_margin),
           "barrier": _barrier([b for b in barriers or [] if int(b.get("round", 0)) == 0], rewind_step, confidence),
           "sparse_stability": _sparse_stability(barriers or [], per_round, confidence),
           "power": power, "dense_baselines": _dense_baselines(rows, confidence)}
    out["sentence"] = sentence(out)
    return out


def _sanity(rows: list[dict], per_round: list[dict], delta: float, confidence: float,
            margin: float) -> dict | None:
    """Can this budget tell the sparsest level from dense at all? The random mask at the highest sparsity tested
    must be worse than dense by more than delta (TOST's one-sided test); otherwise every arm matching says
    nothing. Experiments recorded with the older `empty` arm (every prunable linear removed) keep that check."""
    dense = ("ticket", 0)
    with_random = [e for e in per_round if "random" in e["controls"] and e["controls"]["random"]["tost"]["n"] >= 2]
    if with_random:
        e = max(with_random, key=lambda e: e["sparsity"])
        t = e["controls"]["random"]["tost"]
        return {"kind": "random_at_highest_sparsity", "sparsity": e["sparsity"], "round": e["round"],
                "minus_dense": e["controls"]["random"]["minus_dense"], "margin": delta, "p": t["p_worse"],
                "passed": bool(t["p_worse"] < 1.0 - confidence)}
    if any(r["arm"] == "empty" for r in rows):
        ed = paired(rows, ("empty", 0), dense, confidence)
        return {"kind": "empty", "minus_dense": ed.to_dict(), "empty_minus_dense": ed.to_dict(), "margin": margin,
                "passed": bool(ed.n >= 2 and ed.low > margin)}
    return None


def _dense_baselines(rows: list[dict], confidence: float) -> dict | None:
    """Level 0 (dense resumed at K, the baseline every arm is compared with) beside the continuous dense run."""
    if not any(r["arm"] == "dense_continuous" for r in rows):
        return None
    return {"from_k": t_interval(_by_seed(rows, "ticket", 0).values(), confidence).to_dict(),
            "continuous": t_interval(_by_seed(rows, "dense_continuous", 0).values(), confidence).to_dict(),
            "continuous_minus_from_k": paired(rows, ("dense_continuous", 0), ("ticket", 0), confidence).to_dict()}


def _sparse_stability(barriers: list[dict], per_round: list[dict], confidence: float) -> list[dict]:
    """Instability of the ticket at each level and rewind step K (Frankle et al. 2020), with intervals."""
    sparsity = {e["round"]: e["sparsity"] for e in per_round}
    keys = sorted({(int(b.get("round", 0)), int(b["rewind_step"])) for b in barriers if int(b.get("round", 0)) > 0})
    return [{"round": rnd, "sparsity": sparsity.get(rnd), "rewind_step": k,
             **t_interval([b["barrier"] for b in barriers if int(b.get("round", 0)) == rnd
                           and int(b["rewind_step"]) == k], confidence).to_dict()} for rnd, k in keys]


def _barrier(barriers: list[dict], k: int | None, confidence: float) -> dict | None:
    if not barriers:
        return None
    steps = sorted({int(b["rewind_step"]) for b in barriers})
    out = {"by_rewind_step": {str(s): t_interval([b["barrier"] for b in barriers if int(b["rewind_step"]) == s],
                                                 confidence).to_dict() for s in steps}}
    if k and k in steps and 0 in steps:
        at = {int(b["seed"]): b["barrier"] for b in barriers if int(b["rewind_step"]) == k}
        zero = {int(b["seed"]): b["barrier"] for b in barriers if int(b["rewind_step"]) == 0}
        out["k"] = k
        out["k_minus_0"] = t_interval([at[s] - zero[s] for s in sorted(set(at) & set(zero))], confidence).to_dict()
    return out


def _not_winning(e: dict) -> str:
    """Why a level where the ticket beats the random mask is still not a winning ticket."""
    if not e["tested"]:
        return "not a winning ticket there: the testing order stopped before this level"
    if not e["matching"]:
        return "not a winning ticket there: the ticket does not match dense"
    return "not a winning ticket there: the random control matches dense too"


def _iv(d: dict) -> Interval:
    return Interval(**d)


def interval_cell(mean: float | None, low: float, high: float, missing: str = "-") -> str:
    """A level's mean and interval as a table cell, with the verdict sentence's decimals (`Interval.text`):
    the Experiments page and `imp-report` both print their tables through it, so they cannot disagree."""
    if mean is None or math.isnan(mean):
        return missing
    return f"{mean:.3f}" if math.isnan(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def sanity_text(sanity: dict) -> str:
    """The sanity check in words (for the sentence, the report and the dashboard)."""
    iv = _iv(sanity["minus_dense"]).text()
    if sanity["kind"] == "empty":
        return f"every prunable linear removed - dense = {iv} nats (needed > {sanity['margin']:g})"
    return (f"random mask at {sanity['sparsity']:.1%} sparsity (the highest tested) - dense = {iv} nats (it must be "
            f"worse by more than delta = {sanity['margin']:g}: one-sided p = {sanity['p']:.3g})")


def _level(e: dict) -> str:
    t = e["tost"]
    # the p that decides matching is the upper one-sided test's; TOST's max(p) is about equivalence only
    return (f"{e['sparsity']:.1%}: ticket - dense {_iv(e['ticket_minus_dense']).text()}, not-worse p = "
            f"{t['p_upper']:.3g}, TOST equivalence p = {t['p']:.3g} ({t['outcome']})")


def sentence(v: dict) -> str:
    """The verdict in words; delta, the interval level, the test, its order and n are always stated."""
    level = f"{v['confidence']:.0%}"
    alpha = v.get("alpha", 1.0 - v["confidence"])
    head = (f"Held-out loss at the validation-selected step, paired by seed, {level} t-intervals, n = {v['n_seeds']} "
            f"seeds, margin delta = {v['delta']:g} nats, matching = not worse than dense by more than delta (TOST's "
            f"upper one-sided test, so a ticket better than dense matches) at alpha = {alpha:.2g}, sparsities tested from low to high, stopping at the first "
            f"failure (familywise error <= {alpha:.2g}): ")
    if v["n_seeds"] < 2:
        return head + "no verdict (fewer than 2 seeds)."
    sanity = v.get("sanity")
    parts = []
    if sanity is not None and not sanity["passed"]:
        parts.append(f"{INCONCLUSIVE} ({sanity_text(sanity)}).")
    else:
        largest = v["largest_matching_sparsity"]
        stop = v.get("stopping_sparsity")
        if largest is None:
            parts.append("the IMP ticket matches dense at none of the tested sparsities"
                         + (f" (the first level, {_level(next(e for e in v['rounds'] if e['sparsity'] == stop))})."
                            if stop is not None else "."))
        else:
            e = next(e for e in v["rounds"] if e["sparsity"] == largest)
            parts.append(f"the IMP ticket matches dense up to {largest:.1%} sparsity ({_level(e)})"
                         + (f"; testing stopped at {_level(next(x for x in v['rounds'] if x['sparsity'] == stop))}."
                            if stop is not None else "; every level matched."))
        if v["winning_sparsities"]:
            parts.append("It is a winning ticket (matching, the random-mask control not, random - ticket > 0) at "
                         + ", ".join(f"{s:.1%}" for s in v["winning_sparsities"]) + ".")
        elif largest is not None:
            parts.append("It is not a winning ticket at any sparsity: the random-mask control also matches or is "
                         "not worse than the ticket at the confidence level.")
        beats = [e for e in v["rounds"] if e["controls"].get("random", {}).get("worse_than_ticket")
                 and not e["winning"]]
        if beats:
            parts.append("The ticket does beat the random-mask control (random - ticket > 0 at "
                         f"{v['confidence']:.0%}) at " + "; ".join(
                             f"{e['sparsity']:.1%} ({_iv(e['controls']['random']['minus_ticket']).text()}: "
                             f"{_not_winning(e)})" for e in beats) + ".")
        if sanity is not None:
            parts.append(f"Sanity check passed: {sanity_text(sanity)}.")
        else:
            # an experiment without a random control or the older empty arm: what was not checked is said
            parts.append("Sanity check not run: whether this budget can show a capacity difference at all is "
                         "unchecked.")
    db = v.get("dense_baselines")
    if db:
        parts.append(f"Dense baseline (level 0, resumed at K with its optimizer state like every arm) "
                     f"{_iv(db['from_k']).text(signed=False)}; the continuous dense run "
                     f"{_iv(db['continuous']).text(signed=False)} (continuous - from K "
                     f"{_iv(db['continuous_minus_from_k']).text()}).")
    sep = v.get("separation_sparsity")
    if sep is not None and v.get("n_seeds", 0) >= 2 and not (sanity is not None and not sanity["passed"]):
        parts.append(f"Ticket and random mask separate (random - ticket > 0 at {level}) first at {sep:.1%} sparsity.")
    pw = v.get("power")
    if pw:
        parts.append(f"Power: {pw['given']} seeds give {pw['achieved']:.2f} power to find a ticket exactly as good "
                     f"as dense matching (per-seed sd {pw['sd']:.4f} from {pw['source']}); "
                     + (f"{pw['needed']} reach {pw['target']:.2f}." if pw["enough"]
                        else f"no seed count up to 200 reaches {pw['target']:.2f}." if pw["needed"] is None
                        else f"{pw['needed']} seeds are needed for {pw['target']:.2f}."))
    b = v.get("barrier")
    if b:
        by = b["by_rewind_step"]
        text = "; ".join(f"from step {s}: {_iv(i).text()}" for s, i in by.items())
        parts.append(f"Instability barrier of the dense network (loss, validation) {text}.")
    sparse = v.get("sparse_stability")
    if sparse:
        parts.append("Instability of the ticket: " + "; ".join(
            f"{x['sparsity']:.1%} from step {x['rewind_step']}: {_iv({k: x[k] for k in Interval.__dataclass_fields__}).text()}"
            for x in sparse if x["sparsity"] is not None) + ".")
    return head + " ".join(parts)


def rows_table(v: dict) -> list[dict]:
    """Flat rows for display: round, sparsity, comparison, mean, low, high, n, verdict flags."""
    out = []
    for e in v["rounds"]:
        td = e["ticket_minus_dense"]
        out.append({"round": e["round"], "sparsity": e["sparsity"], "difference": "ticket - dense", **_flat(td),
                    "tost_p": e["tost"]["p"], "outcome": e["tost"]["outcome"], "tested": e["tested"],
                    "matching": e["matching"], "winning": e["winning"]})
        for arm, c in e["controls"].items():
            out.append({"round": e["round"], "sparsity": e["sparsity"], "difference": f"{arm} - ticket",
                        **_flat(c["minus_ticket"]), "tost_p": c["tost"]["p"], "outcome": c["tost"]["outcome"],
                        "tested": e["tested"], "matching": c["matching"], "winning": None})
    return out


def _flat(d: dict) -> dict:
    return {"mean": d["mean"], "low": d["low"], "high": d["high"], "n": d["n"]}
