"""Where a ticket's surviving weights are: per layer x matrix, per layer x head (query and KV), and per
layer x neuron band. Computed once from the masks when a ticket is recorded, so no view ever reloads
masks to draw a heatmap."""

from __future__ import annotations

import torch

from pruning.adapters import ArchitectureAdapter, Slice

NEURON_BANDS = 32


def _slice_counts(masks: dict[str, torch.Tensor], adapter: ArchitectureAdapter, slices: list[Slice]) -> tuple[int, int]:
    kept = total = 0
    for s in slices:
        shape = adapter.parameter(s.param).shape
        if len(shape) != 2:
            continue  # biases are not counted in survival
        width = shape[1 - s.axis] * (s.stop - s.start)
        total += width
        m = masks.get(s.param)
        if m is None:
            kept += width
        else:
            part = m[s.start:s.stop] if s.axis == 0 else m[:, s.start:s.stop]
            kept += int(part.sum())
    return kept, total


def survival_by_matrix(masks: dict[str, torch.Tensor], adapter: ArchitectureAdapter) -> list[tuple]:
    """Rows (layer, matrix kind, kept, total) for every prunable projection."""
    rows = []
    for ref in adapter.linears():
        numel = adapter.parameter(ref.name).numel()
        m = masks.get(ref.name)
        rows.append((ref.layer, ref.kind, int(m.sum()) if m is not None else numel, numel))
    return rows


def survival_by_head(masks: dict[str, torch.Tensor], adapter: ArchitectureAdapter) -> list[tuple]:
    """Rows (layer, head, kind, kept, total): kind 'q' counts a query head's own rows and output columns,
    'kv' a KV head's key and value rows (with GQA several query heads share one)."""
    rows = []
    for layer in range(adapter.num_layers):
        for h in range(adapter.num_heads):
            rows.append((layer, h, "q", *_slice_counts(masks, adapter, adapter.query_head_slices(layer, h))))
        for g in range(adapter.num_kv_heads):
            # Without GQA (GPT-2) a KV head has no slices of its own: count its query head's, which hold its k and v.
            own = adapter.kv_head_slices(layer, g) or adapter.kv_group_slices(layer, g)
            rows.append((layer, g, "kv", *_slice_counts(masks, adapter, own)))
    return rows


def survival_by_neuron_band(masks: dict[str, torch.Tensor], adapter: ArchitectureAdapter,
                            bands: int = NEURON_BANDS) -> list[tuple]:
    """Rows (layer, band, band_start, band_stop, kept, total): MLP neurons in contiguous bands."""
    n = adapter.intermediate_size
    bands = min(bands, n)
    edges = torch.linspace(0, n, bands + 1).round().long().tolist()
    rows = []
    for layer in range(adapter.num_layers):
        kept = torch.zeros(n, dtype=torch.long)
        total = torch.zeros(n, dtype=torch.long)
        for s in adapter.neuron_slices(layer, 0):
            shape = adapter.parameter(s.param).shape
            if len(shape) != 2:
                continue
            m = masks.get(s.param)
            other = shape[1 - s.axis]
            total += other
            kept += m.sum(dim=1 - s.axis).long() if m is not None else other
        for b in range(bands):
            a, z = edges[b], edges[b + 1]
            rows.append((layer, b, a, z, int(kept[a:z].sum()), int(total[a:z].sum())))
    return rows


def survival_tables(masks: dict[str, torch.Tensor], adapter: ArchitectureAdapter) -> dict[str, list[tuple]]:
    """All three, keyed by ledger table name."""
    return {"survival_layer": survival_by_matrix(masks, adapter),
            "survival_head": survival_by_head(masks, adapter),
            "survival_neuron": survival_by_neuron_band(masks, adapter)}
