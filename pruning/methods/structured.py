"""Structured pruning: attention heads, MLP neurons and whole decoder layers.

The sparsity is the fraction of *units* removed (heads in the chosen unit, neurons, layers), not of
weights; the ticket's structure says so and records exactly what went. A removed unit's slices
(weights and biases) are masked, so `applied()` gives the masked dense model and
`pruning.materialize` can cut the same units out for a physically smaller model.

Grouped-query attention: a KV head serves `group_size` query heads, so it can go only with all of
them. `unit=kv_group` removes whole groups (the KV head, its query heads, and their o_proj columns);
`unit=query` removes single query heads and drops a KV head only once all of its query heads are gone.

Per-layer amounts: `uniform` removes round(sparsity x units) from every layer; `global` ranks all
units of all layers together after dividing each layer's scores by their L2 norm, never emptying a
layer. Ties: among equal scores the lower (layer, unit) index is removed first.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from .. import structure as structure_schema
from ..adapters import GQA_RULE
from ..importance import UnitSlices, normalise_per_layer, round_half_up, unit_scores
from ..method_registry import PruneOptions, PruneResult, register
from ..options import Importance, MethodOptions, PerLayer


class ImportanceOptions(MethodOptions):
    importance: Importance = "magnitude"


class UnitOptions(ImportanceOptions):
    per_layer: PerLayer = "uniform"


class HeadsOptions(UnitOptions):
    unit: Annotated[Literal["kv_group", "query"], Field(
        description="heads: remove whole KV groups (a KV head with all its query heads) or single query heads")] \
        = "kv_group"


SPARSITY_MEANS = "fraction of {what} removed (not of weights)"


def NEEDS_CALIBRATION(options: dict) -> bool:  # noqa: N802  (registry field, read per options)
    """Weight-magnitude importance reads no activations; activation and Taylor importance do."""
    return options["importance"] != "magnitude"


def select_lowest(scores: torch.Tensor, sparsity: float, per_layer: str, keep_min: int = 1) -> list[list[int]]:
    """scores [layers, units] -> sorted removed unit indices per layer. Never leaves a layer with fewer
    than `keep_min` units. Ties go to the lower (layer, unit) index thanks to stable sorts."""
    layers, units = scores.shape
    removable = max(0, units - keep_min)
    removed: list[list[int]] = [[] for _ in range(layers)]
    if per_layer == "uniform":
        k = min(removable, round_half_up(units * sparsity))
        for i in range(layers):
            removed[i] = sorted(torch.argsort(scores[i], stable=True)[:k].tolist())
        return removed
    flat = normalise_per_layer(scores).reshape(-1)
    k = min(layers * removable, round_half_up(layers * units * sparsity))
    taken = 0
    for idx in torch.argsort(flat, stable=True).tolist():
        if taken == k:
            break
        layer, unit = divmod(idx, units)
        if len(removed[layer]) < removable:
            removed[layer].append(unit)
            taken += 1
    return [sorted(r) for r in removed]


def _base_masks(loaded) -> dict[str, torch.Tensor]:
    """All-kept masks for every projection weight and its bias (so GPT-2 biases go with their units)."""
    params = dict(loaded.model.named_parameters())
    masks = {}
    for ref in loaded.adapter.linears():
        for name in (ref.name, ref.name[: -len("weight")] + "bias"):
            if name in params:
                masks[name] = torch.ones(params[name].shape, dtype=torch.bool)
    return masks


def _drop(loaded, masks: dict[str, torch.Tensor], slices) -> None:
    for s in slices:
        if s.param not in masks:  # a layer parameter that is not a projection (none in Llama or GPT-2 today)
            masks[s.param] = torch.ones(loaded.adapter.parameter(s.param).shape, dtype=torch.bool)
        m = masks[s.param]
        if s.axis == 0:
            m[s.start:s.stop] = False
        else:
            m[:, s.start:s.stop] = False


def _common(options: PruneOptions, what: str) -> dict:
    return {"importance": options.params.importance, "sparsity_means": SPARSITY_MEANS.format(what=what)}


def _finish(structure: dict, removed_units: list[list[int]], per_layer_total: int) -> dict:
    total = per_layer_total * len(removed_units)
    n = sum(len(r) for r in removed_units)
    structure.update(units_per_layer=per_layer_total, units_removed=n, unit_sparsity=n / total if total else 0.0)
    return structure


@register("heads", "Structured: remove attention heads (whole KV groups or single query heads) by importance.",
          needs_calibration=NEEDS_CALIBRATION, structured=True, options=HeadsOptions)
def prune_heads(loaded, calib, options: PruneOptions) -> PruneResult:
    adapter, opts = loaded.adapter, options.params
    units_of = UnitSlices(adapter)
    scores = unit_scores(loaded, opts.unit, opts.importance, calib, options.progress, units_of)
    removed = select_lowest(scores, options.sparsity, opts.per_layer)
    masks = _base_masks(loaded)
    asked = {"query" if opts.unit == "query" else "kv": dict(enumerate(removed))}
    structure = structure_schema.heads(adapter, asked.get("query", {}), asked.get("kv"), unit=opts.unit,
                                       **_common(options, "KV groups (each with its query heads)"
                                                 if opts.unit == "kv_group" else "query heads"),
                                       per_layer=opts.per_layer)
    for layer in range(adapter.num_layers):
        closed = structure_schema.closed_heads(adapter, structure["removed"], layer)
        q_slices, kv_slices = units_of("query", layer), units_of("kv_own", layer)
        for h in closed.query:
            _drop(loaded, masks, q_slices[h])
        for g in closed.kv:
            _drop(loaded, masks, kv_slices[g])
        options.report(layer + 1, adapter.num_layers, "heads")
    return PruneResult(masks, structure=_finish(structure, removed, scores.shape[1]),
                       notes=[f"heads: removed.query_heads and removed.kv_heads per layer ({GQA_RULE})"])


@register("neurons", "Structured: remove MLP neurons (gate, up and down together) by importance.",
          needs_calibration=NEEDS_CALIBRATION, structured=True, options=UnitOptions)
def prune_neurons(loaded, calib, options: PruneOptions) -> PruneResult:
    adapter, opts = loaded.adapter, options.params
    units_of = UnitSlices(adapter)
    scores = unit_scores(loaded, "neuron", opts.importance, calib, options.progress, units_of)
    removed = select_lowest(scores, options.sparsity, opts.per_layer)
    masks = _base_masks(loaded)
    for layer, units in enumerate(removed):
        slices = units_of("neuron", layer)
        for j in units:
            _drop(loaded, masks, slices[j])
    structure = structure_schema.neurons(dict(enumerate(removed)), unit="neuron", per_layer=opts.per_layer,
                                         **_common(options, "MLP neurons"),
                                         intermediate_size=adapter.intermediate_size)
    return PruneResult(masks, structure=_finish(structure, removed, scores.shape[1]))


@register("layers", "Structured: remove whole decoder layers by importance (never all of them).",
          needs_calibration=NEEDS_CALIBRATION, structured=True, options=ImportanceOptions)
def prune_layers(loaded, calib, options: PruneOptions) -> PruneResult:
    adapter = loaded.adapter
    units_of = UnitSlices(adapter)
    scores = unit_scores(loaded, "layer", options.params.importance, calib, options.progress, units_of)
    # One ranking over layers: a [1, layers] row, keeping at least one layer.
    removed = select_lowest(scores.reshape(1, -1), options.sparsity, "uniform")[0]
    masks = _base_masks(loaded)
    for layer in removed:
        _drop(loaded, masks, units_of("layer", layer)[0])
    structure = structure_schema.layers(removed, unit="layer", **_common(options, "decoder layers"),
                                        num_layers=adapter.num_layers, units_per_layer=1,
                                        units_removed=len(removed), unit_sparsity=len(removed) / adapter.num_layers)
    return PruneResult(masks, structure=structure)
