"""The arms of a lottery-ticket experiment, registered by name in one place (as open_lth's branches).

An arm turns the round's context (the IMP ticket's mask at this round, the seed's rewind points, its
own previous round) into a `Plan`: the mask, the starting weights, the schedule step to resume at,
the training config, and whether it continues its own lineage. A new control is one function
decorated with `@arm(...)`.

Rules (issues 9 and 18):
- all arms of one seed and round retrain with the same data order (paired: the arms differ only in what
  they are), which differs from the order of the run the round's mask came from (round r - 1's);
- with weight rewinding to K every arm resumes at step K of the dense run's schedule, so all arms
  take T - K optimizer steps with the dense run's learning rates from K, and the weights carry AdamW's
  step-K state with them (`Plan.optimizer`), as the dense level 0 does; the reinit control's fresh weights
  have no history, so its optimizer starts fresh;
- under lr / finetune rewinding each control continues ITS OWN previous round, never the ticket's
  trained weights (the reinit control trains its own dense network from a fresh initialisation as
  its round 0), and `dense_matched` continues the dense network for the same extra steps, so a
  ticket that has trained (r + 1) x T steps is compared with a dense run of (r + 1) x T steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import masks as imp_masks
from .training import TrainConfig


@dataclass
class Plan:
    masks: dict[str, torch.Tensor]
    start: dict[str, torch.Tensor]
    start_step: int
    config: TrainConfig
    structure: dict | None = None
    lineage_parent: str | None = None  # the arm whose ticket this one descends from ("ticket" for controls)
    optimizer: dict[str, torch.Tensor] | None = None  # AdamW state to resume with (the rewind point's)


@dataclass
class ArmContext:
    """What an arm may read. `ticket_masks`: the IMP ticket's mask at this round; `own_prev`: this arm's
    own previous round (trained state and masks; round 0 is the dense network unless the arm trains
    its own); `rewind`: the start weights and step of weight rewinding (step K state, or pretrained)."""
    protocol: object
    seed: int
    round: int
    config: TrainConfig
    names: list[str]
    init_state: dict[str, torch.Tensor]
    rewind_state: dict[str, torch.Tensor]
    rewind_step: int
    ticket_masks: dict[str, torch.Tensor]
    ticket_structure: dict | None
    own_prev_state: dict[str, torch.Tensor] | None
    own_prev_masks: dict[str, torch.Tensor] | None
    adapter: object
    derive_seed: Callable[..., int]
    fresh_init: Callable[[int], dict[str, torch.Tensor]] | None = None
    oneshot: Callable[[str, float], tuple[dict[str, torch.Tensor], dict | None]] | None = None
    rewind_optimizer: dict[str, torch.Tensor] | None = None  # AdamW's state at the rewind point K
    extra: dict = field(default_factory=dict)

    @property
    def resume_optimizer(self) -> dict[str, torch.Tensor] | None:
        """The optimizer state a weight-rewound arm resumes with (None under other rewindings)."""
        return self.rewind_optimizer if self.mode == "weights" else None

    @property
    def mode(self) -> str:
        r = self.protocol.rewind
        return "weights" if (r == "init" or r.startswith("step:")) else r  # weights | pretrained | lr | finetune

    def retrain(self, continue_from: dict[str, torch.Tensor] | None) -> tuple[dict[str, torch.Tensor], int, TrainConfig]:
        """Start weights, start step and config of a retraining under the protocol's rewinding."""
        if self.mode == "weights":
            return self.rewind_state, self.rewind_step, self.config
        if self.mode == "pretrained":
            return self.rewind_state, 0, self.config
        cfg = self.config.finetune() if self.mode == "finetune" else self.config
        return continue_from, 0, cfg


@dataclass(frozen=True)
class Arm:
    name: str
    description: str
    fn: Callable[[ArmContext], Plan]
    models: tuple[str, ...] = ("tiny", "pretrained")
    rewinds: tuple[str, ...] = ()  # empty: every rewinding
    own_round0: bool = False  # trains its own dense network as round 0 under lr / finetune rewinding


ARMS: dict[str, Arm] = {}


def arm(name: str, description: str, **kw) -> Callable[[Callable[[ArmContext], Plan]], Callable[[ArmContext], Plan]]:
    def wrap(fn):
        ARMS[name] = Arm(name, description, fn, **kw)
        return fn
    return wrap


@arm("ticket", "IMP: prune the previous round's trained weights by magnitude, rewind the survivors, retrain.")
def _ticket(ctx: ArmContext) -> Plan:
    start, step, cfg = ctx.retrain(ctx.own_prev_state)
    return Plan(ctx.ticket_masks, start, step, cfg, ctx.ticket_structure, lineage_parent="ticket",
                optimizer=ctx.resume_optimizer)


@arm("random", "Random mask with the ticket's per-layer counts (nothing else shared), same start as the ticket.")
def _random(ctx: ArmContext) -> Plan:
    rng_seed = ctx.derive_seed("random", ctx.seed, ctx.round)
    nested = ctx.mode in ("lr", "finetune") and ctx.own_prev_masks is not None
    if ctx.protocol.unit == "heads":
        removed = imp_masks.random_heads_like(ctx.adapter, _removed(ctx.ticket_structure), rng_seed)
        shapes = {n: ctx.init_state[n].shape for n in ctx.names}
        masks, structure = imp_masks.heads_to_masks(ctx.adapter, ctx.names, removed, shapes)
    elif nested:  # its own lineage: prune among its own survivors down to the ticket's counts
        masks, structure = imp_masks.random_within(ctx.own_prev_masks, ctx.ticket_masks, rng_seed), None
    else:
        masks, structure = imp_masks.random_like(ctx.ticket_masks, rng_seed), None
    start, step, cfg = ctx.retrain(ctx.own_prev_state)
    return Plan(masks, start, step, cfg, structure, lineage_parent="ticket", optimizer=ctx.resume_optimizer)


@arm("reinit", "The ticket's mask on a fresh initialisation of every weight (Frankle & Carbin's control).",
     models=("tiny",), own_round0=True)
def _reinit(ctx: ArmContext) -> Plan:
    if ctx.mode == "weights":  # a fresh network, resumed at K like the others (same steps, same learning rates)
        start, step, cfg = ctx.fresh_init(ctx.derive_seed("reinit", ctx.seed, ctx.round)), ctx.rewind_step, ctx.config
    else:  # its own lineage, whose round 0 is a dense network trained from its own fresh initialisation
        start, step, cfg = ctx.retrain(ctx.own_prev_state)
    return Plan(ctx.ticket_masks, start, step, cfg, ctx.ticket_structure, lineage_parent="ticket")


@arm("magnitude", "One-shot magnitude pruning of the pretrained weights at the ticket's sparsity, same retraining.",
     models=("pretrained",), rewinds=("pretrained",))
def _magnitude(ctx: ArmContext) -> Plan:
    masks, structure = ctx.oneshot("magnitude", _sparsity(ctx.ticket_masks))
    start, step, cfg = ctx.retrain(None)
    return Plan(masks, start, step, cfg, structure, lineage_parent="ticket")


@arm("wanda", "One-shot Wanda (|W| x ||X||, Sun et al. 2023) of the pretrained weights at the ticket's sparsity, "
              "same retraining.", models=("pretrained",), rewinds=("pretrained",))
def _wanda(ctx: ArmContext) -> Plan:
    masks, structure = ctx.oneshot("wanda", _sparsity(ctx.ticket_masks))
    start, step, cfg = ctx.retrain(None)
    return Plan(masks, start, step, cfg, structure, lineage_parent="ticket")


@arm("dense_matched", "Compute-matched dense: the dense network trained the same extra steps the ticket lineage "
                      "spent (for rewindings where the ticket trains longer than T).",
     rewinds=("pretrained", "lr", "finetune"))
def _dense_matched(ctx: ArmContext) -> Plan:
    cfg = ctx.config.finetune() if ctx.mode == "finetune" else ctx.config
    masks = imp_masks.dense_masks(ctx.init_state, ctx.names)
    return Plan(masks, ctx.own_prev_state, 0, cfg, None, lineage_parent=None)


def _sparsity(masks: dict[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total


def _removed(structure: dict | None) -> dict[int, list[int]]:
    from ..structure import removed

    return {int(k): list(v) for k, v in removed(structure, "query_heads").items()}


def describe() -> dict[str, str]:
    return {name: a.description for name, a in ARMS.items()}
