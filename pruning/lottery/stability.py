"""Linear mode connectivity (Frankle et al. 2020): is a (sub)network stable to SGD noise from a point?

Train two copies from the same starting weights (and mask) with different data orders, then evaluate
the held-out loss along the straight line between the two results. The barrier is
`max_alpha L(alpha) - (L(0) + L(1)) / 2` (their "instability", with loss in place of error). A barrier
near zero means both runs land in one linearly connected basin; Frankle et al. found that rewinding
points from which IMP sub-networks are stable are the ones that give matching tickets.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .training import TrainConfig, cpu_state, heldout_loss, load_state, train


def interpolation_losses(model: nn.Module, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                         heldout: torch.Tensor, points: int = 11, batch_size: int = 16) -> tuple[list[float], list[float]]:
    """Held-out loss at `points` evenly spaced alphas on (1 - alpha) a + alpha b. Leaves the model at b."""
    alphas = [i / (points - 1) for i in range(points)]
    losses = []
    for alpha in alphas:
        load_state(model, {n: torch.lerp(a[n].float(), b[n].float(), alpha) for n in a})
        losses.append(heldout_loss(model, heldout, batch_size)[0])
    load_state(model, b)
    return alphas, losses


def barrier(losses: list[float]) -> float:
    return max(losses) - (losses[0] + losses[-1]) / 2


def stability(model: nn.Module, start: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None,
              data: torch.Tensor, heldout: torch.Tensor, config: TrainConfig, data_seeds: tuple[int, int], *,
              trainable: list[str] | None = None, points: int = 11, eval_batch: int = 16, start_step: int = 0,
              progress: Callable[[int, int, str], None] | None = None,
              optimizer_state: dict[str, torch.Tensor] | None = None) -> dict:
    """Two copies from `start` (a full state dict, the network at schedule step `start_step`, with AdamW's state
    there when given) with the two data orders, each resuming the schedule at `start_step` (the rewind point
    K); the loss along the line."""
    ends = []
    for i, seed in enumerate(data_seeds):
        load_state(model, start)

        def report(done, total, what, i=i):
            if progress:
                progress(i * total + done, 2 * total, f"copy {i + 1}: {what}")

        r = train(model, data, config, masks=masks, data_seed=seed, trainable=trainable, start_step=start_step,
                  progress=report, optimizer_state=optimizer_state)
        ends.append(cpu_state(model))
        steps = r.steps
    alphas, losses = interpolation_losses(model, ends[0], ends[1], heldout, points, eval_batch)
    return {"alphas": alphas, "losses": losses, "barrier": barrier(losses), "data_seeds": list(data_seeds),
            "start_step": start_step, "optimizer_steps": len(steps)}
