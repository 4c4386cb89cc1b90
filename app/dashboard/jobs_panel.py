"""Background jobs on screen: one row per job (progress from its structured events, cancel, the
one-line error of a failed job, the headline result and links of a finished one), the panel pages
embed, and the compact list in the sidebar of every page."""

from __future__ import annotations

import math

import streamlit as st

from app import jobs

from . import data, links

STATUS_ICON = {"starting": ":material/hourglass_top:", "running": ":material/hourglass_top:",
               "succeeded": ":material/check_circle:", "failed": ":material/error:", "cancelled": ":material/stop_circle:"}
ACTIVE = ("starting", "running")
JOBS_PAGE = "views/jobs.py"


def _flag(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def _num(value) -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.4g}"


def eval_headline(result: dict, argv: list[str]) -> str:
    """'perplexity 24.71 · pct_stereotype 0.55 (quick: --limit 20)' from an eval job's --json result."""
    from analysis import metric_meta

    shown = []
    res = result.get("results") or {}
    heads = metric_meta.headline_metrics()
    names = [m for _, m in heads]
    for task, metric in heads:
        values = res.get(task) or {}
        for key, value in values.items():
            if key.split(",")[0] == metric:
                label = metric if names.count(metric) == 1 else f"{task} {metric}"  # acc of which task
                shown.append(f"{label} **{_num(value)}**")
                break
    if not shown:  # no headline metric in this suite: the first few of whatever was measured
        for task, values in list(res.items())[:3]:
            for key, value in list(values.items())[:1]:
                shown.append(f"{task} {key.split(',')[0]} **{_num(value)}**")
    limit = _flag(argv, "--limit")
    return " · ".join(shown) + (f" — *quick run (limit {limit}): indicative, not for decisions*" if limit else
                                " — full run")


def _result(job: dict) -> None:
    res, argv, kind = job.get("result"), job.get("argv") or [], job.get("kind")
    if not isinstance(res, dict):
        st.success("done", icon=":material/check_circle:")
        return
    if "experiment" in res:
        st.success(f"experiment `{res['experiment']}` · {len(res.get('rounds') or [])} rounds recorded",
                   icon=":material/check_circle:")
        st.page_link("views/benchmarks.py", label="its curves on the Benchmarks page", icon=":material/bar_chart:")
    elif kind == "prune" and "id" in res:
        units, achieved = res.get("unit_sparsity"), res.get("achieved_sparsity", 0)  # PruneOutcome's fields
        size = (f"units removed **{units:.1%}**, weights removed **{achieved:.1%}**" if units is not None
                else f"sparsity **{achieved:.1%}** (target {res.get('target_sparsity', 0):.1%})")
        st.success(f"ticket `{res['id']}` · {size}", icon=":material/check_circle:")
        from .verdict_line import state_of

        creator = state_of(res["id"]).creator
        st.caption(f"signed by its creator **{creator}**" if creator else
                   "**unsigned**: it cannot be approved until an engineer signs as its creator (sign in on the Prune "
                   "page before pruning, or press “Sign as the creator” on the Review page)")
        links.ticket_links(res["id"])
    elif kind == "eval" and "results" in res:
        subject = res.get("subject") or (argv[1] if len(argv) > 1 else "?")
        st.success(f"{'dense model' if subject == 'dense' else f'ticket `{subject}`'}: {eval_headline(res, argv)}",
                   icon=":material/check_circle:")
        if subject != "dense":
            links.ticket_links(subject)
        else:
            st.page_link("views/benchmarks.py", label="all metrics on the Benchmarks page", icon=":material/bar_chart:")
    elif kind == "export" or "--out" in argv:
        st.success(f"bundle written to `{_flag(argv, '--out') or res.get('out', '?')}`", icon=":material/check_circle:")
        st.page_link("views/export.py", label="verify and download it on the Export page", icon=":material/inventory_2:")
    else:
        st.success(", ".join(f"{k}: {v}" for k, v in list(res.items())[:6] if not isinstance(v, dict | list)) or "done",
                   icon=":material/check_circle:")


def job_row(job: dict, show_cancel: bool = True, show_log: bool = True) -> None:
    icon = STATUS_ICON.get(job["status"], "•")
    with st.container(border=True):
        st.markdown(f"{icon} **{job['label']}**  \n`{job['status']}` · {job.get('kind') or ''} job `{job['id']}`")
        if job["status"] in ACTIVE:
            frac, what = jobs.progress(job["id"])
            st.progress(frac if frac is not None else 0.0, text=what or "starting…")
            if show_cancel and st.button("Cancel", key=f"cancel_{job['id']}", icon=":material/stop_circle:"):
                jobs.cancel(job["id"])
                st.rerun()
        elif job["status"] == "failed":
            st.error(job.get("error") or "failed", icon=":material/error:")
        elif job["status"] == "cancelled":
            st.caption("cancelled")
        elif job["status"] == "succeeded":
            _result(job)
        if show_log:
            with st.expander("log"):
                st.code(jobs.log_tail(job["id"], 3000) or "(no output yet)", language=None)


def _listed(kind: str | None, limit: int) -> list[dict]:
    return [j for j in jobs.list_jobs(limit=50) if kind is None or j.get("kind") == kind][:limit]


def _watch(current: list[dict]) -> None:
    """When a job this session saw running has finished, rerun the whole page so ledger views show it."""
    active = {j["id"] for j in current if j["status"] in ACTIVE}
    seen = st.session_state.get("_active_jobs", set())
    st.session_state["_active_jobs"] = active
    if seen - active:
        data.forget()
        st.rerun(scope="app")


def jobs_panel(kind: str | None = None, limit: int = 6, title: str | None = "Background jobs") -> None:
    """Jobs from disk (so a browser refresh or a second tab sees them), refreshed every second while any
    runs; when one finishes the whole page reruns so ledger views show its results."""
    listed = _listed(kind, limit)
    running = any(j["status"] in ACTIVE for j in listed)

    def panel() -> None:
        current = _listed(kind, limit)
        _watch(jobs.list_jobs(limit=50))
        if title:
            st.subheader(title)
        if not current:
            st.caption("No jobs yet.")
        for job in current:
            job_row(job)

    st.session_state.setdefault("_active_jobs", {j["id"] for j in jobs.list_jobs(limit=50) if j["status"] in ACTIVE})
    st.fragment(panel, run_every=1.0 if running else None)()


def sidebar_jobs() -> None:
    """Every page: the running jobs with their progress, and a link to the Jobs page."""
    everything = jobs.list_jobs(limit=50)
    running = [j for j in everything if j["status"] in ACTIVE]

    def panel() -> None:
        current = [j for j in jobs.list_jobs(limit=50) if j["status"] in ACTIVE]
        _watch(jobs.list_jobs(limit=50))
        for job in current:
            frac, what = jobs.progress(job["id"])
            st.caption(f":material/hourglass_top: **{job['label']}**")
            st.progress(frac if frac is not None else 0.0, text=what or "starting…")

    st.page_link(JOBS_PAGE, label=f"Jobs ({len(running)} running)" if running else "Jobs",
                 icon=":material/hourglass_top:" if running else ":material/history:")
    st.session_state.setdefault("_active_jobs", {j["id"] for j in running})
    if running:
        st.fragment(panel, run_every=1.0)()
