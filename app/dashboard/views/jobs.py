"""Jobs: every background job (prune, evaluate, IMP, export) started from any page or tab, newest
first, with progress, cancel, errors and results. Read from disk, so a refresh or a second tab sees
the same list."""

from __future__ import annotations

import streamlit as st

from app.dashboard import jobs_panel

st.title("Jobs")
st.caption("Prune, evaluate, IMP and export jobs run the `ticketlab` command in their own process; closing "
           "or refreshing the page does not stop them.")
kinds = ["all", "prune", "eval", "imp", "export"]
kind = st.segmented_control("kind", kinds, default="all", key="jobs_kind") or "all"
jobs_panel.jobs_panel(kind=None if kind == "all" else kind, limit=30, title=None)
