"""Iterative magnitude pruning with rewinding under a pre-registered protocol: resumable, deterministic.

Per seed, with weight rewinding to K > 0 (Frankle et al. 2020; open_lth's order): a continuous dense run
0..T (`dense_continuous`, reported beside) keeps the rewind points: weights AND AdamW's state at K (and
at every K of the stability sweep). Level 0, the dense baseline, resumes from the step-K checkpoint by
the same procedure as every pruned level: T - K steps at the continuous run's learning rates, with the
optimizer state it had there, so resuming is not a perturbation. Each later round prunes `rate` of the
surviving weights (or heads) of the previous level's ticket by magnitude, and every arm of
`pruning.lottery.arms` (the ticket, its controls) resumes at K the same way. `init` (= step:0) has no
history to carry: level 0 is the continuous run. `pretrained` (Chen et al. 2020) restarts the
fine-tuning schedule from the pretrained weights; `lr` (Renda et al. 2020) keeps the trained weights and
replays the schedule; `finetune` keeps them at the final learning rate.

Data orders. All arms of one seed and round retrain with the same order (`retrain_seed`: paired), which
differs from the order of the run the round's mask came from (round r - 1's) and from the continuous
run's; the two stability copies use two further orders. Every run is scored on the validation set every
`eval_every` steps and left at its best step; that network's held-out loss is the result.

The pilot (`pilot.py`) tunes lr and T and measures the seed noise; `stats.seeds_for_power` turns it into
the power of the seeds given (a warning with the achieved power when they are too few). Stability: two
copies of each level's ticket (stability "all"; "dense": level 0 only) from every K of the sweep, 11+
points on the line; the dense network on every seed, the sparse levels on the first `stability_seeds`.

Tickets. Every unit is a `Ticket` (method "imp") whose dense model is the seed's step-0 checkpoint
`seed-<s>/init/` (tiny) or the pretrained checkpoint: `load_model(ticket.dense["spec"])` plus
`applied(loaded, ticket)` is exactly the evaluated network. Parents: the ticket at round r -> r-1; a
control -> the ticket it controls.

Resume. The folder `<state>/experiments/<id>` is named by the protocol's hash. Each finished unit
writes its ticket, then `seed-<s>/<arm>-<round>.json`, both atomically; the pilot writes
`pilot.json`. Everything depends only on saved state and seeded randomness, so a run killed anywhere
(kill -9 included) and started again continues and ends with the ids an uninterrupted run gives
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

from .. import settings
from ..adapters import adapter_for
from ..durable import atomic_write_bytes, atomic_write_json
from ..errors import TicketLabError
from ..models import LoadedModel, load_model
from ..ticket import Ticket
from . import masks as imp_masks
from .arms import ARMS, ArmContext, Plan
from .pilot import seed_spread, tune
from .processes import check_processes, main_first, main_process, start_processes
from .protocol import AUTO_SEEDS_CAP, Protocol
from .stats import PowerPlan, seeds_for_power
from .tiny import (
    CorpusSplit,
    build_model,
    copy_tokenizer,
    save_checkpoint,
    shared_tokenizer,
    split_corpus,
    token_stream,
)
from .training import (
    TrainConfig,
    TrainResult,
    cpu_state,
    heldout_loss,
    load_state,
    train,
    windows,
)

FORMAT = "ticketlab-imp/3"
ProgressFactory = Callable[[str], Callable[[int, int, str], None]]


def derive_seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


def data_seed(seed: int, arm: str, rnd: int, *extra) -> int:
    """The data order of one run named by (seed, what, round[, ...]): stability copies, the pretraining run."""
    return derive_seed("data", seed, arm, rnd, *extra)


def retrain_seed(seed: int, rnd: int) -> int:
    """The data order every arm of (seed, round) retrains with: shared, so the arms are paired; it differs from
    round r - 1's, the run the round's mask was found with, and from the pretraining run's."""
    return derive_seed("data", seed, "retrain", rnd)


def pretrain_seed(seed: int) -> int:
    """The order of the continuous dense run 0..T that provides the rewind points."""
    return data_seed(seed, "dense_continuous", 0)


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
    record: dict = field(default_factory=dict)  # steps, lrs, curve, best_step, data_seed, start_step ...

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.heldout_loss, 700.0))

    @property
    def steps(self) -> list[int]:
        return self.record.get("steps", [])

    @property
    def lrs(self) -> list[float]:
        return self.record.get("lrs", [])


@dataclass
class _Seed:
    seed: int
    dir: Path
    loaded: LoadedModel
    dense_state: dict[str, torch.Tensor]  # where the seed starts: its init (tiny) or the pretrained weights
    dense_info: dict
    checkpoints: dict[int, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]] = field(
        default_factory=dict)  # step -> (weights, AdamW state) of the continuous dense run
    lineage: dict[str, Ticket] = field(default_factory=dict)  # arm -> its last finished round


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save({n: t.contiguous() for n, t in tensors.items()}))


class ImpExperiment:
    """One experiment = one protocol. Everything that can be refused is refused here, before any training
    and before anything is written."""

    def __init__(self, protocol: Protocol, root: Path | None = None):
        protocol.validate()
        check_processes(protocol.batch_size)  # accelerate launch --num_processes N must split every batch
        start_processes(torch.device(protocol.device))  # accelerate launch: join the group (gloo on CPU)
        self.main = main_process()  # only rank 0 writes; every process computes the same numbers
        self.protocol = protocol
        self._pretrained: LoadedModel | None = None
        self._pretrained_state: dict[str, torch.Tensor] | None = None
        identity = None
        if not protocol.is_tiny:
            self._pretrained = load_model(protocol.model, device=protocol.device, dtype=protocol.dtype)
            self._pretrained_state = cpu_state(self._pretrained.model)
            if not imp_masks.prunable_names(self._pretrained, protocol.prune_embeddings):
                raise TicketLabError(f"protocol setting model: {protocol.model} has no prunable linear layers the "
                                     f"adapter knows; choose a Llama-family or GPT-2 checkpoint.")
            spec = self._pretrained.spec
            identity = {"spec": Path(spec).name if os.path.isabs(spec) else spec,
                        "weights_sha256": self._pretrained.weights_sha256}
        self.split: CorpusSplit = split_corpus(protocol.corpora, protocol.split_every, protocol.validation_index,
                                               protocol.heldout_index)
        base = Path(root or settings.state_dir() / "experiments")
        shared, self.tokenizer_sha256 = main_first(lambda: shared_tokenizer(base, protocol.tiny, self.split)) \
            if protocol.is_tiny else (None, None)
        self.id = "imp-" + protocol.digest(identity, self.tokenizer_sha256)[:12]
        self.dir = base / self.id
        self.model_identity = identity
        self._stored_protocol_check()
        tok_source = main_first(lambda: copy_tokenizer(shared, self.dir / "tokenizer")) if shared else None
        self._tokenizer_source = tok_source
        tokenizer = self._pretrained.tokenizer if self._pretrained else _load_tokenizer(tok_source)
        seq = protocol.seq_len
        self.train_data = _subset(windows(token_stream(tokenizer, self.split.train), seq), protocol.train_windows)
        self.validation = _subset(windows(token_stream(tokenizer, self.split.validation), seq), protocol.val_windows)
        self.heldout = _subset(windows(token_stream(tokenizer, self.split.heldout), seq), protocol.heldout_windows)
        self.data_record = {**self.split.record, "seq_len": seq, "train_windows": int(self.train_data.shape[0]),
                            "validation_windows": int(self.validation.shape[0]),
                            "heldout_windows": int(self.heldout.shape[0])}
        self.resolved: Protocol | None = None if protocol.needs_pilot else protocol
        self.power: PowerPlan | None = None
        self.warnings: list[str] = []

    derive_seed = staticmethod(derive_seed)

    # --- identity --------------------------------------------------------------------------------
    def _stored_protocol_check(self) -> None:
        path = self.dir / "protocol.json"
        if path.exists():
            stored = json.loads(path.read_text())["protocol"]
            if stored != self.protocol.to_dict():
                raise TicketLabError(f"{path} holds a different protocol under the same id; the folder is damaged: "
                                     f"move it away to start over.")

    @property
    def ticket_params(self) -> dict:
        return {"protocol": self.id, "rewind": self.protocol.rewind, "rate": self.protocol.rate,
                "scope": self.protocol.scope, "unit": self.protocol.unit, "lr": self.resolved.lr,
                "steps": self.resolved.steps}

    @property
    def train_config(self) -> TrainConfig:
        return self.resolved.train_config()

    def write_protocol(self) -> None:
        if not self.main:
            return
        body = {"id": self.id, "format": FORMAT, "protocol": self.protocol.to_dict(),
                "model_identity": self.model_identity, "data": self.data_record,
                "arms": {a: ARMS[a].description for a in self.protocol.arms}}
        body["tokenizer_sha256"] = self.tokenizer_sha256
        if self.resolved is not None:
            body["resolved"] = {"lr": self.resolved.lr, "steps": self.resolved.steps,
                                "seeds": list(self.resolved.seeds)}
            body["budget"] = self.budget()
        if self.power is not None:
            body["power"] = self.power.to_dict()
        atomic_write_json(self.dir / "protocol.json", body, indent=2, sort_keys=True)

    def budget(self) -> dict:
        """Parameters, tokens per parameter and epochs of one full-length run (reported beside the verdict)."""
        p = self.protocol
        model = build_model(p.tiny, 0, eos_id=0) if p.is_tiny else self._pretrained.model
        params = sum(t.numel() for t in model.parameters())
        emb = model.get_input_embeddings().weight.numel()
        linears = [ref.name for ref in adapter_for(model).linears()]
        named = dict(model.named_parameters())
        prunable = sum(named[n].numel() for n in linears)
        tokens = self.resolved.steps * p.batch_size * p.seq_len
        train_tokens = int(self.train_data.numel())
        return {"parameters": params, "embedding_parameters": emb, "prunable_parameters": prunable,
                "train_tokens": train_tokens, "tokens_per_run": tokens, "epochs": tokens / train_tokens,
                "tokens_per_parameter": tokens / params, "prunable_share": prunable / params}

    # --- helpers ---------------------------------------------------------------------------------
    def _val(self, model) -> float:
        return heldout_loss(model, self.validation, self.protocol.eval_batch)[0]

    def _names(self, s: _Seed) -> list[str]:
        return imp_masks.prunable_names(s.loaded, self.protocol.prune_embeddings)

    def _trainable(self, s: _Seed) -> list[str] | None:
        return None if self.protocol.is_tiny else self._names(s)

    def _fresh_init(self, seed: int) -> dict[str, torch.Tensor]:
        return cpu_state(build_model(self.protocol.tiny, seed, eos_id=0))

    # --- the pilot -------------------------------------------------------------------------------
    def pilot(self, progress: ProgressFactory | None = None) -> dict:
        """The (lr, T) grid (pruning.lottery.pilot.tune) unless both are fixed, then the seed noise for the power
        analysis (tiny models, `pilot_seeds` >= 2); stored as pilot.json and reused on resume."""
        p = self.protocol
        path = self.dir / "pilot.json"
        if path.exists():
            out = json.loads(path.read_text())
        else:
            out = tune(self, progress) if p.needs_pilot else {}
            if p.is_tiny and p.pilot_seeds >= 2:
                out.update(seed_spread(self, out.get("lr", p.lr), out.get("steps", p.steps), progress))
            if out and self.main:
                atomic_write_json(path, out, indent=2, sort_keys=True)
        self.resolved = p.resolved(out.get("lr", p.lr), out.get("steps", p.steps))
        if "seed_sd" in out:
            given = len(p.seeds)
            if p.auto_seeds:  # as many seeds as the power analysis needs, capped
                needed = seeds_for_power(out["seed_sd"], p.delta, 1.0 - p.confidence, p.power, p.min_seeds,
                                         source="the pilot's seed pairs").needed
                given = min(needed or AUTO_SEEDS_CAP, AUTO_SEEDS_CAP)
                self.resolved = replace(self.resolved, seeds=tuple(range(given)))
                if needed is None or needed > AUTO_SEEDS_CAP:
                    self.warnings.append(f"seeds auto: the power analysis needs {needed or 'more than 200'} seeds; "
                                         f"running the cap of {AUTO_SEEDS_CAP} (a larger delta or a quieter regime "
                                         f"needs fewer).")
            self.power = seeds_for_power(out["seed_sd"], p.delta, 1.0 - p.confidence, p.power, p.min_seeds,
                                         given=given, source="the pilot's seed pairs")
            if self.power.warning():
                self.warnings.append(self.power.warning())
        return out

    # --- per seed --------------------------------------------------------------------------------
    def _seed(self, seed: int) -> _Seed:
        p = self.protocol
        d = self.dir / f"seed-{seed}"
        if p.is_tiny:
            init_dir = d / "init"
            def init() -> None:
                if not (init_dir / "config.json").exists():
                    save_checkpoint(build_model(p.tiny, derive_seed("init", seed), eos_id=0), self._tokenizer_source,
                                    init_dir)
            main_first(init)
            loaded = load_model(str(init_dir), device=p.device, dtype=p.dtype)
        else:
            loaded = self._pretrained
            load_state(loaded.model, self._pretrained_state)
        marker = d / "dense.json"
        if marker.exists():
            known = json.loads(marker.read_text())["weights_sha256"]
            if known != loaded.weights_sha256:
                raise TicketLabError(f"the dense checkpoint of {d} changed since the experiment started "
                                     f"({known[:12]} -> {loaded.weights_sha256[:12]}); delete {d} to start the "
                                     f"seed over.")
        elif self.main:
            atomic_write_json(marker, {"weights_sha256": loaded.weights_sha256, "spec": loaded.spec})
        info = {"spec": loaded.spec, "weights_sha256": loaded.weights_sha256, "family": loaded.family,
                "model_type": loaded.model.config.model_type}
        state = cpu_state(loaded.model) if p.is_tiny else self._pretrained_state
        return _Seed(seed, d, loaded, state, info)

    def _checkpoint(self, s: _Seed, step: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """Weights and AdamW state of the continuous dense run at `step` (0: the seed's start, no history)."""
        if step == 0:
            return s.dense_state, None
        if step not in s.checkpoints:
            from safetensors.torch import load_file

            path, opt = s.dir / f"step-{step}.safetensors", s.dir / f"step-{step}.adamw.safetensors"
            if not (path.exists() and opt.exists()):
                raise TicketLabError(f"rewind checkpoint {path} (or its optimizer state) is missing although the "
                                     f"dense run is recorded as done; delete {s.dir} to recompute that seed.")
            s.checkpoints[step] = (load_file(str(path)), load_file(str(opt)))
        return s.checkpoints[step]

    def _rewind_state(self, s: _Seed) -> tuple[dict[str, torch.Tensor], int, dict[str, torch.Tensor] | None]:
        k = self.protocol.rewind_step
        if k is None:
            return s.dense_state, 0, None
        weights, opt = self._checkpoint(s, k)
        return weights, k, opt

    def _full(self, s: _Seed, ticket: Ticket) -> dict[str, torch.Tensor]:
        return {n: ticket.weights.get(n, t) for n, t in s.dense_state.items()}

    # --- one unit --------------------------------------------------------------------------------
    def _run_unit(self, s: _Seed, arm: str, rnd: int, plan: Plan, parent: str | None,
                  progress: ProgressFactory | None, dseed: int, checkpoints: tuple[int, ...] = ()) -> RoundResult:
        p, model = self.protocol, s.loaded.model
        record_path = s.dir / f"{arm}-{rnd}.json"
        if record_path.exists():
            rec = json.loads(record_path.read_text())
            path = settings.tickets_dir() / rec["ticket"]
            if (path / "ticket.json").exists():
                for step in checkpoints:
                    self._checkpoint(s, step)  # a recorded dense run promises its rewind checkpoints
                return self._result(s, arm, rnd, Ticket.load(path), rec, resumed=True)
        load_state(model, plan.start)
        bar = progress(f"seed {s.seed} round {rnd} {arm}") if progress else None
        try:
            if p.recovery == "lora":
                from .lora import lora_train

                modules = [ref.module_name for ref in s.loaded.adapter.linears()]
                merged, result = lora_train(model, modules, plan.masks, self.train_data, plan.config,
                                            rank=p.lora_rank, seed=derive_seed("lora", s.seed, rnd, arm),
                                            data_seed=dseed, progress=bar)
                if merged is not model:
                    raise RuntimeError("peft returned a different model object after merging")
            else:
                result = train(model, self.train_data, plan.config, masks=plan.masks, data_seed=dseed,
                               trainable=self._trainable(s), checkpoint_steps=checkpoints,
                               start_step=plan.start_step, evaluate=self._val, eval_every=p.eval_every, progress=bar,
                               optimizer_state=plan.optimizer)
            loss, count = heldout_loss(model, self.heldout, p.eval_batch)
        finally:
            getattr(bar, "close", lambda: None)()
        for step in checkpoints:
            if self.main:
                _save_tensors(s.dir / f"step-{step}.adamw.safetensors", result.optimizer_states[step])
                _save_tensors(s.dir / f"step-{step}.safetensors", result.checkpoints[step])
            s.checkpoints[step] = (result.checkpoints[step], result.optimizer_states[step])
        trained = cpu_state(model)
        changed = {n: t for n, t in trained.items() if not torch.equal(t, s.dense_state[n])}
        ticket = Ticket(masks=plan.masks, dense=s.dense_info, method="imp", params=self.ticket_params,
                        target_sparsity=round(1.0 - (1.0 - p.rate) ** rnd, 12),
                        seed=s.seed, calibration=self.data_record, parent=parent,
                        lineage={"experiment": self.id, "arm": arm, "seed": s.seed, "round": rnd, "rewind": p.rewind},
                        structure=plan.structure, weights=changed,
                        name=f"imp {self.id} {arm} seed {s.seed} round {rnd}")
        if self.main:
            ticket.save()
        rec = {"ticket": ticket.id, "heldout_loss": loss, "heldout_tokens": count, "train_loss": result.final_loss,
               "train_seconds": result.seconds, "tokens_per_second": result.tokens_per_second,
               "sparsity": ticket.achieved_sparsity, **_train_record(result, plan, dseed)}
        if self.main:
            atomic_write_json(record_path, rec)
        return self._result(s, arm, rnd, ticket, rec, resumed=False)

    def _result(self, s: _Seed, arm: str, rnd: int, ticket: Ticket, rec: dict, resumed: bool) -> RoundResult:
        lin = ticket.lineage
        if (lin.get("experiment"), lin.get("arm"), lin.get("seed"), lin.get("round")) != (self.id, arm, s.seed, rnd):
            raise TicketLabError(f"{s.dir / f'{arm}-{rnd}.json'} points to ticket {ticket.id}, which belongs to "
                                 f"{lin}; the experiment folder is damaged: delete {s.dir} to recompute the seed.")
        return RoundResult(self.id, arm, s.seed, rnd, ticket, s.loaded, ticket.achieved_sparsity, rec["heldout_loss"],
                           rec["heldout_tokens"], rec.get("train_loss"), rec.get("train_seconds", 0.0),
                           rec.get("tokens_per_second", 0.0), self.protocol.rewind, resumed, record=rec)

    def _context(self, s: _Seed, rnd: int, masks: dict[str, torch.Tensor], structure: dict | None,
                 arm: str) -> ArmContext:
        start, k, opt = self._rewind_state(s)
        # an arm continues its own lineage; round 0 of every lineage but reinit's is the shared dense network
        own = s.lineage.get(arm) or (s.lineage.get("ticket") if arm != "reinit" and rnd == 1 else None)
        return ArmContext(
            protocol=self.protocol, seed=s.seed, round=rnd, config=self.train_config, names=self._names(s),
            init_state=s.dense_state, rewind_state=start, rewind_step=k, ticket_masks=masks,
            ticket_structure=structure,
            own_prev_state=self._full(s, own) if own else None, own_prev_masks=own.masks if own else None,
            adapter=s.loaded.adapter, derive_seed=derive_seed, fresh_init=self._fresh_init,
            oneshot=lambda method, sparsity: self._oneshot(s, method, sparsity), rewind_optimizer=opt)

    def _oneshot(self, s: _Seed, method: str, sparsity: float) -> tuple[dict[str, torch.Tensor], dict | None]:
        from ..calibration import CalibrationSet
        from ..prune import make_ticket

        load_state(s.loaded.model, s.dense_state)
        calib = CalibrationSet(self.train_data[:32].clone(), {"source": "imp train split", "windows": 32})
        t = make_ticket(s.loaded, method, sparsity, calib=calib, seed=s.seed)
        return t.masks, t.structure

    def _ticket_masks(self, s: _Seed, prev: Ticket) -> tuple[dict[str, torch.Tensor], dict | None]:
        p, adapter, names = self.protocol, s.loaded.adapter, self._names(s)
        weights = self._full(s, prev)
        if p.unit == "heads":
            shapes = {n: s.dense_state[n].shape for n in names}
            removed = imp_masks.head_step(adapter, weights, _removed(prev), p.rate, p.scope)
            return imp_masks.heads_to_masks(adapter, names, removed, shapes)
        return imp_masks.magnitude_step(weights, prev.masks, p.rate, p.scope), None

    def _dense_plan(self, s: _Seed, start: dict[str, torch.Tensor] | None = None, start_step: int = 0,
                    optimizer: dict[str, torch.Tensor] | None = None) -> Plan:
        return Plan(imp_masks.dense_masks(s.dense_state, self._names(s)),
                    start if start is not None else s.dense_state, start_step, self.train_config, optimizer=optimizer)

    # --- stability -------------------------------------------------------------------------------
    def _stability(self, s: _Seed, rnd: int, ticket: Ticket, from_step: int,
                   progress: ProgressFactory | None) -> dict:
        from .stability import stability

        path = s.dir / f"stability-{rnd}-k{from_step}.json"
        if path.exists():
            return json.loads(path.read_text())
        start, opt = self._checkpoint(s, from_step)
        bar = progress(f"seed {s.seed} round {rnd} stability from step {from_step}") if progress else None
        try:
            out = stability(s.loaded.model, start, ticket.masks, self.train_data, self.validation, self.train_config,
                            (data_seed(s.seed, "stability", rnd, from_step, 0),
                             data_seed(s.seed, "stability", rnd, from_step, 1)),
                            trainable=self._trainable(s), points=self.protocol.stability_points,
                            eval_batch=self.protocol.eval_batch, start_step=from_step, progress=bar,
                            optimizer_state=opt)
        finally:
            getattr(bar, "close", lambda: None)()
        out.update(rewind_step=from_step, round=rnd, seed=s.seed, evaluated_on="validation")
        if self.main:
            atomic_write_json(path, out)
        return out

    # --- the experiment --------------------------------------------------------------------------
    def run(self, *, on_round: Callable[[RoundResult], None] | None = None,
            progress: ProgressFactory | None = None, warn: Callable[[str], None] | None = None) -> list[RoundResult]:
        """Pilot, then every seed's units in order; `warn` hears the power analysis' warning before the main runs."""
        p = self.protocol
        self.write_protocol()
        self.pilot(progress)
        self.write_protocol()
        for w in self.warnings if warn else ():
            warn(w)
        out: list[RoundResult] = []

        def emit(r: RoundResult) -> None:
            out.append(r)
            if on_round:
                on_round(r)

        k = p.rewind_step
        weight_rewind = k is not None
        ks = self.stability_ks()
        saves = tuple(x for x in sorted(set(ks) | ({k} if k else set())) if x > 0)
        for seed in self.resolved.seeds:  # the protocol's, or those the power analysis chose (`--seeds auto`)
            s = self._seed(seed)
            if weight_rewind and k > 0:
                # open_lth's order: a continuous dense run provides the rewind points (weights and AdamW state);
                # level 0 then resumes at K by the same procedure as every pruned level
                emit(self._run_unit(s, "dense_continuous", 0, self._dense_plan(s), None, progress,
                                    pretrain_seed(seed), saves))
                start, _, opt = self._rewind_state(s)
                dense = self._run_unit(s, "ticket", 0, self._dense_plan(s, start, k, opt), None, progress,
                                       retrain_seed(seed, 0))
            else:
                dense = self._run_unit(s, "ticket", 0, self._dense_plan(s), None, progress, retrain_seed(seed, 0),
                                       saves)
            s.lineage["ticket"] = dense.ticket
            if ks:
                dense.stability = {str(kk): self._stability(s, 0, dense.ticket, kk, progress) for kk in ks}
            emit(dense)
            if not weight_rewind:
                for arm in (a for a in p.arms if ARMS[a].own_round0):
                    fresh = self._fresh_init(derive_seed("reinit-init", seed))
                    r0 = self._run_unit(s, arm, 0, self._dense_plan(s, start=fresh), None, progress,
                                        retrain_seed(seed, 0))
                    s.lineage[arm] = r0.ticket
                    emit(r0)
            prev = dense.ticket
            for rnd in range(1, p.rounds + 1):
                masks, structure = self._ticket_masks(s, prev)
                units = []
                for arm in ("ticket", *[a for a in p.arms if a != "ticket"]):
                    plan = ARMS[arm].fn(self._context(s, rnd, masks, structure, arm))
                    parent = prev.id if arm == "ticket" else units[0].ticket.id if units else None
                    res = self._run_unit(s, arm, rnd, plan, parent if arm != "dense_matched" else None, progress,
                                         retrain_seed(seed, rnd))
                    if arm == "ticket" and p.stability == "all" and ks and self.sweeps_sparse(seed):
                        res.stability = {str(kk): self._stability(s, rnd, res.ticket, kk, progress) for kk in ks}
                    units.append(res)
                    emit(res)
                for res in units:
                    s.lineage[res.arm] = res.ticket
                prev = units[0].ticket
            load_state(s.loaded.model, s.dense_state)  # hand back the dense model as loaded
        return out

    def sweeps_sparse(self, seed: int) -> bool:
        """Does this seed's every level get the stability sweep (stability all, first `stability_seeds` seeds)?"""
        p = self.protocol
        seeds = (self.resolved or p).seeds
        return p.stability == "all" and (not p.stability_seeds or seed in seeds[:p.stability_seeds])

    def stability_ks(self) -> tuple[int, ...]:
        """Rewind points of the stability sweep: the protocol's, at the resolved T (0 only without weight rewinding)."""
        p = self.protocol
        if p.stability == "none":
            return ()
        return p.sweep_ks(self.resolved.steps) if p.rewind_step is not None else (0,)


def _train_record(result: TrainResult, plan: Plan, dseed: int) -> dict:
    return {"start_step": plan.start_step, "schedule_steps": plan.config.steps, "optimizer_steps": len(result.steps),
            "resumed_optimizer": plan.optimizer is not None,
            "steps": result.steps, "lrs": result.lrs, "curve": result.curve, "best_step": result.best_step,
            "best_validation_loss": result.best_loss, "data_seed": dseed, "train_losses": result.losses}


def _subset(data: torch.Tensor, n: int) -> torch.Tensor:
    if n and n < data.shape[0]:
        idx = torch.linspace(0, data.shape[0] - 1, n).round().long().unique()
        return data[idx]
    return data


def _removed(ticket: Ticket) -> dict[int, list[int]]:
    from ..structure import removed

    return {int(k): list(v) for k, v in removed(ticket.structure, "query_heads").items()}


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
