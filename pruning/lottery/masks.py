"""IMP's mask updates: prune a fraction of the *remaining* weights (or attention heads) by magnitude,
and the random-mask control with the same per-tensor (per-layer, for heads) counts.

Counts are exact integers: a round removes `floor(remaining x rate)` weights (per tensor, or over all
prunable tensors with the global scope); heads go `round(remaining x rate)` at a time, never the last
head of a layer. Already-pruned weights score below every survivor, so masks only ever shrink.
Ties follow `pruning.masks`: the lower row-major index (then the earlier tensor) is pruned first.
"""

from __future__ import annotations

import torch

from ..adapters import ArchitectureAdapter
from ..masks import prune_lowest, prune_lowest_global


def prunable_names(loaded, include_embeddings: bool = False) -> list[str]:
    """The tensors IMP prunes: every adapter projection weight, plus the input embedding if asked.
    Norms, biases and (untied) LM heads are never pruned."""
    names = [ref.name for ref in loaded.adapter.linears()]
    if include_embeddings:
        emb = loaded.model.get_input_embeddings().weight
        names += [n for n, p in loaded.model.named_parameters() if p is emb]
    return names


def dense_masks(state: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    return {n: torch.ones(state[n].shape, dtype=torch.bool) for n in names}


def _fraction(count: int, numel: int) -> float:
    # masks.prune_lowest* take a fraction and floor `numel x fraction`; +0.5 makes that floor exactly `count`
    return (count + 0.5) / numel


def magnitude_step(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], rate: float,
                   scope: str) -> dict[str, torch.Tensor]:
    """Remove `rate` of the surviving weights with the smallest |w| (per tensor, or one global threshold)."""
    scores = {}
    for n, m in masks.items():
        s = weights[n].detach().float().abs().cpu()
        scores[n] = torch.where(m, s, torch.full_like(s, -1.0))
    if scope == "global":
        total = sum(m.numel() for m in masks.values())
        kept = sum(int(m.sum()) for m in masks.values())
        target = (total - kept) + int(kept * rate)
        return prune_lowest_global(scores, _fraction(target, total))
    out = {}
    for n, m in masks.items():
        kept = int(m.sum())
        target = (m.numel() - kept) + int(kept * rate)
        out[n] = prune_lowest(scores[n], _fraction(target, m.numel()))
    return out


def random_like(masks: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random masks keeping exactly as many weights in each tensor as `masks` does."""
    g = torch.Generator().manual_seed(int(seed))
    out = {}
    for n in sorted(masks):
        m = masks[n]
        pruned = m.numel() - int(m.sum())
        out[n] = prune_lowest(torch.rand(m.shape, generator=g), _fraction(pruned, m.numel()))
    return {n: out[n] for n in masks}


def random_within(own: dict[str, torch.Tensor], like: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random masks inside `own` (only its survivors can go) keeping as many weights per tensor as `like`:
    the random control's next round in its own lineage (lr / finetune rewinding)."""
    g = torch.Generator().manual_seed(int(seed))
    out = {}
    for n in sorted(like):
        m = own[n]
        keep = int(like[n].sum())
        scores = torch.where(m, torch.rand(m.shape, generator=g), torch.full(m.shape, -1.0))
        out[n] = prune_lowest(scores, _fraction(m.numel() - keep, m.numel()))
    return {n: out[n] for n in like}


# --- attention heads -------------------------------------------------------------------------------
def _head_slices_2d(adapter: ArchitectureAdapter, slices):
    return [s for s in slices if adapter.parameter(s.param).dim() == 2]


def head_scores(adapter: ArchitectureAdapter, weights: dict[str, torch.Tensor]) -> dict[tuple[int, int], float]:
    """L2 norm of each query head's own weights (its query rows and its output-projection columns)."""
    out = {}
    for layer in range(adapter.num_layers):
        for h in range(adapter.num_heads):
            total = 0.0
            for s in _head_slices_2d(adapter, adapter.query_head_slices(layer, h)):
                w = weights[s.param]
                part = w[s.start:s.stop] if s.axis == 0 else w[:, s.start:s.stop]
                total += float(part.float().pow(2).sum())
            out[(layer, h)] = total ** 0.5
    return out


def heads_to_masks(adapter: ArchitectureAdapter, names: list[str], removed: dict[int, list[int]],
                   shapes: dict[str, torch.Size]) -> tuple[dict[str, torch.Tensor], dict]:
    """Masks and ticket structure for a set of removed query heads; a KV head whose query heads are all
    removed goes with them (GQA: it has no reader left)."""
    from .. import structure as structure_schema

    masks = {n: torch.ones(shapes[n], dtype=torch.bool) for n in names}
    structure = structure_schema.heads(
        adapter, removed, unit="query",
        rule="query heads by L2 norm of their q rows and o columns; a KV head goes when all of its "
             "query heads have; at least one head kept per layer")
    for layer in removed:
        closed = structure_schema.closed_heads(adapter, structure["removed"], layer)
        slices = adapter.head_removal_slices(layer, closed)  # the GQA rule: adapter.close_heads
        for s in _head_slices_2d(adapter, slices):
            if s.param in masks:
                if s.axis == 0:
                    masks[s.param][s.start:s.stop] = False
                else:
                    masks[s.param][:, s.start:s.stop] = False
    return masks, structure


def head_step(adapter: ArchitectureAdapter, weights: dict[str, torch.Tensor], removed: dict[int, list[int]],
              rate: float, scope: str) -> dict[int, list[int]]:
    """Remove `round(remaining x rate)` more query heads (per layer, or globally) by smallest norm."""
    scores = head_scores(adapter, weights)
    removed = {layer: list(removed.get(layer, [])) for layer in range(adapter.num_layers)}
    alive = {layer: [h for h in range(adapter.num_heads) if h not in removed[layer]] for layer in removed}
    if scope == "global":
        candidates = sorted((scores[(lay, h)], lay, h) for lay in alive for h in alive[lay])
        budget = round(sum(len(v) for v in alive.values()) * rate)
        for _score, layer, h in candidates:
            if budget <= 0:
                break
            if len(alive[layer]) > 1:
                alive[layer].remove(h)
                removed[layer].append(h)
                budget -= 1
    else:
        for layer, heads in alive.items():
            n = min(round(len(heads) * rate), len(heads) - 1)
            for h in sorted(heads, key=lambda h, lay=layer: (scores[(lay, h)], h))[:n]:
                removed[layer].append(h)
    return {k: sorted(v) for k, v in removed.items() if v}


def random_heads_like(adapter: ArchitectureAdapter, removed: dict[int, list[int]], seed: int) -> dict[int, list[int]]:
    """As many removed query heads per layer as `removed`, chosen uniformly with the seed."""
    g = torch.Generator().manual_seed(int(seed))
    out = {}
    for layer in range(adapter.num_layers):
        perm = torch.randperm(adapter.num_heads, generator=g).tolist()
        n = len(removed.get(layer, []))
        if n:
            out[layer] = sorted(perm[:n])
    return out
