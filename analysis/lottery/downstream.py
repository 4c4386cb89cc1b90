"""What an experiment's tickets do downstream (issue 18; Chen et al. 2020 evaluate their pretrained tickets on
the downstream tasks, not only on the pre-training loss).

The behaviour suites (`instruct`: IFEval, XSTest; `safety`: the bias and truthfulness tasks) run through the
ordinary `eval` path on the experiment's tickets — level 0 (the dense network retrained like every arm) and the
last level of every arm, per seed (`rounds="all"`: every level) — so every number is an ordinary ledger row of an
ordinary ticket, shown by `compare`, `review` and the report as well. This module picks those units and
reads their headline metrics back into one table: per (metric, arm, level) the mean over seeds with its
Student-t interval, and the paired difference against level 0 of the same seed (same initialisation,
same data), oriented by the metric's direction (analysis.metric_meta): `better` / `worse` only when the
interval excludes zero.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from pruning.errors import TicketLabError
from pruning.lottery.stats import t_interval

from .. import like_for_like, metric_meta
from ..ledger import Ledger, evidence_store
from .experiments import find_experiment

ROUNDS = ("last", "all")


@dataclass(frozen=True)
class Unit:
    """One ticket of the experiment: which arm, seed and level it is."""
    arm: str
    seed: int
    round: int
    sparsity: float
    ticket: str


def downstream_units(experiment: str, ledger: Ledger | None = None, rounds: str = "last") -> list[Unit]:
    """Level 0 of every seed and the last level (or every level) of every arm, in (round, arm, seed) order."""
    if rounds not in ROUNDS:
        raise TicketLabError(f"rounds {rounds!r}: choose last or all.")
    ledger = ledger or Ledger()
    exp = find_experiment(experiment, ledger)["id"]
    df = evidence_store.imp_metric_frame(ledger, exp, "heldout", "heldout_loss")
    if df.empty:
        raise TicketLabError(f"experiment {exp} has no recorded tickets yet: run `ticketlab imp` first.")
    df = df.drop_duplicates(["arm", "seed", "round"], keep="last")
    df = df[df.arm != "dense_continuous"]  # its weights are level 0's starting point, not a compared network
    last = int(df["round"].max())
    keep = df[((df["round"] == 0) & (df.arm == "ticket")) | (df["round"] == last) if rounds == "last"
              else df["round"] >= 0]
    keep = keep.sort_values(["round", "arm", "seed"])
    return [Unit(str(r.arm), int(r.seed), int(r.round), float(r.sparsity or 0.0), str(r.subject))
            for r in keep.itertuples()]


def _setup_limit(row: dict) -> int | None:
    return None if row.get("limit") is None or (isinstance(row["limit"], float) and math.isnan(row["limit"])) \
        else int(row["limit"])


def _unit_rows(unit: Unit, ledger: Ledger, limit: int | None = None) -> dict[tuple[str, str], dict]:
    """The newest row of every headline metric of a unit's ticket measured with `limit` (None: the full set)."""
    dense = ledger.get_ticket(unit.ticket)["dense_sha256"]
    heads = set(metric_meta.headline_metrics())
    out: dict[tuple[str, str], dict] = {}
    for r in evidence_store.comparison_rows(ledger, unit.ticket, dense):  # newest first
        key = (r["task"], metric_meta.base_name(r["metric"]))
        if key in heads and key not in out and _setup_limit(r) == limit and r["value"] is not None:
            out[key] = r
    return out


def unit_metrics(unit: Unit, ledger: Ledger, limit: int | None = None) -> dict[tuple[str, str], float]:
    """The newest value of every headline metric of a unit's ticket measured with `limit` (None: the full set)."""
    return {k: float(r["value"]) for k, r in _unit_rows(unit, ledger, limit).items()}


def recorded_limit(experiment: str, ledger: Ledger | None = None) -> int | None | bool:
    """The document limit most of the experiment's downstream units were evaluated with (the full sets first on
    a tie, then the largest limit); False when none has any headline result."""
    ledger = ledger or Ledger()
    heads = set(metric_meta.headline_metrics())
    count: dict[int | None, int] = {}
    for u in downstream_units(experiment, ledger, "all"):
        dense = ledger.get_ticket(u.ticket)["dense_sha256"]
        for limit in {_setup_limit(r) for r in evidence_store.comparison_rows(ledger, u.ticket, dense)
                      if (r["task"], metric_meta.base_name(r["metric"])) in heads}:
            count[limit] = count.get(limit, 0) + 1
    if not count:
        return False
    return max(count, key=lambda k: (count[k], k is None, k or 0))


def downstream_table(experiment: str, ledger: Ledger | None = None, limit: int | None = None,
                     rounds: str = "last", confidence: float = 0.95) -> pd.DataFrame:
    """One row per (task, metric, arm, level) with downstream results: mean [interval] over seeds, and the
    paired (arm - level 0) difference with its interval and what it means for that metric's direction."""
    ledger = ledger or Ledger()
    units = downstream_units(experiment, ledger, rounds)
    found = {u: _unit_rows(u, ledger, limit) for u in units}
    values = {u: {k: float(r["value"]) for k, r in rows.items()} for u, rows in found.items()}
    level0 = {u.seed: values[u] for u in units if u.round == 0 and u.arm == "ticket"}
    base_rows = {u.seed: found[u] for u in units if u.round == 0 and u.arm == "ticket"}
    keys = sorted({k for v in values.values() for k in v})
    rows = []
    for task, metric in keys:
        direction, _ideal = metric_meta.direction(task, metric)
        groups: dict[tuple[int, str], list[Unit]] = {}
        for u in units:
            if (task, metric) in values[u]:
                groups.setdefault((u.round, u.arm), []).append(u)
        for (rnd, arm), us in sorted(groups.items()):
            iv = t_interval([values[u][(task, metric)] for u in us], confidence)
            # paired only with a level-0 row measured the same way (the one like-for-like rule)
            diffs = [values[u][(task, metric)] - level0[u.seed][(task, metric)] for u in us
                     if rnd > 0 and (task, metric) in level0.get(u.seed, {})
                     and like_for_like.same(found[u][(task, metric)], base_rows[u.seed][(task, metric)])]
            d = t_interval(diffs, confidence)
            rows.append({"task": task, "metric": metric, "direction": direction, "arm": arm, "round": rnd,
                         "sparsity": sum(u.sparsity for u in us) / len(us), "mean": iv.mean, "low": iv.low,
                         "high": iv.high, "n": iv.n, "minus_level0": d.mean if d.n else math.nan,
                         "minus_low": d.low, "minus_high": d.high, "pairs": d.n,
                         "reading": reading(d.mean, d.low, d.high, d.n, direction)})
    table = pd.DataFrame(rows)
    table.attrs.update(experiment=find_experiment(experiment, ledger)["id"], limit=limit, rounds=rounds,
                       confidence=confidence, units=len(units),
                       evaluated=sum(1 for u in units if values[u]))
    return table


def reading(mean: float, low: float, high: float, n: int, direction: str | None) -> str:
    """better / worse than level 0 when the paired interval excludes zero, else `no change shown`."""
    if n < 2 or any(math.isnan(x) for x in (mean, low, high)):
        return "-" if n == 0 else "n<2: no interval"
    if low <= 0 <= high:
        return "no change shown"
    up = low > 0
    if direction == "higher":
        return "better" if up else "worse"
    if direction == "lower":
        return "worse" if up else "better"
    return "higher" if up else "lower"  # a target metric: the direction of the change, judged by its ideal


def format_downstream(table: pd.DataFrame) -> str:
    """The table as text (imp-report and `ticketlab imp-eval`)."""
    a = table.attrs
    limit = "the full sets" if a.get("limit") is None else f"{a['limit']} documents per task"
    head = (f"downstream ({a.get('evaluated', 0)} of {a.get('units', 0)} tickets evaluated, {limit}; mean "
            f"[{a.get('confidence', 0.95):.0%} t-interval] over seeds; arm - level 0 paired by seed)")
    if table.empty:
        return head + ": none recorded yet (run `ticketlab imp-eval EXPERIMENT --suite instruct`)."
    lines = [head]
    for (task, metric), part in table.groupby(["task", "metric"], sort=False):
        lines.append(f"  {task} {metric} ({part['direction'].iloc[0] or 'no direction'}):")
        for r in part.itertuples():
            cell = f"{r.mean:.3f}" + (f" [{r.low:.3f}, {r.high:.3f}]" if r.n >= 2 else " (n=1)")
            diff = "" if r.round == 0 else (f"  minus level 0 {r.minus_level0:+.3f}"
                                            + (f" [{r.minus_low:+.3f}, {r.minus_high:+.3f}]" if r.pairs >= 2 else "")
                                            + f": {r.reading}")
            lines.append(f"    level {r.round} ({r.sparsity:.1%}) {r.arm:<10} {cell}{diff}")
    return "\n".join(lines)


def to_json(table: pd.DataFrame) -> list[dict]:
    return json.loads(table.to_json(orient="records")) if not table.empty else []
