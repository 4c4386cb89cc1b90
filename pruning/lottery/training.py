"""Causal-LM training for lottery-ticket experiments: a seeded, deterministic loop that can keep a
sparse sub-network sparse.

- Schedule: linear warm-up, then cosine decay to `min_lr_ratio` x peak ("cosine"); or a constant
  rate ("constant", used for plain fine-tuning at the final learning rate, Renda et al. 2020).
- AdamW, gradient clipping by global norm, data order from a seeded permutation of fixed windows.
  Same inputs, same thread count, same device -> bit-identical weights on CPU, which is what lets an
  interrupted IMP experiment resume with the same ticket ids.
- Masked training: after backward the gradients of masked tensors are multiplied by their masks, and
  after each optimizer step the weights are multiplied again (AdamW's decoupled weight decay and
  moment estimates can never revive a weight, but re-masking makes that a guarantee rather than an
  argument). Both are one `torch._foreach_mul_` over all masked tensors, so masking adds two fused
  kernel launches per step, not a Python loop over parameters.
- Resuming at a step (`start_step=K`): steps K..T-1 run with the learning rate and the batch position
  the full run has at those steps (open_lth's `start_step`), so a network rewound to step K gets the
  same number of optimizer steps and the same learning-rate sequence as the dense run from K. The
  result records every step index and learning rate so callers and tests can compare runs.
- The rewind point carries the optimizer: `checkpoint_steps` also keep AdamW's state (moments and step
  count, by parameter name), and `optimizer_state=` resumes from it, so a run resumed at K continues
  exactly as the uninterrupted run would (bit-identical on CPU with the same data order: tested), and
  resuming is not a perturbation. A masked tensor's moments are masked on load: the pruned weights' history
  is dropped, the survivors' is the saved one.
- Early stopping: with `evaluate`, the validation loss is measured every `eval_every` steps and the
  model is left at the best one (`best_step`); the curve is returned.
- Several processes (issue 18): launched with `accelerate launch --multi_gpu --num_processes N` (on a CPU
  machine accelerate then runs gloo DDP; the flag name is accelerate's) or torchrun, `train` goes through
  accelerate: the model is wrapped in DDP by `Accelerator.prepare_model`, every process takes its share
  of each step's windows (the batch must split evenly: one clear error naming batch_size otherwise),
  `Accelerator.backward` averages the gradients, and every process applies the same update, so the
  weights equal the one-process run's up to the order of floating-point sums (tested).
- Sharded (`accelerate launch --use_fsdp --fsdp_version 2 --fsdp_sync_module_states false ...`, for models
  whose training state does not fit one device): a copy of the model is sharded with torch's FSDP2
  (`fully_shard`, every decoder layer one unit), so each process holds 1/N of the weights, gradients and
  AdamW moments; masks and the rewind point's optimizer state are laid out the same way; checkpoints, the
  best step and the final weights are gathered whole (tickets and masks need whole tensors). Equal to the
  one-process run within the same tolerance (tested, on this CPU with gloo).
- Precision: trainable weights must be float32 (bf16 weights would round small updates away); on CUDA
  `amp="bf16"` runs the forward/backward under bf16 autocast over the fp32 master weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import TicketLabError
from .processes import (
    accelerator,
    check_processes,
    check_sharding,
    full,
    like,
    sharded_copy,
    sharding_requested,
)

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None  # None: 10% of the steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    clip: float = 1.0
    schedule: str = "cosine"  # "cosine" | "constant"
    amp: str = "none"  # "none" | "bf16": autocast over fp32 master weights

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise TicketLabError(f"training needs at least 1 step (got {self.steps}).")
        if self.batch_size < 1 or self.seq_len < 2:
            raise TicketLabError(f"batch size must be >= 1 and sequence length >= 2 (got {self.batch_size}, "
                                 f"{self.seq_len}).")
        if self.schedule not in ("cosine", "constant"):
            raise TicketLabError(f"schedule {self.schedule!r}: use cosine or constant.")
        if self.amp not in ("none", "bf16"):
            raise TicketLabError(f"amp {self.amp!r}: use none or bf16 (autocast over fp32 master weights).")

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else max(1, self.steps // 10)

    def lr_at(self, step: int) -> float:
        """The learning rate used for optimizer step `step` (0-based)."""
        if self.schedule == "constant":
            return self.lr
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        span = max(1, self.steps - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        floor = self.lr * self.min_lr_ratio
        return floor + (self.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def finetune(self) -> TrainConfig:
        """The same budget at the schedule's final learning rate, constant (plain fine-tuning)."""
        return TrainConfig(**{**asdict(self), "lr": self.lr * self.min_lr_ratio, "schedule": "constant",
                              "warmup_steps": 0})

    def to_dict(self) -> dict:
        return {**asdict(self), "warmup_steps": self.warmup}


@dataclass
class TrainResult:
    losses: list[float]  # training loss per step
    checkpoints: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # step -> CPU state dict
    optimizer_states: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # step -> AdamW state
    tokens: int = 0
    seconds: float = 0.0
    steps: list[int] = field(default_factory=list)  # the schedule index of every optimizer step taken
    lrs: list[float] = field(default_factory=list)  # the learning rate of every optimizer step taken
    curve: list[tuple[int, float]] = field(default_factory=list)  # (steps done, validation loss)
    best_step: int | None = None  # steps done at the lowest validation loss (the model is left there)
    best_loss: float | None = None

    @property
    def final_loss(self) -> float:
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return sum(tail) / len(tail)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def windows(stream: torch.Tensor, seq_len: int) -> torch.Tensor:
    """A 1-D token stream -> non-overlapping [N, seq_len] windows (the tail that does not fill one is dropped)."""
    n = stream.numel() // seq_len
    if n < 1:
        raise TicketLabError(f"the corpus has {stream.numel()} tokens, fewer than one window of {seq_len}.")
    return stream[: n * seq_len].view(n, seq_len).clone()


def batch_order(n_windows: int, batch_size: int, steps: int, seed: int) -> torch.Tensor:
    """[steps, batch_size] window indices: one seeded permutation per epoch, concatenated."""
    need = steps * batch_size
    g = torch.Generator().manual_seed(int(seed))
    parts, have = [], 0
    while have < need:
        parts.append(torch.randperm(n_windows, generator=g))
        have += n_windows
    return torch.cat(parts)[:need].view(steps, batch_size)


class MaskSet:
    """Masked tensors of a model with their masks on the model's device, for fused in-place masking."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor] | None):
        params = dict(model.named_parameters())
        self.names: list[str] = []
        self.params: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        for name, mask in sorted((masks or {}).items()):
            if name not in params:
                raise TicketLabError(f"mask for {name}, which the model does not have.")
            p = params[name]
            if tuple(mask.shape) != tuple(p.shape):
                raise TicketLabError(f"mask for {name} has shape {tuple(mask.shape)}, the weight {tuple(p.shape)}.")
            if mask.all():
                continue  # a dense tensor needs no masking work
            self.names.append(name)
            self.params.append(p)
            self.masks.append(like(mask.to(dtype=p.dtype), p) if hasattr(p, "device_mesh")
                              else mask.to(device=p.device, dtype=p.dtype))

    def __bool__(self) -> bool:
        return bool(self.params)

    @torch.no_grad()
    def apply_(self) -> None:
        if self.params:
            torch._foreach_mul_([p.data for p in self.params], self.masks)

    @torch.no_grad()
    def mask_grads_(self) -> None:
        pairs = [(p.grad, m) for p, m in zip(self.params, self.masks, strict=True) if p.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])


def cpu_state(model: nn.Module, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the parameters (all, or the named ones)."""
    params = dict(model.named_parameters())
    return {n: full(params[n].detach()).to("cpu", copy=True) for n in (names or params)}


@torch.no_grad()
def load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy tensors into the model's parameters in place (shapes must match)."""
    params = dict(model.named_parameters())
    for n, t in state.items():
        if n not in params:
            raise TicketLabError(f"checkpoint holds {n}, which the model does not have: wrong checkpoint?")
        p = params[n]
        p.data.copy_(like(t.to(dtype=p.dtype), p) if hasattr(p, "device_mesh") else t.to(device=p.device, dtype=p.dtype))


OPT_KEYS = ("exp_avg", "exp_avg_sq", "step")


def optimizer_snapshot(opt: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    """AdamW's per-parameter state as a flat CPU tensor dict `<param name>/<key>` (storable as safetensors)."""
    out = {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if not st:
                continue
            for key in OPT_KEYS:
                t = st[key]
                t = t if torch.is_tensor(t) else torch.tensor(float(t))
                t = full(t.detach())
                out[f"{names[id(p)]}/{key}"] = t.to("cpu", copy=True).reshape(t.shape)
    return out


@torch.no_grad()
def _load_optimizer_state(opt: torch.optim.Optimizer, named: dict[str, nn.Parameter],
                          state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    trained = {id(p) for group in opt.param_groups for p in group["params"]}
    for name, p in named.items():
        if id(p) not in trained or f"{name}/exp_avg" not in state:
            continue  # no history for this tensor (e.g. newly trainable): AdamW starts it fresh
        moments = {}
        for key in ("exp_avg", "exp_avg_sq"):
            t = state[f"{name}/{key}"].to(dtype=p.dtype).clone()
            if tuple(t.shape) != tuple(p.shape):
                raise TicketLabError(f"optimizer state for {name} has shape {tuple(t.shape)}, the weight "
                                     f"{tuple(p.shape)}: wrong rewind checkpoint?")
            if name in masks:
                t.mul_(masks[name].to(dtype=p.dtype))
            moments[key] = like(t, p) if hasattr(p, "device_mesh") else t.to(device=p.device)
        opt.state[p] = {"step": state[f"{name}/step"].clone().float(), **moments}


def _loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(input_ids=x, labels=x, use_cache=False).loss


def eval_steps(config: TrainConfig, start_step: int, every: int) -> list[int]:
    """Steps done at which the validation loss is measured: multiples of `every` after `start_step`, and the end.
    The grid is absolute, so every arm resumed at K is scored at the same steps as the dense run."""
    if every <= 0:
        return [config.steps]
    return sorted({s for s in range(every, config.steps + 1, every) if s > start_step} | {config.steps})


def check_trainable_dtype(params: dict[str, torch.Tensor]) -> None:
    low = [n for n, p in params.items() if p.dtype in (torch.bfloat16, torch.float16)]
    if low:
        raise TicketLabError(f"{low[0]} is {params[low[0]].dtype}: training half-precision weights directly rounds "
                             f"small updates away. Load the model in float32 (--dtype float32); on CUDA use "
                             f"--amp bf16 for bf16 autocast over fp32 master weights.")


def train(model: nn.Module, data: torch.Tensor, config: TrainConfig, *, masks: dict[str, torch.Tensor] | None = None,
          data_seed: int = 0, trainable: Iterable[str] | None = None, checkpoint_steps: Iterable[int] = (),
          start_step: int = 0, evaluate: Callable[[nn.Module], float] | None = None, eval_every: int = 0,
          progress: Progress | None = None, optimizer_state: dict[str, torch.Tensor] | None = None) -> TrainResult:
    """Train `model` in place on `data` ([N, seq_len] windows): schedule steps `start_step`..`config.steps`-1.

    `masks` (name -> bool, True = kept) are applied before the first step and kept exactly zero.
    `trainable`: parameter names to train (default: all that require grad); the others are frozen for
    the call and their `requires_grad` is restored afterwards. `checkpoint_steps`: take a CPU copy of
    the parameters after that many optimizer steps of the schedule (`start_step` = before the first).
    `evaluate(model) -> loss` at `eval_steps(...)`: the model ends at the best of them (early stopping).
    `optimizer_state` (from `TrainResult.optimizer_states[K]`): AdamW resumes with those moments and step
    counts (masked tensors' moments masked); without it the optimizer starts fresh at `start_step`.
    """
    if data.dim() != 2 or data.shape[1] < 2:
        raise TicketLabError("training data must be [N windows, L tokens] with L >= 2.")
    if not 0 <= start_step < config.steps:
        raise TicketLabError(f"start step {start_step} is outside the training run of {config.steps} steps.")
    wanted = sorted(set(checkpoint_steps))
    if wanted and (wanted[0] < start_step or wanted[-1] > config.steps):
        raise TicketLabError(f"checkpoint step {wanted[-1]} is outside the training run of {config.steps} steps.")
    device = next(model.parameters()).device
    named = dict(model.named_parameters())
    train_names = list(trainable) if trainable is not None else [n for n, p in named.items() if p.requires_grad]
    unknown = [n for n in train_names if n not in named]
    if unknown:
        raise TicketLabError(f"asked to train {unknown[0]}, which the model does not have.")
    check_trainable_dtype({n: named[n] for n in train_names})
    if config.amp == "bf16" and device.type != "cuda":
        raise TicketLabError("bf16 autocast training is for CUDA; on CPU train in float32 (--amp none).")
    check_processes(config.batch_size)
    check_sharding()
    target, target_named = model, named  # the caller's model: it ends with the trained weights
    was_training = model.training
    old_flags = {n: p.requires_grad for n, p in named.items()}
    for n, p in named.items():
        p.requires_grad_(n in set(train_names))
    acc = accelerator(device)
    sharded = acc is not None and sharding_requested()
    if sharded:  # FSDP2: each process holds 1/N of the weights, gradients and AdamW moments while it trains
        model = sharded_copy(target, device)
        named = dict(model.named_parameters())
    params = [named[n] for n in train_names]
    mask_set = MaskSet(model, masks)
    mask_set.apply_()
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=config.lr_at(0), betas=(config.beta1, config.beta2), foreach=True)
    if optimizer_state is not None:
        _load_optimizer_state(opt, {n: named[n] for n in train_names}, optimizer_state,
                              {n: m for n, m in (masks or {}).items()})
    ids = {id(p): n for n, p in named.items()}
    world, rank = (acc.num_processes, acc.process_index) if acc else (1, 0)
    # DDP over the same parameters (replicated), or the sharded copy itself (FSDP2 reduce-scatters the gradients)
    forward = model if sharded or not acc else acc.prepare_model(model, device_placement=False)
    order = batch_order(data.shape[0], config.batch_size, config.steps, data_seed)
    result = TrainResult(losses=[])
    if start_step in wanted:
        result.checkpoints[start_step] = cpu_state(model)
        result.optimizer_states[start_step] = optimizer_snapshot(opt, ids)
    scored = set(eval_steps(config, start_step, eval_every)) if evaluate is not None else set()
    best_state: dict[str, torch.Tensor] | None = None
    model.train()
    start = time.perf_counter()
    try:
        for step in range(start_step, config.steps):
            x = data[order[step][rank::world]].to(device, non_blocking=True)  # this process's share
            lr = config.lr_at(step)
            for group in opt.param_groups:
                group["lr"] = lr
            if config.amp == "bf16":
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                    loss = _loss(forward, x)
            else:
                loss = _loss(forward, x)
            if acc:
                acc.backward(loss)  # DDP averages the gradients over the processes
                loss = acc.reduce(loss.detach(), "mean")  # the step's loss over the whole batch, on every process
            else:
                loss.backward()
            mask_set.mask_grads_()
            torch.nn.utils.clip_grad_norm_(params, config.clip, foreach=True)
            opt.step()
            opt.zero_grad(set_to_none=True)
            mask_set.apply_()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TicketLabError(f"training diverged at step {step} (loss {value}); lower the learning rate.")
            result.losses.append(value)
            result.steps.append(step)
            result.lrs.append(lr)
            result.tokens += x.numel() * world
            if step + 1 in wanted:
                result.checkpoints[step + 1] = cpu_state(model)
                result.optimizer_states[step + 1] = optimizer_snapshot(opt, ids)
            if step + 1 in scored:
                val = float(evaluate(model))
                model.train()
                result.curve.append((step + 1, val))
                if result.best_loss is None or val < result.best_loss:
                    result.best_loss, result.best_step = val, step + 1
                    best_state = cpu_state(model) if step + 1 < config.steps else None
            if progress:
                progress(step + 1 - start_step, config.steps - start_step, f"loss {value:.3f}")
        if best_state is not None and result.best_step != config.steps:
            load_state(model, best_state)
    finally:
        result.seconds = time.perf_counter() - start
        if sharded:
            load_state(target, cpu_state(model))  # gathered: masks, checkpoints and tickets need whole tensors
        for n, p in target_named.items():
            p.requires_grad_(old_flags[n])
        target.train(was_training)
    return result


@torch.no_grad()
def heldout_loss(model: nn.Module, data: torch.Tensor, batch_size: int = 16) -> tuple[float, int]:
    """(mean next-token NLL in nats, number of predicted tokens) over [N, L] windows."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, data.shape[0], batch_size):
            x = data[i:i + batch_size].to(device)
            logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
            target = x[:, 1:]
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                            target.reshape(-1), reduction="sum"))
            count += target.numel()
    finally:
        model.train(was_training)
    return total / count, count
