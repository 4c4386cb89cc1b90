"""Plotly figures from ledger rows. Drawing only: every number shown was computed by the engine or
the analysis code and stored in the ledger."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

MATRIX_ORDER = ["q", "k", "v", "qkv", "o", "gate", "up", "fc", "down"]
SURVIVAL_SCALE = "Viridis"
DIFF_SCALE = "RdBu"
_LAYOUT = dict(margin=dict(l=50, r=20, t=40, b=40), height=360, template="plotly_white")


def _order(values) -> list:
    known = [m for m in MATRIX_ORDER if m in set(values)]
    return known + sorted(set(values) - set(known))


def _grid(df: pd.DataFrame, col: str, order: list | None = None):
    """(columns, layers, fraction kept [L, C], kept, total) from survival rows."""
    cols = order or sorted(df[col].unique())
    layers = sorted(df["layer"].unique())
    kept = df.pivot_table(index="layer", columns=col, values="kept", aggfunc="sum").reindex(index=layers, columns=cols)
    total = df.pivot_table(index="layer", columns=col, values="total", aggfunc="sum").reindex(index=layers, columns=cols)
    frac = kept.to_numpy(dtype=float) / np.where(total.to_numpy(dtype=float) > 0, total.to_numpy(dtype=float), np.nan)
    return cols, layers, frac, kept.to_numpy(), total.to_numpy()


MIN_SPAN = 0.02  # a colour scale spans at least 2 percentage points: rounding noise is not painted as contrast


def data_range(z, diff: bool = False) -> tuple[float, float]:
    """The colour range of a map: the data's own range (a 50 % ticket is not one flat colour on a 0-1
    scale), widened to at least MIN_SPAN around its middle so a uniform map stays one colour;
    symmetric around 0 for differences."""
    finite = np.asarray(z, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (-1.0, 1.0) if diff else (0.0, 1.0)
    if diff:
        m = max(float(np.abs(finite).max()), MIN_SPAN / 2)
        return -m, m
    lo, hi = float(finite.min()), float(finite.max())
    if hi - lo < MIN_SPAN:
        mid = (lo + hi) / 2
        lo, hi = mid - MIN_SPAN / 2, mid + MIN_SPAN / 2
        if lo < 0:
            lo, hi = 0.0, MIN_SPAN
        if hi > 1:
            lo, hi = 1.0 - MIN_SPAN, 1.0
    return lo, hi


def scale_text(lo: float, hi: float, diff: bool = False) -> str:
    return f"colour scale ±{hi:.1%}" if diff else f"colour scale {lo:.1%} – {hi:.1%} kept"


def _heat(frac, cols, layers, kept, total, labels=None, diff=False, name="", colorbar=True,
          zrange: tuple[float, float] | None = None) -> go.Heatmap:
    custom = np.dstack([np.nan_to_num(kept.astype(float)), np.nan_to_num(total.astype(float))])
    what = "Δ kept" if diff else "kept"
    lo, hi = zrange or data_range(frac, diff)
    return go.Heatmap(
        z=frac, x=labels or [str(c) for c in cols], y=[f"L{layer}" for layer in layers], customdata=custom,
        colorscale=DIFF_SCALE if diff else SURVIVAL_SCALE, zmin=lo, zmax=hi,
        zmid=0 if diff else None, name=name, showscale=colorbar,
        colorbar=dict(title=dict(text="Δ kept" if diff else "kept", side="right"), tickformat=".1%"),
        hovertemplate=("layer %{y} · %{x}<br>" + what + " %{z:.1%}"
                       + ("" if diff else "<br>%{customdata[0]:,.0f} of %{customdata[1]:,.0f} weights")
                       + "<extra></extra>"))


def _finish(fig: go.Figure, title: str, height: int | None = None) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0, font=dict(size=14)), **{**_LAYOUT, **({"height": height} if height else {})})
    fig.update_yaxes(autorange="reversed")
    return fig


def _height(n_layers: int) -> int:
    return max(260, min(720, 80 + 16 * n_layers))


def matrix_heatmap(df: pd.DataFrame, title: str = "Surviving weights: layer × matrix") -> go.Figure:
    cols, layers, frac, kept, total = _grid(df, "matrix", _order(df["matrix"]))
    lo, hi = data_range(frac)
    return _finish(go.Figure(_heat(frac, cols, layers, kept, total, zrange=(lo, hi))),
                   f"{title} <span style='font-size:11px'>({scale_text(lo, hi)})</span>", _height(len(layers)))


def head_heatmap(df: pd.DataFrame, title: str = "Surviving weights: layer × head") -> go.Figure:
    kinds = [k for k in ("q", "kv") if k in set(df["kind"])]
    fig = make_subplots(rows=1, cols=len(kinds) or 1, horizontal_spacing=0.08,
                        column_widths=[3, 1] if len(kinds) == 2 else None,
                        subplot_titles=[{"q": "query heads", "kv": "KV heads"}[k] for k in kinds])
    layers = 0
    grids = [(kind, _grid(df[df["kind"] == kind], "head")) for kind in kinds]
    lo, hi = data_range(np.concatenate([g[2].ravel() for _, g in grids])) if grids else (0.0, 1.0)
    for i, (kind, (cols, lay, frac, kept, total)) in enumerate(grids):
        layers = len(lay)
        fig.add_trace(_heat(frac, cols, lay, kept, total, labels=[f"{kind}{c}" for c in cols], colorbar=i == 0,
                            zrange=(lo, hi)), 1, i + 1)
    return _finish(fig, f"{title} <span style='font-size:11px'>({scale_text(lo, hi)})</span>", _height(layers))


def neuron_heatmap(df: pd.DataFrame, title: str = "Surviving weights: layer × MLP neuron band") -> go.Figure:
    bands = df.drop_duplicates("band").sort_values("band")
    labels = [f"{a}–{z}" for a, z in zip(bands["band_start"], bands["band_stop"], strict=True)]
    cols, layers, frac, kept, total = _grid(df, "band", list(bands["band"]))
    lo, hi = data_range(frac)
    fig = go.Figure(_heat(frac, cols, layers, kept, total, labels=labels, zrange=(lo, hi)))
    fig.update_xaxes(title_text="neurons", tickangle=-45)
    return _finish(fig, f"{title} <span style='font-size:11px'>({scale_text(lo, hi)})</span>", _height(len(layers)))


def difference(a: pd.DataFrame, b: pd.DataFrame, col: str, title: str, labels_from: str | None = None) -> go.Figure:
    """Fraction kept in A minus fraction kept in B, per cell; blue = A keeps more."""
    keys = ["layer", col] + (["kind"] if "kind" in a.columns else [])
    merged = a.merge(b, on=keys, suffixes=("_a", "_b"))
    merged["kept"] = merged["kept_a"] / merged["total_a"] - merged["kept_b"] / merged["total_b"]
    merged["total"] = 1.0
    fig = make_subplots(rows=1, cols=2 if "kind" in keys else 1, column_widths=[3, 1] if "kind" in keys else None,
                        subplot_titles=["query heads", "KV heads"] if "kind" in keys else None)
    parts = [merged[merged["kind"] == k] for k in ("q", "kv")] if "kind" in keys else [merged]
    lo, hi = data_range(merged["kept"].to_numpy(dtype=float), diff=True)
    layers = []
    for i, part in enumerate(parts):
        if part.empty:
            continue
        order = _order(part[col]) if col == "matrix" else sorted(part[col].unique())
        layers = sorted(part["layer"].unique())
        z = part.pivot_table(index="layer", columns=col, values="kept").reindex(index=layers, columns=order).to_numpy()
        labels = None
        if col == "band":
            b = part.drop_duplicates("band").sort_values("band")
            labels = [f"{x}–{y}" for x, y in zip(b["band_start_a"], b["band_stop_a"], strict=True)]
        elif col == "head":
            labels = [f"{part['kind'].iloc[0]}{h}" for h in order]
        fig.add_trace(_heat(z, order, layers, np.zeros_like(z), np.ones_like(z), labels=labels, diff=True,
                            colorbar=i == 0, zrange=(lo, hi)), 1, i + 1)
    return _finish(fig, f"{title} <span style='font-size:11px'>({scale_text(lo, hi, diff=True)})</span>",
                   _height(len(layers)))


def mask_difference(df: pd.DataFrame, title: str = "Where the masks differ: weights kept by only one ticket") -> go.Figure:
    """Per (layer, matrix), the share of weights one ticket keeps and the other removes (from the masks,
    so two tickets at equal sparsity that keep different weights show up)."""
    order = _order(df["matrix"])
    layers = sorted(df["layer"].unique())
    z = df.pivot_table(index="layer", columns="matrix", values="differ").reindex(index=layers, columns=order).to_numpy()
    lo, hi = data_range(z)
    lo = 0.0
    fig = go.Figure(go.Heatmap(z=z, x=order, y=[f"L{layer}" for layer in layers], colorscale="Magma_r", zmin=lo,
                               zmax=hi, colorbar=dict(title=dict(text="differ", side="right"), tickformat=".1%"),
                               hovertemplate="layer %{y} · %{x}<br>kept by only one: %{z:.1%}<extra></extra>"))
    return _finish(fig, f"{title} <span style='font-size:11px'>(colour scale 0 – {hi:.1%} of weights)</span>",
                   _height(len(layers)))


def attribution_heatmap(df: pd.DataFrame, title: str) -> go.Figure:
    pivot = df.pivot_table(index="layer", columns="head", values="value").sort_index()
    limit = float(np.nanmax(np.abs(pivot.to_numpy()))) if pivot.size else 1.0
    fig = go.Figure(go.Heatmap(
        z=pivot.to_numpy(), x=[f"q{h}" for h in pivot.columns], y=[f"L{layer}" for layer in pivot.index],
        colorscale="RdBu_r", zmid=0, zmin=-limit, zmax=limit,
        hovertemplate="layer %{y} · head %{x}<br>attribution %{z:+.4f} nats<extra></extra>"))
    return _finish(fig, title, _height(len(pivot.index)))


def iou_heatmap(df: pd.DataFrame, title: str = "Mask overlap (IoU of kept weights): layer × matrix") -> go.Figure:
    order = _order(df["matrix"])
    layers = sorted(df["layer"].unique())
    z = df.pivot_table(index="layer", columns="matrix", values="iou").reindex(index=layers, columns=order).to_numpy()
    r = df.pivot_table(index="layer", columns="matrix", values="random_iou").reindex(index=layers, columns=order)
    lo, hi = data_range(z)
    fig = go.Figure(go.Heatmap(z=z, x=order, y=[f"L{layer}" for layer in layers], colorscale="Cividis", zmin=lo, zmax=hi,
                               customdata=r.to_numpy(), colorbar=dict(title=dict(text="IoU", side="right")),
                               hovertemplate="layer %{y} · %{x}<br>IoU %{z:.3f}<br>random masks: %{customdata:.3f}"
                                             "<extra></extra>"))
    return _finish(fig, f"{title} <span style='font-size:11px'>(colour scale {lo:.3f} – {hi:.3f})</span>",
                   _height(len(layers)))


DENSE_COLOUR = "#57606a"  # the dense model is the same grey on every chart
PALETTE = ["#0969da", "#bf3989", "#1a7f37", "#bc4c00", "#8250df", "#1b7c83", "#9a6700", "#cf222e"]


def subject_colours(names: list[str]) -> dict[str, str]:
    """Dense grey, tickets from one palette in a stable order."""
    out, i = {}, 0
    for n in names:
        if n == "dense":
            out[n] = DENSE_COLOUR
        else:
            out[n] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def metric_bars(df: pd.DataFrame, x: str, color: str, title: str, ideal: float | None = None) -> go.Figure:
    """Grouped bars of `value` with `stderr` error bars; `ideal` draws the unbiased line; the dense
    model is always grey."""
    fig = go.Figure()
    colours = subject_colours([str(n) for n in df[color].drop_duplicates()])
    for name, part in df.groupby(color, sort=False):
        fig.add_trace(go.Bar(x=part[x], y=part["value"], name=str(name), marker_color=colours[str(name)],
                             error_y=dict(type="data", array=part["stderr"].fillna(0).to_numpy(), visible=True),
                             hovertemplate="%{x}<br>%{y:.4f} ± %{error_y.array:.4f}<extra>" + str(name) + "</extra>"))
    if ideal is not None:
        fig.add_hline(y=ideal, line_dash="dot", annotation_text=f"ideal {ideal:g}")
    fig.update_layout(barmode="group", title=dict(text=title, x=0, font=dict(size=14)), **_LAYOUT)
    return fig
