"""Survival: where each ticket's surviving weights are (from the ledger's survival tables), a
difference view between two tickets, mask overlap on request, and head attributions."""

from __future__ import annotations

import streamlit as st

from app.dashboard import data, figures, overlap, widgets
from pruning.errors import TicketLabError

st.title("Survival")

tickets = data.tickets()
if tickets.empty:
    widgets.first_steps()
    st.stop()

tid = widgets.ticket_picker(tickets, "ticket", key="surv_ticket", query_param="ticket")
if tid is None:
    st.stop()
row = tickets.set_index("id").loc[tid]
ppl = row.get("wikitext2/perplexity")
struct = data.structure(row.get("structure"))
m = st.columns([1, 1, 2])
if "unit_sparsity" in struct or struct.get("kind") == "layers":
    # structured: the target is a share of units (heads, neurons, layers), not of weights
    unit = struct.get("kind") or struct.get("unit") or "units"
    share = struct.get("unit_sparsity", len(struct.get("removed") or []) / max(1, struct.get("num_layers") or 1))
    m[0].metric(f"{unit} removed", f"{share:.1%}", f"target {row['target_sparsity']:.0%} of {unit}",
                delta_color="off", delta_arrow="off",
                help=f"{struct.get('units_removed', '?')} {unit} removed; importance "
                     f"**{struct.get('importance', '?')}**. Weights removed: {row['achieved_sparsity']:.1%} of the "
                     "projection weights (embeddings and norms are never pruned).")
    m[0].caption(f"weights removed {row['achieved_sparsity']:.1%} · importance {struct.get('importance', '?')}")
else:
    m[0].metric("achieved sparsity", f"{row['achieved_sparsity']:.1%}", f"target {row['target_sparsity']:.0%}",
                delta_color="off", delta_arrow="off")
m[1].metric("perplexity", "—" if ppl is None or ppl != ppl else f"{ppl:.4g}",
            help="WikiText-2 test, latest run (see Benchmarks for the setup)")
m[2].markdown(f"**{row['method']}** {data.setting(row['method'], row['params']) or '(defaults)'} · review "
              f"**{row['review']}**" + (" · **deployed**" if row["deployed"] else "") + "  \n"
              f"model `{str(row['model']).rsplit('/', 1)[-1]}` · created {str(row['created_at'])[:16]}"
              + (f"  \nparent `{row['parent']}`" if data.text(row["parent"]) else ""))

surv = data.survival(tid)
if surv["layer"].empty:
    st.warning(f"ticket {tid} has no survival rows in the ledger (it was recorded without them).")
    st.stop()

st.plotly_chart(figures.matrix_heatmap(surv["layer"]), key="surv_matrix")

heads, attr_col = st.columns([3, 2])
with heads:
    st.plotly_chart(figures.head_heatmap(surv["head"]), key="surv_heads")
with attr_col:
    attr = data.attribution(tid)
    dense_attr = data.attribution("dense", row["dense_sha256"])
    shown = st.radio("attributions (CrowS-Pairs, integrated gradients per head)", ["ticket", "dense"],
                     horizontal=True, key="attr_subject")
    df = attr if shown == "ticket" else dense_attr
    if df.empty:
        subject = tid if shown == "ticket" else "dense"
        st.info(f"No head attributions for {shown} yet." +
                (" Compute them here:" if "eval" in widgets.cli_parsers() else
                 f" Compute them with `ticketlab eval {subject} --suite attribution`."))
        if "eval" in widgets.cli_parsers() and st.button("Compute attributions in the background", key="attr_go"):
            model_args = ["--model", str(row["model"])] if shown == "dense" and row["model"] else []
            widgets.start_job(["eval", subject, "--suite", "attribution", *model_args, *widgets.json_flag("eval")],
                              label=f"attribution of {subject[:10]}", kind="eval")
    else:
        st.plotly_chart(figures.attribution_heatmap(df, f"Head attribution ({shown}, {int(df['n_pairs'].max())} pairs)"),
                        key="surv_attr")
        st.caption("Signed: positive heads push towards the stereotyped sentence. A head the ticket removed is 0.")

st.plotly_chart(figures.neuron_heatmap(surv["neuron"]), key="surv_neurons")

st.divider()
st.subheader("Compare with another ticket")
same = tickets[(tickets["dense_sha256"] == row["dense_sha256"]) & (tickets["id"] != tid)]
if same.empty:
    st.caption("No other ticket of this dense model to compare with.")
    st.stop()
other = widgets.ticket_picker(same, "compare with", key="surv_other", query_param="other")
if other is None:
    st.stop()
osurv = data.survival(other)
st.caption("Fraction kept in the first ticket minus the second: blue cells keep more in the first, red in the "
           "second; the colour scale is the data's own range (stated in each title). Two tickets at the same "
           "sparsity can keep different weights: the mask view below shows where.")
st.plotly_chart(figures.difference(surv["layer"], osurv["layer"], "matrix", "Difference: layer × matrix"),
                key="diff_matrix")
d1, d2 = st.columns(2)
d1.plotly_chart(figures.difference(surv["head"], osurv["head"], "head", "Difference: layer × head"), key="diff_heads")
d2.plotly_chart(figures.difference(surv["neuron"], osurv["neuron"], "band", "Difference: layer × neuron band"),
                key="diff_neurons")

st.markdown("**Where the masks differ, and their overlap (IoU)** — computed from the two tickets' masks, only "
            "when you ask (then cached), beside the IoU two random masks of the same sparsities would have.")
pair = (tid, other)
if st.button("Compare the masks", key="iou_go") or st.session_state.get("iou_pair") == pair:
    paths = tickets.set_index("id").loc[list(pair), "path"]
    try:
        with st.spinner("loading both tickets' masks…"):
            iou = overlap.mask_iou(str(paths.iloc[0]), str(paths.iloc[1]))
        st.session_state["iou_pair"] = pair
    except TicketLabError as e:
        st.error(str(e), icon=":material/warning:")
    else:
        st.plotly_chart(figures.mask_difference(iou), key="mask_diff")
        c1, c2 = st.columns([3, 2])
        c1.plotly_chart(figures.iou_heatmap(iou), key="iou_heat")
        summary = overlap.layer_summary(iou)
        whole = overlap.random_iou(int(iou["kept_a"].sum()), int(iou["kept_b"].sum()), int(iou["total"].sum()))
        overall = iou["intersection"].sum() / iou["union"].sum()
        c2.markdown(f"IoU over all layers **{overall:.3f}**; random masks at these sparsities: **{whole:.3f}**")
        c2.dataframe(summary, hide_index=True, width="stretch", placeholder="—", column_config={
            "iou": st.column_config.ProgressColumn("IoU", min_value=0, max_value=1, format="%.3f"),
            "random_iou": st.column_config.NumberColumn("random masks", format="%.3f",
                                                        help="expected IoU of two random masks at the same sparsities"),
            "above_random": st.column_config.NumberColumn("IoU − random", format="%+.3f"),
            "intersection": st.column_config.NumberColumn("both keep", format="%d"),
            "union": st.column_config.NumberColumn("either keeps", format="%d")})
