"""`random` and `magnitude`: the two calibration-free baselines, layer-wise or global.

`random` is the control every lottery-ticket comparison needs: same per-tensor sparsity as asked,
weights chosen uniformly with the seed.

`magnitude` with allocation=owl gives each decoder layer its own sparsity from the outliers of
|W| x ||X|| (pruning/allocation.py); only then does it need calibration data.
"""

from __future__ import annotations

import torch

from ..allocation import check_owl, owl_layer_sparsities
from ..masks import nm_mask, prune_lowest, prune_lowest_global
from ..method_registry import PruneOptions, PruneResult, register
from ..options import (
    RULE_GLOBAL_PATTERN,
    RULE_NM_WIDTH,
    RULE_OWL_GLOBAL,
    RULE_OWL_PATTERN,
    Allocation,
    MethodOptions,
    OwlLambda,
    OwlM,
    Pattern,
    Scope,
)


class RandomOptions(MethodOptions):
    RULES = (RULE_GLOBAL_PATTERN, RULE_NM_WIDTH)
    scope: Scope = "layer"
    pattern: Pattern = "none"


class MagnitudeOptions(RandomOptions):
    RULES = (RULE_OWL_PATTERN, RULE_OWL_GLOBAL, RULE_GLOBAL_PATTERN, RULE_NM_WIDTH)
    allocation: Allocation = "uniform"
    owl_lambda: OwlLambda = 0.08
    owl_m: OwlM = 5.0


def _scored_masks(loaded, options: PruneOptions, score_fn,
                  per_layer: list[float] | None = None) -> dict[str, torch.Tensor]:
    adapter = loaded.adapter
    refs = adapter.linears()
    nm = options.params.nm
    views = {}
    for ref in refs:
        views[ref.name] = (ref, score_fn(ref, adapter.weight_view(ref)))
    if nm:
        masks = {name: nm_mask(s, *nm) for name, (ref, s) in views.items()}
    elif options["scope"] == "global":
        masks = prune_lowest_global({name: s for name, (ref, s) in views.items()}, options.sparsity)
    else:
        masks = {}
        for i, (name, (ref, s)) in enumerate(views.items()):
            masks[name] = prune_lowest(s, per_layer[ref.layer] if per_layer else options.sparsity)
            options.report(i + 1, len(views), name)
    # back from the [out, in] view to the parameter's own layout
    return {name: (m.t() if views[name][0].transposed else m).contiguous().cpu() for name, m in masks.items()}


@register("magnitude", "Smallest |W| pruned (Han et al. 2015); layer-wise or global; optional N:M or OWL.",
          options=MagnitudeOptions)
def prune_magnitude(loaded, calib, options: PruneOptions) -> PruneResult:
    per_layer, notes = None, []
    if check_owl(options):
        per_layer, _ratios = owl_layer_sparsities(loaded, calib, options)
        notes.append("owl layer sparsities: " + ", ".join(f"{s:.4f}" for s in per_layer))
    return PruneResult(_scored_masks(loaded, options, lambda ref, w: w.abs().float(), per_layer), notes=notes)


@register("random", "Uniformly random weights pruned with the seed: the lottery-ticket control.",
          options=RandomOptions)
def prune_random(loaded, calib, options: PruneOptions) -> PruneResult:
    g = torch.Generator().manual_seed(options.seed)

    def score(ref, w):
        return torch.rand(w.shape, generator=g)

    return PruneResult(_scored_masks(loaded, options, score))
