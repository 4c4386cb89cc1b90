"""Per-layer mask overlap of two tickets, computed from their masks only when asked for.

Tickets are immutable (the id is a content hash), so one result per pair is cached for the life of
the server. The layer and matrix of each tensor come from the architecture adapter of the cached
dense model, the same mapping the survival tables use.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pruning.errors import TicketLabError

from . import data


@st.cache_data(max_entries=64, show_spinner=False)
def mask_iou(path_a: str, path_b: str) -> pd.DataFrame:
    """Rows (layer, matrix, intersection, union, iou) of the kept weights of two tickets of one model."""
    from pruning.ticket import Ticket

    a, b = Ticket.load(path_a), Ticket.load(path_b)
    if a.dense["weights_sha256"] != b.dense["weights_sha256"]:
        raise TicketLabError(f"tickets {a.id} and {b.id} prune different dense models: no overlap to compute.")
    loaded = data.dense_model(a.dense["spec"])
    rows = []
    for ref in loaded.adapter.linears():
        numel = loaded.adapter.parameter(ref.name).numel()
        ma, mb = a.masks.get(ref.name), b.masks.get(ref.name)
        if ma is None and mb is None:
            inter = union = numel
        else:
            ka = ma if ma is not None else ~mb.new_zeros(mb.shape)
            kb = mb if mb is not None else ~ma.new_zeros(ma.shape)
            inter, union = int((ka & kb).sum()), int((ka | kb).sum())
        rows.append({"layer": ref.layer, "matrix": ref.kind, "intersection": inter, "union": union,
                     "iou": inter / union if union else 1.0})
    return pd.DataFrame(rows)


def layer_summary(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby("layer")[["intersection", "union"]].sum()
    g["iou"] = g["intersection"] / g["union"]
    return g.reset_index()
