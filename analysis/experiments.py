"""IMP experiments in the ledger: recording rounds, the literature's table, and its figure.

Every (arm, seed, round) becomes a ticket row (via `record_prune`, kind "imp") and one run with two
metrics, suite "imp", task "heldout": `heldout_loss` (nats per token) and `perplexity`, with
extra {experiment, arm, seed, round, rewind, sparsity}. A stability test adds `loss_barrier`
(task "stability", extra also holds the interpolation curve). The `experiments` row holds the
settings, the status and a summary. Recording is idempotent: a resumed experiment replays its
finished rounds and only the ones missing from the ledger are written.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pandas as pd

from pruning.errors import TicketLabError
from pruning.imp import RoundResult

from .ledger import Ledger, MetricRow
from .recording import record_prune

ARM_ORDER = ("ticket", "reinit", "random")


def _recorded(ledger: Ledger, r: RoundResult, task: str) -> bool:
    rows = ledger.query(
        "SELECT count(*) AS n FROM metrics WHERE suite = 'imp' AND task = ? AND subject = ? "
        "AND extra->>'experiment' = ? AND extra->>'arm' = ? AND CAST(extra->>'seed' AS INTEGER) = ? "
        "AND CAST(extra->>'round' AS INTEGER) = ?", [task, r.ticket.id, r.experiment, r.arm, r.seed, r.round])
    return rows[0]["n"] > 0


def record_round(r: RoundResult, ledger: Ledger | None = None, command: str = "ticketlab imp") -> bool:
    """Ticket row, survival tables and metrics for one round; returns False when it was already there."""
    ledger = ledger or Ledger()
    wrote = False
    extra = {"experiment": r.experiment, "arm": r.arm, "seed": r.seed, "round": r.round, "rewind": r.rewind,
             "sparsity": r.sparsity}
    if not _recorded(ledger, r, "heldout"):
        record_prune(r.dense, r.ticket, command, ledger, experiment=r.experiment, kind="imp")
        params = {"experiment": r.experiment, "arm": r.arm, "seed": r.seed, "round": r.round,
                  "train_seconds": r.train_seconds, "tokens_per_second": r.tokens_per_second,
                  "train_loss": r.train_loss}
        with ledger.run("imp", command, subject=r.ticket.id, dense_sha256=r.dense.weights_sha256,
                        params=params) as run:
            run.add_metric(MetricRow("imp", "heldout", "heldout_loss", r.heldout_loss, direction="lower",
                                     n_samples=r.heldout_tokens, extra=extra))
            run.add_metric(MetricRow("imp", "heldout", "perplexity", r.perplexity, direction="lower",
                                     n_samples=r.heldout_tokens, extra=extra))
        wrote = True
    if r.stability and not _recorded(ledger, r, "stability"):
        with ledger.run("imp", command + " --stability", subject=r.ticket.id,
                        dense_sha256=r.dense.weights_sha256, params={"experiment": r.experiment}) as run:
            run.add_metric(MetricRow("imp", "stability", "loss_barrier", r.stability["barrier"], direction="lower",
                                     extra={**extra, "alphas": r.stability["alphas"],
                                            "losses": r.stability["losses"]}))
        wrote = True
    return wrote


def record_experiment(experiment: str, params: dict, status: str, summary: dict | None = None,
                      ledger: Ledger | None = None) -> None:
    """Insert or update the `experiments` row (status: running, complete, failed)."""
    ledger = ledger or Ledger()
    with ledger.transaction() as con:
        con.execute("INSERT INTO experiments (id, kind, params, status, created_at, summary) VALUES (?, 'imp', ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET params = excluded.params, status = excluded.status, "
                    "summary = excluded.summary",
                    [experiment, _dump(params), status, dt.datetime.now(dt.UTC).replace(tzinfo=None), _dump(summary)])


def find_experiment(ref: str, ledger: Ledger | None = None) -> dict:
    ledger = ledger or Ledger()
    rows = ledger.query("SELECT * FROM experiments WHERE id = ? OR id LIKE ? ORDER BY id", [ref, ref + "%"])
    exact = [r for r in rows if r["id"] == ref]
    if exact or len(rows) == 1:
        return (exact or rows)[0]
    if not rows:
        raise TicketLabError(f"no experiment {ref!r} in the ledger {ledger.path}; run `ticketlab imp` first "
                             f"(its output names the experiment).")
    raise TicketLabError(f"experiment prefix {ref!r} is ambiguous: {', '.join(r['id'] for r in rows[:5])}")


def _metric_frame(ledger: Ledger, experiment: str, task: str, metric: str) -> pd.DataFrame:
    return ledger.frame(
        "SELECT extra->>'arm' AS arm, CAST(extra->>'seed' AS INTEGER) AS seed, "
        "CAST(extra->>'round' AS INTEGER) AS round, CAST(extra->>'sparsity' AS DOUBLE) AS sparsity, "
        "extra->>'rewind' AS rewind, subject, value FROM metrics "
        "WHERE suite = 'imp' AND task = ? AND metric = ? AND extra->>'experiment' = ?",
        [task, metric, experiment])


def _stats(values: pd.Series) -> tuple[float, float]:
    v = values.dropna()
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0) if len(v) else (math.nan, math.nan)


def imp_report(experiment: str, ledger: Ledger | None = None) -> pd.DataFrame:
    """One row per round: sparsity, weights remaining, and held-out loss mean/std across seeds for the dense
    model (round 0), the rewound ticket and the two controls; `matches_dense` when the ticket's mean is within
    one dense standard deviation of the dense mean; `barrier_*` when stability was measured."""
    ledger = ledger or Ledger()
    exp = find_experiment(experiment, ledger)["id"]
    df = _metric_frame(ledger, exp, "heldout", "heldout_loss")
    if df.empty:
        raise TicketLabError(f"experiment {exp} has no recorded rounds yet.")
    df = df.drop_duplicates(["arm", "seed", "round"], keep="last")
    bar = _metric_frame(ledger, exp, "stability", "loss_barrier").drop_duplicates(["seed", "round"], keep="last")
    dense = df[(df.arm == "ticket") & (df["round"] == 0)]["value"]
    dense_mean, dense_std = _stats(dense)
    rows = []
    for rnd in sorted(df["round"].unique()):
        part = df[df["round"] == rnd]
        sparsity = float(part[part.arm == "ticket"]["sparsity"].mean() if (part.arm == "ticket").any()
                         else part["sparsity"].mean())
        row = {"round": int(rnd), "sparsity": sparsity, "remaining": 1.0 - sparsity,
               "dense_mean": dense_mean, "dense_std": dense_std}
        for arm in ARM_ORDER:
            mean, std = _stats(part[part.arm == arm]["value"]) if rnd > 0 or arm == "ticket" else (math.nan, math.nan)
            row[f"{arm}_mean"], row[f"{arm}_std"] = mean, std
        row["n_seeds"] = int(part[part.arm == "ticket"]["seed"].nunique())
        tol = max(dense_std, 0.0) if not math.isnan(dense_std) else 0.0
        row["matches_dense"] = bool(row["ticket_mean"] <= dense_mean + tol) if not math.isnan(row["ticket_mean"]) else None
        b = bar[bar["round"] == rnd]["value"] if not bar.empty else pd.Series(dtype=float)
        row["barrier_mean"], row["barrier_std"] = _stats(b)
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["experiment"] = exp
    table.attrs["rewind"] = df["rewind"].dropna().iloc[0] if df["rewind"].notna().any() else None
    return table


def format_report(table: pd.DataFrame) -> str:
    """The table as text: mean ± std per arm (std over seeds)."""
    def cell(mean, std):
        return "-" if mean is None or math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"

    header = f"{'round':>5}  {'sparsity':>8}  {'remain':>7}  {'ticket':>17}  {'reinit':>17}  {'random':>17}  " \
             f"{'seeds':>5}  {'matches':>7}"
    has_barrier = table["barrier_mean"].notna().any()
    if has_barrier:
        header += f"  {'barrier':>17}"
    lines = [f"experiment {table.attrs.get('experiment')}  rewind {table.attrs.get('rewind')}  held-out loss "
             f"(nats/token), mean ± std over seeds; dense = round 0: "
             f"{cell(table['dense_mean'].iloc[0], table['dense_std'].iloc[0])}", header]
    for r in table.itertuples():
        line = (f"{r.round:>5}  {r.sparsity:>8.2%}  {r.remaining:>7.2%}  {cell(r.ticket_mean, r.ticket_std):>17}  "
                f"{cell(r.reinit_mean, r.reinit_std):>17}  {cell(r.random_mean, r.random_std):>17}  "
                f"{r.n_seeds:>5}  {('yes' if r.matches_dense else 'no') if r.round else '-':>7}")
        if has_barrier:
            line += f"  {cell(r.barrier_mean, r.barrier_std):>17}"
        lines.append(line)
    return "\n".join(lines)


def stability_by_rewind(experiments: list[str], ledger: Ledger | None = None) -> pd.DataFrame:
    """Loss barrier per rewind point and round across experiments (Frankle et al. 2020's comparison)."""
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
    return (df.groupby(["rewind", "round"])["value"].agg(["mean", "std", "count"]).reset_index()
            .rename(columns={"mean": "barrier_mean", "std": "barrier_std", "count": "n"}))


def imp_figure(table: pd.DataFrame, out: str | Path | None = None, title: str | None = None):
    """Held-out loss vs weights remaining (log axis, decreasing, as in Frankle & Carbin) with seed spread as
    error bars; the dense model as a band. Writes HTML (self-contained) and, if kaleido can render, PNG."""
    import plotly.graph_objects as go

    fig = go.Figure()
    x = table["remaining"] * 100
    colors = {"ticket": "#1f77b4", "reinit": "#ff7f0e", "random": "#2ca02c"}
    for arm in ARM_ORDER:
        y, err = table[f"{arm}_mean"], table[f"{arm}_std"]
        if y.notna().any():
            fig.add_trace(go.Scatter(x=x, y=y, error_y={"type": "data", "array": err, "visible": True},
                                     mode="lines+markers", name=arm, line={"color": colors[arm]}))
    dm, ds = float(table["dense_mean"].iloc[0]), float(table["dense_std"].iloc[0])
    if not math.isnan(dm):
        fig.add_hline(y=dm, line_dash="dash", line_color="black", annotation_text="dense")
        if ds > 0:
            fig.add_hrect(y0=dm - ds, y1=dm + ds, fillcolor="gray", opacity=0.15, line_width=0)
    fig.update_xaxes(type="log", autorange="reversed", title="weights remaining (%) in the pruned tensors")
    fig.update_yaxes(title="held-out loss (nats/token)")
    fig.update_layout(title=title or f"IMP {table.attrs.get('experiment', '')} (rewind {table.attrs.get('rewind')})",
                      template="plotly_white")
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        fig.write_html(str(tmp), include_plotlyjs=True, full_html=True)
        tmp.replace(out)
        try:  # PNG needs kaleido and a browser it can drive; optional
            fig.write_image(str(out.with_suffix(".png")))
        except Exception:
            pass
    return fig


def summary_of(results: list[RoundResult]) -> dict:
    """Compact summary for the experiments row: mean held-out loss per arm and round."""
    out: dict[str, dict] = {}
    for r in results:
        out.setdefault(r.arm, {}).setdefault(str(r.round), []).append(r.heldout_loss)
    return {arm: {rnd: sum(v) / len(v) for rnd, v in rounds.items()} for arm, rounds in out.items()}


def to_json_rows(results: list[RoundResult]) -> list[dict]:
    return [{"arm": r.arm, "seed": r.seed, "round": r.round, "ticket": r.ticket.id,
             "sparsity": round(r.sparsity, 6), "heldout_loss": r.heldout_loss} for r in results]


def _dump(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)
