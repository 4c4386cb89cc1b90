"""Benchmarks: the ledger's metrics, dense vs tickets, with error bars and per-category breakdowns,
a ticket compared with a baseline (delta, delta %, within noise), the IMP experiment curves, and the
evaluation form and its jobs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.ledger import read_model
from app.dashboard import comparison_view as comparison
from app.dashboard import data, evaluate_form, figures, jobs_panel, tables, transcripts, widgets
from app.dashboard.breakdown import breakdown
from pruning.errors import TicketLabError

st.title("Benchmarks")

SUITE_ORDER = ("safety", "ppl", "latency", "attribution")
PREFERRED = ("pct_stereotype", "amb_bias_score", "disamb_bias_score", "perplexity", "acc")
@st.cache_data(ttl=300, max_entries=32, show_spinner=False)
def imp_table(experiment: str, stamp: tuple) -> pd.DataFrame:
    from analysis.lottery.experiments import imp_report

    return imp_report(experiment, data.ledger())


models = data.models()
tickets = data.tickets()
if models.empty:
    widgets.first_steps()
    st.stop()

specs = dict(zip(models["weights_sha256"], models["spec"], strict=True))
linked = widgets.url_ticket(tickets)  # ?ticket=: that ticket's dense model, subjects and comparison
if linked is not None and st.session_state.get("_bm_linked") != linked:
    st.session_state["_bm_linked"] = linked
    st.session_state["bm_dense"] = tickets.set_index("id").loc[linked, "dense_sha256"]
    st.session_state.pop("bm_subjects", None)
top = st.columns([2, 1, 1])
order = sorted(specs, key=lambda s: (specs[s] != data.app_model(), -int(models.set_index("weights_sha256")
                                                                         .loc[s, "tickets"])))
dense = top[0].selectbox("dense model", order, format_func=lambda s: f"{specs[s]} ({s[:12]})", key="bm_dense")
full_only = top[1].toggle("full runs only", value=False, key="bm_full",
                          help="decisions use full runs; runs with a limit are quick looks")
metrics = data.metrics(dense, full_only=full_only)
mine = tickets[tickets["dense_sha256"] == dense]
labels = {"dense": "dense"} | {r["id"]: data.ticket_label(r) for r in mine.to_dict("records")}

tab_metrics, tab_compare, tab_imp, tab_eval = st.tabs(["Metrics", "Compare", "IMP experiments", "Evaluate"],
                                                      default="Compare" if linked else None)

with tab_metrics:
    if metrics.empty:
        st.info("No evaluations of this model or its tickets yet. Start one on the Evaluate tab.")
    else:
        have = [s for s in labels if s in set(metrics["subject"])]
        first = (["dense"] if "dense" in have else []) + ([linked] if linked in have else [])
        subjects = st.multiselect("subjects", have, default=(first + [h for h in have if h not in first])[:6],
                                  format_func=lambda s: labels.get(s, s), key="bm_subjects")
        sel = breakdown(metrics[metrics["subject"].isin(subjects)])
        sel["who"] = sel["subject"].map(lambda s: labels.get(s, s))
        suites = sorted(sel["suite"].unique(), key=lambda x: (SUITE_ORDER.index(x) if x in SUITE_ORDER else 9, x))
        if not suites:
            st.caption("Pick at least one subject.")
        else:
            c1, c2 = st.columns(2)
            suite = c1.selectbox("suite", suites, key="bm_suite")
            part = sel[sel["suite"] == suite]
            families = sorted(part["family"].unique(),
                              key=lambda f: (PREFERRED.index(f) if f in PREFERRED else len(PREFERRED), f))
            family = c2.selectbox("metric", families, key="bm_metric",
                                  help="per-category breakdowns: CrowS-Pairs bias types, BBQ categories")
            part = part[part["family"] == family].sort_values(["order", "category", "who"])
            ideal = part["ideal"].dropna().iloc[0] if part["ideal"].notna().any() else None
            direction = part["direction"].dropna().iloc[0] if part["direction"].notna().any() else None
            hint = {"higher": "higher is better", "lower": "lower is better"}.get(
                direction, f"best at {ideal:g}" if ideal is not None else "")
            st.plotly_chart(figures.metric_bars(part, "category", "who", f"{suite} · {family}"
                                                + (f" ({hint})" if hint else ""), ideal=ideal), key="bm_bars")
            limited = part[part["limit"].notna()]
            if not limited.empty:
                st.caption(f"**{len(limited)} of these values come from quick runs (a limit)**: indicative, not for "
                           "decisions. Error bars are one standard error; the dense model is always grey.")
            else:
                st.caption("Full runs. Error bars are one standard error; the dense model is always grey.")
            sel = sel.assign(metric=sel["metric"].str.split(",").str[0])
            wide = sel.pivot_table(index=["suite", "task", "metric"], columns="who", values="value", aggfunc="first")
            quick = sel[sel["limit"].notna()].groupby("who")["limit"].max()
            wide = wide.rename(columns={w: f"{w} (quick, limit {int(q)})" for w, q in quick.items()})
            with st.expander(f"all metrics ({len(wide)})"):
                st.dataframe(wide.reset_index(), hide_index=True, width="stretch", placeholder="—",
                             column_config={c: st.column_config.NumberColumn(c, format="%.4g") for c in wide.columns})

with tab_compare:
    if mine.empty:
        st.info("No tickets of this model yet.")
    else:
        cc1, cc2 = st.columns(2)
        with cc1:
            cmp_ticket = widgets.ticket_picker(mine, "ticket", key="bm_cmp_ticket", query_param="ticket")
        with cc2:
            cmp_base = widgets.ticket_picker(mine[mine["id"] != cmp_ticket], "against", key="bm_cmp_base",
                                             include=["dense"])
        if cmp_ticket and cmp_base:
            comparison.comparison_view(cmp_base, cmp_ticket, key="bm_cmp", baseline_label=labels.get(cmp_base, cmp_base))
            st.markdown("**Answers side by side** (generation tasks)")
            transcripts.transcripts_view(cmp_base, cmp_ticket, key="bm_tr", baseline_label=labels.get(cmp_base, cmp_base),
                                         dense_sha256=dense)

with tab_imp:
    from analysis.lottery import experiments as exp_mod

    experiments = data.frame(read_model.experiments())
    if experiments.empty:
        st.info("No IMP experiments yet: start one on the Prune page (or `ticketlab imp`).")
    else:
        exp_id = st.selectbox("experiment", list(experiments["id"]), key="bm_exp",
                              format_func=lambda e: f"{e} ({experiments.set_index('id').loc[e, 'status']})")
        try:
            report = imp_table(exp_id, data.stamp())
        except TicketLabError as e:
            st.info(str(e))
        else:
            st.plotly_chart(exp_mod.imp_figure(report), key="bm_imp")
            st.caption("Held-out loss against weights remaining: the rewound ticket against its controls "
                       "(re-initialised, random mask); error bars are 95% t-intervals over seeds.")
            st.page_link("views/experiments.py", label="The verdict, learning curves, pilot and sanity check: "
                         "Experiments page", icon=":material/science:")
            st.dataframe(report, hide_index=True, width="stretch", placeholder="—",
                         column_config=tables.number_columns(report))

with tab_eval:
    if "eval" not in widgets.cli_parsers():
        st.info("Evaluations start here once `ticketlab eval` is installed.")
    else:
        model_of = {"dense": specs[dense]}
        evaluate_form.evaluate_form(["dense"] + list(mine["id"]), labels, model_of, dense)
    jobs_panel.jobs_panel(kind="eval", limit=4, title=None)
