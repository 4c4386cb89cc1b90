"""IMP experiments in the ledger: recording units, the sparsity x arm table with intervals, the verdict,
learning curves, the pilot, and figures.

Every (arm, seed, round) becomes a ticket row (via `record_prune`, kind "imp") and one run with two
metrics, suite "imp", task "heldout": `heldout_loss` (nats per token at the run's validation-selected
step) and `perplexity`, with extra {experiment, arm, seed, round, rewind, sparsity, curve, best_step,
start_step, optimizer_steps}. Stability adds `loss_barrier` (task "stability", extra rewind_step and
the interpolation curve). The `experiments` row holds the protocol, the status and a summary with the
verdict. Recording is idempotent: a resumed experiment replays its finished units and only the ones
missing from the ledger are written.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pandas as pd

from pruning.errors import TicketLabError
from pruning.lottery.runner import RoundResult
from pruning.refs import resolve_ref

from .. import metric_meta
from ..ledger import Ledger, MetricRow, evidence_store
from ..recording import record_prune
from .lottery_verdict import interval_cell, sanity_text, t_interval, verdict

ARM_ORDER = ("ticket", "random", "reinit", "magnitude", "wanda", "dense_matched", "dense_continuous")
COLORS = {"ticket": "#1f77b4", "reinit": "#ff7f0e", "random": "#2ca02c", "magnitude": "#9467bd",
          "wanda": "#8c564b", "dense_matched": "#7f7f7f", "dense": "#000000", "empty": "#d62728",
          "dense_continuous": "#555555"}


def _direction(task: str, metric: str) -> str | None:
    return metric_meta.direction(task, metric)[0]


def _recorded(ledger: Ledger, r: RoundResult, task: str, rewind_step: int | None = None) -> bool:
    return evidence_store.imp_unit_recorded(ledger, task, r.ticket.id, r.experiment, r.arm, r.seed, r.round,
                                            rewind_step)


def record_round(r: RoundResult, ledger: Ledger | None = None, command: str = "ticketlab imp") -> bool:
    """Ticket row, survival tables and metrics for one unit; returns False when it was already there."""
    ledger = ledger or Ledger()
    wrote = False
    extra = {"experiment": r.experiment, "arm": r.arm, "seed": r.seed, "round": r.round, "rewind": r.rewind,
             "sparsity": r.sparsity}
    if not _recorded(ledger, r, "heldout"):
        record_prune(r.dense, r.ticket, command, ledger, experiment=r.experiment, kind="imp")
        params = {"experiment": r.experiment, "arm": r.arm, "seed": r.seed, "round": r.round,
                  "train_seconds": r.train_seconds, "tokens_per_second": r.tokens_per_second,
                  "train_loss": r.train_loss, "start_step": r.record.get("start_step"),
                  "optimizer_steps": r.record.get("optimizer_steps"), "data_seed": r.record.get("data_seed")}
        detail = {**extra, "curve": r.record.get("curve"), "best_step": r.record.get("best_step"),
                  "start_step": r.record.get("start_step"), "optimizer_steps": r.record.get("optimizer_steps")}
        with ledger.run("imp", command, subject=r.ticket.id, dense_sha256=r.dense.weights_sha256,
                        params=params) as run:
            run.add_metric(MetricRow("imp", "heldout", "heldout_loss", r.heldout_loss, direction=_direction("heldout", "heldout_loss"),
                                     n_samples=r.heldout_tokens, extra=detail))
            run.add_metric(MetricRow("imp", "heldout", "perplexity", r.perplexity, direction=_direction("heldout", "perplexity"),
                                     n_samples=r.heldout_tokens, extra=extra))
        wrote = True
    for key, st in (r.stability or {}).items():
        k = int(st.get("rewind_step", key))
        if _recorded(ledger, r, "stability", k):
            continue
        with ledger.run("imp", command + " (stability)", subject=r.ticket.id,
                        dense_sha256=r.dense.weights_sha256, params={"experiment": r.experiment}) as run:
            run.add_metric(MetricRow("imp", "stability", "loss_barrier", st["barrier"], direction=_direction("stability", "loss_barrier"),
                                     extra={**extra, "rewind_step": k, "alphas": st["alphas"],
                                            "losses": st["losses"]}))
        wrote = True
    return wrote


def record_experiment(experiment: str, params: dict, status: str, summary: dict | None = None,
                      ledger: Ledger | None = None) -> None:
    """Insert or update the `experiments` row (status: running, complete, failed)."""
    ledger = ledger or Ledger()
    evidence_store.upsert_experiment(ledger, experiment, _dump(params), status,
                                     dt.datetime.now(dt.UTC).replace(tzinfo=None), _dump(summary))


def find_experiment(ref: str, ledger: Ledger | None = None) -> dict:
    ledger = ledger or Ledger()
    rows = {r["id"]: r for r in evidence_store.experiments(ledger)}
    ids = list(rows)
    if not ids:
        raise TicketLabError(f"no experiment {ref!r} in the ledger {ledger.path}; run `ticketlab imp` first "
                             f"(its output names the experiment).")
    # experiment ids are "imp-<hex>": the hex part follows the one reference rule (literal, >= 6 digits)
    by_hex = {i.removeprefix("imp-"): i for i in ids}
    hit = by_hex[resolve_ref(ref.removeprefix("imp-"), by_hex, "experiment", f"the ledger {ledger.path}")] \
        if ref not in ids else ref
    return rows[hit]


def _params(row: dict) -> dict:
    p = row.get("params")
    return json.loads(p) if isinstance(p, str) else (p or {})


def _metric_frame(ledger: Ledger, experiment: str, task: str, metric: str) -> pd.DataFrame:
    return evidence_store.imp_metric_frame(ledger, experiment, task, metric)


def _losses(ledger: Ledger, exp: str) -> pd.DataFrame:
    df = _metric_frame(ledger, exp, "heldout", "heldout_loss")
    if df.empty:
        raise TicketLabError(f"experiment {exp} has no recorded rounds yet.")
    return df.drop_duplicates(["arm", "seed", "round"], keep="last")


def experiment_verdict(experiment: str, ledger: Ledger | None = None) -> dict:
    """The verdict (analysis.lottery.lottery_verdict) from the recorded per-seed losses, with the protocol's delta,
    confidence and sanity margin."""
    ledger = ledger or Ledger()
    row = find_experiment(experiment, ledger)
    return _verdict_of(ledger, row, _losses(ledger, row["id"]))


def _verdict_of(ledger: Ledger, row: dict, df: pd.DataFrame) -> dict:
    proto = _params(row)
    bar = _metric_frame(ledger, row["id"], "stability", "loss_barrier")
    bar = bar.drop_duplicates(["seed", "round", "rewind_step"], keep="last") if not bar.empty else bar
    barriers = [{"seed": int(b.seed), "round": int(b.round), "rewind_step": int(b.rewind_step),
                 "barrier": float(b.value)} for b in bar.itertuples()]
    k = proto.get("rewind_step")
    pilot = _pilot_of(row)
    sd = (pilot or {}).get("seed_sd")
    return verdict(df[["arm", "seed", "round", "sparsity", "value"]].to_dict("records"),
                   delta=float(proto.get("delta", 0.02)), confidence=float(proto.get("confidence", 0.95)),
                   sanity_margin=float(proto.get("sanity_margin", 0.1)), barriers=barriers, rewind_step=k,
                   seed_sd=sd, power_target=float(proto.get("power", 0.8)),
                   min_seeds=int(proto.get("min_seeds", 5)), sd_source="the pilot's seeds")


def _pilot_of(row: dict) -> dict | None:
    folder = _params(row).get("folder")
    path = Path(folder) / "pilot.json" if folder else None
    return json.loads(path.read_text()) if path and path.exists() else None


def imp_report(experiment: str, ledger: Ledger | None = None) -> pd.DataFrame:
    """One row per round: sparsity, weights remaining, and for every arm the mean held-out loss over seeds
    with its 95% t-interval and n; the paired (ticket - dense) interval, `matching` and `winning` from the
    verdict. attrs: experiment, rewind, verdict (dict), sentence."""
    ledger = ledger or Ledger()
    row = find_experiment(experiment, ledger)
    exp = row["id"]
    df = _losses(ledger, exp)
    v = _verdict_of(ledger, row, df)  # the rows already read, not a second round of queries
    conf = v["confidence"]
    dense = t_interval(df[(df.arm == "ticket") & (df["round"] == 0)]["value"], conf)
    by_round = {e["round"]: e for e in v["rounds"]}
    arms = [a for a in ARM_ORDER if a in set(df.arm)]
    rows = []
    for rnd in sorted(df["round"].unique()):
        part = df[df["round"] == rnd]
        if rnd == 0:
            sparsity = 0.0
        else:
            sparsity = float(part[part.arm == "ticket"]["sparsity"].mean() if (part.arm == "ticket").any()
                             else part["sparsity"].mean())
        row = {"round": int(rnd), "sparsity": sparsity, "remaining": 1.0 - sparsity,
               "dense_mean": dense.mean, "dense_low": dense.low, "dense_high": dense.high, "dense_n": dense.n}
        for arm in arms:
            iv = t_interval(part[part.arm == arm]["value"], conf) \
                if (rnd > 0 or arm in ("ticket", "dense_continuous")) else None
            row[f"{arm}_mean"] = iv.mean if iv else math.nan
            row[f"{arm}_low"] = iv.low if iv else math.nan
            row[f"{arm}_high"] = iv.high if iv else math.nan
            row[f"{arm}_n"] = iv.n if iv else 0
        e = by_round.get(int(rnd))
        row["n_seeds"] = int(part[part.arm == "ticket"]["seed"].nunique())
        if e:
            td = e["ticket_minus_dense"]
            row.update(ticket_minus_dense=td["mean"], tmd_low=td["low"], tmd_high=td["high"],
                       matching=e["matching"], winning=e["winning"], tested=e["tested"],
                       outcome=e["tost"]["outcome"], tost_p=e["tost"]["p"])
        else:
            row.update(ticket_minus_dense=math.nan, tmd_low=math.nan, tmd_high=math.nan, matching=None, winning=None,
                       tested=None, outcome=None, tost_p=math.nan)
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(experiment=exp, verdict=v, sentence=v["sentence"], arms=arms,
                       budget=_params(find_experiment(exp, ledger)).get("budget"),
                       rewind=df["rewind"].dropna().iloc[0] if df["rewind"].notna().any() else None)
    return table


def format_report(table: pd.DataFrame) -> str:
    """The table as text: mean [95% interval] per arm, the paired ticket - dense interval, the verdict."""
    v = table.attrs["verdict"]
    level = f"{v['confidence']:.0%}"

    cell = interval_cell
    arms = table.attrs["arms"]
    header = f"{'round':>5} {'sparsity':>8} " + " ".join(f"{a:>21}" for a in arms) + \
        f" {'ticket-dense':>26} {'n':>2} matching winning"
    lines = [f"experiment {table.attrs.get('experiment')}  rewind {table.attrs.get('rewind')}  held-out loss "
             f"(nats/token) at the validation-selected step, mean [{level} t-interval] over seeds; round 0 = dense",
             header]
    for r in table.to_dict("records"):
        line = f"{r['round']:>5} {r['sparsity']:>8.1%} " + " ".join(
            f"{cell(r[f'{a}_mean'], r[f'{a}_low'], r[f'{a}_high']):>21}" for a in arms)
        tmd = "-" if r["round"] == 0 else cell(r["ticket_minus_dense"], r["tmd_low"], r["tmd_high"])
        flags = "" if r["round"] == 0 else f"{'yes' if r['matching'] else 'no':>8} {'yes' if r['winning'] else 'no':>7}"
        lines.append(line + f" {tmd:>26} {r['n_seeds']:>2} {flags}")
    for e in v["rounds"]:
        t = e["tost"]
        lines.append(f"  {e['sparsity']:.1%}: not-worse p = {t['p_upper']:.3g} (decides matching), TOST equivalence "
                     f"p = {t['p']:.3g}, {t['outcome']}, "
                     f"{'matching' if e['matching'] else 'not matching'}"
                     f"{'' if e['tested'] else ' (not tested: after the first failure)'}")
    s = v.get("sanity")
    if s:
        lines.append(f"sanity check: {sanity_text(s)}: {'passed' if s['passed'] else 'FAILED'}")
    b = v.get("barrier")
    if b:
        lines.append("instability barrier of the dense network: " + "; ".join(
            f"from step {k}: {cell(i['mean'], i['low'], i['high'])}" for k, i in b["by_rewind_step"].items()))
    for x in v.get("sparse_stability") or []:
        lines.append(f"instability of the ticket at {x['sparsity']:.1%} from step {x['rewind_step']}: "
                     f"{cell(x['mean'], x['low'], x['high'])}")
    db = v.get("dense_baselines")
    if db:
        fk, co = db["from_k"], db["continuous"]
        lines.append(f"dense baseline (level 0, resumed at K): {cell(fk['mean'], fk['low'], fk['high'])}; "
                     f"continuous dense run: {cell(co['mean'], co['low'], co['high'])}")
    b = table.attrs.get("budget")
    if b:
        lines.append(budget_text(b))
    pw = v.get("power")
    if pw:
        lines.append(f"power: {pw['given']} seeds -> {pw['achieved']:.2f} (sd {pw['sd']:.4f} from {pw['source']}); "
                     f"{pw['needed'] or 'more than 200'} seeds needed for {pw['target']:.2f}")
    largest = v["largest_matching_sparsity"]
    stop = v.get("stopping_sparsity")
    sep = v.get("separation_sparsity")
    lines.append("ticket and random separate (random - ticket > 0): "
                 + ("at no level" if sep is None else f"first at {sep:.1%} sparsity"))
    lines.append(f"largest matching sparsity (delta {v['delta']:g} nats, tested from low to high sparsity): "
                 f"{'none' if largest is None else f'{largest:.1%}'}"
                 f"{'' if stop is None else f'; stopped at {stop:.1%}'}")
    lines.append("VERDICT: " + v["sentence"])
    return "\n".join(lines)


def budget_text(b: dict) -> str:
    """Parameters, tokens per parameter and epochs of one full-length run, in words."""
    return (f"budget: {b['parameters']:,} parameters ({b['prunable_parameters']:,} prunable, "
            f"{b['embedding_parameters']:,} embedding), {b['tokens_per_run']:,} tokens per full run = "
            f"{b['epochs']:.2f} epochs of the {b['train_tokens']:,}-token train split, "
            f"{b['tokens_per_parameter']:.2f} tokens per parameter")


def learning_curves(experiment: str, ledger: Ledger | None = None) -> pd.DataFrame:
    """Validation loss per (arm, round, step): mean and t-interval over seeds."""
    ledger = ledger or Ledger()
    row = find_experiment(experiment, ledger)
    df = _losses(ledger, row["id"])
    conf = float(_params(row).get("confidence", 0.95))
    points = []
    for r in df.itertuples():
        for step, loss in json.loads(r.curve) if r.curve else []:
            points.append({"arm": r.arm, "round": int(r.round), "seed": int(r.seed), "step": int(step),
                           "loss": float(loss)})
    if not points:
        return pd.DataFrame(columns=["arm", "round", "step", "mean", "low", "high", "n"])
    p = pd.DataFrame(points)
    out = []
    for (arm, rnd, step), g in p.groupby(["arm", "round", "step"]):
        iv = t_interval(g["loss"], conf)
        out.append({"arm": arm, "round": int(rnd), "step": int(step), "mean": iv.mean, "low": iv.low,
                    "high": iv.high, "n": iv.n})
    return pd.DataFrame(out)


def pilot_record(experiment: str, ledger: Ledger | None = None) -> dict | None:
    return _pilot_of(find_experiment(experiment, ledger))


def stability_by_rewind(experiments: list[str], ledger: Ledger | None = None) -> pd.DataFrame:
    """Loss barrier per rewind step and round across experiments (Frankle et al. 2020's comparison)."""
    ledger = ledger or Ledger()
    frames = []
    for ref in experiments:
        exp = find_experiment(ref, ledger)["id"]
        f = _metric_frame(ledger, exp, "stability", "loss_barrier")
        f["experiment"] = exp
        frames.append(f)
    df = pd.concat(frames) if frames else pd.DataFrame()
    if df.empty:
        return df
    rows = []
    for (k, rnd), g in df.groupby(["rewind_step", "round"]):
        iv = t_interval(g["value"])
        rows.append({"rewind_step": int(k), "round": int(rnd), "barrier_mean": iv.mean, "barrier_low": iv.low,
                     "barrier_high": iv.high, "n": iv.n})
    return pd.DataFrame(rows)


def _write_figure(fig, out: str | Path | None) -> None:
    if out is None:
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    fig.write_html(str(tmp), include_plotlyjs=True, full_html=True)
    tmp.replace(out)
    try:  # PNG needs kaleido and a browser it can drive; optional
        fig.write_image(str(out.with_suffix(".png")))
    except Exception:
        pass


def imp_figure(table: pd.DataFrame, out: str | Path | None = None, title: str | None = None):
    """Held-out loss vs weights remaining (log axis, decreasing, as in Frankle & Carbin) with 95% intervals
    as error bars; the dense model as a line with its interval as a band."""
    import plotly.graph_objects as go

    fig = go.Figure()
    sparse = table[table["round"] > 0]
    x = sparse["remaining"] * 100
    for arm in table.attrs.get("arms", ARM_ORDER):
        if f"{arm}_mean" not in sparse:
            continue
        y = sparse[f"{arm}_mean"]
        if y.notna().any():
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=arm, line={"color": COLORS.get(arm)},
                                     error_y={"type": "data", "symmetric": False, "visible": True,
                                              "array": (sparse[f"{arm}_high"] - y).fillna(0),
                                              "arrayminus": (y - sparse[f"{arm}_low"]).fillna(0)}))
    dm, dl, dh = (float(table[c].iloc[0]) for c in ("dense_mean", "dense_low", "dense_high"))
    if not math.isnan(dm):
        fig.add_hline(y=dm, line_dash="dash", line_color="black", annotation_text="dense")
        if not math.isnan(dl):
            fig.add_hrect(y0=dl, y1=dh, fillcolor="gray", opacity=0.15, line_width=0)
    fig.update_xaxes(type="log", autorange="reversed", title="weights remaining (%) in the pruned tensors")
    fig.update_yaxes(title="held-out loss (nats/token)")
    fig.update_layout(title=title or f"IMP {table.attrs.get('experiment', '')} (rewind {table.attrs.get('rewind')}); "
                                     f"bars: 95% t-intervals over seeds", template="plotly_white")
    _write_figure(fig, out)
    return fig


def curves_figure(curves: pd.DataFrame, rounds: list[int] | None = None):
    """Validation loss against step per (arm, round), mean line with its interval band."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for (arm, rnd), g in curves.groupby(["arm", "round"]):
        if rounds is not None and rnd not in rounds:
            continue
        g = g.sort_values("step")
        name = "dense" if (arm == "ticket" and rnd == 0) else f"{arm} r{rnd}"
        color = COLORS.get("dense" if name == "dense" else arm)
        if g["low"].notna().any():
            fig.add_trace(go.Scatter(x=list(g["step"]) + list(g["step"])[::-1],
                                     y=list(g["high"]) + list(g["low"])[::-1], fill="toself", opacity=0.15,
                                     line={"width": 0, "color": color}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=g["step"], y=g["mean"], mode="lines+markers", name=name, line={"color": color}))
    fig.update_xaxes(title="training step (schedule position)")
    fig.update_yaxes(title="validation loss (nats/token)")
    fig.update_layout(title="learning curves: mean over seeds, band = 95% t-interval", template="plotly_white")
    return fig


def pilot_figure(pilot: dict):
    """Validation loss at T against T, one line per learning rate (every point its own run), chosen point marked."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for c in pilot["curves"]:
        steps, losses = zip(*c["curve"], strict=True) if c["curve"] else ((), ())
        fig.add_trace(go.Scatter(x=steps, y=losses, mode="lines+markers", name=f"lr {c['lr']:g}"))
    chosen = next((v for c in pilot["curves"] if c["lr"] == pilot["lr"] for t, v in c["curve"] if t == pilot["steps"]),
                  None)
    if chosen is not None:
        fig.add_trace(go.Scatter(x=[pilot["steps"]], y=[chosen], mode="markers", name="chosen",
                                 marker={"symbol": "star", "size": 14, "color": "black"}))
    fig.add_vline(x=pilot["steps"], line_dash="dot", annotation_text=f"T = {pilot['steps']}, lr {pilot['lr']:g}")
    fig.update_xaxes(title="T (each point a run with a schedule of length T)")
    fig.update_yaxes(title="validation loss at T (nats/token)")
    fig.update_layout(title="pilot: dense runs per learning rate and T", template="plotly_white")
    return fig


def summary_of(results: list[RoundResult], verdict_: dict | None = None) -> dict:
    """Compact summary for the experiments row: mean held-out loss per arm and round, and the verdict."""
    out: dict[str, dict] = {}
    for r in results:
        out.setdefault(r.arm, {}).setdefault(str(r.round), []).append(r.heldout_loss)
    summary = {"mean_heldout_loss": {arm: {rnd: sum(v) / len(v) for rnd, v in rounds.items()}
                                     for arm, rounds in out.items()}}
    if verdict_ is not None:
        summary["verdict"] = verdict_["sentence"]
        summary["largest_matching_sparsity"] = verdict_["largest_matching_sparsity"]
    return summary


def to_json_rows(results: list[RoundResult]) -> list[dict]:
    return [{"arm": r.arm, "seed": r.seed, "round": r.round, "ticket": r.ticket.id,
             "sparsity": round(r.sparsity, 6), "heldout_loss": r.heldout_loss,
             "start_step": r.record.get("start_step"), "optimizer_steps": r.record.get("optimizer_steps"),
             "best_step": r.record.get("best_step")} for r in results]


def _dump(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)
