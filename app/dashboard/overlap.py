"""Per-layer mask overlap of two tickets, computed from their masks only when asked for, beside what
two random masks of the same sparsities would give (so an IoU of 0.33 at 50 % reads as "as random").

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
    """Rows (layer, matrix, intersection, union, iou, differ, random_iou) of the kept weights of two
    tickets of one model; `differ` is the share of weights one keeps and the other removes."""
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
            inter = union = kept_a = kept_b = numel
        else:
            ka = ma if ma is not None else ~mb.new_zeros(mb.shape)
            kb = mb if mb is not None else ~ma.new_zeros(ma.shape)
            inter, union = int((ka & kb).sum()), int((ka | kb).sum())
            kept_a, kept_b = int(ka.sum()), int(kb.sum())
        rows.append({"layer": ref.layer, "matrix": ref.kind, "intersection": inter, "union": union,
                     "kept_a": kept_a, "kept_b": kept_b, "total": numel,
                     "iou": inter / union if union else 1.0, "differ": (union - inter) / numel if numel else 0.0,
                     "random_iou": random_iou(kept_a, kept_b, numel)})
    return pd.DataFrame(rows)


def random_iou(kept_a: int, kept_b: int, total: int) -> float:
    """Expected IoU of two independent uniformly random masks keeping `kept_a` and `kept_b` of `total`
    weights: the intersection is hypergeometric with mean kept_a·kept_b/total, and for layer-sized
    counts its spread is negligible, so E[IoU] ≈ E[∩] / (kept_a + kept_b − E[∩])."""
    if total <= 0:
        return 1.0
    inter = kept_a * kept_b / total
    union = kept_a + kept_b - inter
    return inter / union if union > 0 else 1.0


def layer_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per layer: IoU, the random-mask IoU at the same sparsities, and how far above random it is."""
    g = df.groupby("layer")[["intersection", "union", "kept_a", "kept_b", "total"]].sum()
    g["iou"] = g["intersection"] / g["union"]
    g["random_iou"] = [random_iou(a, b, t) for a, b, t in zip(g["kept_a"], g["kept_b"], g["total"], strict=True)]
    g["above_random"] = g["iou"] - g["random_iou"]
    return g.reset_index()[["layer", "iou", "random_iou", "above_random", "intersection", "union"]]
