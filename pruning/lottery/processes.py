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


def sharding_requested() -> bool:
    """`accelerate launch --use_fsdp --fsdp_version 2 ...` (it sets ACCELERATE_USE_FSDP): shard the training state
    instead of replicating it (DDP)."""
    return processes() > 1 and os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def check_sharding() -> None:
    """FSDP here is torch's FSDP2 (`fully_shard`), on CPU too; accelerate's FSDP1 path cannot run on CPU and
    `--fsdp_sync_module_states true` is refused there. One line naming the launch setting, before any training."""
    if not sharding_requested():
        return
    if os.environ.get("FSDP_VERSION", "1") != "2":
        raise TicketLabError("accelerate launch --use_fsdp: add --fsdp_version 2 (Ticket Lab shards with torch's FSDP2 "
                             "fully_shard, per decoder layer).")
    if os.environ.get("FSDP_SYNC_MODULE_STATES", "false").lower() == "true" and not torch.cuda.is_available():
        raise TicketLabError("accelerate launch --use_fsdp on a CPU machine: add --fsdp_sync_module_states false (every "
                             "process builds the same weights from the seed, so there is nothing to broadcast).")


def sharded_copy(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A copy of `model` whose parameters, gradients and optimizer moments are sharded on dim 0 over the launched
    processes (FSDP2: every decoder layer one unit, the root holds the rest). The caller trains the copy and gathers
    its full weights back into `model` at the unit's end, where masks, checkpoints and tickets need whole tensors."""
    import copy

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from ..adapters import adapter_for

    work = copy.deepcopy(model)
    mesh = init_device_mesh(device.type, (processes(),))
    for layer in adapter_for(work).layers():
        fully_shard(layer, mesh=mesh)
    fully_shard(work, mesh=mesh)
    return work


def full(t: torch.Tensor) -> torch.Tensor:
    """A whole tensor from a sharded one (DTensor), or the tensor itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def like(t: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`t` (whole) laid out as `param`: sharded the same way when `param` is a DTensor."""
    if hasattr(param, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(t.to(device=param.device_mesh.device_type), param.device_mesh, param.placements)
    return t
