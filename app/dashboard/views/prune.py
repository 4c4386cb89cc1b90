"""Prune: a form over the engine's method registry, an IMP experiment form, and the background jobs."""

from __future__ import annotations

import streamlit as st

from app.dashboard import data, widgets
from pruning.errors import TicketLabError
from pruning.registry import all_methods

st.title("Prune")


def _needs_calibration(method, values: dict) -> bool:
    """The engine's own rule (OWL allocation reads activations whatever the method)."""
    try:
        from pruning.prune import calibration_needed
    except ImportError:
        return method.needs_calibration
    try:
        return calibration_needed(method, method.validate(values))
    except TicketLabError:
        return method.needs_calibration


methods = all_methods()
known = [data.app_model()] + [s for s in data.models()["spec"] if s != data.app_model()]
left, right = st.columns([3, 2])
with left:
    model_choice = st.selectbox("model", known + ["other…"], key="prune_model_choice",
                                help="the embedded name, a Hugging Face id or a local directory")
    model = st.text_input("model spec", key="prune_model_other") if model_choice == "other…" else model_choice
    name = st.selectbox("method", list(methods), key="prune_method",
                        index=list(methods).index("magnitude") if "magnitude" in methods else 0)
    method = methods[name]
    flags = [label for label, on in (("needs calibration", method.needs_calibration), ("structured", method.structured),
                                      ("changes weights", method.changes_weights)) if on]
    st.caption(method.description + (f"  \n*{', '.join(flags)}*" if flags else ""))

    with st.form(f"prune_form_{name}"):
        sparsity = st.slider("sparsity (fraction removed)", 0.0, 0.95, 0.5, 0.01, key=f"p_{name}_sparsity")
        values = {}
        cols = st.columns(2)
        for i, p in enumerate(method.params):
            col, key = cols[i % 2], f"p_{name}_{p.name}"
            if p.choices:
                values[p.name] = col.selectbox(p.name, list(p.choices), index=list(p.choices).index(p.default)
                                               if p.default in p.choices else 0, key=key, help=p.help)
            elif p.type is bool:
                values[p.name] = col.checkbox(p.name, value=bool(p.default), key=key, help=p.help)
            elif p.type in (int, float):
                values[p.name] = col.number_input(p.name, value=p.type(p.default if p.default is not None else 0),
                                                  key=key, help=p.help, format=None if p.type is int else "%g")
            else:
                values[p.name] = col.text_input(p.name, value="" if p.default is None else str(p.default),
                                                key=key, help=p.help)
        c1, c2, c3 = st.columns(3)
        seed = c1.number_input("seed", value=0, step=1, key=f"p_{name}_seed")
        samples = c2.number_input("calibration windows", value=32, min_value=1, step=1, key=f"p_{name}_n",
                                  help="used when the method (or OWL allocation) reads calibration data")
        length = c3.number_input("tokens per window", value=512, min_value=8, step=64, key=f"p_{name}_len",
                                 help="used when the method (or OWL allocation) reads calibration data")
        ticket_name = st.text_input("ticket name (optional)", key=f"p_{name}_name")
        submitted = st.form_submit_button("Prune in the background", type="primary")

    if submitted:
        problem = widgets.check_model_spec(model or "")
        if problem:
            st.error(problem, icon=":material/warning:")
        else:
            argv = ["prune", "--model", model.strip(), "--method", name, "--sparsity", f"{sparsity:g}",
                    "--seed", str(int(seed)), "--json"]
            for p in method.params:
                if values[p.name] != p.default and values[p.name] not in (None, ""):
                    argv += [f"--{p.name.replace('_', '-')}", str(values[p.name])]
            if _needs_calibration(method, values):
                argv += ["--calib-samples", str(int(samples)), "--calib-len", str(int(length))]
            if ticket_name.strip():
                argv += ["--name", ticket_name.strip()]
            widgets.start_job(argv, label=f"prune {name} {sparsity:.0%} · {model}", kind="prune")

    st.subheader("IMP experiment")
    if "imp" in widgets.cli_parsers():
        st.caption("Iterative magnitude pruning with rewinding, against its controls (`ticketlab imp`).")
        with st.form("imp_form"):
            argv = widgets.argparse_form("imp", key="imp")
            go = st.form_submit_button("Start the IMP experiment", type="primary")
        if go and argv:
            widgets.start_job(argv + widgets.json_flag("imp"), label="imp " + " ".join(argv[1:]), kind="imp")
    else:
        st.info("IMP experiments appear here once `ticketlab imp` is installed.")

with right:
    widgets.jobs_panel()
