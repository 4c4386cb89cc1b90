"""Iterative magnitude pruning with rewinding: the lottery-ticket experiment, resumable and deterministic.

Per seed: round 0 trains the dense network; each later round prunes `rate` of the surviving weights
(or heads) of the previous round's trained network by magnitude, resets the survivors to the rewind
point and trains again. Rewind points: `init` (Frankle & Carbin 2019), `step:K` (Frankle et al. 2020),
`pretrained` (Chen et al. 2020); `lr` keeps the trained weights and replays the learning-rate schedule
(Renda et al. 2020); `finetune` keeps them and trains at the final learning rate. Controls at every
round: `reinit` (the ticket's mask, the pruned tensors freshly initialised) and `random` (random masks
with the ticket's per-tensor counts, same start weights as the ticket).

Tickets. Every (arm, seed, round) is a `Ticket` (method "imp") whose dense model is where the seed's
run starts: the seed's step-0 checkpoint `seed-<s>/init/` in the experiment folder for a model trained
from scratch, the pretrained checkpoint itself otherwise. So `load_model(ticket.dense["spec"])` plus
`applied(loaded, ticket)` is exactly the evaluated network: `Ticket.weights` holds every tensor that
training changed, masks cover every prunable tensor (all True in round 0, which is the trained dense
network). Parents: round r of the ticket arm -> round r-1; a control -> the ticket it controls.

Resume. The experiment folder `<state>/experiments/<id>` is named by a hash of every setting that
changes results (not rounds, seeds or controls: re-running with more extends it). Each finished unit
writes its ticket, then `seed-<s>/<arm>-<round>.json`, both atomically. A round depends only on saved
state (rewind checkpoints, the previous ticket) and seeded randomness, so killing the job anywhere and
re-running continues from the last finished unit and ends with the ids an uninterrupted run gives
(bit-exact on CPU with the same thread count; CUDA kernels are not guaranteed bit-exact).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import imp_masks, settings
from .errors import TicketLabError
from .models import LoadedModel, load_model
from .ticket import Ticket
from .tiny import (
    CorpusSplit,
    TinyConfig,
    build_model,
    save_checkpoint,
    split_corpus,
    token_stream,
    tokenizer_dir,
)
from .training import TrainConfig, cpu_state, heldout_loss, load_state, train, windows

FORMAT = "ticketlab-imp/1"
ARMS = ("ticket", "reinit", "random")
CONTROLS = ("reinit", "random")
ProgressFactory = Callable[[str], Callable[[int, int, str], None]]

TINY_TRAIN = TrainConfig(steps=200, batch_size=8, seq_len=128, lr=5e-3)
# SmolLM2-135M on this shared 2-core CPU (one thread): ~10-11 s per step of 4 x 128 tokens and ~0.6 s per
# held-out window, so 48 steps plus 32 windows is about 10 minutes per arm and round.
PRETRAINED_TRAIN = TrainConfig(steps=48, batch_size=4, seq_len=128, lr=1e-4, weight_decay=0.0)


def derive_seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class ImpSettings:
    model: str = "tiny"  # "tiny" (trained from scratch) or any load_model spec
    rate: float = 0.2
    rewind: str = "init"  # init | step:K | pretrained | lr | finetune
    scope: str = "global"  # global | layer
    unit: str = "weights"  # weights | heads
    prune_embeddings: bool = False
    train: TrainConfig = TINY_TRAIN
    eval_windows: int = 0  # 0: every held-out window
    eval_batch: int = 16
    recovery: str = "full"  # full | lora (adapters on the frozen sparse backbone, merged and re-masked)
    lora_rank: int = 8
    tiny: TinyConfig = field(default_factory=TinyConfig)
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def is_tiny(self) -> bool:
        return self.model == "tiny"

    @property
    def rewind_step(self) -> int | None:
        return int(self.rewind.split(":", 1)[1]) if self.rewind.startswith("step:") else None

    def validate(self) -> None:
        if not 0.0 < self.rate < 1.0:
            raise TicketLabError(f"rate {self.rate} is outside (0, 1): it is the fraction of the remaining "
                                 f"weights each round removes (0.2 = 20%).")
        r = self.rewind
        if r.startswith("step:"):
            try:
                k = int(r.split(":", 1)[1])
            except ValueError:
                raise TicketLabError(f"rewind {r!r}: write step:K with an integer K (e.g. step:20).") from None
            if not 0 <= k < self.train.steps:
                raise TicketLabError(f"rewind step {k} is beyond the training length: each round trains "
                                     f"{self.train.steps} steps, so K must be in [0, {self.train.steps}).")
        elif r not in ("init", "pretrained", "lr", "finetune"):
            raise TicketLabError(f"rewind {r!r}: choose init, step:K, pretrained, lr or finetune.")
        if r == "pretrained" and self.is_tiny:
            raise TicketLabError("rewind 'pretrained' needs a pretrained model, and the tiny model is trained from "
                                 "scratch: use --rewind init or step:K (or --model <checkpoint>).")
        if r == "init" and not self.is_tiny:
            raise TicketLabError(f"{self.model} is pretrained: its starting point is the pretrained weights, so use "
                                 f"--rewind pretrained (or step:K, lr, finetune).")
        if self.scope not in ("global", "layer"):
            raise TicketLabError(f"scope {self.scope!r}: choose global or layer.")
        if self.unit not in ("weights", "heads"):
            raise TicketLabError(f"unit {self.unit!r}: choose weights or heads.")
        if self.unit == "heads" and self.prune_embeddings:
            raise TicketLabError("head pruning removes attention heads; it cannot also prune the embeddings.")
        if self.recovery not in ("full", "lora"):
            raise TicketLabError(f"recovery {self.recovery!r}: choose full or lora.")
        if self.recovery == "lora" and self.rewind_step is not None:
            raise TicketLabError("LoRA recovery has no step:K checkpoint to rewind to; use pretrained, lr or finetune.")
        if self.is_tiny and self.train.seq_len > self.tiny.max_positions:
            raise TicketLabError(f"sequence length {self.train.seq_len} exceeds the tiny model's context "
                                 f"{self.tiny.max_positions}.")
        if self.eval_windows < 0 or self.eval_batch < 1:
            raise TicketLabError("eval windows must be >= 0 (0 = all) and the eval batch >= 1.")


@dataclass
class RoundResult:
    experiment: str
    arm: str
    seed: int
    round: int
    ticket: Ticket
    dense: LoadedModel  # the ticket's dense model (for recording: adapter, hash)
    sparsity: float  # over the tensors IMP prunes (ticket.masks)
    heldout_loss: float
    heldout_tokens: int
    train_loss: float | None
    train_seconds: float
    tokens_per_second: float
    rewind: str
    resumed: bool = False
    stability: dict | None = None

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.heldout_loss, 700.0))


@dataclass
class _Seed:
    seed: int
    dir: Path
    loaded: LoadedModel
    dense_state: dict[str, torch.Tensor]
    dense_info: dict
    step_k: dict[str, torch.Tensor] | None = None


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({n: t.contiguous() for n, t in tensors.items()}, str(tmp))
    os.replace(tmp, path)


class ImpExperiment:
    def __init__(self, config: ImpSettings, root: Path | None = None):
        config.validate()
        self.config = config
        self.split: CorpusSplit = split_corpus()
        self._pretrained: LoadedModel | None = None
        self._pretrained_state: dict[str, torch.Tensor] | None = None
        if not config.is_tiny:
            self._pretrained = load_model(config.model, device=config.device, dtype=config.dtype)
            self._pretrained_state = cpu_state(self._pretrained.model)  # pristine: seeds train the model in place
        self.record = self._settings_record()
        digest = hashlib.sha256(json.dumps(self.record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        self.id = "imp-" + digest[:12]
        self.dir = Path(root or settings.state_dir() / "experiments") / self.id
        tok_source = tokenizer_dir(self.dir, config.tiny, self.split) if config.is_tiny else None
        self._tokenizer_source = tok_source
        tokenizer = self._pretrained.tokenizer if self._pretrained else _load_tokenizer(tok_source)
        seq = config.train.seq_len
        self.train_data = windows(token_stream(tokenizer, self.split.train), seq)
        held = windows(token_stream(tokenizer, self.split.heldout), seq)
        if config.eval_windows and config.eval_windows < held.shape[0]:
            idx = torch.linspace(0, held.shape[0] - 1, config.eval_windows).round().long().unique()
            held = held[idx]
        self.heldout = held
        self.data_record = {**self.split.record, "seq_len": seq, "train_windows": int(self.train_data.shape[0]),
                            "heldout_windows": int(held.shape[0])}

    # --- identity --------------------------------------------------------------------------------
    def _settings_record(self) -> dict:
        c = self.config
        if c.is_tiny:
            model = {"tiny": c.tiny.to_dict()}
        else:  # the weights identify the model; a local directory's location must not change the id
            spec = self._pretrained.spec
            model = {"spec": Path(spec).name if os.path.isabs(spec) else spec,
                     "weights_sha256": self._pretrained.weights_sha256}
        return {"format": FORMAT, "model": model, "rate": c.rate, "rewind": c.rewind, "scope": c.scope,
                "unit": c.unit, "prune_embeddings": c.prune_embeddings,
                "prunable": "attention and MLP projection weights" + (" and the input embedding"
                                                                        if c.prune_embeddings else ""),
                "train": c.train.to_dict(),
                "train_scope": "all" if c.is_tiny else "prunable", "eval_windows": c.eval_windows,
                "recovery": c.recovery, "lora_rank": c.lora_rank if c.recovery == "lora" else None,
                "data": self.split.record, "device": "cuda" if c.device.startswith("cuda") else c.device,
                "dtype": c.dtype}

    @property
    def ticket_params(self) -> dict:
        return {k: v for k, v in self.record.items() if k not in ("data", "format")}

    def write_settings(self) -> None:
        _write_json(self.dir / "settings.json", {"id": self.id, **self.record, "data": self.data_record})

    # --- per seed --------------------------------------------------------------------------------
    def _seed(self, seed: int) -> _Seed:
        c = self.config
        d = self.dir / f"seed-{seed}"
        if c.is_tiny:
            init_dir = d / "init"
            if not (init_dir / "config.json").exists():
                model = build_model(c.tiny, derive_seed("init", seed), eos_id=0)
                save_checkpoint(model, self._tokenizer_source, init_dir)
            loaded = load_model(str(init_dir), device=c.device, dtype=c.dtype)
        else:
            loaded = self._pretrained
        marker = d / "dense.json"
        if marker.exists():
            known = json.loads(marker.read_text())["weights_sha256"]
            if known != loaded.weights_sha256:
                raise TicketLabError(f"the dense checkpoint of {d} changed since the experiment started "
                                     f"({known[:12]} -> {loaded.weights_sha256[:12]}); delete {d} to start the "
                                     f"seed over.")
        else:
            _write_json(marker, {"weights_sha256": loaded.weights_sha256, "spec": loaded.spec})
        info = {"spec": loaded.spec, "weights_sha256": loaded.weights_sha256, "family": loaded.family,
                "model_type": loaded.model.config.model_type}
        state = cpu_state(loaded.model) if c.is_tiny else self._pretrained_state
        return _Seed(seed, d, loaded, state, info)

    def _step_k(self, s: _Seed) -> dict[str, torch.Tensor]:
        if s.step_k is None:
            from safetensors.torch import load_file

            path = s.dir / f"step-{self.config.rewind_step}.safetensors"
            if not path.exists():
                raise TicketLabError(f"rewind checkpoint {path} is missing although round 0 is recorded as done; "
                                     f"delete {s.dir} to recompute that seed.")
            s.step_k = load_file(str(path))
        return s.step_k

    # --- one unit: (arm, seed, round) ------------------------------------------------------------
    def _trained_state(self, s: _Seed, ticket: Ticket) -> dict[str, torch.Tensor]:
        return {n: ticket.weights.get(n, t) for n, t in s.dense_state.items()}

    def _names(self, s: _Seed) -> list[str]:
        return imp_masks.prunable_names(s.loaded, self.config.prune_embeddings)

    def _masks(self, s: _Seed, arm: str, rnd: int, prev: Ticket | None, base: Ticket | None):
        c, adapter, names = self.config, s.loaded.adapter, self._names(s)
        if rnd == 0:
            return imp_masks.dense_masks(s.dense_state, names), None
        if arm == "reinit":
            return base.masks, base.structure
        shapes = {n: s.dense_state[n].shape for n in names}
        if arm == "random":
            if c.unit == "heads":
                removed = imp_masks.random_heads_like(adapter, _removed(base), derive_seed("random", s.seed, rnd))
                return imp_masks.heads_to_masks(adapter, names, removed, shapes)
            return imp_masks.random_like(base.masks, derive_seed("random", s.seed, rnd)), None
        weights = self._trained_state(s, prev)
        if c.unit == "heads":
            removed = imp_masks.head_step(adapter, weights, _removed(prev), c.rate, c.scope)
            return imp_masks.heads_to_masks(adapter, names, removed, shapes)
        return imp_masks.magnitude_step(weights, prev.masks, c.rate, c.scope), None

    def _start(self, s: _Seed, arm: str, rnd: int, prev: Ticket | None) -> dict[str, torch.Tensor]:
        c = self.config
        if rnd == 0 or c.rewind in ("init", "pretrained"):
            start = s.dense_state
        elif c.rewind_step is not None:
            start = self._step_k(s)
        else:  # lr, finetune: continue from the previous round's trained weights
            start = self._trained_state(s, prev)
        if arm == "reinit" and rnd > 0:
            std = float(getattr(s.loaded.model.config, "initializer_range", 0.02))
            g = torch.Generator().manual_seed(derive_seed("reinit", s.seed, rnd))
            start = dict(start)
            for n in self._names(s):
                start[n] = torch.randn(start[n].shape, generator=g) * std
        return start

    def _train_config(self, rnd: int) -> TrainConfig:
        return self.config.train.finetune() if (self.config.rewind == "finetune" and rnd > 0) else self.config.train

    def _train(self, s: _Seed, arm: str, rnd: int, masks, start, progress) -> tuple[object, dict | None]:
        c, model = self.config, s.loaded.model
        load_state(model, start)
        config = self._train_config(rnd)
        data_seed = derive_seed("data", s.seed)
        trainable = None if c.is_tiny else self._names(s)
        if c.recovery == "lora":
            from .lora import lora_train

            modules = [ref.module_name for ref in s.loaded.adapter.linears()]
            merged, result = lora_train(model, modules, masks, self.train_data, config, rank=c.lora_rank,
                                        seed=derive_seed("lora", s.seed, rnd, arm), data_seed=data_seed,
                                        progress=progress)
            if merged is not model:
                raise RuntimeError("peft returned a different model object after merging")
            return result, None
        want_k = c.rewind_step if (rnd == 0 and c.rewind_step is not None) else None
        result = train(model, self.train_data, config, masks=masks, data_seed=data_seed, trainable=trainable,
                       checkpoint_steps=[want_k] if want_k is not None else [], progress=progress)
        return result, (result.checkpoints.get(want_k) if want_k is not None else None)

    def _unit(self, s: _Seed, arm: str, rnd: int, prev: Ticket | None, base: Ticket | None,
              progress: ProgressFactory | None) -> RoundResult:
        c = self.config
        record_path = s.dir / f"{arm}-{rnd}.json"
        if record_path.exists():
            rec = json.loads(record_path.read_text())
            path = settings.tickets_dir() / rec["ticket"]
            if (path / "ticket.json").exists():
                if c.rewind_step is not None and rnd == 0:
                    self._step_k(s)  # a recorded round 0 promises its rewind checkpoint
                ticket = Ticket.load(path)
                return self._result(s, arm, rnd, ticket, rec, resumed=True)
        masks, structure = self._masks(s, arm, rnd, prev, base)
        start = self._start(s, arm, rnd, prev)
        bar = progress(f"seed {s.seed} round {rnd} {arm}") if progress else None
        try:
            result, step_k = self._train(s, arm, rnd, masks, start, bar)
            loss, count = heldout_loss(s.loaded.model, self.heldout, c.eval_batch)
        finally:
            getattr(bar, "close", lambda: None)()
        if step_k is not None:
            _save_tensors(s.dir / f"step-{c.rewind_step}.safetensors", step_k)
            s.step_k = step_k
        trained = cpu_state(s.loaded.model)
        changed = {n: t for n, t in trained.items() if not torch.equal(t, s.dense_state[n])}
        parent = prev.id if (arm == "ticket" and prev is not None) else (base.id if base is not None else None)
        ticket = Ticket(masks=masks, dense=s.dense_info, method="imp", params=self.ticket_params,
                        target_sparsity=round(1.0 - (1.0 - c.rate) ** rnd, 12), seed=s.seed,
                        calibration=self.data_record, parent=parent,
                        lineage={"experiment": self.id, "arm": arm, "seed": s.seed, "round": rnd, "rewind": c.rewind},
                        structure=structure, weights=changed, name=f"imp {self.id} {arm} seed {s.seed} round {rnd}")
        ticket.save()
        rec = {"ticket": ticket.id, "heldout_loss": loss, "heldout_tokens": count, "train_loss": result.final_loss,
               "train_seconds": result.seconds, "tokens_per_second": result.tokens_per_second,
               "sparsity": ticket.achieved_sparsity}
        _write_json(record_path, rec)
        return self._result(s, arm, rnd, ticket, rec, resumed=False)

    def _result(self, s: _Seed, arm: str, rnd: int, ticket: Ticket, rec: dict, resumed: bool) -> RoundResult:
        lin = ticket.lineage
        if (lin.get("experiment"), lin.get("arm"), lin.get("seed"), lin.get("round")) != (self.id, arm, s.seed, rnd):
            raise TicketLabError(f"{s.dir / f'{arm}-{rnd}.json'} points to ticket {ticket.id}, which belongs to "
                                 f"{lin}; the experiment folder is damaged: delete {s.dir} to recompute the seed.")
        return RoundResult(self.id, arm, s.seed, rnd, ticket, s.loaded, ticket.achieved_sparsity, rec["heldout_loss"],
                           rec["heldout_tokens"], rec.get("train_loss"), rec.get("train_seconds", 0.0),
                           rec.get("tokens_per_second", 0.0), self.config.rewind, resumed)

    def _stability(self, s: _Seed, rnd: int, ticket: Ticket, prev: Ticket | None,
                   progress: ProgressFactory | None) -> dict:
        from .stability import stability

        path = s.dir / f"stability-ticket-{rnd}.json"
        if path.exists():
            return json.loads(path.read_text())
        if self.config.recovery == "lora":
            raise TicketLabError("the stability test trains full copies; it is not available with --recovery lora.")
        start = self._start(s, "ticket", rnd, prev)
        bar = progress(f"seed {s.seed} round {rnd} stability") if progress else None
        try:
            out = stability(s.loaded.model, start, ticket.masks, self.train_data, self.heldout, self._train_config(rnd),
                            (derive_seed("stability", s.seed, rnd, 0), derive_seed("stability", s.seed, rnd, 1)),
                            trainable=None if self.config.is_tiny else self._names(s),
                            eval_batch=self.config.eval_batch, progress=bar)
        finally:
            getattr(bar, "close", lambda: None)()
        out["rewind"] = self.config.rewind
        _write_json(path, out)
        return out

    # --- the experiment --------------------------------------------------------------------------
    def run(self, rounds: int, seeds: list[int], controls: tuple[str, ...] = CONTROLS, *, stability: bool = False,
            on_round: Callable[[RoundResult], None] | None = None,
            progress: ProgressFactory | None = None) -> list[RoundResult]:
        if rounds < 1:
            raise TicketLabError(f"rounds must be >= 1 (got {rounds}).")
        if not seeds or len(set(seeds)) != len(seeds):
            raise TicketLabError(f"give one or more distinct seeds (got {seeds}).")
        bad = [a for a in controls if a not in CONTROLS]
        if bad:
            raise TicketLabError(f"unknown control {bad[0]!r}: choose from {', '.join(CONTROLS)}.")
        self.write_settings()
        out: list[RoundResult] = []

        def emit(r: RoundResult) -> None:
            out.append(r)
            if on_round:
                on_round(r)

        for seed in seeds:
            s = self._seed(seed)
            prev: Ticket | None = None
            for rnd in range(rounds + 1):
                res = self._unit(s, "ticket", rnd, prev, None, progress)
                if stability:
                    res.stability = self._stability(s, rnd, res.ticket, prev, progress)
                emit(res)
                if rnd > 0:
                    for arm in (a for a in CONTROLS if a in controls):
                        emit(self._unit(s, arm, rnd, prev, res.ticket, progress))
                prev = res.ticket
            load_state(s.loaded.model, s.dense_state)  # hand back the dense model as loaded
        return out


def _removed(ticket: Ticket) -> dict[int, list[int]]:
    heads = (ticket.structure or {}).get("removed_heads", {})
    return {int(k): list(v) for k, v in heads.items()}


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def default_train(model: str, **overrides) -> TrainConfig:
    """The default training budget for a model kind, with any given fields replaced."""
    base = TINY_TRAIN if model == "tiny" else PRETRAINED_TRAIN
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
