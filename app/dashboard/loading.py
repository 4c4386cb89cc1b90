"""Loading what a user points at: a ticket id (a full id or a unique prefix of at least 6 hex
digits, never taken for a Hugging Face id), a ticket directory (hash-checked by `Ticket.load`,
recorded with `record_prune` like the CLI does), an export bundle (checked by governance's `verify`)
or a dense model (into the server's one model cache)."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from analysis.ledger import read_model
from pruning.errors import TicketLabError

from . import data, governance, widgets


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
    known = data.frame(read_model.ticket(ticket.id))
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
    """`verify_bundle` with the local ledger's trusted keys when the bundle came from it and the trust anchor
    vouches for it (`local_trust`, the CLI's rule): who signed is checked, not only the hashes; the summary
    says what could not be checked, and why the local keys were not used."""
    return governance.verify_with_local_keys(path)


HEX_ID = re.compile(r"[0-9a-f]{6,64}")


def ticket_by_id(ref: str) -> Path:
    """The folder of the ticket `ref` names: the ledger's tickets, then the tickets folder; an unknown
    or ambiguous id is an error naming it (a hex string is never tried as a model id)."""
    from pruning import settings

    from .widgets import match_ticket

    known = data.frame(read_model.ticket_paths())
    paths = dict(zip(known["id"], known["path"], strict=True))
    root = settings.tickets_dir()
    if root.exists():
        for p in root.iterdir():
            if p.is_dir() and (p / "ticket.json").exists():
                paths.setdefault(p.name, str(p))
    hit, problem = match_ticket(ref, sorted(paths))
    if problem:
        raise TicketLabError(problem.replace("check the link or pick one below", f"none in the ledger or in {root}"))
    return Path(paths[hit])


def what_is(spec: str) -> str:
    """'bundle', 'ticket folder', 'ticket id' or 'model', before anything is loaded."""
    path = Path(spec).expanduser()
    if (path / "manifest.json").exists():
        return "bundle"
    if (path / "ticket.json").exists():
        return "ticket folder"
    if HEX_ID.fullmatch(spec) and not path.exists():
        return "ticket id"
    return "model"


def load_anything(spec: str) -> None:
    """Detect what `spec` is, load it, and leave a summary (or a clear error) in the session."""
    st.session_state.pop("loaded_summary", None)
    try:
        path = Path(spec).expanduser()
        what = what_is(spec)
        if what == "bundle":
            summary = _bundle(path)
            kind = "bundle directory: " + governance.verified_words(summary).replace("**", "")
        elif what == "ticket folder":
            kind, summary = "ticket folder (hash checked)", _ticket(path)
        elif what == "ticket id":
            folder = ticket_by_id(spec)
            kind, summary = f"ticket by id {spec} (folder {folder}, hash checked)", _ticket(folder)
        else:
            kind, summary = "dense model", _model(spec)
    except TicketLabError as e:
        st.error(str(e), icon=":material/warning:")
        return
    st.session_state["loaded_summary"] = (kind, summary)
