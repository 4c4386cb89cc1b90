"""LoRA recovery of a sparse ticket: low-rank adapters (peft) trained on the frozen, masked backbone,
then merged.

A merged LoRA delta `B @ A` is dense, so merging alone would revive pruned weights. After merging we
multiply by the mask again: the recovered model keeps exactly the ticket's zeros, and only the
delta's share on surviving weights is kept (documented cost of keeping the ticket a ticket).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import TicketLabError
from .training import TrainConfig, TrainResult, train


def lora_train(model: nn.Module, module_names: list[str], masks: dict[str, torch.Tensor], data: torch.Tensor,
               config: TrainConfig, *, rank: int = 8, alpha: float | None = None, seed: int = 0, data_seed: int = 0,
               progress: Callable[[int, int, str], None] | None = None) -> tuple[nn.Module, TrainResult]:
    """Mask the backbone, train rank-`rank` adapters on `module_names`, merge, re-mask.

    Returns the (same, unwrapped) model with merged weights, and the training result."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise TicketLabError(f"LoRA rank must be >= 1 (got {rank}).")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].data.mul_(mask.to(device=params[name].device, dtype=params[name].dtype))
    flags = {n: p.requires_grad for n, p in params.items()}
    cfg = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=0.0, bias="none",
                     target_modules=list(module_names))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # the adapters' A matrices are drawn from the global generator
        peft_model = get_peft_model(model, cfg)
    trainable = [n for n, p in peft_model.named_parameters() if "lora_" in n]
    try:
        result = train(peft_model, data, config, masks=None, data_seed=data_seed, trainable=trainable,
                       progress=progress)
    except BaseException:
        peft_model.unload()
        raise
    merged = peft_model.merge_and_unload()
    params = dict(merged.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].data.mul_(mask.to(device=params[name].device, dtype=params[name].dtype))
    for n, p in params.items():
        p.requires_grad_(flags.get(n, p.requires_grad))
    return merged, result
