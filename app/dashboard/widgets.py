"""Pieces every page shares: the ticket picker, the background-jobs panel, the empty-ledger start."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import streamlit as st

from app import jobs
from pruning.errors import TicketLabError

from . import data

STATUS_ICON = {"starting": ":material/hourglass_top:", "running": ":material/hourglass_top:",
               "succeeded": ":material/check_circle:", "failed": ":material/error:", "cancelled": ":material/stop_circle:"}


def start_job(argv: list[str], label: str, kind: str | None = None) -> dict | None:
    try:
        job = jobs.start(argv, label=label, kind=kind)
    except (TicketLabError, OSError) as e:
        st.error(f"could not start the job: {e}")
        return None
    st.session_state.setdefault("my_jobs", []).append(job["id"])
    st.toast(f"started: {label}", icon=":material/hourglass_top:")
    return job


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
        start_job(["prune", "--model", model, "--method", "magnitude", "--sparsity", "0.5", "--json"],
                  label=f"first ticket: magnitude 50% of {model}", kind="prune")
        st.rerun()
    jobs_panel(limit=3)


def ticket_picker(df: pd.DataFrame, label: str, key: str, query_param: str | None = None,
                  include: list[str] | None = None, index: int = 0) -> str | None:
    """A select box over tickets (and optional extra choices like 'dense'); the choice can come from a
    query parameter so a link opens a given ticket."""
    options = list(include or []) + list(df["id"])
    if not options:
        return None
    labels = {row["id"]: data.ticket_label(row) for row in df.to_dict("records")}
    wanted = st.query_params.get(query_param) if query_param else None
    if wanted and key not in st.session_state:
        match = [o for o in options if o.startswith(wanted)]
        if match:
            st.session_state[key] = match[0]
    if st.session_state.get(key) not in options:
        st.session_state.pop(key, None)
    choice = st.selectbox(label, options, index=min(index, len(options) - 1), key=key,
                          format_func=lambda o: labels.get(o, o))
    if query_param and choice and st.query_params.get(query_param) != choice:
        st.query_params[query_param] = choice
    return choice


# --- jobs --------------------------------------------------------------------------------------
def _job_row(job: dict, show_cancel: bool = True) -> None:
    icon = STATUS_ICON.get(job["status"], "•")
    with st.container(border=True):
        st.markdown(f"{icon} **{job['label']}**  \n`{job['status']}` · job `{job['id']}`")
        if job["status"] in ("starting", "running"):
            frac, what = jobs.progress(job["id"])
            st.progress(frac if frac is not None else 0.0, text=what or "starting…")
            if show_cancel and st.button("Cancel", key=f"cancel_{job['id']}", icon=":material/stop_circle:"):
                jobs.cancel(job["id"])
                st.rerun()
        elif job["status"] == "failed":
            st.error(job.get("error") or "failed", icon=":material/error:")
        elif job["status"] == "succeeded" and isinstance(job.get("result"), dict):
            res = job["result"]
            if "experiment" in res:
                st.success(f"experiment `{res['experiment']}` · {len(res.get('rounds') or [])} rounds recorded — "
                           "its curves are on the Benchmarks page.", icon=":material/check_circle:")
            elif "id" in res and job.get("kind") == "prune":
                st.success(f"ticket `{res['id']}` · sparsity {res.get('sparsity', 0):.2%} — "
                           f"open it on the Survival page.", icon=":material/check_circle:")
            elif "--out" in job["argv"]:
                st.caption(f"written to `{job['argv'][job['argv'].index('--out') + 1]}`")
            else:
                st.caption(", ".join(f"{k}: {v}" for k, v in list(res.items())[:6] if not isinstance(v, dict | list)))
        with st.expander("log"):
            st.code(jobs.log_tail(job["id"], 3000) or "(no output yet)", language=None)


def jobs_panel(kind: str | None = None, limit: int = 6, title: str | None = "Background jobs") -> None:
    """Jobs from disk (so a browser refresh or a second tab sees them), refreshed every second while any
    runs; when one finishes the whole page reruns so ledger views show its results."""
    listed = [j for j in jobs.list_jobs(limit=50) if kind is None or j.get("kind") == kind][:limit]
    running = any(j["status"] in ("starting", "running") for j in listed)

    def panel() -> None:
        current = [j for j in jobs.list_jobs(limit=50) if kind is None or j.get("kind") == kind][:limit]
        active = {j["id"] for j in current if j["status"] in ("starting", "running")}
        seen = st.session_state.get("_active_jobs", set())
        st.session_state["_active_jobs"] = active
        if seen - active:  # something finished: refresh everything that reads the ledger
            data.forget()
            st.rerun(scope="app")
        if title:
            st.subheader(title)
        if not current:
            st.caption("No jobs yet.")
        for job in current:
            _job_row(job, show_cancel=True)

    st.session_state.setdefault("_active_jobs", {j["id"] for j in listed if j["status"] in ("starting", "running")})
    st.fragment(panel, run_every=1.0 if running else None)()


# --- forms from the CLI's own parser ------------------------------------------------------------
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


SKIP = {"help", "data_dir", "state_dir", "ledger", "json", "device", "dtype", "quiet"}


def argparse_form(command: str, key: str, fixed: dict[str, str] | None = None) -> list[str] | None:
    """Widgets for a subcommand's own options (call it inside a form); returns the argv they spell, or
    None when the command does not exist (yet). Options left at their default are not passed."""
    parser = cli_parsers().get(command)
    if parser is None:
        return None
    fixed = fixed or {}
    options: list[str] = []
    positional: list[str] = []
    cols = st.columns(3)
    shown = 0
    for action in parser._actions:
        if action.dest in SKIP or isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[-1] if action.option_strings else None
        if action.dest in fixed:
            value = fixed[action.dest]
        else:
            col = cols[shown % 3]
            shown += 1
            label = flag.lstrip("-") if flag else action.dest
            wkey = f"{key}_{action.dest}"
            help_ = (action.help or "").replace("%(default)s", str(action.default))
            if isinstance(action, argparse._StoreTrueAction):
                if col.checkbox(label, value=bool(action.default), key=wkey, help=help_):
                    options.append(flag)
                continue
            if action.choices:
                choices = [str(c) for c in action.choices]
                if not action.required and flag:
                    choices = [""] + choices
                default = str(action.default) if action.default is not None else ""
                value = col.selectbox(label, choices, key=wkey, help=help_,
                                      index=choices.index(default) if default in choices else 0)
            elif action.type in (int, float) and action.default is not None and action.nargs is None:
                value = col.number_input(label, value=action.type(action.default), key=wkey, help=help_,
                                         step=1 if action.type is int else 0.05,
                                         format=None if action.type is int else "%g")
            else:
                default = "" if action.default in (None, argparse.SUPPRESS) else str(action.default)
                value = col.text_input(label, value=default, key=wkey, help=help_)
            value = "" if value is None else str(value)
            is_default = action.default is not None and value == str(action.default)
            if not action.required and flag and (value == "" or is_default):
                continue
        if flag:
            options += [flag, str(value)]
        else:
            positional.append(str(value))
    return [command, *positional, *options]
