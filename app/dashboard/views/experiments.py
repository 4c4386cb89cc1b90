"""Experiments: a lottery-ticket experiment's verdict sentence, the sparsity x arm table (mean, 95%
interval, n seeds), the largest matching sparsity, learning curves with interval bands, the pilot, the
sanity check and the instability barrier, and the behaviour suites' results on the experiment's tickets
(analysis.lottery.downstream). Everything is read from the ledger."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from analysis.ledger import read_model
from analysis.lottery import experiments as exp_mod
from analysis.lottery.lottery_verdict import interval_cell
from app.dashboard import data
from pruning.errors import TicketLabError

st.title("Experiments")


@st.cache_data(ttl=300, max_entries=16, show_spinner=False)
def _report(experiment: str, stamp: tuple) -> tuple[pd.DataFrame, dict, pd.DataFrame, dict | None]:
    from analysis.lottery.experiments import imp_report, learning_curves, pilot_record

    ledger = data.ledger()
    table = imp_report(experiment, ledger)
    return table, table.attrs["verdict"], learning_curves(experiment, ledger), pilot_record(experiment, ledger)


@st.cache_data(ttl=300, max_entries=16, show_spinner=False)
def _downstream(experiment: str, stamp: tuple) -> pd.DataFrame | None:
    from analysis.lottery.downstream import downstream_table, recorded_limit

    ledger = data.ledger()
    limit = recorded_limit(experiment, ledger)
    return None if limit is False else downstream_table(experiment, ledger, limit)


def _cell(mean: float, low: float, high: float) -> str:
    return interval_cell(mean, low, high, missing="–")


experiments = data.frame(read_model.experiments(kind="imp"))
if experiments.empty:
    st.info("No lottery-ticket experiments yet: start one on the Prune page (IMP experiment) or with `ticketlab imp`.")
    st.stop()

status = experiments.set_index("id")["status"].to_dict()
exp_id = st.selectbox("experiment", list(experiments["id"]), key="exp_pick",
                      format_func=lambda e: f"{e} ({status[e]})")
params = experiments.set_index("id").loc[exp_id, "params"]
protocol = json.loads(params) if isinstance(params, str) else (params or {})
try:
    table, verdict, curves, pilot = _report(exp_id, data.stamp())
except TicketLabError as e:
    st.info(str(e))
    st.stop()

st.markdown(f"**Verdict.** {verdict['sentence']}")
if table.attrs.get("budget"):
    st.caption(exp_mod.budget_text(table.attrs["budget"]).capitalize() + ".")
if status[exp_id] != "complete":
    st.caption(f"The experiment is {status[exp_id]}: the verdict covers the units recorded so far.")
cols = st.columns(5)
largest = verdict["largest_matching_sparsity"]
alpha = verdict.get("alpha", 1 - verdict["confidence"])
cols[0].metric("largest matching sparsity", "none" if largest is None else f"{largest:.1%}",
               help=f"TOST's upper test of (ticket - dense) against delta = {verdict['delta']:g} nats at alpha = "
                    f"{alpha:.2g}, levels tested from low to high sparsity, stopping at the first failure")
stop = verdict.get("stopping_sparsity")
cols[1].metric("testing stopped at", "–" if stop is None else f"{stop:.1%}",
               help="the first sparsity where the ticket did not match; higher ones are not tested")
power = verdict.get("power")
cols[2].metric("seeds", verdict["n_seeds"],
               delta=None if not power else f"power {power['achieved']:.2f} (needs {power['needed'] or '>200'})",
               delta_color="off", help="power to declare a ticket exactly as good as dense matching, with the "
                                       "pilot's seed sd")
sanity = verdict.get("sanity")
cols[3].metric("sanity check", "–" if sanity is None else ("passed" if sanity["passed"] else "FAILED"),
               help="the random mask at the highest sparsity tested must be worse than dense by more than delta")
cols[4].metric("rewind", str(table.attrs.get("rewind")))

st.subheader("Held-out loss by sparsity and arm")
st.caption(f"Mean over seeds [{verdict['confidence']:.0%} t-interval], nats/token at each run's validation-selected "
           f"step; round 0 is the dense network. 'ticket - dense' is paired by seed; matching when TOST's upper "
           f"test rejects 'worse by delta = {verdict['delta']:g} nats' at alpha = {alpha:.2g} (levels tested from "
           f"low to high, stopping at the first failure); winning when matching, the random control is not, and "
           f"random - ticket > 0.")
arms = table.attrs["arms"]
shown = pd.DataFrame([{
    "round": r["round"], "sparsity": f"{r['sparsity']:.1%}",
    **{arm: _cell(r[f"{arm}_mean"], r[f"{arm}_low"], r[f"{arm}_high"]) for arm in arms},
    "n": r["n_seeds"],
    "ticket - dense": "–" if r["round"] == 0 else _cell(r["ticket_minus_dense"], r["tmd_low"], r["tmd_high"]),
    "TOST": "" if r["round"] == 0 or r.get("outcome") is None else f"{r['outcome']} (p {r['tost_p']:.3g})",
    "matching": "" if r["round"] == 0 else ("yes" if r["matching"] else "no")
    + ("" if r.get("tested", True) else " (not tested)"),
    "winning": "" if r["round"] == 0 else ("yes" if r["winning"] else "no"),
} for r in table.to_dict("records")])
st.dataframe(shown, hide_index=True, width="stretch")
sep = verdict.get("separation_sparsity")
st.caption("Ticket and random mask separate (random - ticket > 0): "
           + ("at no level tested." if sep is None else f"first at {sep:.1%} sparsity."))
st.plotly_chart(exp_mod.imp_figure(table), key="exp_curve")

with st.expander("Controls against the ticket (paired differences)"):
    from analysis.lottery.lottery_verdict import rows_table

    st.dataframe(pd.DataFrame(rows_table(verdict)), hide_index=True, width="stretch")

st.subheader("Learning curves")
if curves.empty:
    st.caption("No validation curves recorded.")
else:
    rounds = sorted(curves["round"].unique())
    pick = st.multiselect("rounds", rounds, default=rounds[:2], key="exp_rounds")
    st.plotly_chart(exp_mod.curves_figure(curves, pick), key="exp_lc")

left, right = st.columns(2)
with left:
    st.subheader("Pilot")
    if pilot and pilot.get("curves"):
        st.caption(f"Chosen: lr {pilot['lr']:g}, T = {pilot['steps']} ({pilot['rule']}).")
        for note in pilot.get("extensions", []):
            st.caption(f"Grid extended: {note}.")
        if pilot.get("edge"):
            st.warning(f"The pilot's choice is {' and '.join(pilot['edge'])}: the grid may not bracket the optimum.")
        st.plotly_chart(exp_mod.pilot_figure(pilot), key="exp_pilot")
    else:
        st.caption("This protocol fixed lr and T itself (no tuning).")
    if pilot and "seed_sd" in pilot:
        st.caption(f"Seed noise for the power analysis: sd {pilot['seed_sd']:.4f} ({pilot['seed_sd_rule']}).")
with right:
    st.subheader("Sanity check and barrier")
    if sanity:
        from analysis.lottery.lottery_verdict import sanity_text

        st.write(f"{sanity_text(sanity)[0].upper()}{sanity_text(sanity)[1:]}: "
                 f"**{'passed' if sanity['passed'] else 'failed'}**.")
    b = verdict.get("barrier")
    if b:
        st.dataframe(pd.DataFrame([{"from step": k, "barrier": _cell(i["mean"], i["low"], i["high"]), "n": i["n"]}
                                   for k, i in b["by_rewind_step"].items()]), hide_index=True)
        st.caption("Loss barrier on the line between two copies trained with different data orders from the same "
                   "point (Frankle et al. 2020); near 0 = stable.")
    sparse = verdict.get("sparse_stability")
    if sparse:
        st.dataframe(pd.DataFrame([{"sparsity": f"{x['sparsity']:.1%}", "from step": x["rewind_step"],
                                    "barrier": _cell(x["mean"], x["low"], x["high"]), "n": x["n"]} for x in sparse]),
                     hide_index=True)
        st.caption("Instability of the ticket at each level and rewind step.")
    if power:
        st.write(f"Power: {power['given']} seeds give {power['achieved']:.2f} to declare a ticket exactly as good as "
                 f"dense matching (seed sd {power['sd']:.4f} from {power['source']}); "
                 f"{power['needed'] or 'more than 200'} seeds reach {power['target']:.2f}.")

down = _downstream(exp_id, data.stamp())
if down is not None and not down.empty:
    st.subheader("Downstream behaviour")
    st.dataframe(pd.DataFrame([{"task": r.task, "metric": r.metric, "better": r.direction or "-", "arm": r.arm,
                                "level": r.round, "sparsity": f"{r.sparsity:.1%}", "mean": _cell(r.mean, r.low, r.high),
                                "n": r.n, "minus level 0": "–" if r.round == 0 else
                                _cell(r.minus_level0, r.minus_low, r.minus_high), "reading": r.reading}
                               for r in down.itertuples()]), hide_index=True)
    limit = down.attrs["limit"]
    st.caption(f"{down.attrs['evaluated']} of {down.attrs['units']} tickets evaluated "
               f"({'the full sets' if limit is None else f'{limit} documents per task'}); paired by seed against "
               f"level 0. Run `ticketlab imp-eval {exp_id} --suite instruct` for the rest.")

with st.expander("Protocol (fixed before the run; its hash is the experiment id)"):
    st.json(protocol)
