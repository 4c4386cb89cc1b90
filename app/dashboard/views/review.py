"""Review: a candidate ticket against a baseline and a policy (governance's `review_ticket`), both
survival maps, the decision form (`decide`), the deployment pointer (`promote` / `rollback`), its
history and the audit of the hash chains."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import streamlit as st

from app.dashboard import data, figures, governance, widgets
from pruning.errors import TicketLabError

st.title("Review")

tickets = data.tickets()
if tickets.empty:
    widgets.first_steps()
    st.stop()
gov = governance.modules()
if gov is None:
    st.info("Reviews appear here once the governance module (analysis.governance) is installed.")
    st.stop()

c1, c2, c3 = st.columns([2, 2, 2])
with c1:
    tid = widgets.ticket_picker(tickets, "candidate ticket", key="rev_ticket", query_param="ticket")
row = tickets.set_index("id").loc[tid]
dense = row["dense_sha256"]
same = tickets[(tickets["dense_sha256"] == dense) & (tickets["id"] != tid)]
with c2:
    baseline = widgets.ticket_picker(same, "baseline", key="rev_baseline", include=["dense", "deployed"])
with c3:
    policy_path = st.text_input("policy file", value=str(gov.policy.default_policy_path()), key="rev_policy")

try:
    review = governance.review(tid, baseline, policy_path)
except TicketLabError as e:
    st.error(str(e), icon=":material/warning:")
    st.stop()

counts = review.counts()
tally = " · ".join(f"{counts.get(s, 0)} {s}" for s in ("pass", "fail", "missing", "pending"))
if review.passed:
    st.success(f"**passes** the policy ({tally})", icon=":material/check_circle:")
else:
    st.error(f"**does not pass** the policy ({tally}): approving needs an explicit, recorded override",
             icon=":material/block:")
st.caption(f"policy **{review.policy['name']}** `{review.policy['sha256'][:12]}` · baseline **{review.baseline['label']}**"
           f" · ticket created by **{review.creator or 'unknown'}**")

COLOR = {"pass": "#d9f2e0", "fail": "#fbd5d5", "missing": "#fdf0c8", "pending": "#e3ecfa"}
rules = pd.DataFrame([asdict(r) for r in review.results])
if not rules.empty:
    shown = rules[["status", "rule", "item", "baseline", "candidate", "delta", "limit", "detail"]]
    styled = shown.style.map(lambda s: f"background-color: {COLOR.get(s, 'white')}", subset=["status"]).format(
        {c: lambda v: "" if v is None or v != v else f"{v:.4g}" for c in ("baseline", "candidate", "delta")})
    st.dataframe(styled, hide_index=True, width="stretch", height=min(36 * (len(shown) + 1) + 3, 720))

deltas = governance.metric_deltas(tid, review.baseline["subject"])
if deltas is not None and not deltas.empty:
    with st.expander(f"metric deltas, like with like ({len(deltas)} shared metrics)"):
        st.dataframe(deltas, hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(c, format="%.4g")
                                    for c in ("baseline", "baseline_stderr", "ticket", "ticket_stderr", "delta")})

st.subheader("Survival: baseline and candidate")
h1, h2 = st.columns(2)
cand_surv = data.survival(tid)["layer"]
base_subject = review.baseline["subject"]
if base_subject == "dense":
    base_surv = cand_surv.assign(kept=cand_surv["total"])
else:
    base_surv = data.survival(base_subject)["layer"]
if not base_surv.empty:
    h1.plotly_chart(figures.matrix_heatmap(base_surv, f"Baseline: {review.baseline['label']}"), key="rev_base_heat")
if not cand_surv.empty:
    h2.plotly_chart(figures.matrix_heatmap(cand_surv, f"Candidate: {tid}"), key="rev_cand_heat")

st.subheader("Decision")
governance.decision_form(tid, baseline, policy_path, review)

st.subheader("Deployment")
governance.deployment_panel(tid, dense)

st.subheader("Audit")
governance.audit_status()
