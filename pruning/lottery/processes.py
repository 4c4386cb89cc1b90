"""Several processes of one experiment (issue 18): `accelerate launch --multi_gpu --num_processes N` (gloo DDP
on a CPU machine, NCCL on CUDA) or torchrun. Every process computes the same numbers (DDP averages the
gradients of each process's share of a step's windows); only rank 0 writes, and the others wait for it where
they read what it wrote (`main_first`)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch

from ..errors import TicketLabError


def processes() -> int:
    """How many processes were launched together (accelerate launch / torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def main_process() -> bool:
    """The process that writes (rank 0); every process computes the same numbers."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def barrier() -> None:
    """Wait for every launched process (a no-op for one)."""
    if processes() > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def main_first(fn: Callable[[], object]) -> object:
    """Run `fn` on the writing process, then on the others once it is done (where `fn` finds its files written)."""
    if main_process():
        out = fn()
        barrier()
        return out
    barrier()
    return fn()


def check_processes(batch_size: int, world: int | None = None) -> None:
    world = processes() if world is None else world
    if world > 1 and batch_size % world:
        raise TicketLabError(f"protocol setting batch_size: {batch_size} windows per step cannot be split evenly over "
                             f"{world} processes (accelerate launch --num_processes {world}); use a batch size that is a "
                             f"multiple of {world}, or launch {math.gcd(batch_size, world)} process(es).")


def start_processes(device: torch.device) -> None:
    """Join the process group of a multi-process launch (before the first barrier); a no-op for one process."""
    accelerator(device)


def accelerator(device: torch.device):
    """accelerate's Accelerator when several processes were launched (DDP: gloo on CPU, NCCL on CUDA), else None."""
    if processes() <= 1:
        return None
    from accelerate import Accelerator

    return Accelerator(cpu=device.type == "cpu")
