"""What the dashboard reads: ledger tables (through short-lived connections, cached until the file
changes), the optional analysis modules when they are installed, and the one cached dense model.

No page computes results here: survival, metrics, attributions and decisions were written to the
ledger by the engine and the analysis code; this module only selects them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis.ledger import read_model
from analysis.ledger.read_model import Read
from pruning import settings
from pruning.models import DEFAULT_MODEL

_LEDGERS: dict[str, object] = {}


def app_model() -> str:
    """The model the app was started on (`ticketlab app --model`)."""
    return os.environ.get("TICKETLAB_APP_MODEL") or DEFAULT_MODEL


def ledger():
    """A Ledger object for the configured path. It holds no connection (each query opens and closes
    one), so keeping the object is safe while jobs in other processes write to the same file."""
    from analysis.ledger import Ledger

    path = str(settings.ledger_path())
    if path not in _LEDGERS or not Path(path).exists():
        _LEDGERS[path] = Ledger(path)
    return _LEDGERS[path]


def stamp() -> tuple:
    """Changes whenever the ledger file does (DuckDB checkpoints its WAL into the file on close)."""
    path = settings.ledger_path()
    out = [str(path)]
    for p in (path, Path(str(path) + ".wal")):
        try:
            s = p.stat()
            out += [s.st_mtime_ns, s.st_size]
        except OSError:
            out += [0, 0]
    return tuple(out)


# a read is cached by what it asks (its SQL and parameters), not by its row type
@st.cache_data(ttl=300, max_entries=512, show_spinner=False, hash_funcs={Read: lambda r: (r.sql, r.params)})
def _frame(read: Read, key: tuple) -> pd.DataFrame:
    return read.frame(ledger())


def frame(read: Read) -> pd.DataFrame:
    """A read of the ledger's read model (`analysis.ledger.read_model`) as a DataFrame whose columns are
    its row type's fields; cached until the ledger file changes."""
    ledger()  # create / migrate before the first read
    return _frame(read, stamp())


def forget() -> None:
    """After this process wrote to the ledger: read afresh even within the file's mtime resolution."""
    _frame.clear()
    _gov.clear()


# --- ledger views ----------------------------------------------------------------------------------
def models() -> pd.DataFrame:
    return frame(read_model.models())


@st.cache_data(ttl=300, max_entries=16, show_spinner=False)
def _gov(key: tuple) -> dict:
    from analysis.governance import state

    st_ = state.load(ledger())
    return {"tickets": state.ticket_states(st_), "deployed": state.deployment_pointers(st_)}


def ticket_states() -> dict:
    """ticket id -> analysis.governance.state.TicketState (one replay of the governance log per ledger change)."""
    return _gov(stamp())["tickets"]


def deployed() -> dict[str, str]:
    """dense sha256 -> deployed target ('dense' or a ticket id), from the signed deployment records."""
    return _gov(stamp())["deployed"]


def key_metrics() -> list[tuple[str, str]]:
    """(task, metric) pairs shown per ticket: the benchmarks' headline metrics (analysis.metric_meta)."""
    from analysis import metric_meta

    return metric_meta.headline_metrics()


def tickets() -> pd.DataFrame:
    """Every ticket with its model, review state, deployed marker and headline metrics (latest full or
    limited value of each key metric, one column per metric). One-shot tickets first, then those of IMP
    experiments; newest first within each."""
    df = frame(read_model.tickets())
    keys = key_metrics()
    if df.empty:
        return df.assign(review=[], deployed=[], evidence=[], **{f"{t}/{m}": [] for t, m in keys})
    states = ticket_states()
    df["review"] = [states[t].review_status if t in states else "unreviewed" for t in df["id"]]
    dep = deployed()
    df["deployed"] = [dep.get(s) == t for s, t in zip(df["dense_sha256"], df["id"], strict=True)]
    if keys:
        head = frame(read_model.headline_values(keys))
        for task, metric in keys:
            part = head[(head["task"] == task) & (head["metric"] == metric)]
            df[f"{task}/{metric}"] = df["id"].map(dict(zip(part["subject"], part["value"], strict=True)))
        limits = head.groupby("subject")["limit"].agg(lambda x: sorted({int(v) for v in x.dropna()}))
        df["evidence"] = [("" if t not in limits.index else "full" if not limits[t] else
                           "quick (limit " + ", ".join(map(str, limits[t])) + ")") for t in df["id"]]
    else:
        df["evidence"] = ""
    return df


def headline_columns(df: pd.DataFrame) -> list[str]:
    """The key-metric columns of `tickets()` that hold at least one value."""
    return [f"{t}/{m}" for t, m in key_metrics() if f"{t}/{m}" in df and df[f"{t}/{m}"].notna().any()]


def setting(method: str, params) -> str:
    """The options that differ from the method's registry defaults, e.g. 'scope=global pattern=2:4'."""
    import json

    from pruning.method_registry import all_methods

    params = json.loads(params) if isinstance(params, str) else (params or {})
    spec = all_methods().get(method)
    defaults = {p.name: p.default for p in spec.params} if spec else {}
    return " ".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in defaults or defaults[k] != v)


def headline_labels(columns: list[str]) -> dict[str, str]:
    """Short column labels for the key metrics: the metric name, with the task where names repeat."""
    names = [c.split("/", 1)[1] for c in columns]
    return {c: (n if names.count(n) == 1 else c.replace("/", " ")) for c, n in zip(columns, names, strict=True)}


def text(value) -> str | None:
    """A string cell, or None for a missing one (pandas spells those NaN)."""
    return value if isinstance(value, str) and value else None


def structure(value) -> dict:
    import json

    if isinstance(value, str) and value:
        try:
            out = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return out if isinstance(out, dict) else {}
    return value if isinstance(value, dict) else {}


def is_structured(row) -> bool:
    s = structure(row.get("structure"))
    return "unit_sparsity" in s or s.get("kind") == "layers"


def size_text(row) -> str:
    """How much a ticket removes, in the ticket's own units: a structured ticket's share of units
    (heads, neurons, layers) beside the share of weights; an unstructured one's weight sparsity."""
    s = structure(row.get("structure"))
    weights = row["achieved_sparsity"]
    if "unit_sparsity" in s:
        unit = s.get("kind") or s.get("unit") or "units"
        return f"{s['unit_sparsity']:.0%} of {unit} ({weights:.1%} of weights)"
    if s.get("kind") == "layers" and s.get("num_layers"):
        n = len(s.get("removed") or [])
        return f"{n}/{s['num_layers']} layers ({weights:.1%} of weights)"
    return f"{weights:.0%}"


def ticket_label(row) -> str:
    name = f" “{row['name']}”" if text(row.get("name")) else ""
    return f"{row['id'][:10]} · {row['method']} {size_text(row)}{name}"


def survival(ticket_id: str) -> dict[str, pd.DataFrame]:
    return {"layer": frame(read_model.layer_survival(ticket_id)), "head": frame(read_model.head_survival(ticket_id)),
            "neuron": frame(read_model.neuron_survival(ticket_id))}


def attribution(subject: str, dense_sha256: str | None = None) -> pd.DataFrame:
    """The latest attribution run's per-head values for a ticket or for 'dense' (of that model)."""
    runs = frame(read_model.latest_attribution_run(subject, dense_sha256))
    if runs.empty:
        return pd.DataFrame(columns=read_model.columns(read_model.HeadAttribution))
    return frame(read_model.head_attributions(runs["id"].iloc[0]))


def metrics(dense_sha256: str, full_only: bool = False) -> pd.DataFrame:
    """Latest value per (subject, suite, task, metric) for the dense model and its tickets, from succeeded
    runs (IMP rounds have their own view)."""
    return frame(read_model.latest_metrics(dense_sha256, full_only))


# --- the cached dense model ------------------------------------------------------------------------
@st.cache_resource(max_entries=2, show_spinner=False)
def dense_model(spec: str, device: str = "cpu"):
    """Loaded once per server process and shared by every session (at most two models held)."""
    from pruning.models import load_model

    return load_model(spec, device=device)
