"""Pieces every page shares: the ticket picker, starting a job, the empty-ledger start, forms from the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis.ledger import read_model
from app import jobs
from pruning.errors import TicketLabError
from pruning.refs import resolve_ref
from usecases import Request

from . import data
from . import jobs_panel as _jobs_panel


def start_job(what: Request | list[str], label: str, kind: str | None = None, on_start=None) -> dict | None:
    """Start a background job (a typed use-case request, or a `ticketlab` command line turned into one
    here: a bad value is an error on the page, not a failed job) and rerun the page, so the sidebar of
    every page lists it at once. `on_start(job)` runs once the job exists (before the rerun)."""
    try:
        job = jobs.start(what, label=label, kind=kind)
    except (TicketLabError, OSError) as e:
        st.error(f"could not start the job: {e}")
        return None
    st.session_state.setdefault("my_jobs", []).append(job["id"])
    st.session_state["job_started"] = label
    if on_start is not None:
        on_start(job)
    st.rerun()
    return job  # not reached: st.rerun ends this run


def started_toast() -> None:
    """The toast for a job started in the previous run (shown after the rerun that lists it)."""
    label = st.session_state.pop("job_started", None)
    if label:
        st.toast(f"started: {label}", icon=":material/hourglass_top:")


def check_model_spec(spec: str) -> str | None:
    """A clear message for a model path that cannot be a model, before a job is spent on it."""
    spec = spec.strip()
    if not spec:
        return "give a model: the embedded name, a Hugging Face id or a local directory."
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")):
        if not path.exists():
            return f"model directory {spec} does not exist."
        if not path.is_dir() or not (path / "config.json").exists():
            return f"{spec} is not a model directory: expected config.json and weights inside."
    return None


def first_steps() -> None:
    """The empty ledger: one click makes the first ticket."""
    model = data.app_model()
    st.info("The ledger is empty: no models or tickets yet. Start by pruning a first ticket.", icon=":material/waving_hand:")
    st.markdown(
        f"**One click** prunes **{model}** with `magnitude` at 50% sparsity in the background; the ticket, "
        "its survival maps and the run land in the ledger. The same from a terminal:\n\n"
        f"```\nticketlab prune --model {model} --method magnitude --sparsity 0.5\n```")
    if st.button(f"Prune a first ticket of {model}", type="primary", key="first_ticket"):
        from usecases.prune import PruneRequest

        start_job(PruneRequest.build(model=model, method="magnitude", sparsity=0.5),
                  label=f"first ticket: magnitude 50% of {model}", kind="prune")
        st.rerun()
    jobs_panel(limit=3)


def match_ticket(ref: str, ids: list[str]) -> tuple[str | None, str | None]:
    """(the one ticket id `ref` names, or None with the reason): a full id, or a unique prefix of at
    least 6 characters. Never a guess: an unknown or ambiguous reference is an error naming it."""
    try:
        return resolve_ref(ref.strip(), ids, "ticket", f"the ledger ({len(ids)} tickets)"), None
    except TicketLabError as e:
        return None, str(e)


URL_FLAGGED = "_url_ticket_flagged"


def flag_url_ticket() -> None:
    """An error naming a `?ticket=` that resolves to no ticket (or several), on whatever page it was given."""
    wanted = st.query_params.get("ticket")
    st.session_state.pop(URL_FLAGGED, None)
    if not wanted or wanted in ("dense", "deployed"):
        return
    ids = list(data.frame(read_model.ticket_paths())["id"])
    _, problem = match_ticket(wanted, ids)
    if problem:
        st.error(problem, icon=":material/link_off:")
        st.session_state[URL_FLAGGED] = wanted


def url_ticket(df: pd.DataFrame) -> str | None:
    """The ticket id the page's `?ticket=` names among `df`'s tickets (None when absent or unresolved)."""
    wanted = st.query_params.get("ticket")
    if not wanted or df.empty:
        return None
    hit, _ = match_ticket(wanted, list(df["id"]))
    return hit


def ticket_picker(df: pd.DataFrame, label: str, key: str, query_param: str | None = None,
                  include: list[str] | None = None, index: int = 0, why_not: str = "") -> str | None:
    """A select box over tickets (and optional extra choices like 'dense'); the choice can come from a
    query parameter so a link opens a given ticket. A reference in the URL that names no ticket, or
    several, or a ticket this picker does not offer (`why_not` says why), is shown as an error naming
    it, and nothing is picked in its place."""
    options = list(include or []) + list(df["id"])
    if not options:
        return None
    labels = {row["id"]: data.ticket_label(row) for row in df.to_dict("records")}
    wanted = st.query_params.get(query_param) if query_param else None
    applied = f"_{key}_from_url"
    if wanted and st.session_state.get(applied) != wanted and wanted != st.session_state.get(key):
        # a new link (or the first visit): the URL decides, once; later picks change the URL
        hit, problem = (wanted, None) if wanted in (include or []) else match_ticket(wanted, list(df["id"]))
        if problem and why_not:
            everywhere = list(data.frame(read_model.ticket_paths())["id"])
            other, _ = match_ticket(wanted, everywhere)
            if other is not None:
                problem = f"ticket {other} is not offered here: {why_not}"
        if problem:
            if not (query_param == "ticket" and st.session_state.get(URL_FLAGGED) == wanted):  # said once per page
                st.error(problem, icon=":material/warning:")
            st.selectbox(label, options, index=None, key=f"{key}_unresolved", placeholder="pick a ticket",
                         format_func=lambda o: labels.get(o, o))
            if st.session_state.get(f"{key}_unresolved"):
                st.session_state[key] = st.session_state[f"{key}_unresolved"]
                st.session_state[applied] = wanted
                st.query_params[query_param] = st.session_state[key]
                st.rerun()
            return None
        st.session_state[key] = hit
        st.session_state[applied] = wanted
    if st.session_state.get(key) not in options:
        st.session_state.pop(key, None)
    choice = st.selectbox(label, options, index=min(index, len(options) - 1), key=key,
                          format_func=lambda o: labels.get(o, o))
    if query_param and choice and st.query_params.get(query_param) != choice:
        st.query_params[query_param] = choice
        st.session_state[applied] = choice
    return choice


# --- jobs: app/dashboard/jobs_panel.py (kept here under the old name for the pages) ----------------
jobs_panel = _jobs_panel.jobs_panel


# --- the CLI's own parser (which commands a job can run) ------------------------------------------------------------
@st.cache_resource(max_entries=1, show_spinner=False)
def cli_parsers() -> dict[str, argparse.ArgumentParser]:
    """`ticketlab` subcommand -> its argparse parser: forms for commands built from their real options."""
    from app.cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def json_flag(command: str) -> list[str]:
    parser = cli_parsers().get(command)
    has = parser is not None and any("--json" in a.option_strings for a in parser._actions)
    return ["--json"] if has else []
