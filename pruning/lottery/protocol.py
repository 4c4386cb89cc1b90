"""The pre-registered protocol of a lottery-ticket experiment: every choice fixed before the first step.

A `Protocol` names the data split, the learning rate and training length T (or the pilot that picks
them), the rewind point K, the rounds and rate, the arms, the seeds, the metric, the margin delta and
the confidence level. It is validated as a whole before anything is trained or written (one
`TicketLabError` naming the setting), stored with the experiment (`protocol.json`), and its hash is
part of the experiment id: a changed protocol is a different experiment, in a different folder.

The pilot (Protocol.lr / steps left as None): dense runs of the first seed's initialisation at each
of `pilot_lrs` for `pilot_steps` steps, validation loss every `eval_every` steps; the learning rate
with the lowest validation loss wins and T is the step of that minimum (at least K + eval_every).
Its curves are stored with the experiment and shown by `imp-report` and the dashboard.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace

from ..errors import TicketLabError
from .tiny import CORPORA, EVERY, HELDOUT_INDEX, VALIDATION_INDEX, TinyConfig
from .training import TrainConfig

FORMAT = "ticketlab-imp-protocol/3"
REWINDS = ("init", "step:K", "pretrained", "lr", "finetune")
# settings added after format 3 was recorded: 0 means the old behaviour, and a stored protocol without them reads as 0
LEGACY_ZERO = ("train_windows", "stability_seeds")
AUTO_SEEDS_CAP = 30  # `--seeds auto` never runs more seeds than this (the verdict states the power it reached)


def setting(default, help: str, flag: str | None = None, choices: tuple | None = None,  # noqa: A002
            form: str | None = None, label: str | None = None):
    """A protocol setting a person chooses: the CLI flag (`ticketlab imp`) and the dashboard's IMP form field
    (`form`: "main" or "budget", under `label`) are generated from its declaration (name, type, default,
    help, choices); `Protocol.validate` holds the bounds and cross-setting rules."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices, "form": form,
                                            "label": label or name_words(flag)})


def name_words(flag: str | None) -> str | None:
    return flag.lstrip("-").replace("-", " ") if flag else None


# words a setting takes besides its type's values (the CLI and the dashboard's form read them here)
WORDS: dict[str, dict[str, object]] = {"seeds": {"auto": ()}}


def word_value(name: str, text: str) -> tuple[bool, object]:
    """(True, value) when `text` is one of the setting's words (seeds "auto" -> (), the power analysis chooses)."""
    words = WORDS.get(name, {})
    key = text.strip().lower()
    return (True, words[key]) if key in words else (False, None)


def settings_of() -> list:
    """The protocol's person-chosen settings (the `dataclasses.Field`s declared with `setting`)."""
    return [f for f in fields(Protocol) if "help" in f.metadata]


@dataclass(frozen=True)
class Protocol:
    model: str = setting("tiny", "tiny (trained from scratch) or a model spec (default tiny)",
                         form="main", label="model")
    # issue 18: capacity in the blocks, not the embedding, and a dense model that converges inside the budget: a
    # 1,024-entry tokenizer trained on the train split and 3 layers of hidden 64 / SwiGLU 192 (147k block weights,
    # 66k tied embedding) on 1,024 windows of 64 tokens (65,536 train tokens). Measured here (one thread, 13.5 ms a
    # step): the validation minimum lies near step 1,024 (8 epochs); a 2,048-step schedule overfits after it, so the
    # pilot's T grid brackets the optimum and the whole default experiment fits 2 hours on this 2-core machine
    tiny: TinyConfig = field(default_factory=lambda: TinyConfig(vocab_size=1024, hidden_size=64, num_layers=3,
                                                                intermediate_size=192))
    # data: articles of `corpora` split by index modulo `split_every` (tiny model only)
    corpora: tuple[str, ...] = CORPORA
    split_every: int = EVERY
    validation_index: int = VALIDATION_INDEX
    heldout_index: int = HELDOUT_INDEX
    # training: lr and steps (T) None -> chosen by the pilot
    lr: float | None = setting(None, "peak learning rate (empty: the pilot chooses)", form="main", label="lr")
    steps: int | None = setting(None, "T, steps per training (empty: the pilot chooses)", flag="--train-steps",
                                form="main", label="T (steps)")
    batch_size: int = setting(8, "windows per step", form="budget", label="batch size")
    seq_len: int = setting(64, "tokens per window", form="budget", label="sequence length")
    # a data-limited regime the budget can train to convergence: this many train windows, evenly spaced over the
    # train split (0: all of them). Experiments recorded before the setting existed used all (to_dict omits 0, so
    # their ids are unchanged)
    train_windows: int = setting(1024, "train windows, evenly spaced over the train split (0 all)",
                                 form="budget", label="train windows (0 all)")
    weight_decay: float = 0.1
    warmup_steps: int | None = setting(20, "linear warm-up steps", form="budget", label="warm-up steps")
    min_lr_ratio: float = 0.1
    amp: str = setting("none", "bf16 autocast (CUDA only)", choices=("none", "bf16"))
    # the pilot: every (lr, T) of the grid is its own run with a schedule of length T; a best value at the edge
    # of either grid extends that grid (x2 / /2) up to `pilot_extend` times per axis, and says so
    pilot_lrs: tuple[float, ...] = setting((2.5e-3, 5e-3, 1e-2), "learning rates the pilot tries",
                                           form="main", label="pilot lrs")
    # the longest T of the default T grid (pilot_steps / 4, / 2, x 1): 1,024 steps of 8 x 64 tokens are 8 epochs of
    # the 65k train tokens; a best T at 1,024 extends the grid to 2,048, where the dense model overfits
    pilot_steps: int = setting(1024, "longest T of the default T grid (pilot-steps / 4, / 2, x 1)",
                               form="budget", label="pilot steps")
    pilot_ts: tuple[int, ...] = setting((), "candidate T values (comma-separated; each its own schedule; empty: "
                                            "derived from pilot-steps)")
    pilot_extend: int = setting(1, "extensions per axis when the best lr or T is at the edge of its grid")
    # init pairs whose (run A - run B) spread is the per-seed sd of the power analysis
    pilot_seeds: int = setting(3, "fresh inits trained twice for the seed noise of the power analysis (0: none)")
    eval_every: int = setting(32, "validation every N steps (early stopping)", form="budget", label="eval every")
    val_windows: int = setting(64, "validation windows per evaluation (0 all)",
                               form="budget", label="validation windows (0 all)")
    heldout_windows: int = setting(0, "held-out windows, scored once per run (0 all)",
                                   form="budget", label="held-out windows (0 all)")
    eval_batch: int = 16
    # pruning: 20% of the remaining weights per round down to at most `target_density` (Frankle & Carbin 2019)
    rewind: str = setting("step:20", "step:K | init (= step:0) | pretrained | lr | finetune",
                          form="main", label="rewind")
    rounds: int = setting(14, "pruning rounds after the dense round 0", form="main", label="rounds")
    rate: float = setting(0.2, "fraction of the remaining weights pruned per round, in (0, 1)",
                          form="main", label="rate (per round)")
    # a density the rounds must reach, refused before training when they do not (None: no target; the default
    # 14 rounds at 20% end at 4.4%, the issue's <= 5%)
    target_density: float | None = setting(None, "density the rounds must reach, refused before training otherwise "
                                                 "(default none)")
    scope: str = setting("global", "one magnitude threshold over all prunable tensors, or per tensor",
                         choices=("global", "layer"))
    unit: str = setting("weights", "prune individual weights or whole attention heads", choices=("weights", "heads"))
    prune_embeddings: bool = setting(False, "also prune the input embedding")
    arms: tuple[str, ...] = setting(("ticket", "random", "reinit"), "arms: {arms}", form="main", label="arms")
    # empty ("auto" on the command line and in the form): the seeds 0..n-1 with n from the pilot's power analysis (at
    # least min_seeds, at most AUTO_SEEDS_CAP); the default fixes 5 seeds because the 2-hour budget fits 5
    seeds: tuple[int, ...] = setting((0, 1, 2, 3, 4), "comma-separated seeds (>= 2), or auto: as many as the pilot's "
                                                      "power analysis needs", form="main", label="seeds")
    recovery: str = setting("full", "train the surviving weights (full) or LoRA adapters, merged and re-masked (lora)",
                            choices=("full", "lora"))
    lora_rank: int = setting(8, "rank of the LoRA adapters (recovery lora)")
    # analysis
    metric: str = "heldout_loss"
    # nats: the equivalence margin of TOST
    delta: float = setting(0.02, "matching margin in nats", form="main", label="delta (nats)")
    # intervals at this level; tests at alpha = 1 - confidence
    confidence: float = setting(0.95, "interval level", form="main", label="confidence")
    # the power analysis' target for a ticket exactly as good as dense
    power: float = setting(0.8,
                           'power target of the seed analysis')
    min_seeds: int = 5
    # none | dense (round 0) | all (every level's ticket), from every K of the sweep
    stability: str = setting("all", "loss barrier: none, the dense network from K and from 0, or also every ticket",
                             choices=("none", "dense", "all"), form="main", label="stability")
    stability_points: int = setting(11, "interpolation points on the line (>= 11)")
    # empty: 0, K, T/10 and T/5 (Frankle et al. 2020's sweep up to 20% of T)
    stability_ks: tuple[int, ...] = setting((), "rewind points of the stability sweep (empty: 0, K, T/10, T/5)")
    # the sparse tickets' sweep (stability all) runs on the first N seeds (0: every seed); the dense network's runs on
    # every seed. Two copies per level and K are ~40% of the experiment's steps per seed, so the default sweeps every
    # level of the first seed (its barriers carry no interval) and keeps the 2-hour budget. Experiments recorded before
    # the setting existed swept every seed (to_dict omits 0, so their ids are unchanged)
    stability_seeds: int = setting(1, "seeds whose every level's ticket gets the stability sweep (0 all)")
    sanity: bool = setting(True, "skip the sanity check (the random mask at the highest sparsity must be worse than "
                                 "dense by more than delta)", flag="--no-sanity", form="main", label="sanity check")
    sanity_margin: float = 0.1  # only for experiments recorded with the older every-linear-removed check
    device: str = setting("cpu", "cpu, cuda or auto")
    dtype: str = setting("float32", "weights stay float32 (master weights); use --amp bf16 on CUDA",
                         choices=("float32",))

    # --- derived -------------------------------------------------------------------------------------
    @property
    def is_tiny(self) -> bool:
        return self.model == "tiny"

    @property
    def rewind_step(self) -> int | None:
        """K for weight rewinding (init = 0); None for pretrained, lr and finetune."""
        if self.rewind == "init":
            return 0
        return int(self.rewind.split(":", 1)[1]) if self.rewind.startswith("step:") else None

    @property
    def auto_seeds(self) -> bool:
        """Seeds chosen by the pilot's power analysis (`--seeds auto`)."""
        return not self.seeds

    @property
    def first_seed(self) -> int:
        return self.seeds[0] if self.seeds else 0

    @property
    def needs_pilot(self) -> bool:
        return self.lr is None or self.steps is None

    def train_config(self, lr: float | None = None, steps: int | None = None) -> TrainConfig:
        lr, steps = lr if lr is not None else self.lr, steps if steps is not None else self.steps
        if lr is None or steps is None:
            raise TicketLabError("the learning rate and T are not fixed yet: run the pilot first.")
        warm = min(self.warmup_steps, max(1, steps - 1)) if self.warmup_steps is not None else None
        return TrainConfig(steps=steps, batch_size=self.batch_size, seq_len=self.seq_len, lr=lr,
                           weight_decay=self.weight_decay, warmup_steps=warm, min_lr_ratio=self.min_lr_ratio,
                           amp=self.amp)

    def resolved(self, lr: float, steps: int) -> Protocol:
        return replace(self, lr=lr, steps=steps)

    @property
    def candidate_ts(self) -> tuple[int, ...]:
        if self.pilot_ts:
            return tuple(sorted(set(self.pilot_ts)))
        k = self.rewind_step or 0
        return tuple(sorted({max(k + 1, self.pilot_steps // 4), max(k + 1, self.pilot_steps // 2), self.pilot_steps}))

    def sweep_ks(self, steps: int) -> tuple[int, ...]:
        """The rewind points of the stability sweep at T = steps: given, or 0, K, T/10 and T/5."""
        if self.stability_ks:
            return tuple(sorted(set(self.stability_ks)))
        k = self.rewind_step
        base = {0, steps // 10, steps // 5} | ({k} if k is not None else set())
        return tuple(sorted(x for x in base if 0 <= x < steps))

    @property
    def final_density(self) -> float:
        return (1.0 - self.rate) ** self.rounds

    def to_dict(self) -> dict:
        d = asdict(self)
        d["corpora"], d["pilot_lrs"] = list(self.corpora), list(self.pilot_lrs)
        d["pilot_ts"], d["stability_ks"] = list(self.pilot_ts), list(self.stability_ks)
        d["arms"], d["seeds"] = list(self.arms), list(self.seeds)
        d["device"] = "cuda" if self.device.startswith("cuda") else self.device
        for legacy in LEGACY_ZERO:  # absent = 0 = what experiments recorded before the setting did
            if d[legacy] == 0:
                d.pop(legacy)
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict) -> Protocol:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw.update({k: 0 for k in LEGACY_ZERO if k not in d})
        kw["tiny"] = TinyConfig(**kw.get("tiny", {}))
        for k in ("corpora", "pilot_lrs", "pilot_ts", "stability_ks", "arms", "seeds"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def digest(self, model_identity: dict | None = None, tokenizer_sha256: str | None = None) -> str:
        """Hash of the protocol with the pretrained weights' identity or the trained tokenizer's hash: the
        experiment id's body."""
        body = {**self.to_dict(), "model_identity": model_identity, "tokenizer_sha256": tokenizer_sha256}
        body.pop("device", None)
        body["device_kind"] = self.to_dict()["device"]
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    # --- validation ----------------------------------------------------------------------------------
    def validate(self) -> None:
        """Every setting that cannot work, refused before any training (one error naming the setting)."""
        from .arms import ARMS

        def bad(setting: str, why: str) -> None:
            raise TicketLabError(f"protocol setting {setting}: {why}")

        if not 0.0 < self.rate < 1.0:
            bad("rate", f"{self.rate} is outside (0, 1): it is the fraction of the remaining weights each round "
                        f"removes (0.5 = half).")
        if self.rounds < 1:
            bad("rounds", f"{self.rounds}: at least one pruning round is needed.")
        if self.target_density is not None:
            if not 0.0 < self.target_density < 1.0:
                bad("target_density", f"{self.target_density} must be in (0, 1) (0.05 = 5% of the weights kept).")
            if self.final_density > self.target_density + 1e-12:
                import math

                need = math.ceil(math.log(self.target_density) / math.log(1.0 - self.rate))
                bad("rounds", f"{self.rounds} rounds at rate {self.rate:g} end at {self.final_density:.1%} density, above "
                              f"the target {self.target_density:.1%}: use --rounds {need} (or a higher rate, or "
                              f"--target-density {self.final_density:.3f}).")
            if self.unit == "heads" and self.is_tiny and 1.0 / self.tiny.num_heads > self.target_density:
                bad("target_density", f"head pruning keeps at least one of the {self.tiny.num_heads} heads of every "
                                      f"layer, so it cannot go below {1.0 / self.tiny.num_heads:.1%} density, above "
                                      f"the target {self.target_density:.1%}; use unit weights or a higher target.")
        if self.auto_seeds:
            if not (self.is_tiny and self.pilot_seeds >= 2):
                bad("seeds", "auto chooses the seed count from the pilot's seed noise, which the pilot measures for the "
                             "tiny model with --pilot-seeds >= 2; give the seeds (e.g. 0,1,2,3,4) otherwise.")
        elif len(self.seeds) < 2:
            bad("seeds", f"{list(self.seeds)}: a verdict with a confidence interval needs at least 2 seeds "
                         f"(3 or more recommended).")
        if len(set(self.seeds)) != len(self.seeds):
            bad("seeds", f"{list(self.seeds)} repeats a seed.")
        if not 0.5 < self.confidence < 1.0:
            bad("confidence", f"{self.confidence} must be in (0.5, 1), e.g. 0.95.")
        if self.delta < 0:
            bad("delta", f"{self.delta} must be >= 0 nats.")
        if self.metric != "heldout_loss":
            bad("metric", f"{self.metric!r}: only heldout_loss (nats/token at the validation-selected step).")
        r = self.rewind
        if r.startswith("step:"):
            try:
                int(r.split(":", 1)[1])
            except ValueError:
                bad("rewind", f"{r!r}: write step:K with an integer K (e.g. step:20).")
        elif r not in ("init", "pretrained", "lr", "finetune"):
            bad("rewind", f"{r!r}: choose init, step:K, pretrained, lr or finetune.")
        if r == "pretrained" and self.is_tiny:
            bad("rewind", "'pretrained' needs a pretrained model, and the tiny model is trained from scratch: use "
                          "init or step:K (or --model <checkpoint>).")
        if r == "init" and not self.is_tiny:
            bad("rewind", f"{self.model} is pretrained: its starting point is the pretrained weights, so use "
                          f"pretrained (or step:K, lr, finetune).")
        k = self.rewind_step or 0
        longest = self.steps if self.steps is not None else max([self.pilot_steps, *self.pilot_ts])
        if self.steps is not None and self.steps < 1:
            bad("steps", f"T = {self.steps}: training needs at least 1 step.")
        if k < 0 or k >= longest:
            bad("rewind", f"K = {k} must be in [0, T) and T is {longest}: every arm trains steps K..T.")
        if self.needs_pilot:
            if not self.pilot_lrs or any(x <= 0 for x in self.pilot_lrs):
                bad("pilot_lrs", f"{list(self.pilot_lrs)}: give one or more positive learning rates.")
            if self.eval_every < 1:
                bad("eval_every", f"{self.eval_every}: validation needs a positive interval.")
            short = [t for t in self.candidate_ts if t <= k]
            if short:
                bad("pilot_ts", f"candidate T {short[0]} is not after K = {k}: every arm trains steps K..T.")
        elif self.lr <= 0:
            bad("lr", f"{self.lr} must be positive.")
        if self.batch_size < 1 or self.seq_len < 2:
            bad("batch_size/seq_len", f"{self.batch_size}/{self.seq_len}: need >= 1 and >= 2.")
        if self.is_tiny and self.seq_len > self.tiny.max_positions:
            bad("seq_len", f"{self.seq_len} exceeds the tiny model's context {self.tiny.max_positions}.")
        if self.is_tiny and self.tiny.num_layers < 1:
            bad("tiny.num_layers", "0: a model without decoder layers has no linear weights to prune.")
        if self.split_every < 3 or self.validation_index == self.heldout_index or not all(
                0 <= i < self.split_every for i in (self.validation_index, self.heldout_index)):
            bad("split", f"every {self.split_every}, validation {self.validation_index}, held-out "
                         f"{self.heldout_index}: use every >= 3 and two different indices in [0, every); otherwise "
                         f"a set is empty.")
        if self.scope not in ("global", "layer"):
            bad("scope", f"{self.scope!r}: choose global or layer.")
        if self.unit not in ("weights", "heads"):
            bad("unit", f"{self.unit!r}: choose weights or heads.")
        if self.unit == "heads" and self.prune_embeddings:
            bad("prune_embeddings", "head pruning removes attention heads; it cannot also prune the embeddings.")
        if self.recovery not in ("full", "lora"):
            bad("recovery", f"{self.recovery!r}: choose full or lora.")
        if self.recovery == "lora" and self.rewind not in ("pretrained", "lr", "finetune"):
            bad("recovery", "LoRA recovery has no step:K checkpoint to rewind to; use pretrained, lr or finetune.")
        if self.recovery == "lora" and self.stability != "none":
            bad("stability", "the stability test trains full copies; use none with LoRA recovery.")
        if self.stability not in ("none", "dense", "all"):
            bad("stability", f"{self.stability!r}: choose none, dense or all.")
        if self.stability != "none" and self.stability_points < 11:
            bad("stability_points", f"{self.stability_points}: the barrier is read on at least 11 points of the line "
                                    f"(a coarser line misses the peak).")
        if any(x < 0 or x >= longest for x in self.stability_ks):
            bad("stability_ks", f"{list(self.stability_ks)}: every rewind point of the sweep must be in [0, T), T "
                                f"= {longest}.")
        if self.sanity and "random" not in self.arms:
            bad("sanity", "the sanity check compares the random mask at the highest sparsity with dense: keep the "
                          "random arm (or --no-sanity, and the verdict says the check was not run).")
        if not 0.0 < self.power < 1.0 or self.min_seeds < 2:
            bad("power/min_seeds", f"{self.power}/{self.min_seeds}: power in (0, 1), at least 2 seeds.")
        if self.pilot_extend < 0 or self.pilot_seeds < 0 or self.pilot_seeds == 1:
            bad("pilot_extend/pilot_seeds", f"{self.pilot_extend}/{self.pilot_seeds}: extensions >= 0; pilot "
                                            f"seeds 0 (no power analysis) or >= 2.")
        if self.dtype not in ("float32", "fp32"):
            bad("dtype", f"{self.dtype}: training keeps float32 master weights (bf16 weights round small updates "
                         f"away); load float32 and use amp bf16 on CUDA.")
        if self.amp == "bf16" and not self.device.startswith("cuda"):
            bad("amp", "bf16 autocast is for CUDA; on CPU use none.")
        if self.train_windows and self.train_windows < self.batch_size:
            bad("train_windows", f"{self.train_windows} windows cannot fill one batch of {self.batch_size}: use 0 (all) "
                                 f"or at least the batch size.")
        if self.train_windows < 0:
            bad("train_windows", f"{self.train_windows} must be >= 0 (0 = all).")
        if self.stability_seeds < 0 or (self.seeds and self.stability_seeds > len(self.seeds)):
            bad("stability_seeds", f"{self.stability_seeds}: between 0 (every seed) and the {len(self.seeds)} seeds.")
        if self.val_windows < 0 or self.heldout_windows < 0 or self.eval_batch < 1:
            bad("val_windows/heldout_windows/eval_batch", "windows must be >= 0 (0 = all) and the batch >= 1.")
        if "ticket" not in self.arms:
            bad("arms", "the ticket arm is the experiment; keep it.")
        for a in self.arms:
            if a not in ARMS:
                bad("arms", f"unknown arm {a!r}: choose from {', '.join(sorted(ARMS))}.")
            kind = "tiny" if self.is_tiny else "pretrained"
            if kind not in ARMS[a].models:
                bad("arms", f"arm {a!r} is for {', '.join(ARMS[a].models)} models, not a {kind} one.")
            if ARMS[a].rewinds and self.rewind.split(":")[0] not in ARMS[a].rewinds:
                bad("arms", f"arm {a!r} applies to rewind {'/'.join(ARMS[a].rewinds)}, not {self.rewind}.")
        if self.unit == "heads" and any(a in ("magnitude", "wanda") for a in self.arms):
            bad("arms", "the one-shot magnitude and Wanda controls prune weights; use unit weights.")


def default_protocol(model: str = "tiny", **overrides) -> Protocol:
    """The default protocol of a model kind, with any given (non-None) fields replaced.

    Tiny: the default experiment (14 rounds at 20% -> 4.4% density, K = 20, pilot over a 3 x 3 grid of
    learning rates and T up to 1,024 steps (8 epochs of the 1,024 train windows), extended once at an edge, 5 seeds,
    arms ticket/random/reinit at every level, stability of the dense network on every seed and of every level's ticket
    on the first seed from 0, K, T/10 and T/5 on 11 points, the sanity check).
    Pretrained (Chen et al. 2020): iterative magnitude pruning at 20% per round rewound to the pretrained
    weights, on a short fine-tuning budget (see PRETRAINED_NOTE)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if model == "tiny":
        return Protocol(**overrides)
    base = dict(model=model, lr=1e-4, steps=48, batch_size=4, seq_len=128, weight_decay=0.0, warmup_steps=4,
                rewind="pretrained", rounds=3, rate=0.2, target_density=None, seeds=(0, 1),
                arms=("ticket", "random", "magnitude", "wanda", "dense_matched"),
                val_windows=16, heldout_windows=32, eval_batch=4, eval_every=16, stability="none", sanity=True)
    return Protocol(**{**base, **overrides})


PRETRAINED_NOTE = (
    "Pretrained default (Chen et al. 2020): iterative magnitude pruning, 20% of the remaining weights per round for 3 "
    "rounds (51% density), every round rewound to the pretrained weights and fine-tuned 48 steps of 4 x 128 tokens "
    "(24,576 tokens) at lr 1e-4 (prunable linears only); arms ticket / random (equal per-layer sparsity) / one-shot "
    "magnitude / Wanda / compute-matched dense with the same retraining; validation every 16 steps on 16 windows, "
    "32 held-out windows; 2 seeds (they vary the data order; magnitude ties follow the deterministic rule).")
