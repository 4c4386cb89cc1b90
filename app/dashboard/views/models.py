"""Models & tickets: every dense checkpoint and ticket in the ledger; load a model, a ticket or a bundle."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.dashboard import data, links, loading, tables, verdict_line, widgets

st.title("Models & tickets")


def ticket_table(df, headline: list[str], experiment: bool = False) -> None:
    view = df.assign(
        deployed=df["deployed"].map({True: "deployed", False: ""}),
        setting=[data.setting(m, p) for m, p in zip(df["method"], df["params"], strict=True)],
        size=[data.size_text(r) if data.is_structured(r) else "" for r in df.to_dict("records")],
        review=[verdict_line.review_words(t) for t in df["id"]],
        model=df["model"].fillna("").map(lambda s: Path(s).name if "/" in s else s))
    view = view.assign(achieved_sparsity=view["achieved_sparsity"] * 100.0)  # shown as a percentage
    view, link_config = links.link_columns(view)
    cols = ["id", "method", "setting", "achieved_sparsity", "size", "review", "deployed", *headline, "evidence",
            "model", "created_at", *link_config]
    if df["name"].map(data.text).notna().any():
        cols.insert(1, "name")
    if experiment:
        cols.insert(1, "experiment")
    labels = data.headline_labels(headline)
    quick = (view["evidence"].str.startswith("quick")).any()
    st.dataframe(tables.clean_text(view[cols]), hide_index=True, width="stretch", placeholder="—", column_config={
        "id": st.column_config.TextColumn("ticket", width="medium"),
        "achieved_sparsity": st.column_config.NumberColumn("weights removed", format="%.1f %%"),  # one decimal
        "size": st.column_config.TextColumn("units removed", help="structured tickets: the share of units (heads, "
                                                                  "neurons, layers) and of weights"),
        **{c: st.column_config.NumberColumn(labels[c], format="%.4g", help=c + " (latest run; see evidence)")
           for c in headline},
        "evidence": st.column_config.TextColumn("evidence", help="full: the headline values come from full runs; "
                                                                 "quick: from runs with a document limit (indicative)"),
        "created_at": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
        **link_config,
    })
    if quick:
        st.caption("Rows marked **quick** show values from runs with a document limit: quick looks, not evidence for a decision.")


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
                 hide_index=True, width="stretch", placeholder="—", column_config={"params_M": st.column_config.NumberColumn(
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
        st.subheader("Verdict")
        pick = widgets.ticket_picker(tickets, "ticket", key="models_verdict", query_param="ticket")
        if pick:
            verdict_line.show(pick)
            links.ticket_links(pick)

st.divider()
st.subheader("Load")
st.caption("A ticket id (or a unique prefix of at least 6 characters), a ticket directory (its id hash is "
           "checked), an exported bundle (its files, signature and signer checked against this ledger's people), or a "
           "dense model (the embedded name, a Hugging Face id or a local directory).")
with st.form("load"):
    spec = st.text_input("ticket id, ticket directory, bundle directory or model", value=data.app_model(),
                         key="load_spec")
    go = st.form_submit_button("Load", type="primary")
if go:
    with st.spinner(f"loading the {loading.what_is(spec.strip())} {spec.strip()}…"):
        loading.load_anything(spec.strip())
if st.session_state.get("loaded_summary"):
    kind, summary = st.session_state["loaded_summary"]
    unverified = isinstance(summary, dict) and summary.get("ok") is False  # a bundle not (fully) verified
    (st.warning if unverified else st.success)(f"loaded {kind}", icon=":material/help:" if unverified
                                               else ":material/check_circle:")
    if isinstance(summary, dict) and summary.get("id") and "method" in summary:
        links.ticket_links(summary["id"])
    st.json(summary, expanded=False)
