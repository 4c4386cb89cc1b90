"""Per-layer sparsity: uniform, or outlier-weighted (OWL, Yin et al. 2024).

OWL follows the authors' code (`prune_wanda_outlier`): a dense, statistics-only pass over the
decoder layers scores every weight with Wanda's |W_ij| * ||X_j||_2; a layer's outlier ratio is the
fraction of its scores (all its linears together) above M x the layer's mean score. The ratios are
min-max normalised onto [0, 2*lambda], and layer l gets

    sparsity_l = target - (r_l - mean(r)),    r = normalised ratios,

so layers with more outliers are pruned less, the highest and lowest layer sparsities are 2*lambda
apart (symmetric, target +- lambda, only when the ratios are; one outlying layer can sit up to
~2*lambda from the target), and their plain mean over decoder layers is exactly the target. That is the mean OWL's code uses; every decoder
layer has the same linears, so it is also the mean weighted by layer size, and the model's achieved
sparsity is the target (up to each row's rounding to whole weights).
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import TicketLabError
from .method_registry import PruneOptions


def outlier_ratio(scores: list[torch.Tensor], m: float) -> float:
    """Fraction of all given scores (one decoder layer's linears) that exceed M x their mean."""
    total = sum(s.numel() for s in scores)
    mean = sum(float(s.double().sum()) for s in scores) / total
    count = sum(int((s > m * mean).sum()) for s in scores)
    return count / total


def owl_sparsities(ratios: list[float], target: float, lam: float) -> list[float]:
    """Layer sparsities from outlier ratios: mean exactly `target`, spread 2*lambda, more outliers -> lower."""
    r = np.asarray(ratios, dtype=np.float64)
    spread = r.max() - r.min()
    if spread <= 0 or lam == 0:
        return [float(target)] * len(r)
    norm = (r - r.min()) / spread * (2 * lam)
    out = target - (norm - norm.mean())
    if out.min() < 0 or out.max() >= 1:
        raise TicketLabError(f"OWL with lambda {lam} at sparsity {target} asks for layer sparsities from "
                             f"{out.min():.3f} to {out.max():.3f}, outside [0, 1): choose a smaller owl_lambda.")
    return [float(x) for x in out]


def check_owl(options: PruneOptions) -> bool:
    """True when OWL allocation is asked for. Its bounds and the combinations it refuses (with an N:M
    pattern, with scope=global) are rules of the options models (pruning/options.py)."""
    return options.options.get("allocation", "uniform") == "owl"


def owl_layer_sparsities(loaded, calib, options: PruneOptions, progress_total: int | None = None
                         ) -> tuple[list[float], list[float]]:
    """(layer sparsities, outlier ratios) from a dense pass over the calibration data."""
    from .layerwise import run_layerwise

    if calib is None:
        raise TicketLabError("allocation=owl needs calibration data: OWL measures outliers in |W| x ||X|| "
                             "(--calib-samples/--calib-len or --calib-tokens).")
    adapter = loaded.adapter
    ratios: list[float] = []

    def on_layer(_i, refs, stats):
        scores = [adapter.weight_view(r).abs().float() * stats[r.name].norms.unsqueeze(0) for r in refs]
        ratios.append(outlier_ratio(scores, options["owl_m"]))

    run_layerwise(loaded, calib, options, None, progress_total=progress_total, label="owl outliers",
                  on_layer=on_layer)
    return owl_sparsities(ratios, options.sparsity, options["owl_lambda"]), ratios


def layerwise_plan(loaded, calib, options: PruneOptions) -> tuple[list[float], int, int, list[str]]:
    """Per-layer sparsities for a layer-by-layer method, and where its progress starts: with OWL the
    outlier pass takes the first `num_layers` progress steps. Returns (sparsities, offset, total, notes)."""
    layers = loaded.adapter.num_layers
    if not check_owl(options):
        return [options.sparsity] * layers, 0, layers, []
    per_layer, _ratios = owl_layer_sparsities(loaded, calib, options, progress_total=2 * layers)
    return per_layer, layers, 2 * layers, ["owl layer sparsities: " + ", ".join(f"{s:.4f}" for s in per_layer)]
