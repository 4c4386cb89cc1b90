"""Models & tickets: every dense checkpoint and ticket in the ledger; load a model, a ticket or a bundle."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.dashboard import data, loading, widgets

st.title("Models & tickets")


def ticket_table(df, headline: list[str], experiment: bool = False) -> None:
    view = df.assign(
        deployed=df["deployed"].map({True: "deployed", False: ""}),
        setting=[data.setting(m, p) for m, p in zip(df["method"], df["params"], strict=True)],
        model=df["model"].fillna("").map(lambda s: Path(s).name if "/" in s else s),
        survival="/survival?ticket=" + df["id"])
    cols = ["id", "method", "setting", "achieved_sparsity", "review", "deployed", *headline, "model", "created_at",
            "survival"]
    if df["name"].map(data.text).notna().any():
        cols.insert(1, "name")
    if experiment:
        cols.insert(1, "experiment")
    labels = data.headline_labels(headline)
    st.dataframe(view[cols], hide_index=True, width="stretch", column_config={
        "achieved_sparsity": st.column_config.NumberColumn("sparsity", format="percent"),
        **{c: st.column_config.NumberColumn(labels[c], format="%.4g", help=c) for c in headline},
        "survival": st.column_config.LinkColumn("survival", display_text="open"),
        "created_at": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
    })


models = data.models()
tickets = data.tickets()

if models.empty and tickets.empty:
    widgets.first_steps()
else:
    deployed = data.deployed()
    st.subheader("Dense models")
    view = models.assign(
        spec=models["spec"].map(lambda s: "…/" + "/".join(Path(s).parts[-2:]) if s.startswith("/") else s),
        weights=models["weights_sha256"].str[:12],
        deployed=[deployed.get(s, "dense") for s in models["weights_sha256"]],
        params_M=(models["n_params"] / 1e6).round(1))
    st.dataframe(view[["spec", "family", "model_type", "params_M", "weights", "tickets", "deployed"]],
                 hide_index=True, width="stretch", column_config={"params_M": st.column_config.NumberColumn(
                     "params (M)", format="%.1f")})

    oneshot = tickets[tickets["experiment"].isna()]
    st.subheader(f"Tickets ({len(oneshot)})")
    if tickets.empty:
        st.info("No tickets yet: prune one on the Prune page.")
    else:
        headline = data.headline_columns(tickets)
        if not oneshot.empty:
            ticket_table(oneshot, headline)
        imp = tickets[tickets["experiment"].notna()]
        if not imp.empty:
            with st.expander(f"IMP experiment tickets ({len(imp)} in {imp['experiment'].nunique()} experiments)"):
                ticket_table(imp, headline, experiment=True)

st.divider()
st.subheader("Load")
st.caption("A dense model (the embedded name, a Hugging Face id or a local directory), a ticket directory "
           "(its id hash is checked), or an exported bundle (every file's hash is verified).")
with st.form("load"):
    spec = st.text_input("model, ticket directory or bundle directory", value=data.app_model(), key="load_spec")
    go = st.form_submit_button("Load", type="primary")
if go:
    with st.spinner("loading…"):
        loading.load_anything(spec.strip())
if st.session_state.get("loaded_summary"):
    kind, summary = st.session_state["loaded_summary"]
    st.success(f"loaded {kind}", icon=":material/check_circle:")
    st.json(summary, expanded=False)
