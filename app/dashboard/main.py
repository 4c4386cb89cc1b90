"""Ticket Lab dashboard: `ticketlab app` (or `streamlit run app/dashboard/main.py`).

The pages read the ledger's precomputed tables and call the same engine and analysis functions as the
command line; long work runs as background jobs (app/jobs.py) that call the CLI's own use cases.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `streamlit run` puts only this folder on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.dashboard import acting, data, jobs_panel, signin, widgets  # noqa: E402
from pruning import settings  # noqa: E402
from pruning.errors import TicketLabError  # noqa: E402

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="Ticket Lab", page_icon=":material/confirmation_number:", layout="wide")

PAGES = {
    "Explore": [
        st.Page(HERE / "views" / "models.py", title="Models & tickets", icon=":material/table_chart:", default=True),
        st.Page(HERE / "views" / "survival.py", title="Survival", icon=":material/grid_on:"),
        st.Page(HERE / "views" / "benchmarks.py", title="Benchmarks", icon=":material/bar_chart:"),
        st.Page(HERE / "views" / "experiments.py", title="Experiments", icon=":material/science:"),
    ],
    "Make": [
        st.Page(HERE / "views" / "prune.py", title="Prune", icon=":material/content_cut:"),
        st.Page(HERE / "views" / "jobs.py", title="Jobs", icon=":material/hourglass_top:"),
    ],
    "Govern": [
        st.Page(HERE / "views" / "review.py", title="Review", icon=":material/gavel:"),
        st.Page(HERE / "views" / "export.py", title="Export", icon=":material/inventory_2:"),
        st.Page(HERE / "views" / "admin.py", title="Admin", icon=":material/admin_panel_settings:"),
    ],
}

page = st.navigation(PAGES)

with st.sidebar:
    st.caption(f"model **{data.app_model()}**  \nstate `{settings.state_dir()}`  \nledger `{settings.ledger_path().name}`")
    jobs_panel.sidebar_jobs()  # every page: running jobs with their progress, and the Jobs page
widgets.started_toast()
signin.sync_cookie()  # after a sign-in or sign-out: the browser's token cookie follows, whatever the page
widgets.flag_url_ticket()  # every page: a ?ticket= that names no ticket is said, not silently ignored
acting.sign_finished_prunes()  # a signed-in engineer's browser prunes are signed as theirs when they finish

try:
    page.run()
except TicketLabError as e:
    # bad input, a missing file, a ledger locked by a long writer: say so; the app keeps running
    st.error(str(e), icon=":material/warning:")
    if st.button("Try again"):
        st.rerun()
