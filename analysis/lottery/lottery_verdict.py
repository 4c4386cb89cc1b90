"""The lottery-ticket verdict: paired differences over seeds with t-intervals, and one sentence.

Inputs are per-seed held-out losses (nats/token at each run's validation-selected step) keyed by
(arm, seed, round); the dense network is the ticket arm's round 0 and every difference is paired
by seed (same initialisation), so the interval is on the mean of per-seed differences:
mean +/- t_{(1+c)/2, n-1} * sd / sqrt(n) (Student's t, two-sided, level c).

Per sparsity (round):
- *matching*: the upper bound of (ticket - dense) is below delta (default 0.02 nats);
- *winning ticket*: matching, the random-mask control is not matching, and (random - ticket) > 0 at
  the confidence level (its lower bound is above zero);
- the largest matching sparsity;
- the sanity check: the network with every prunable linear removed must be clearly worse than dense
  (lower bound of (empty - dense) above `sanity_margin`), otherwise the verdict is "inconclusive: the
  budget cannot show a capacity difference";
- the instability barrier from K against from 0 (Frankle et al. 2020), each with its interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

INCONCLUSIVE = "inconclusive: the budget cannot show a capacity difference"


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


def t_quantile(confidence: float, df: int) -> float:
    # scipy.special's inverse Student-t CDF is the same function as scipy.stats.t.ppf (agrees to 1e-12),
    # without importing scipy.stats (0.8 s), which the dashboard's first render of a verdict paid for
    from scipy.special import stdtrit

    return float(stdtrit(df, (1.0 + confidence) / 2.0))


def t_interval(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """Mean and two-sided Student-t interval of `values` (NaNs dropped); n < 2 gives NaN bounds."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    n = len(v)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan, confidence)
    mean = sum(v) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1, math.nan, confidence)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd, confidence)


def _by_seed(rows: list[dict], arm: str, rnd: int) -> dict[int, float]:
    return {int(r["seed"]): float(r["value"]) for r in rows if r["arm"] == arm and int(r["round"]) == rnd}


def paired(rows: list[dict], a: tuple[str, int], b: tuple[str, int], confidence: float = 0.95) -> Interval:
    """Interval of (a - b) over the seeds that have both."""
    xa, xb = _by_seed(rows, *a), _by_seed(rows, *b)
    return t_interval([xa[s] - xb[s] for s in sorted(set(xa) & set(xb))], confidence)


def verdict(rows: list[dict], *, delta: float = 0.02, confidence: float = 0.95, sanity_margin: float = 0.1,
            barriers: list[dict] | None = None, rewind_step: int | None = None) -> dict:
    """rows: {arm, seed, round, sparsity, value}; barriers: {seed, rewind_step, barrier} (dense network).
    Returns per-round results, the largest matching sparsity, the sanity check, the barrier and the sentence."""
    dense = ("ticket", 0)
    rounds = sorted({int(r["round"]) for r in rows if r["arm"] == "ticket" and int(r["round"]) > 0})
    arms = sorted({r["arm"] for r in rows if int(r["round"]) > 0} - {"ticket"})
    per_round = []
    for rnd in rounds:
        sp = [float(r["sparsity"]) for r in rows if r["arm"] == "ticket" and int(r["round"]) == rnd]
        td = paired(rows, ("ticket", rnd), dense, confidence)
        entry = {"round": rnd, "sparsity": sum(sp) / len(sp), "ticket_minus_dense": td.to_dict(),
                 "matching": bool(td.n >= 2 and td.high < delta), "controls": {}}
        for arm in arms:
            vs_dense = paired(rows, (arm, rnd), dense, confidence)
            vs_ticket = paired(rows, (arm, rnd), ("ticket", rnd), confidence)
            entry["controls"][arm] = {"minus_dense": vs_dense.to_dict(), "minus_ticket": vs_ticket.to_dict(),
                                      "matching": bool(vs_dense.n >= 2 and vs_dense.high < delta),
                                      "worse_than_ticket": bool(vs_ticket.n >= 2 and vs_ticket.low > 0)}
        rnd_ctl = entry["controls"].get("random")
        entry["winning"] = bool(entry["matching"] and rnd_ctl is not None and not rnd_ctl["matching"]
                                and rnd_ctl["worse_than_ticket"])
        per_round.append(entry)
    matching = [e["sparsity"] for e in per_round if e["matching"]]
    winning = [e["sparsity"] for e in per_round if e["winning"]]
    sanity = None
    if any(r["arm"] == "empty" for r in rows):
        ed = paired(rows, ("empty", 0), dense, confidence)
        sanity = {"empty_minus_dense": ed.to_dict(), "margin": sanity_margin,
                  "passed": bool(ed.n >= 2 and ed.low > sanity_margin)}
    barrier = _barrier(barriers or [], rewind_step, confidence)
    n = len(_by_seed(rows, *dense))
    out = {"delta": delta, "confidence": confidence, "n_seeds": n, "rounds": per_round,
           "largest_matching_sparsity": max(matching) if matching else None,
           "winning_sparsities": winning, "sanity": sanity, "barrier": barrier}
    out["sentence"] = sentence(out)
    return out


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


def _iv(d: dict) -> Interval:
    return Interval(**d)


def sentence(v: dict) -> str:
    """The verdict in words; delta, the interval level and n are always stated."""
    level = f"{v['confidence']:.0%}"
    head = (f"Held-out loss at the validation-selected step, paired by seed, {level} t-intervals, n = {v['n_seeds']} "
            f"seeds, margin delta = {v['delta']:g} nats: ")
    if v["n_seeds"] < 2:
        return head + "no verdict (fewer than 2 seeds)."
    sanity = v.get("sanity")
    parts = []
    if sanity is not None and not sanity["passed"]:
        parts.append(f"{INCONCLUSIVE} (with every prunable linear removed the loss is only "
                     f"{_iv(sanity['empty_minus_dense']).text()} nats worse than dense; needed > "
                     f"{sanity['margin']:g}).")
    else:
        largest = v["largest_matching_sparsity"]
        if largest is None:
            parts.append("the IMP ticket matches dense at none of the tested sparsities.")
        else:
            e = next(e for e in v["rounds"] if e["sparsity"] == largest)
            parts.append(f"the IMP ticket matches dense up to {largest:.1%} sparsity (ticket - dense "
                         f"{_iv(e['ticket_minus_dense']).text()} nats, upper bound < {v['delta']:g}).")
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
                         f"{v['confidence']:.0%}) at " + ", ".join(
                             f"{e['sparsity']:.1%} ({_iv(e['controls']['random']['minus_ticket']).text()})"
                             for e in beats)
                         + ", where the random control also matches dense or the ticket does not.")
        if sanity is not None:
            parts.append(f"Sanity check passed: with every prunable linear removed the loss is "
                         f"{_iv(sanity['empty_minus_dense']).text()} nats worse than dense.")
        else:
            # --no-sanity (or an experiment recorded without it): what was not checked is said, not implied
            parts.append("Sanity check not run: whether this budget can show a capacity difference at all is "
                         "unchecked.")
    b = v.get("barrier")
    if b:
        by = b["by_rewind_step"]
        text = "; ".join(f"from step {s}: {_iv(i).text()}" for s, i in by.items())
        parts.append(f"Instability barrier of the dense network (loss, validation) {text}.")
    return head + " ".join(parts)


def rows_table(v: dict) -> list[dict]:
    """Flat rows for display: round, sparsity, comparison, mean, low, high, n, verdict flags."""
    out = []
    for e in v["rounds"]:
        td = e["ticket_minus_dense"]
        out.append({"round": e["round"], "sparsity": e["sparsity"], "difference": "ticket - dense", **_flat(td),
                    "matching": e["matching"], "winning": e["winning"]})
        for arm, c in e["controls"].items():
            out.append({"round": e["round"], "sparsity": e["sparsity"], "difference": f"{arm} - ticket",
                        **_flat(c["minus_ticket"]), "matching": c["matching"], "winning": None})
    return out


def _flat(d: dict) -> dict:
    return {"mean": d["mean"], "low": d["low"], "high": d["high"], "n": d["n"]}
