"""Loading what a user points at: a dense model (into the server's one model cache), a ticket directory
(hash-checked by `Ticket.load`, recorded with `record_prune` like the CLI does) or an export bundle
(checked by governance's `verify`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pruning.errors import TicketLabError

from . import data, widgets


def _model(spec: str) -> dict:
    problem = widgets.check_model_spec(spec)
    if problem:
        raise TicketLabError(problem)
    loaded = data.dense_model(spec)
    data.ledger().record_model(loaded)
    data.forget()
    a = loaded.adapter
    return {"spec": loaded.spec, "family": loaded.family, "weights_sha256": loaded.weights_sha256,
            "layers": a.num_layers, "heads": a.num_heads, "kv_heads": a.num_kv_heads, "hidden": a.hidden_size,
            "mlp": a.intermediate_size, "params": sum(p.numel() for p in loaded.model.parameters())}


def _ticket(path: Path) -> dict:
    from analysis.recording import record_prune
    from pruning.ticket import Ticket

    ticket = Ticket.load(path)  # refuses a ticket whose content does not match its id
    known = data.frame("SELECT id FROM tickets WHERE id = ?", [ticket.id])
    if known.empty:
        loaded = data.dense_model(ticket.dense["spec"])
        if loaded.weights_sha256 != ticket.dense["weights_sha256"]:
            raise TicketLabError(f"ticket {ticket.id} was made from dense weights {ticket.dense['weights_sha256'][:12]}, "
                                 f"but {ticket.dense['spec']} now hashes to {loaded.weights_sha256[:12]}.")
        record_prune(loaded, ticket, command=f"dashboard: load ticket {path}")
        data.forget()
    return {"id": ticket.id, "method": ticket.method, "sparsity": round(ticket.achieved_sparsity, 4),
            "dense": ticket.dense, "params": ticket.params, "recorded_now": bool(known.empty)}


def _bundle(path: Path) -> dict:
    verify = data.optional("analysis.governance.verify")
    if verify is None:
        raise TicketLabError("verifying bundles needs the governance module (analysis.governance), which is "
                             "not installed yet.")
    return verify.verify_bundle(path)


def load_anything(spec: str) -> None:
    """Detect what `spec` is, load it, and leave a summary (or a clear error) in the session."""
    st.session_state.pop("loaded_summary", None)
    try:
        path = Path(spec).expanduser()
        if (path / "manifest.json").exists():
            kind, summary = "bundle (verified)", _bundle(path)
        elif (path / "ticket.json").exists():
            kind, summary = "ticket (hash checked)", _ticket(path)
        else:
            kind, summary = "dense model", _model(spec)
    except TicketLabError as e:
        st.error(str(e), icon=":material/warning:")
        return
    st.session_state["loaded_summary"] = (kind, summary)
