"""The comparison view (Review and Benchmarks): baseline | ticket | delta | delta % | within noise?,
coloured by each metric's direction and ideal, worst first, with a "differences only" toggle; the
per-category breakdowns below it with the same treatment. Rows from analysis.baseline_review."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pruning.errors import TicketLabError

from . import data, tables
from .breakdown import breakdown

SHOWN = ["task", "metric", "baseline", "baseline_stderr", "ticket", "ticket_stderr", "delta", "delta_pct",
         "within_noise", "change", "limit"]  # severity only orders the rows: an internal number, not shown
COUNTS = ["baseline_n", "ticket_n", "noise"]
CONFIG = {
    "baseline_stderr": st.column_config.Column("± baseline", help="one standard error"),
    "ticket_stderr": st.column_config.Column("± ticket", help="one standard error"),
    "delta": st.column_config.Column("delta", help="ticket − baseline"),
    "delta_pct": st.column_config.Column("delta %", help="(ticket − baseline) / |baseline|"),
    "within_noise": st.column_config.Column("within noise?", help="|delta| ≤ √(se_baseline² + se_ticket²); "
                                            "'cannot tell' when a side rests on too few documents"),
    "change": st.column_config.Column("change", help="by the metric's direction (higher / lower / closest to its ideal)"),
    "limit": st.column_config.Column("run", help="quick: a run with a limit (indicative, not for decisions)"),
}


@st.cache_data(ttl=300, max_entries=64, show_spinner=False)
def _rows(baseline: str, ticket: str, key: tuple) -> dict:
    from analysis.baseline_review import compare_to_baseline

    return compare_to_baseline(baseline, ticket, data.ledger())


def rows(baseline: str, ticket: str) -> pd.DataFrame:
    """The comparison rows of `ticket` against `baseline` ('dense' or a ticket id), worst first."""
    try:
        result = _rows(baseline, ticket, data.stamp())
    except TicketLabError:
        return pd.DataFrame(columns=SHOWN)
    return pd.DataFrame(result["rows"], columns=list(result["rows"][0]) if result["rows"] else SHOWN)


def _table(df: pd.DataFrame, key: str) -> None:
    shown = df[[c for c in SHOWN + COUNTS if c in df]].reset_index(drop=True)
    st.dataframe(tables.styled_comparison(shown), hide_index=True, width="stretch", placeholder="—", key=key,
                 column_config={**CONFIG, **dict.fromkeys(COUNTS)}, height=min(36 * (len(shown) + 1) + 3, 560))


def comparison_view(baseline: str, ticket: str, key: str, baseline_label: str = "baseline") -> pd.DataFrame:
    """Draw the comparison; returns its rows (empty when the two share no comparable metric)."""
    df = rows(baseline, ticket)
    if df.empty:
        st.info(f"No metric was measured the same way for the ticket and {baseline_label}: evaluate both with the "
                "same settings (Benchmarks → Evaluate).", icon=":material/info:")
        return df
    df = breakdown(df)
    c1, c2, c3 = st.columns([1, 1, 2])
    only = c1.toggle("differences only", value=False, key=f"{key}_diff_only",
                     help="hide rows whose change is within the combined standard error")
    order = c2.selectbox("sort", ["worst first", "task", "|delta %|"], key=f"{key}_sort")
    quick = df["limit"].notna().sum() if "limit" in df else 0
    c3.caption(f"ticket minus **{baseline_label}**; green better, red worse, grey within noise"
               + (f" · **{quick} of {len(df)} rows from quick runs** (indicative)" if quick else " · full runs"))
    view = df[df["within_noise"] != True] if only else df  # noqa: E712  (None = unknown noise: kept)
    if order == "task":
        view = view.sort_values(["task", "metric"])
    elif order == "|delta %|":
        view = view.assign(_abs=view["delta_pct"].abs()).sort_values("_abs", ascending=False, na_position="last")
    overall = view[view["order"] == 0]
    _table(overall if not overall.empty else view, f"{key}_main")
    parts = view[view["order"] == 1]
    for family, part in parts.groupby("family", sort=False):
        with st.expander(f"{family}: per category ({len(part)})"):
            _table(part.assign(task=part["category"]), f"{key}_{family}")
    return df
