"""Prune: a form over the engine's method registry, an IMP experiment form, and the background jobs."""

from __future__ import annotations

import streamlit as st

from app.dashboard import acting, data, governance, imp_form, widgets
from pruning.errors import TicketLabError
from pruning.method_registry import all_methods
from usecases.experiment import ImpRequest
from usecases.prune import PruneRequest

st.title("Prune")


me = governance.signer() if governance._gov_state().ledger_id else None
engineer = "engineer" in governance.roles_of(me)
if engineer:
    st.caption(f"Tickets pruned here while **{me.name}** is signed in are signed as {me.name}'s (their creator) "
               "when the job finishes.")
else:
    with st.expander("Unsigned until an engineer signs: sign in to sign the tickets you prune here"
                     if me is None else f"{me.name} is no engineer: tickets pruned here stay unsigned"):
        st.caption("A ticket needs a signed creator before it can be approved. Sign in as an engineer here before "
                   "pruning (the ticket is signed as yours when the job finishes), or later press “Sign as the "
                   "creator” on the Review page.")
        if me is None:
            governance.sign_in("prune")

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
        changed = {p.name: values[p.name] for p in method.params
                   if values[p.name] != p.default and values[p.name] not in (None, "")}
        request = None
        if not problem:
            try:  # the use case's own checks (options, N:M against the sparsity, calibration), before a job
                request = PruneRequest.build(model=model.strip(), method=name, sparsity=sparsity, options=changed,
                                             calib_samples=int(samples), calib_len=int(length), seed=int(seed),
                                             name=ticket_name.strip() or None)
            except TicketLabError as e:
                problem = str(e)
        if problem:
            st.error(problem, icon=":material/warning:")
        else:
            # the label tells two prune jobs apart: every option that differs from its default, and the name
            label = (f"prune {name} {sparsity:.0%}" + (" " + " ".join(f"{k}={v}" for k, v in changed.items())
                                                        if changed else "")
                     + (f" “{ticket_name.strip()}”" if ticket_name.strip() else "") + f" · {model}")
            widgets.start_job(request, label=label, kind="prune",
                              on_start=lambda job: acting.remember_prune(job, me if engineer else None))

    st.subheader("IMP experiment")
    from pruning.lottery.protocol import Protocol

    proto = Protocol()  # the default protocol: every field below starts at its value
    st.caption("A lottery-ticket experiment under a protocol fixed before the run (`ticketlab imp`): a pilot "
               "picks lr and T unless given, IMP with rewinding against its controls, several seeds, and a "
               "verdict with 95% intervals. The result appears on the Experiments page.")
    with st.form("imp_form"):
        c = st.columns(3)
        settings = imp_form.fields(proto, "main", c)
        with st.expander("budget"):
            settings |= imp_form.fields(proto, "budget", st.columns(3))
        go = st.form_submit_button("Start the IMP experiment", type="primary")
    if go:
        try:  # the protocol is validated here, once, before a job is spent on it
            request = ImpRequest.from_settings(imp_form.typed(settings))
        except TicketLabError as e:
            st.error(str(e), icon=":material/warning:")
        else:
            widgets.start_job(request, label="imp " + " ".join(request.argv()[1:]), kind="imp")

with right:
    widgets.jobs_panel()
