"""Review: a candidate ticket against a baseline and a policy (governance's `review_ticket`), both
survival maps, the decision form (`decide`), the deployment pointer (`promote` / `rollback`), its
history and the audit of the hash chains."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import streamlit as st

from app.dashboard import (
    acting,
    comparison_view,
    data,
    figures,
    governance,
    tables,
    transcripts,
    verdict_line,
    widgets,
)
from pruning.errors import TicketLabError

st.title("Review")

tickets = data.tickets()
if tickets.empty:
    widgets.first_steps()
    st.stop()
gov = governance.modules()

c1, c2, c3 = st.columns([2, 2, 2])
with c1:
    tid = widgets.ticket_picker(tickets, "candidate ticket", key="rev_ticket", query_param="ticket")
if tid is None:
    st.stop()
row = tickets.set_index("id").loc[tid]
dense = row["dense_sha256"]
same = tickets[(tickets["dense_sha256"] == dense) & (tickets["id"] != tid)]
with c2:
    baseline = widgets.ticket_picker(same, "baseline", key="rev_baseline", include=["dense", "deployed"])
with c3:
    policy_path = governance.policy_box()  # empty: the pinned policy; a file: a labelled what-if preview

try:
    review = governance.review(tid, baseline, policy_path)
except TicketLabError as e:
    st.error(str(e), icon=":material/warning:")
    st.stop()

verdict_line.show(tid, review.baseline["subject"], review.baseline["label"], review)
st.caption(f"policy **{review.policy['name']}** `{review.policy['sha256'][:12]}` · baseline **{review.baseline['label']}**"
           f" · ticket created by **{review.creator or 'unknown'}** · {data.size_text(row)} removed")

st.subheader("Policy rules")
rules = pd.DataFrame([asdict(r) for r in review.results])
if not rules.empty:
    # a rule evaluated on quick (--limit) runs is indicative: its failure shows as a failure, marked so
    indicative = rules["indicative"] if "indicative" in rules else pd.Series(False, index=rules.index)
    rules["status"] = [f"{s} (indicative)" if i and s in ("pass", "fail") else s
                       for s, i in zip(rules["status"], indicative.fillna(False), strict=True)]
    order = {"fail": 0, "missing": 1, "pending": 2, "pass": 3}
    rules["_order"] = [order.get(s.split(" ")[0], 4) for s in rules["status"]]
    shown = rules.sort_values(["_order", "rule"], kind="stable")[
        ["status", "rule", "item", "baseline", "candidate", "delta", "limit", "detail"]]
    # st.table always draws the index (and does not colour it): make it the status, and colour the rule
    colours = [f"background-color: {tables.STATUS_BG.get(s.split(' ')[0], 'white')}" for s in shown["status"]]
    # the Styler needs a unique index: zero-width spaces keep equal statuses apart and read the same
    shown = shown.set_index(pd.Index([s + "\u200b" * i for i, s in enumerate(shown["status"])], name="status"))
    shown = shown.drop(columns="status")
    shown["detail"] = shown["detail"].map(lambda d: governance.browser_words(d) if isinstance(d, str) else d)
    styled = shown.style.apply(lambda col: colours, subset=["rule", "item"])
    styled = styled.format({"baseline": tables.num, "candidate": tables.num, "delta": tables.signed,
                            **{c: tables.plain for c in ("item", "limit", "detail")}})
    st.table(styled)  # a static table wraps long details instead of cutting them off

st.subheader(f"Evidence: the ticket against {review.baseline['label']}")
comparison_view.comparison_view(review.baseline["subject"], tid, key="rev_cmp", baseline_label=review.baseline["label"])

st.subheader("What it says: answers side by side")
transcripts.transcripts_view(review.baseline["subject"], tid, key="rev_tr", baseline_label=review.baseline["label"],
                             dense_sha256=dense)

st.subheader("Survival")
cand_surv = data.survival(tid)["layer"]
base_subject = review.baseline["subject"]
if base_subject == "dense":
    # the dense model keeps every weight: one uniform map says nothing, so only the candidate is drawn
    if not cand_surv.empty:
        st.plotly_chart(figures.matrix_heatmap(cand_surv, f"Candidate {tid[:12]}: surviving weights"),
                        key="rev_cand_heat")
    st.caption("The baseline is the dense model, which keeps every weight. "
               f"[Open the ticket on the Survival page](survival?ticket={tid}) for heads, neurons and differences.")
else:
    h1, h2 = st.columns(2)
    base_surv = data.survival(base_subject)["layer"]
    if not base_surv.empty:
        h1.plotly_chart(figures.matrix_heatmap(base_surv, f"Baseline: {review.baseline['label']}"), key="rev_base_heat")
    if not cand_surv.empty:
        h2.plotly_chart(figures.matrix_heatmap(cand_surv, f"Candidate: {tid}"), key="rev_cand_heat")

# acting on the ticket: one sign-in, then what the signed-in person's roles allow first (a deployer sees
# the deployment panel before the decision form), the rest explained
st.subheader("Decide and deploy")
governance.flash()
governance.signed_records(tid)
me = governance.sign_in("dec")
roles = governance.roles_of(me)
sections = [("Decision", lambda: acting.decision_form(tid, baseline, me, roles) if me else None),
            ("Deployment", lambda: acting.deployment_panel(tid, dense, me, roles))]
if "deployer" in roles and "reviewer" not in roles:
    sections.reverse()
for title, draw in sections:
    st.markdown(f"#### {title}")
    draw()

st.subheader("Audit")
governance.audit_status()
