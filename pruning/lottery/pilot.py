"""The pilot of a lottery-ticket experiment: it tunes the learning rate and T, and measures the seed noise
the power analysis needs.

Tuning (issue 18, finding 2). T is not "the step of the validation minimum of one long schedule" (a cosine
schedule is lowest at its end, so that picks its own length by construction): every (lr, T) of the grid is
its own dense run whose schedule has length T, scored by its validation loss at T. When the best value
of either axis sits at an edge of its grid, the grid is extended past that edge (lr x2 or /2, T x2 or /2)
and the new points are run, up to `pilot_extend` times per axis; a best value still at an edge after
that is reported as such ("the grid may not bracket the optimum").

Seed noise. `pilot_seeds` fresh initialisations are each trained twice at the chosen (lr, T) with two
data orders; the spread of (run A - run B) over them is the per-seed sd of a paired difference between
two networks that share an initialisation, which is what the verdict's paired tests see. It is measured
on validation, never on held-out, and feeds `stats.seeds_for_power`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .training import load_state, train

if TYPE_CHECKING:
    from .runner import ImpExperiment, ProgressFactory


def grid_extension(values: list[float] | list[int], best: float, factor: float = 2.0,
                   lowest: float | None = None, integer: bool = False) -> float | int | None:
    """The next grid point past the edge where `best` sits (None when `best` is interior, or the grid cannot
    grow there: a single point at a floor). A single-point grid grows upwards first."""
    lo, hi = min(values), max(values)
    if best == hi and (best != lo or len(values) == 1):
        new = best * factor
    elif best == lo:
        new = best / factor
        if lowest is not None and new < lowest:
            new = lowest
    else:
        return None
    if integer:
        new = int(round(new))
    return None if new in values else new


def _closer(progress, what: str):
    bar = progress(what) if progress else None
    return bar, (lambda: getattr(bar, "close", lambda: None)())


def tune(exp: ImpExperiment, progress: ProgressFactory | None = None) -> dict:
    """The (lr, T) grid with its extensions; returns the pilot record's tuning part."""
    p = exp.protocol
    s = exp._seed(p.first_seed)
    k = p.rewind_step or 0
    lrs, ts = list(p.pilot_lrs), list(p.candidate_ts)
    scores: dict[tuple[float, int], dict] = {}
    notes: list[str] = []
    extended = {"lr": 0, "T": 0}
    while True:
        for lr in lrs:
            for t in ts:
                if (lr, t) in scores:
                    continue
                load_state(s.loaded.model, s.dense_state)
                bar, close = _closer(progress, f"pilot lr {lr:g} T {t}")
                try:
                    res = train(s.loaded.model, exp.train_data, p.train_config(lr=lr, steps=t),
                                data_seed=exp.derive_seed("pilot", lr, t), trainable=exp._trainable(s),
                                evaluate=exp._val, eval_every=0, progress=bar)
                finally:
                    close()
                scores[(lr, t)] = {"lr": lr, "steps": t, "validation": res.curve[-1][1], "seconds": res.seconds}
        best_lr, best_t = min(((lr, t) for lr in lrs for t in ts), key=lambda key: scores[key]["validation"])
        grew = False
        new_lr = grid_extension(lrs, best_lr)
        if new_lr is not None and extended["lr"] < p.pilot_extend:
            notes.append(f"the best learning rate {best_lr:g} was at the edge of {sorted(lrs)}: added {new_lr:g}")
            lrs.append(new_lr)
            extended["lr"] += 1
            grew = True
        new_t = grid_extension(ts, best_t, lowest=k + 1, integer=True)
        if new_t is not None and extended["T"] < p.pilot_extend:
            notes.append(f"the best T {best_t} was at the edge of {sorted(ts)}: added {new_t}")
            ts.append(new_t)
            extended["T"] += 1
            grew = True
        if not grew:
            break
    load_state(s.loaded.model, s.dense_state)
    edge = []
    if len(lrs) > 1 and best_lr in (min(lrs), max(lrs)):
        edge.append(f"the {'smallest' if best_lr == min(lrs) else 'largest'} learning rate tried "
                    f"(after {extended['lr']} extension(s))")
    if len(ts) > 1 and best_t in (min(ts), max(ts)) and grid_extension(ts, best_t, lowest=k + 1, integer=True):
        edge.append(f"the {'shortest' if best_t == min(ts) else 'longest'} T tried (after {extended['T']} "
                    f"extension(s))")
    curves = [{"lr": lr, "curve": [(t, scores[(lr, t)]["validation"]) for t in sorted(ts)],
               "seconds": sum(scores[(lr, t)]["seconds"] for t in ts)} for lr in sorted(lrs)]
    return {"curves": curves, "lr": best_lr, "steps": best_t, "seed": p.first_seed, "edge": edge,
            "extensions": notes, "grid": {"lrs": sorted(lrs), "ts": sorted(ts)},
            "rule": "every (lr, T) its own run with a schedule of length T; the lowest validation loss at T wins; "
                    "a best value at an edge extends that grid",
            "schedule_note": "each T has its own warm-up and cosine decay to T"}


def seed_spread(exp: ImpExperiment, lr: float, steps: int, progress: ProgressFactory | None = None) -> dict:
    """Per-seed sd of a paired difference: `pilot_seeds` fresh inits, each trained twice (two data orders)."""
    p = exp.protocol
    s = exp._seed(p.first_seed)
    cfg = p.train_config(lr=lr, steps=steps)
    pairs = []
    for i in range(p.pilot_seeds):
        init = exp._fresh_init(exp.derive_seed("pilot-init", i))
        losses = []
        for copy in (0, 1):
            load_state(s.loaded.model, init)
            bar, close = _closer(progress, f"pilot seed noise {i} copy {copy}")
            try:
                res = train(s.loaded.model, exp.train_data, cfg, data_seed=exp.derive_seed("pilot-order", i, copy),
                            evaluate=exp._val, eval_every=p.eval_every, progress=bar)
            finally:
                close()
            losses.append(res.best_loss)
        pairs.append(losses)
    load_state(s.loaded.model, s.dense_state)
    diffs = [a - b for a, b in pairs]
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    return {"seed_sd": sd, "seed_pairs": pairs,
            "seed_sd_rule": f"sd over {p.pilot_seeds} fresh initialisations of (validation loss of run A - run B), "
                            f"two data orders each, at lr {lr:g} and T {steps}"}
