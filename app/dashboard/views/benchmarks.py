"""Benchmarks: the ledger's metrics, dense vs tickets, with error bars and per-category breakdowns,
the IMP experiment curves, and evaluation jobs."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from app.dashboard import data, figures, widgets
from pruning.errors import TicketLabError

st.title("Benchmarks")

SUITE_ORDER = ("safety", "ppl", "latency", "attribution")
PREFERRED = ("pct_stereotype", "amb_bias_score", "disamb_bias_score", "perplexity", "acc")
_CATEGORY = re.compile(r"^(?P<family>.+?)_(?P<category>[A-Z][A-Za-z_]*)$")


@st.cache_data(ttl=300, max_entries=32, show_spinner=False)
def imp_table(experiment: str, stamp: tuple) -> pd.DataFrame:
    return data.optional("analysis.experiments").imp_report(experiment, data.ledger())


def breakdown(df: pd.DataFrame) -> pd.DataFrame:
    """Label each row with a metric family and a category, for grouped bars: BBQ spells its categories
    as metric suffixes (amb_bias_score_Age), CrowS-Pairs as task suffixes (crows_pairs_english_age)."""
    out = df.copy()
    base = out["metric"].str.split(",").str[0]
    fam, cat, order = [], [], []
    for task, metric in zip(out["task"], base, strict=True):
        m = _CATEGORY.match(metric)
        if m:
            fam.append(m["family"])
            cat.append(m["category"])
            order.append(1)
        else:
            fam.append(metric)
            cat.append(task)
            order.append(0)
    out["family"], out["category"], out["order"] = fam, cat, order
    for _family, part in out.groupby("family"):
        tasks = part.loc[part["order"] == 0, "category"]
        if len(set(tasks)) > 1:  # crows_pairs_english, crows_pairs_english_age, ... -> overall, age
            root = min(set(tasks), key=len)
            if all(t.startswith(root) for t in set(tasks)):
                idx = part.index[part["order"] == 0]
                out.loc[idx, "category"] = [("overall" if t == root else t[len(root):].lstrip("_"))
                                            for t in out.loc[idx, "category"]]
                out.loc[idx, "order"] = [0 if t == root else 1 for t in part.loc[part["order"] == 0, "category"]]
        elif len(part) and (part["order"] == 1).any():
            out.loc[part.index[part["order"] == 0], "category"] = "overall"
    return out


models = data.models()
tickets = data.tickets()
if models.empty:
    widgets.first_steps()
    st.stop()

specs = dict(zip(models["weights_sha256"], models["spec"], strict=True))
top = st.columns([2, 1, 1])
order = sorted(specs, key=lambda s: (specs[s] != data.app_model(), -int(models.set_index("weights_sha256")
                                                                         .loc[s, "tickets"])))
dense = top[0].selectbox("dense model", order, format_func=lambda s: f"{specs[s]} ({s[:12]})", key="bm_dense")
full_only = top[1].toggle("full runs only", value=False, key="bm_full",
                          help="decisions use full runs; --limit runs are quick looks")
metrics = data.metrics(dense, full_only=full_only)
mine = tickets[tickets["dense_sha256"] == dense]
labels = {"dense": "dense"} | {r["id"]: data.ticket_label(r) for r in mine.to_dict("records")}

tab_metrics, tab_imp, tab_eval = st.tabs(["Metrics", "IMP experiments", "Evaluate"])

with tab_metrics:
    if metrics.empty:
        st.info("No evaluations of this model or its tickets yet. Run `ticketlab eval dense --suite all` "
                "(or a ticket id), or start one on the Evaluate tab.")
    else:
        have = [s for s in labels if s in set(metrics["subject"])]
        subjects = st.multiselect("subjects", have, default=have[:6], format_func=lambda s: labels.get(s, s),
                                  key="bm_subjects")
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
                st.caption(f"{len(limited)} of these values come from --limit runs (quick looks, not for decisions); "
                           "error bars are one standard error.")
            table = sel.assign(value=sel.apply(
                lambda r: "" if pd.isna(r["value"]) else f"{r['value']:.4g}"
                + (f" ± {r['stderr']:.2g}" if pd.notna(r["stderr"]) else "")
                + (f" (limit {int(r['limit'])})" if pd.notna(r["limit"]) else ""), axis=1))
            wide = table.pivot_table(index=["suite", "task", "metric"], columns="who", values="value", aggfunc="first")
            with st.expander(f"all metrics ({len(wide)})"):
                st.dataframe(wide.reset_index(), hide_index=True, width="stretch")

with tab_imp:
    exp_mod = data.optional("analysis.experiments")
    experiments = data.frame("SELECT id, kind, status, created_at, params FROM experiments ORDER BY created_at DESC")
    if experiments.empty:
        st.info("No IMP experiments yet: start one on the Prune page (or `ticketlab imp`).")
    elif exp_mod is None:
        st.dataframe(experiments, hide_index=True, width="stretch")
        st.caption("The IMP curves appear once analysis.experiments is installed.")
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
                       "(re-initialised, random mask); error bars are the spread over seeds.")
            st.dataframe(report, hide_index=True, width="stretch")

with tab_eval:
    if "eval" not in widgets.cli_parsers():
        st.info("Evaluations start here once `ticketlab eval` is installed.")
    else:
        subject = st.selectbox("evaluate", ["dense"] + list(mine["id"]), format_func=lambda s: labels.get(s, s),
                               key="bm_eval_subject")
        with st.form("eval_form"):
            argv = widgets.argparse_form("eval", key="bm_eval", fixed={"subject": subject, "ticket": subject})
            go = st.form_submit_button("Evaluate in the background", type="primary")
        if go and argv:
            widgets.start_job(argv + widgets.json_flag("eval"), label=" ".join(["eval", *argv[1:]]), kind="eval")
    widgets.jobs_panel(kind="eval", limit=4, title=None)
