"""`wanda` (Sun et al. 2023): prune by |W_ij| * ||X_j||_2, compared within each output row.

Layer by layer, each layer's activation norms measured on inputs that already went through the
pruned layers before it (pruning/layerwise.py). Unstructured: the lowest `sparsity` of every row;
N:M: the lowest M-N of every M consecutive input weights of a row. OWL allocation gives each decoder
layer its own sparsity (pruning/allocation.py).
"""

from __future__ import annotations

import torch

from ..allocation import layerwise_plan
from ..layerwise import run_layerwise
from ..masks import nm_mask, prune_lowest_per_row
from ..method_registry import PruneOptions, PruneResult, register
from ..options import RULE_NM_WIDTH, RULE_OWL_PATTERN, Allocation, MethodOptions, OwlLambda, OwlM, Pattern


class WandaOptions(MethodOptions):
    RULES = (RULE_OWL_PATTERN, RULE_NM_WIDTH)
    pattern: Pattern = "none"
    allocation: Allocation = "uniform"
    owl_lambda: OwlLambda = 0.08
    owl_m: OwlM = 5.0


def wanda_scores(weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """weight [out, in], norms [in] (||X_j||_2 over calibration tokens) -> scores [out, in]."""
    return weight.abs().float() * norms.float().unsqueeze(0)


def wanda_mask(scores: torch.Tensor, sparsity: float, nm: tuple[int, int] | None) -> torch.Tensor:
    return nm_mask(scores, *nm) if nm else prune_lowest_per_row(scores, sparsity)


@register("wanda", "|W| x ||X||_2 per output row (Sun et al. 2023), layer by layer on calibration data; "
          "optional N:M and OWL.", needs_calibration=True, options=WandaOptions)
def prune_wanda(loaded, calib, options: PruneOptions) -> PruneResult:
    adapter = loaded.adapter
    nm = options.params.nm
    per_layer, offset, total, notes = layerwise_plan(loaded, calib, options)

    def decide(i, refs, stats):
        return {r.name: (wanda_mask(wanda_scores(adapter.weight_view(r), stats[r.name].norms), per_layer[i], nm),
                         None) for r in refs}

    res = run_layerwise(loaded, calib, options, decide, progress_offset=offset, progress_total=total, label="wanda")
    return PruneResult(res.masks, notes=notes)
