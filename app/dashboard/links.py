"""Links between pages: a ticket id opens its Survival, Review and Benchmarks pages.

In-app links (`st.page_link`) keep the session; table cells use relative URLs (a Streamlit
LinkColumn), which the ticket pickers read from the `?ticket=` query parameter.
"""

from __future__ import annotations

import streamlit as st

TICKET_PAGES = (("Survival", "views/survival.py", "survival", ":material/grid_on:"),
                ("Review", "views/review.py", "review", ":material/gavel:"),
                ("Benchmarks", "views/benchmarks.py", "benchmarks", ":material/bar_chart:"))


def url(page: str, ticket: str) -> str:
    """A relative URL (works under any base path) that opens `page` on `ticket`."""
    return f"{page}?ticket={ticket}"


def ticket_links(ticket: str, where=None, key: str = "") -> None:
    """Three in-app links for a ticket, in one row."""
    where = where or st
    cols = where.columns(len(TICKET_PAGES))
    for col, (label, path, _, icon) in zip(cols, TICKET_PAGES, strict=True):
        col.page_link(path, label=label, icon=icon, query_params={"ticket": ticket})


def link_columns(df, id_column: str = "id"):
    """`df` with survival / review / benchmarks URL columns for each ticket id, and the matching
    column configuration (a cell shows the page name and opens that page on the ticket)."""
    out = df.copy()
    config = {}
    for label, _, page, _ in TICKET_PAGES:
        col = f"→ {label.lower()}"
        out[col] = [url(page, t) for t in out[id_column]]
        config[col] = st.column_config.LinkColumn(label.lower(), display_text=label.lower(), width="small",
                                                  help=f"open the ticket on the {label} page")
    return out, config
