"""Importance scores for structural units: query heads, KV groups (a KV head with its query heads), MLP
neurons and whole decoder layers. Higher = more important; structured methods remove the lowest.

A unit is the set of slices the adapter gives for it (`query_head_slices`, `kv_group_slices`,
`kv_head_slices`, `neuron_slices`, `layer_parameters`), in each parameter's own layout, so the same code serves Llama
(GQA) and GPT-2 (fused q|k|v columns, Conv1D `[in, out]` weights).

- `magnitude`: L2 norm of all the unit's weights and biases.
- `activation`: L2 norm, over the calibration tokens, of the unit's output, i.e. of the input features
  its slices own in the next projection (a head's columns of o_proj, a neuron's column of down_proj).
  A decoder layer's score is the mean over tokens of ||h_out - h_in|| / ||h_in||: how much the layer
  changes the residual stream it is given.
- `taylor` (Michel et al. 2019): the mean over calibration examples (sequences) of |dL(x)/d gate|, where
  a gate multiplies the unit's output (a head's slice of o_proj's input, a neuron's column of
  down_proj's input; a layer's two residual contributions). The gate derivative is computed through the
  weights, because transformers 5 has no head_mask: for y = W z, dL/d(gate on z_J) = sum over the
  columns J of W * dL/dW, exactly. The absolute value is taken PER EXAMPLE, before averaging: a sum of
  signed gradients over the whole set (and over q, k, v and o together) largely cancels on a trained
  model, which is why the earlier |sum| form ranked units close to randomly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .adapters import ArchitectureAdapter, Slice
from .calibration import CalibrationSet
from .errors import TicketLabError

KINDS = ("query", "kv_group", "neuron", "layer")
IMPORTANCE = ("magnitude", "activation", "taylor")
MAX_BATCH_TOKENS = 2048  # bounds activation memory (and the backward pass of taylor)


# --- units and their slices ---------------------------------------------------------------------------
def units_per_layer(adapter: ArchitectureAdapter, kind: str) -> int:
    return {"query": adapter.num_heads, "kv_group": adapter.num_kv_heads,
            "neuron": adapter.intermediate_size, "layer": 1}[kind]


def _shifted(slices: list[Slice], by: int) -> list[Slice]:
    return [Slice(s.param, s.axis, s.start + by, s.stop + by) for s in slices]


class UnitSlices:
    """Every unit's slices, per (kind, layer), computed once: adapters build slices slowly (the Llama
    adapter looks biases up on every call), and materialize asks for each layer several times.

    Kinds: `query`, `kv_group`, `neuron`, `layer` (one unit: all its projection parameters), and
    `kv_own`: a KV group's own slices (its key and value rows) without its query heads' (empty for GPT-2).
    """

    def __init__(self, adapter: ArchitectureAdapter):
        self.adapter = adapter
        self._cache: dict[tuple[str, int], list[list[Slice]]] = {}
        self._renamable: dict[str, bool] = {}

    def __call__(self, kind: str, layer: int) -> list[list[Slice]]:
        key = (kind, layer)
        if key not in self._cache:
            self._cache[key] = self._renamed(kind, layer) if self._can_rename(kind) else self._build(kind, layer)
        return self._cache[key]

    def _can_rename(self, kind: str) -> bool:
        """Layer i's slices are layer 0's under layer i's parameter names in both adapters; checked on
        layer 1 and the last layer before the others rely on it."""
        if kind not in self._renamable:
            last = self.adapter.num_layers - 1
            self._renamable[kind] = False
            if last >= 3:
                for i in (0, 1, last):
                    self._cache[(kind, i)] = self._build(kind, i)
                self._renamable[kind] = all(self._cache[(kind, i)] == self._renamed(kind, i) for i in (1, last))
        return self._renamable[kind]

    def _renamed(self, kind: str, layer: int) -> list[list[Slice]]:
        old, new = self.adapter.layer_prefix(0) + ".", self.adapter.layer_prefix(layer) + "."
        return [[Slice(new + s.param[len(old):] if s.param.startswith(old) else s.param, s.axis, s.start, s.stop)
                 for s in unit] for unit in self._cache[(kind, 0)]]

    def _build(self, kind: str, layer: int) -> list[list[Slice]]:
        a = self.adapter
        if kind == "query":
            return [a.query_head_slices(layer, h) for h in range(a.num_heads)]
        if kind == "kv_group":
            return [a.kv_group_slices(layer, g) for g in range(a.num_kv_heads)]
        if kind == "kv_own":
            return [a.kv_head_slices(layer, g) for g in range(a.num_kv_heads)]
        if kind == "neuron":
            n = a.intermediate_size
            first = a.neuron_slices(layer, 0)
            # Neuron j's slices are neuron 0's moved by j in both adapters; checked before relying on it.
            if n > 2 and a.neuron_slices(layer, 1) == _shifted(first, 1) \
                    and a.neuron_slices(layer, n - 1) == _shifted(first, n - 1):
                return [_shifted(first, j) for j in range(n)]
            return [a.neuron_slices(layer, j) for j in range(n)]
        if kind == "layer":
            return [[Slice(p, 0, 0, a.parameter(p).shape[0]) for p in a.layer_parameters(layer)]]
        raise ValueError(f"unknown unit kind {kind!r}")


def all_unit_slices(adapter: ArchitectureAdapter, kind: str, cache: UnitSlices | None = None) -> list[list[list[Slice]]]:
    """[layer][unit] -> slices; for `layer`, one unit per layer."""
    cache = cache or UnitSlices(adapter)
    return [cache(kind, layer) for layer in range(adapter.num_layers)]


# --- weight-based sums over slices ------------------------------------------------------------------
def _slice_sums(units: list[list[list[Slice]]], elementwise: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """[layers, units] float64: for each unit, the sum of `elementwise(param)` over its slices. Each
    (parameter, axis) is reduced once to a prefix sum, so a slice costs two lookups."""
    prefix: dict[tuple[str, int], np.ndarray] = {}

    def total(s: Slice) -> float:
        key = (s.param, s.axis)
        if key not in prefix:
            t = elementwise(s.param).double()
            reduced = t if t.dim() == 1 else t.sum(dim=1 - s.axis)
            prefix[key] = np.concatenate([[0.0], np.cumsum(reduced.cpu().numpy())])
        c = prefix[key]
        return float(c[s.stop] - c[s.start])

    return torch.tensor([[sum(total(s) for s in unit) for unit in layer] for layer in units], dtype=torch.float64)


def magnitude_scores(adapter: ArchitectureAdapter, kind: str, cache: UnitSlices | None = None) -> torch.Tensor:
    units = all_unit_slices(adapter, kind, cache)
    return _slice_sums(units, lambda name: adapter.parameter(name).detach().float().pow(2)).sqrt()


# --- calibration passes ---------------------------------------------------------------------------------
def _batches(calib: CalibrationSet, device: str, max_tokens: int) -> Iterator[torch.Tensor]:
    per = max(1, max_tokens // calib.length)
    for i in range(0, calib.n, per):
        yield calib.tokens[i:i + per].to(device)


def _input_side(adapter: ArchitectureAdapter) -> dict[str, tuple[str, int]]:
    """weight parameter -> (module name, axis that indexes its input features)."""
    return {ref.name: (ref.module_name, 0 if ref.transposed else 1) for ref in adapter.linears()}


def activation_scores(loaded, kind: str, calib: CalibrationSet, progress=None, cache: UnitSlices | None = None,
                      max_batch_tokens: int = MAX_BATCH_TOKENS) -> torch.Tensor:
    adapter = loaded.adapter
    if kind == "layer":
        return _layer_activation_scores(loaded, calib, progress, max_batch_tokens)
    units = all_unit_slices(adapter, kind, cache)
    inputs = _input_side(adapter)
    watched = {inputs[s.param][0] for layer in units for unit in layer for s in unit
               if s.param in inputs and s.axis == inputs[s.param][1]}
    if not watched:
        raise TicketLabError(f"activation importance: no {kind} unit owns input features of a projection.")
    sumsq: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(module, args):
            x = args[0].detach()
            sq = x.double().pow(2).reshape(-1, x.shape[-1]).sum(dim=0)
            sumsq[name] = sumsq[name] + sq if name in sumsq else sq
        return fn

    handles = [adapter.module(m).register_forward_pre_hook(hook(m)) for m in sorted(watched)]
    try:
        _forward_all(loaded, calib, progress, max_batch_tokens)
    finally:
        for h in handles:
            h.remove()

    prefix = {m: np.concatenate([[0.0], np.cumsum(v.cpu().numpy())]) for m, v in sumsq.items()}

    def unit_sumsq(unit: list[Slice]) -> float:
        total = 0.0
        for s in unit:  # only input-side slices carry the unit's output; q rows, gate rows etc. do not
            side = inputs.get(s.param)
            if side and s.axis == side[1] and side[0] in prefix:
                total += float(prefix[side[0]][s.stop] - prefix[side[0]][s.start])
        return total

    return torch.tensor([[unit_sumsq(u) for u in layer] for layer in units], dtype=torch.float64).sqrt()


def _forward_all(loaded, calib: CalibrationSet, progress, max_batch_tokens: int) -> None:
    batches = list(_batches(calib, loaded.device, max_batch_tokens))
    with torch.no_grad():
        for i, tokens in enumerate(batches):
            loaded.model(input_ids=tokens, use_cache=False)
            if progress:
                progress(i + 1, len(batches), "activations")


def _layer_activation_scores(loaded, calib: CalibrationSet, progress, max_batch_tokens: int) -> torch.Tensor:
    layers = loaded.adapter.layers()
    totals = torch.zeros(len(layers), dtype=torch.float64)
    counts = torch.zeros(len(layers), dtype=torch.float64)

    def hook(i):
        def fn(module, args, kwargs, output):
            h_in = (args[0] if args else kwargs["hidden_states"]).detach().double()
            h_out = (output[0] if isinstance(output, tuple) else output).detach().double()
            rel = (h_out - h_in).norm(dim=-1) / h_in.norm(dim=-1).clamp_min(1e-12)
            totals[i] += float(rel.sum())
            counts[i] += rel.numel()
        return fn

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        _forward_all(loaded, calib, progress, max_batch_tokens)
    finally:
        for h in handles:
            h.remove()
    return (totals / counts.clamp_min(1))[:, None]


def _gate_slices(adapter: ArchitectureAdapter, kind: str, units: list[list[list[Slice]]],
                 cache: UnitSlices) -> list[list[list[Slice]]]:
    """Each unit's output side: the slices along the input-feature axis of the projection its output feeds."""
    inputs = _input_side(adapter)

    def side(unit: list[Slice]) -> list[Slice]:
        return [s for s in unit if s.param in inputs and s.axis == inputs[s.param][1]]

    if kind != "layer":
        out = [[side(u) for u in layer] for layer in units]
        if not any(u for layer in out for u in layer):
            raise TicketLabError(f"taylor importance: no {kind} unit owns input features of a projection.")
        return out
    layers = []
    for layer in range(adapter.num_layers):  # the attention and MLP output projections, whole
        params = {s.param for kind_ in ("query", "neuron") for u in cache(kind_, layer) for s in side(u)}
        layers.append([[Slice(p, inputs[p][1], 0, adapter.parameter(p).shape[inputs[p][1]]) for p in sorted(params)]])
    return layers


def taylor_scores(loaded, kind: str, calib: CalibrationSet, progress=None, cache: UnitSlices | None = None,
                  max_batch_tokens: int = MAX_BATCH_TOKENS) -> torch.Tensor:
    """Michel et al. 2019: mean over calibration sequences of |dL(x)/d gate_unit| (see the module doc)."""
    adapter, model = loaded.adapter, loaded.model
    cache = cache or UnitSlices(adapter)
    gates = _gate_slices(adapter, kind, all_unit_slices(adapter, kind, cache), cache)
    needed = {s.param for layer in gates for unit in layer for s in unit}
    params = dict(model.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    total = None
    try:
        for n, p in params.items():
            p.requires_grad_(n in needed)
            p.grad = None
        weights = {n: params[n].detach().double() for n in needed}
        with torch.enable_grad():
            for i in range(calib.n):
                tokens = calib.tokens[i:i + 1].to(loaded.device)
                model(input_ids=tokens, labels=tokens, use_cache=False).loss.backward()

                def grad_times_weight(name: str) -> torch.Tensor:
                    g = params[name].grad
                    return torch.zeros_like(weights[name]) if g is None else g.double() * weights[name]

                per_example = _slice_sums(gates, grad_times_weight).abs()
                total = per_example if total is None else total + per_example
                for n in needed:
                    params[n].grad = None
                if progress:
                    progress(i + 1, calib.n, "gradients")
        return total / max(1, calib.n)
    finally:
        for n, p in params.items():
            p.grad = None
            p.requires_grad_(flags[n])


def unit_scores(loaded, kind: str, importance: str, calib: CalibrationSet | None = None,
                progress=None, cache: UnitSlices | None = None) -> torch.Tensor:
    """[num_layers, units_per_layer] float64 scores (for `layer`: [num_layers, 1])."""
    if kind not in KINDS:
        raise ValueError(f"unknown unit kind {kind!r}; one of {KINDS}")
    if importance == "magnitude":
        return magnitude_scores(loaded.adapter, kind, cache)
    if importance not in IMPORTANCE:
        raise TicketLabError(f"unknown importance {importance!r}: choose one of {', '.join(IMPORTANCE)}.")
    if calib is None:
        raise TicketLabError(f"{importance} importance needs calibration data (--calib-samples/--calib-len or "
                             f"--calib-tokens).")
    if importance == "activation":
        return activation_scores(loaded, kind, calib, progress, cache)
    return taylor_scores(loaded, kind, calib, progress, cache)


def normalise_per_layer(scores: torch.Tensor) -> torch.Tensor:
    """Divide each layer's scores by their L2 norm (Molchanov et al. 2017), so a global ranking compares
    a unit with the rest of its own layer rather than raw scales, which grow with depth."""
    norms = scores.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, scores / norms.clamp_min(1e-300), torch.zeros_like(scores))


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))
