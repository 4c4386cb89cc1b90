"""Structured ticket -> physically smaller model: sliced q/k/v/o and MLP tensors, dropped decoder layers,
an updated config, saved as safetensors with the tokenizer.

What is removed is read from the ticket's masks through the adapter's slices (a query head, a KV
group, a neuron or a whole layer is removed when all of its slices are masked), so any ticket whose
masked weights are whole units materializes, whatever method made it. A ticket that masks anything
else is unstructured and refused.

Layouts:
- every kept layer with the same counts: a stock config, loaded by `AutoModelForCausalLM.from_pretrained(DIR)`.
  Exceptions, which transformers' configs cannot say: GPT-2 with heads removed (its head width is
  n_embd / n_head), and Llama head counts that do not divide hidden_size (its config validation);
- otherwise the config keeps the dense counts as an upper bound and lists each layer's own counts
  under `ticketlab_layer_shapes`, with `ticketlab_loader: "pruning.materialize.load_materialized"`.
  The stock loader then fails on the size mismatch rather than loading something wrong.
- GQA with query heads removed one by one can leave a layer's KV groups with different numbers of
  query heads, which no attention kernel here expresses. Such a layer gets one KV head per kept
  query head (the shared key/value rows are copied): exact logits, fewer savings on k/v.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .adapters import ArchitectureAdapter, Slice
from .durable import atomic_dir
from .errors import TicketLabError
from .importance import UnitSlices
from .ticket import Ticket, check_compatible

LOADER = "pruning.materialize.load_materialized"
SHAPES_KEY = "ticketlab_layer_shapes"


@dataclass
class LayerPlan:
    source: int  # the dense model's layer index
    q_keep: list[int]  # kept query heads, ascending
    kv_rows: list[int]  # dense KV head behind each materialized KV head (repeats when groups are uneven)
    neurons: list[int]  # kept MLP neurons, ascending
    expanded_kv: bool = False  # True when uneven groups forced one KV head per query head

    def shape(self) -> dict:
        return {"num_attention_heads": len(self.q_keep), "num_key_value_heads": len(self.kv_rows),
                "intermediate_size": len(self.neurons)}


@dataclass
class Plan:
    layers: list[LayerPlan]
    removed_layers: list[int]
    notes: list[str] = field(default_factory=list)


class _Lines:
    """Which rows/columns of each masked parameter are entirely masked, and which may be masked."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = masks
        self._gone: dict[tuple[str, int], np.ndarray] = {}
        self.allowed: dict[tuple[str, int], np.ndarray] = {}

    def gone(self, s: Slice) -> bool:
        m = self.masks.get(s.param)
        if m is None:
            return False
        key = (s.param, s.axis)
        if key not in self._gone:
            kept_any = m if m.dim() == 1 else m.any(dim=1 - s.axis)
            self._gone[key] = (~kept_any).numpy()
        return bool(self._gone[key][s.start:s.stop].all())

    def unit_gone(self, slices: list[Slice]) -> bool:
        return bool(slices) and all(self.gone(s) for s in slices)

    def allow(self, slices: list[Slice]) -> None:
        for s in slices:
            m = self.masks.get(s.param)
            if m is None:
                continue
            key = (s.param, s.axis)
            if key not in self.allowed:
                self.allowed[key] = np.zeros(m.shape[s.axis], dtype=bool)
            self.allowed[key][s.start:s.stop] = True

    def stray(self) -> dict[str, int]:
        """Masked entries outside every removed unit: parameter -> count."""
        out = {}
        for name, m in self.masks.items():
            free = torch.zeros(m.shape, dtype=torch.bool)
            for axis in range(m.dim()):
                a = self.allowed.get((name, axis))
                if a is not None:
                    t = torch.from_numpy(a)
                    free |= t if m.dim() == 1 else (t[:, None] if axis == 0 else t[None, :])
            n = int((~m & ~free).sum())
            if n:
                out[name] = n
        return out


def plan_for(adapter: ArchitectureAdapter, ticket: Ticket, units: UnitSlices | None = None) -> Plan:
    units = units or UnitSlices(adapter)
    lines = _Lines({n: m.bool().cpu() for n, m in ticket.masks.items()})
    layers, removed, notes = [], [], []
    for i in range(adapter.num_layers):
        whole = units("layer", i)[0]
        if lines.unit_gone(whole):
            lines.allow(whole)
            removed.append(i)
            continue
        q, kv_own, neurons = units("query", i), units("kv_own", i), units("neuron", i)
        q_keep = [h for h in range(adapter.num_heads) if not lines.unit_gone(q[h])]
        n_keep = [j for j in range(adapter.intermediate_size) if not lines.unit_gone(neurons[j])]
        for h in set(range(adapter.num_heads)) - set(q_keep):
            lines.allow(q[h])
        for j in set(range(adapter.intermediate_size)) - set(n_keep):
            lines.allow(neurons[j])
        # The GQA rule: a KV head whose query heads are all gone goes too (its rows, masked or not).
        for g in adapter.close_heads(query=set(range(adapter.num_heads)) - set(q_keep)).kv:
            lines.allow(kv_own[g])
        per_group = {g: [h for h in q_keep if adapter.kv_head_of(h) == g] for g in range(adapter.num_kv_heads)}
        if not q_keep or not n_keep:
            raise TicketLabError(
                f"ticket {ticket.id} removes every {'attention head' if not q_keep else 'MLP neuron'} of layer {i} "
                f"but keeps the layer; materialize supports removing whole layers, not emptying a half of one.")
        counts = {len(hs) for hs in per_group.values() if hs}
        if len(counts) == 1:
            kv_rows, expanded = [g for g, hs in per_group.items() if hs], False
        else:
            kv_rows, expanded = [adapter.kv_head_of(h) for h in q_keep], True
            notes.append(f"layer {i}: KV groups keep {sorted(len(hs) for hs in per_group.values())} query heads; "
                         f"materialized with one KV head per query head (key/value rows copied)")
        layers.append(LayerPlan(i, q_keep, kv_rows, n_keep, expanded))
    stray = lines.stray()
    if stray:
        first = ", ".join(f"{n} ({c})" for n, c in list(stray.items())[:3])
        raise TicketLabError(
            f"ticket {ticket.id} (method {ticket.method}) masks {sum(stray.values())} weights that are not parts of "
            f"whole heads, neurons or layers, e.g. in {first}: it is not a structured ticket and cannot be made "
            f"physically smaller. Materialize a ticket from --method heads, neurons or layers.")
    if not layers:
        raise TicketLabError(f"ticket {ticket.id} removes every decoder layer; nothing is left to materialize.")
    return Plan(layers, removed, notes)


# --- tensors ----------------------------------------------------------------------------------------------
def _kept_indices(units: UnitSlices, lp: LayerPlan) -> dict[tuple[str, int], list[int]]:
    """(parameter, axis) -> the dense indices kept along that axis. Slices are taken in order of their
    start (a copied KV head's rows repeat as a block): that is the materialized head order for q, k, v
    and o alike, and for GPT-2 it keeps the q|k|v thirds of c_attn apart."""
    chosen: dict[tuple[str, int], list[Slice]] = {}
    q, kv_own, neurons = units("query", lp.source), units("kv_own", lp.source), units("neuron", lp.source)
    kept = [q[h] for h in lp.q_keep] + [kv_own[g] for g in lp.kv_rows] + [neurons[j] for j in lp.neurons]
    for slices in kept:
        for s in slices:
            chosen.setdefault((s.param, s.axis), []).append(s)
    return {key: [i for s in sorted(ss, key=lambda s: s.start) for i in range(s.start, s.stop)]
            for key, ss in chosen.items()}


def sliced_state_dict(loaded, ticket: Ticket, plan: Plan, units: UnitSlices | None = None) -> dict[str, torch.Tensor]:
    """The materialized state dict under renumbered layer names. Tensors that are not sliced share
    storage with the loaded model: copy them (e.g. load_state_dict) before changing anything."""
    adapter = loaded.adapter
    units = units or UnitSlices(adapter)
    check_compatible(ticket, loaded.model, loaded.weights_sha256)
    # Masked entries all lie in removed units (plan_for checked), so only the weights a ticket changed
    # matter for what is kept; zeroing the masks first would be wasted work.
    dense = dict(loaded.model.state_dict())
    dense.update({n: w.to(dense[n].dtype) for n, w in ticket.weights.items()})
    prefixes = {adapter.layer_prefix(i) + ".": i for i in range(adapter.num_layers)}
    new_index = {lp.source: j for j, lp in enumerate(plan.layers)}
    indices = {lp.source: _kept_indices(units, lp) for lp in plan.layers}
    out = {}
    for key, t in dense.items():
        layer = next((i for p, i in prefixes.items() if key.startswith(p)), None)
        if layer is None:
            out[key] = t.detach().cpu()
            continue
        if layer not in new_index:
            continue
        for axis in range(t.dim()):
            keep = indices[layer].get((key, axis))
            if keep is not None:
                t = t.index_select(axis, torch.tensor(keep, dtype=torch.long))
        out[adapter.layer_prefix(new_index[layer]) + key[len(adapter.layer_prefix(layer)):]] = t.detach().cpu()
    return out


# --- config: the family's keys come from its adapter ------------------------------------------------------
def new_config(loaded, plan: Plan, ticket: Ticket):
    adapter = loaded.adapter
    cfg = copy.deepcopy(loaded.model.config)
    shapes = [lp.shape() for lp in plan.layers]
    uniform = all(s == shapes[0] for s in shapes) and adapter.stock_shape(shapes[0])
    adapter.write_config(cfg, len(plan.layers), shapes[0] if uniform else None, bool(plan.removed_layers))
    if isinstance(getattr(cfg, "layer_types", None), list):
        cfg.layer_types = [cfg.layer_types[lp.source] for lp in plan.layers]
    for key in (SHAPES_KEY, "ticketlab_loader"):
        if hasattr(cfg, key):
            delattr(cfg, key)
    if not uniform:
        setattr(cfg, SHAPES_KEY, shapes)
        cfg.ticketlab_loader = LOADER
    cfg.ticketlab_materialized = {"ticket": ticket.id, "method": ticket.method, "dense_spec": ticket.dense.get("spec"),
                                  "dense_sha256": ticket.dense["weights_sha256"],
                                  "dense_layers": [lp.source for lp in plan.layers]}
    return cfg, uniform


def build_model(config, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The (randomly initialised) model a materialized config describes, with per-layer shapes."""
    from transformers import AutoModelForCausalLM

    from .adapters import adapter_for

    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    shapes = getattr(config, SHAPES_KEY, None)
    if shapes:
        adapter = adapter_for(model)
        layers = adapter.layers()
        if len(shapes) != len(layers):
            raise TicketLabError(f"{SHAPES_KEY} lists {len(shapes)} layers, the config {len(layers)}: damaged config.")
        for layer, shape in zip(layers, shapes, strict=True):
            adapter.reshape_layer(layer, shape)
    return model.eval()


def load_materialized(path: str | Path, dtype: torch.dtype | str = torch.float32, device: str = "cpu") -> nn.Module:
    """Load a materialized directory, uniform or with per-layer shapes (the project's loader)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    path = Path(path)
    if not (path / "config.json").exists():
        raise TicketLabError(f"{path} is not a model directory (no config.json).")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    config = AutoConfig.from_pretrained(path)
    model = build_model(config, dtype)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise TicketLabError(f"no .safetensors weights in {path}.")
    state = {}
    try:
        for f in files:
            state.update(load_file(str(f)))
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise TicketLabError(f"weights in {path} do not fit its config ({e}); re-run `ticketlab materialize`.") from e
    tied = {k for k in result.missing_keys if k.endswith("lm_head.weight")} if config.tie_word_embeddings else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        raise TicketLabError(f"weights in {path} do not match its config: missing {result.missing_keys[:3]}, "
                             f"unexpected {result.unexpected_keys[:3]}; re-run `ticketlab materialize`.")
    if tied:
        model.tie_weights()
    return model.to(device=device, dtype=dtype).eval()


# --- the whole job ------------------------------------------------------------------------------------------
SUMMARY = "ticketlab_materialized.json"


def is_materialized(path: Path) -> bool:
    """Whether `path` is a folder this module wrote: its summary names a ticket and its config says so."""
    try:
        summary = json.loads((path / SUMMARY).read_text())
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and "ticket" in summary and "ticketlab_materialized" in config


def check_destination(out: str | Path, overwrite: bool) -> None:
    """--out must be new, or (with --overwrite) a materialized model: overwriting never deletes anything
    else, such as a folder of someone's files given as --out by mistake."""
    out = Path(out)
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise TicketLabError(f"{out} exists; choose another --out or pass --overwrite (which replaces only a "
                             f"materialized model).")
    if out.is_symlink() or not out.is_dir():
        raise TicketLabError(f"{out} is {'a link' if out.is_symlink() else 'a file'}, not a materialized model; "
                             f"--overwrite replaces only a folder `ticketlab materialize` wrote. Choose another --out.")
    if any(out.iterdir()) and not is_materialized(out):
        raise TicketLabError(f"{out} is not a materialized model (no {SUMMARY} beside a config.json that names "
                             f"its ticket); --overwrite replaces only a folder `ticketlab materialize` wrote, so "
                             f"nothing was touched. Choose another --out, or move the folder away yourself.")


def materialize(loaded, ticket: Ticket, out_dir: str | Path, overwrite: bool = False) -> dict:
    """Write the physically smaller model of a structured ticket to `out_dir` (atomically)."""
    out = Path(out_dir)
    check_destination(out, overwrite)
    units = UnitSlices(loaded.adapter)
    plan = plan_for(loaded.adapter, ticket, units)
    config, uniform = new_config(loaded, plan, ticket)
    state = sliced_state_dict(loaded, ticket, plan, units)
    dtype = next(loaded.model.parameters()).dtype
    model = build_model(config, dtype)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # a bug here, not bad input: say what did not fit
        raise RuntimeError(f"materialized weights do not fit the built model: {e}") from e
    summary = {"path": str(out.resolve()), "ticket": ticket.id, "stock_loadable": uniform,
               "loader": "transformers.AutoModelForCausalLM.from_pretrained" if uniform else LOADER,
               "num_layers": len(plan.layers), "removed_layers": plan.removed_layers,
               "layer_shapes": [lp.shape() for lp in plan.layers],
               "parameters_dense": sum(p.numel() for p in loaded.model.parameters()),
               "parameters": sum(p.numel() for p in model.parameters()), "notes": plan.notes}
    # The guard again right before the swap: the folder may have changed while the model was built.
    check_destination(out, overwrite)
    try:
        with atomic_dir(out, replace=overwrite) as tmp:
            model.save_pretrained(tmp)
            loaded.tokenizer.save_pretrained(tmp)
            (tmp / SUMMARY).write_text(json.dumps(summary, indent=2))
    except FileExistsError:
        raise TicketLabError(f"{out} appeared while the model was being written; nothing was replaced. "
                             f"Choose another --out or pass --overwrite.") from None
    return summary
