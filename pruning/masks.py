"""Choosing which weights to drop from scores, with one deterministic tie rule.

Tie rule (all methods): among equal scores, the weight with the lower row-major index is pruned
first. The default model's weights come from 4-bit quantisation, so exact ties are common; a stable
sort makes every ticket id the same on every machine.

Masks are boolean, True = kept.
"""

from __future__ import annotations

import torch

from .errors import TicketLabError


def parse_pattern(pattern: str | None) -> tuple[int, int] | None:
    """'2:4' -> (2, 4): keep N of every M consecutive weights along the input dimension."""
    if pattern in (None, "", "none"):
        return None
    try:
        n, m = (int(x) for x in str(pattern).split(":"))
    except ValueError:
        raise TicketLabError(f"pattern {pattern!r} is not N:M (e.g. 2:4 or 4:8).") from None
    if not 0 < n < m:
        raise TicketLabError(f"pattern {pattern!r}: need 0 < N < M (keep N of every M weights).")
    return n, m


def prune_lowest_per_row(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """scores [out, in] -> mask dropping the lowest `fraction` of each row (Wanda's comparison group)."""
    out, inp = scores.shape
    k = int(inp * fraction)
    mask = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        idx = torch.argsort(scores, dim=1, stable=True)[:, :k]
        mask.scatter_(1, idx, False)
    return mask


def prune_lowest(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mask dropping the lowest `fraction` of a whole tensor (layer-wise magnitude). Same tie rule as a
    stable sort, but by k-th value selection, which is several times faster than sorting."""
    return prune_lowest_global({"t": scores}, fraction)["t"]


def prune_lowest_global(scores: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """One threshold over many tensors. Ties at the threshold go by (tensor order, row-major index).

    Uses kthvalue rather than a full sort so memory stays at one copy of the scores.
    """
    names = list(scores)
    parts = [scores[n].reshape(-1).float().cpu() for n in names]
    flat = parts[0] if len(parts) == 1 else torch.cat(parts)
    k = int(flat.numel() * fraction)
    if k == 0:
        return {n: torch.ones_like(scores[n], dtype=torch.bool) for n in names}
    threshold = flat.kthvalue(k).values
    below = flat < threshold
    ties_needed = k - int(below.sum())
    at = (flat == threshold).nonzero().squeeze(1)[:ties_needed]
    keep = ~below
    keep[at] = False
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = keep[start:start + size].view(scores[n].shape).to(scores[n].device)
        start += size
    return out


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """scores [out, in] -> keep the N highest of every M consecutive input weights per row."""
    out, inp = scores.shape
    if inp % m:
        raise TicketLabError(f"pattern {n}:{m} does not divide the input width {inp}; choose M dividing {inp}.")
    groups = scores.reshape(out, inp // m, m)
    idx = torch.argsort(groups, dim=2, stable=True)[..., : m - n]
    mask = torch.ones_like(groups, dtype=torch.bool)
    mask.scatter_(2, idx, False)
    return mask.reshape(out, inp)

