"""`sparsegpt` (Frantar & Alistarh 2023): prune with Optimal Brain Surgeon updates of the surviving weights.

Per linear, from the calibration inputs X that reach it (through the already-pruned earlier layers):
H = 2 X X^T / tokens, dampened by `percdamp` x mean(diag H); the upper Cholesky factor of H^-1 drives
the column-by-column updates. Columns go in blocks of `blocksize` (128): inside a block each
pruned weight's error is spread onto the block's later columns at once, the rest of the matrix is
updated lazily once per block. The mask is chosen adaptively per block, by w^2 / [H^-1]_jj^2 over
the whole block (unstructured), or within every M consecutive columns of each row (N:M), just
before those columns are processed. Inputs that never fire (diag H = 0) get H_jj = 1 and their
weights set to zero, as the reference code does.

Follows the reference `fasterprune` except for the tie rule: a block prunes exactly
floor(numel x sparsity) weights (stable sort, lower row-major index first), where the reference's
`<= threshold` prunes one weight more plus every tie at the threshold.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from ..allocation import layerwise_plan
from ..errors import TicketLabError
from ..layerwise import run_layerwise
from ..masks import nm_mask, prune_lowest_global
from ..method_registry import PruneOptions, PruneResult, register
from ..options import flag
from .wanda import WandaOptions


class SparseGPTOptions(WandaOptions):
    RULES = (*WandaOptions.RULES, "an N:M pattern's M must divide blocksize (a group never straddles two blocks)")
    blocksize: Annotated[int, Field(gt=0, le=65536, description="SparseGPT: columns per block of lazy OBS "
                                                                 "updates and mask selection")] = 128
    # Dampening beyond the mean of diag(H) makes H^-1 close to a scaled identity: magnitude pruning in disguise.
    percdamp: Annotated[float, Field(ge=0.0, le=1.0, description="SparseGPT: dampening added to diag(H), as a "
                                                                  "fraction of its mean")] = 0.01

    def check(self) -> None:
        super().check()
        nm = self.nm
        if nm and self.blocksize % nm[1]:
            raise TicketLabError(f"option blocksize ({flag('blocksize')})={self.blocksize} is not a multiple of "
                                 f"M={nm[1]} of pattern={self.pattern}: an N:M group must not straddle two blocks. "
                                 f"Choose a blocksize divisible by {nm[1]} (e.g. 128).")


# Columns updated eagerly inside a block; the block's later columns get the sub-block's errors in one
# matmul. Same arithmetic as the reference's column loop (up to float summation order), far fewer
# memory passes: the per-column rank-1 update touches 16 columns instead of up to 128.
SUB_BLOCK = 16


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(upper Cholesky factor of the dampened H^-1, dead-input columns), as the reference computes them."""
    H = hessian.detach().clone().float()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1
    H.diagonal().add_(percdamp * torch.diagonal(H).mean())
    chol, info = torch.linalg.cholesky_ex(H)
    if int(info) == 0:
        chol, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(chol), upper=True)
    if int(info) != 0:
        raise TicketLabError(f"SparseGPT: the dampened {H.shape[0]}x{H.shape[0]} Hessian is not positive "
                             f"definite; raise percdamp (now {percdamp}) or use more calibration tokens.")
    return chol, dead


def _lowest(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    # One tensor through the global helper: the same selection and tie rule as prune_lowest, but a
    # linear-time kthvalue instead of a full stable sort (this runs once per block).
    return prune_lowest_global({"block": scores}, fraction)["block"]


@torch.no_grad()
def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor | None, sparsity: float,
                    nm: tuple[int, int] | None = None, blocksize: int = 128, percdamp: float = 0.01,
                    factor: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in], hessian [in, in] -> (updated weight with zeros where pruned, keep-mask), float32.

    `factor`: a precomputed `inverse_hessian_factor(hessian, percdamp)` (linears sharing an input share it).
    """
    Hinv, dead = factor if factor is not None else inverse_hessian_factor(hessian, percdamp)
    rows, cols = weight.shape
    if nm and cols % nm[1]:
        raise TicketLabError(f"pattern {nm[0]}:{nm[1]} does not divide the input width {cols}; choose M dividing {cols}.")
    if nm and blocksize % nm[1]:
        raise TicketLabError(f"blocksize {blocksize} is not a multiple of M={nm[1]}: an N:M group must not "
                             f"straddle two blocks.")
    sub = nm[1] * max(1, SUB_BLOCK // nm[1]) if nm else SUB_BLOCK
    # Work on W^T so that a column of W is a contiguous row.
    Wt = weight.detach().t().float().clone(memory_format=torch.contiguous_format)  # never the parameter itself
    Wt[dead] = 0
    keep_t = torch.ones(cols, rows, dtype=torch.bool, device=Wt.device)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        B = Wt[i1:i2]
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diagonal(Hinv1).unsqueeze(1)
        err = torch.empty_like(B)
        if nm:
            keep1 = torch.ones_like(B, dtype=torch.bool)
            drop_over_d = torch.zeros_like(B)
        else:  # adaptive mask over the whole block, ranked in W's own row-major order (the tie rule)
            keep1 = _lowest((B.pow(2) / d1.pow(2)).t(), sparsity).t()
            drop_over_d = (~keep1) / d1
        for s1 in range(0, i2 - i1, sub):
            s2 = min(s1 + sub, i2 - i1)
            for i in range(s1, s2):
                if nm and (i - s1) % nm[1] == 0:
                    g = slice(i, i + nm[1])
                    keep1[g] = nm_mask((B[g].pow(2) / d1[g].pow(2)).t(), *nm).t()
                    drop_over_d[g] = (~keep1[g]) / d1[g]
                torch.mul(B[i], drop_over_d[i], out=err[i])
                if i + 1 < s2:
                    B[i + 1:s2].addr_(Hinv1[i, i + 1:s2], err[i], alpha=-1.0)
            if s2 < i2 - i1:
                B[s2:].addmm_(Hinv1[s1:s2, s2:].t(), err[s1:s2], alpha=-1.0)
        B.mul_(keep1)
        keep_t[i1:i2] = keep1
        if i2 < cols:
            Wt[i2:].addmm_(Hinv[i1:i2, i2:].t(), err, alpha=-1.0)
    return Wt.t().contiguous(), keep_t.t().contiguous()


@register("sparsegpt", "OBS weight reconstruction (Frantar & Alistarh 2023), layer by layer on calibration data; "
          "updates surviving weights; optional N:M and OWL.", needs_calibration=True, changes_weights=True,
          options=SparseGPTOptions)
def prune_sparsegpt(loaded, calib, options: PruneOptions) -> PruneResult:
    adapter = loaded.adapter
    nm = options.params.nm
    blocksize, percdamp = options["blocksize"], options["percdamp"]
    per_layer, offset, total, notes = layerwise_plan(loaded, calib, options)

    def decide(i, refs, stats):
        out, factors = {}, {}
        for r in refs:
            st = stats[r.name]
            if id(st) not in factors:  # q/k/v (and gate/up) read one input: one Hessian, one factor
                factors[id(st)] = inverse_hessian_factor(st.hessian(), percdamp)
            w, keep = sparsegpt_prune(adapter.weight_view(r), None, per_layer[i], nm, blocksize, percdamp,
                                      factor=factors[id(st)])
            out[r.name] = (keep, w)
        return out

    res = run_layerwise(loaded, calib, options, decide, gram=True, progress_offset=offset, progress_total=total,
                        label="sparsegpt")
    return PruneResult(res.masks, weights=res.weights, notes=notes)
