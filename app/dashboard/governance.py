"""The dashboard side of governance: forms and panels that call `analysis.governance` exactly as the
`ticketlab review / decide / promote / rollback / history / audit` commands do."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import streamlit as st

from pruning.errors import TicketLabError

from . import data


def modules() -> SimpleNamespace | None:
    """The governance modules, or None until they are installed."""
    names = ("review", "decisions", "deploy", "policy", "identity", "verify", "export")
    mods = {n: data.optional(f"analysis.governance.{n}") for n in names}
    if any(mods[n] is None for n in ("review", "decisions", "deploy", "policy")):
        return None
    return SimpleNamespace(**mods)


def _file_stamp(path: str) -> tuple:
    try:
        s = Path(path).expanduser().stat()
        return (s.st_mtime_ns, s.st_size)
    except OSError:
        return (0, 0)


@st.cache_data(ttl=300, max_entries=64, show_spinner=False)
def _review(ticket: str, baseline: str, policy: str, key: tuple):
    return modules().review.review_ticket(data.ledger(), ticket, baseline=baseline, policy=policy or None)


def review(ticket: str, baseline: str, policy: str):
    return _review(ticket, baseline, policy, (data.stamp(), _file_stamp(policy)))


@st.cache_data(ttl=300, max_entries=16, show_spinner=False)
def _audit(key: tuple) -> dict:
    return modules().decisions.audit(data.ledger())


@st.cache_data(ttl=300, max_entries=64, show_spinner=False)
def _compare(baseline: str, ticket: str, key: tuple) -> dict:
    return data.optional("analysis.compare").compare(baseline, ticket, data.ledger())


def metric_deltas(ticket: str, baseline_subject: str) -> pd.DataFrame | None:
    """Every metric both have, like with like: analysis.compare's rows (delta = ticket - baseline)."""
    if data.optional("analysis.compare") is None:
        return None
    try:
        result = _compare(baseline_subject, ticket, data.stamp())
    except TicketLabError:
        return None
    if not result["rows"]:
        return None
    df = pd.DataFrame(result["rows"]).rename(columns={"a": "baseline", "b": "ticket", "a_stderr": "baseline_stderr",
                                                      "b_stderr": "ticket_stderr"})
    return df[["suite", "task", "metric", "baseline", "baseline_stderr", "ticket", "ticket_stderr", "delta",
               "within_stderr", "change"]]


def _after_write(message: str) -> None:
    data.forget()
    _review.clear()
    _audit.clear()
    _compare.clear()
    st.session_state["gov_flash"] = message
    st.rerun()


def flash() -> None:
    msg = st.session_state.pop("gov_flash", None)
    if msg:
        st.success(msg, icon=":material/check_circle:")


def decision_form(ticket: str, baseline: str, policy: str, review) -> None:
    gov = modules()
    flash()
    try:
        reviewers = gov.decisions.load_reviewers()
    except TicketLabError as e:
        reviewers = []
        st.warning(str(e), icon=":material/warning:")
    with st.form("decision"):
        c1, c2 = st.columns([1, 1])
        if reviewers:
            reviewer = c1.selectbox("reviewer", reviewers, key="dec_reviewer")
        else:
            reviewer = c1.text_input("reviewer", key="dec_reviewer_text")
        decision = c2.radio("decision", ["approve", "reject"], horizontal=True, key="dec_decision")
        reason = st.text_area("reason (recorded, and part of the hash chain)", key="dec_reason", height=80)
        override = st.checkbox("override the policy (approve although a rule fails or evidence is missing)",
                               key="dec_override", disabled=review.passed)
        override_reason = st.text_input("override reason", key="dec_override_reason", disabled=review.passed)
        go = st.form_submit_button("Record decision", type="primary")
    if go:
        try:
            row = gov.decisions.decide(data.ledger(), ticket, decision, reviewer, reason, override=override,
                                       override_reason=override_reason, policy=policy or None, baseline=baseline)
        except TicketLabError as e:
            st.error(str(e), icon=":material/warning:")
        else:
            _after_write(f"recorded decision #{row['seq']}: {row['decision']} of {row['ticket_id']} by {row['reviewer']}"
                         + (" (override)" if row["override"] else ""))
    rows = gov.decisions.decision_rows(data.ledger(), ticket)
    if rows:
        df = pd.DataFrame(rows)[["seq", "decided_at", "decision", "reviewer", "reason", "override", "override_reason",
                                 "baseline", "policy_name", "passed"]]
        st.dataframe(df, hide_index=True, width="stretch")


def deployment_panel(ticket: str, dense_sha256: str) -> None:
    gov = modules()
    ledger = data.ledger()
    current = gov.deploy.current(ledger, dense_sha256)
    stack = gov.deploy.stack(ledger, dense_sha256)
    st.markdown(f"Deployed now for dense model `{dense_sha256[:12]}`: **{current}**"
                + (" — this ticket" if current == ticket else ""))
    user = gov.identity.current_user() if gov.identity else ""
    left, right = st.columns(2)
    with left.form("promote"):
        by = st.text_input("by", value=user, key="dep_by")
        reason = st.text_input("reason", key="dep_reason")
        go = st.form_submit_button(f"Promote {ticket[:10]}", type="primary", disabled=current == ticket)
    if go:
        try:
            row = gov.deploy.promote(ledger, ticket, by, reason)
        except TicketLabError as e:
            left.error(str(e), icon=":material/warning:")
        else:
            _after_write(f"promoted {row['target']} (was {row['previous']})")
    with right.form("rollback"):
        earlier = [t for t in reversed(stack[:-1])]
        to = st.selectbox("roll back to", ["previous"] + earlier, key="rb_to", disabled=len(stack) < 2)
        by_rb = st.text_input("by", value=user, key="rb_by")
        reason_rb = st.text_input("reason", key="rb_reason")
        go_rb = st.form_submit_button("Roll back", disabled=len(stack) < 2)
    if go_rb:
        try:
            row = gov.deploy.rollback(ledger, by_rb, reason_rb, to=None if to == "previous" else to, model=dense_sha256)
        except TicketLabError as e:
            right.error(str(e), icon=":material/warning:")
        else:
            _after_write(f"rolled back to {row['target']} (was {row['previous']})")
    hist = gov.deploy.history(ledger, dense_sha256)
    if hist:
        df = pd.DataFrame(hist).drop(columns=["dense_sha256", "row_hash", "decision_hash"], errors="ignore")
        st.dataframe(df.sort_values("seq", ascending=False), hide_index=True, width="stretch")
    else:
        st.caption("No deployment moves yet: the dense model serves itself.")


def audit_status() -> None:
    gov = modules()
    try:
        report = _audit(data.stamp())
    except TicketLabError as e:
        st.error(str(e), icon=":material/warning:")
        return
    tables = report.get("tables", {})
    counts = ", ".join(f"{t}: {e.get('rows', 0)} rows" for t, e in tables.items())
    if report["ok"]:
        st.success(f"Audit chain intact ({counts}).", icon=":material/lock:")
    else:
        st.error(f"Audit chain BROKEN: {gov.decisions.audit_message(report)}", icon=":material/gpp_bad:")
