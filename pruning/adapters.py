"""One adapter per architecture family: which tensors are the attention and MLP projections, and how
heads and neurons map onto their rows and columns (SliceGPT's pattern).

Every pruning method works on a *linear view* of a weight: a `[out, in]` matrix, whatever the
parameter's own layout. GPT-2's `Conv1D` stores `[in, out]`, so its view is a transpose; masks are
always stored under the parameter's own name and in the parameter's own shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import TicketLabError


@dataclass(frozen=True)
class LinearRef:
    """A prunable projection weight."""

    name: str  # parameter name, e.g. "model.layers.0.self_attn.q_proj.weight"
    module_name: str  # e.g. "model.layers.0.self_attn.q_proj"
    layer: int
    kind: str  # q k v o gate up down (llama) | qkv o fc down (gpt2)
    transposed: bool  # True when the parameter is [in, out] (GPT-2 Conv1D)


@dataclass(frozen=True)
class Slice:
    """Rows (axis 0) or columns (axis 1) of a parameter, in the parameter's own layout."""

    param: str
    axis: int
    start: int
    stop: int


class ArchitectureAdapter:
    family: str = ""
    model_types: tuple[str, ...] = ()

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        # Names only (the set never changes for a loaded model); rebuilding it per lookup made slice queries O(params).
        self._param_names = frozenset(n for n, _ in model.named_parameters())

    # --- shape facts ---------------------------------------------------------------------------
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int

    @property
    def group_size(self) -> int:
        """Query heads per KV head (1 without grouped-query attention)."""
        return self.num_heads // self.num_kv_heads

    def layers(self) -> nn.ModuleList:
        raise NotImplementedError

    def layer_prefix(self, layer: int) -> str:
        raise NotImplementedError

    def linears(self, layer: int | None = None) -> list[LinearRef]:
        layers = range(self.num_layers) if layer is None else [layer]
        return [ref for i in layers for ref in self._layer_linears(i)]

    def _layer_linears(self, layer: int) -> list[LinearRef]:
        raise NotImplementedError

    def excluded_parameters(self) -> list[str]:
        """Embeddings, norms and the LM head: never pruned by default (what the ticket says it counted)."""
        linear = {r.name for r in self.linears()}
        return [n for n, _ in self.model.named_parameters() if n not in linear]

    # --- access ------------------------------------------------------------------------------------
    def parameter(self, name: str) -> nn.Parameter:
        return self.model.get_parameter(name)

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def weight_view(self, ref: LinearRef) -> torch.Tensor:
        """The weight as `[out, in]`; a view, so writes reach the parameter."""
        w = self.parameter(ref.name).data
        return w.t() if ref.transposed else w

    # --- structure: which slices make a head, a KV group, a neuron ---------------------------------
    def query_head_slices(self, layer: int, head: int) -> list[Slice]:
        raise NotImplementedError

    def kv_group_slices(self, layer: int, group: int) -> list[Slice]:
        """A KV head with all of its query heads: GQA cannot drop a KV head while a query head uses it."""
        raise NotImplementedError

    def neuron_slices(self, layer: int, neuron: int) -> list[Slice]:
        raise NotImplementedError

    def layer_parameters(self, layer: int) -> list[str]:
        """Every projection weight and bias of a decoder layer (zeroed together to remove the layer)."""
        prefix = self.layer_prefix(layer) + "."
        norms = self._norm_markers()
        return [
            n for n, _ in self.model.named_parameters()
            if n.startswith(prefix) and not any(m in n for m in norms)
        ]

    def _norm_markers(self) -> tuple[str, ...]:
        return ("norm", "ln_")


class LlamaAdapter(ArchitectureAdapter):
    """Llama family (Llama, Mistral, Qwen2, SmolLM): separate q/k/v/o and gate/up/down projections."""

    family = "llama"
    model_types = ("llama", "mistral", "qwen2", "qwen3", "smollm3")
    _attn = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
    _mlp = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}

    def __init__(self, model: nn.Module):
        super().__init__(model)
        c = self.config
        self.num_layers = c.num_hidden_layers
        self.num_heads = c.num_attention_heads
        self.num_kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        self.hidden_size = c.hidden_size
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.intermediate_size = c.intermediate_size

    def layers(self) -> nn.ModuleList:
        return self.model.model.layers

    def layer_prefix(self, layer: int) -> str:
        return f"model.layers.{layer}"

    def _layer_linears(self, layer: int) -> list[LinearRef]:
        p = self.layer_prefix(layer)
        refs = [LinearRef(f"{p}.self_attn.{m}.weight", f"{p}.self_attn.{m}", layer, k, False)
                for k, m in self._attn.items()]
        refs += [LinearRef(f"{p}.mlp.{m}.weight", f"{p}.mlp.{m}", layer, k, False) for k, m in self._mlp.items()]
        return refs

    def _w(self, layer: int, kind: str) -> str:
        sub = "self_attn" if kind in self._attn else "mlp"
        name = {**self._attn, **self._mlp}[kind]
        return f"{self.layer_prefix(layer)}.{sub}.{name}.weight"

    def _bias(self, layer: int, kind: str) -> str | None:
        name = self._w(layer, kind)[: -len("weight")] + "bias"
        return name if name in self._param_names else None

    def _rows(self, layer: int, kind: str, start: int, stop: int) -> list[Slice]:
        out = [Slice(self._w(layer, kind), 0, start, stop)]
        bias = self._bias(layer, kind)
        return out + ([Slice(bias, 0, start, stop)] if bias else [])

    def query_head_slices(self, layer: int, head: int) -> list[Slice]:
        a, b = head * self.head_dim, (head + 1) * self.head_dim
        return self._rows(layer, "q", a, b) + [Slice(self._w(layer, "o"), 1, a, b)]

    def kv_group_slices(self, layer: int, group: int) -> list[Slice]:
        a, b = group * self.head_dim, (group + 1) * self.head_dim
        out = self._rows(layer, "k", a, b) + self._rows(layer, "v", a, b)
        for h in range(group * self.group_size, (group + 1) * self.group_size):
            out += self.query_head_slices(layer, h)
        return out

    def neuron_slices(self, layer: int, neuron: int) -> list[Slice]:
        j = neuron
        return self._rows(layer, "gate", j, j + 1) + self._rows(layer, "up", j, j + 1) + [
            Slice(self._w(layer, "down"), 1, j, j + 1)]


class GPT2Adapter(ArchitectureAdapter):
    """GPT-2 family: fused `c_attn` (q|k|v along its output columns) and Conv1D `[in, out]` weights."""

    family = "gpt2"
    model_types = ("gpt2",)

    def __init__(self, model: nn.Module):
        super().__init__(model)
        c = self.config
        self.num_layers = c.n_layer
        self.num_heads = c.n_head
        self.num_kv_heads = c.n_head
        self.hidden_size = c.n_embd
        self.head_dim = c.n_embd // c.n_head
        self.intermediate_size = c.n_inner or 4 * c.n_embd

    def layers(self) -> nn.ModuleList:
        return self.model.transformer.h

    def layer_prefix(self, layer: int) -> str:
        return f"transformer.h.{layer}"

    def _layer_linears(self, layer: int) -> list[LinearRef]:
        p = self.layer_prefix(layer)
        mods = [("qkv", "attn.c_attn"), ("o", "attn.c_proj"), ("fc", "mlp.c_fc"), ("down", "mlp.c_proj")]
        return [LinearRef(f"{p}.{m}.weight", f"{p}.{m}", layer, k, True) for k, m in mods]

    def query_head_slices(self, layer: int, head: int) -> list[Slice]:
        p, d = self.layer_prefix(layer), self.hidden_size
        a, b = head * self.head_dim, (head + 1) * self.head_dim
        out = []
        for part in range(3):  # q, k and v columns of the fused projection (and its bias)
            out += [Slice(f"{p}.attn.c_attn.weight", 1, part * d + a, part * d + b),
                    Slice(f"{p}.attn.c_attn.bias", 0, part * d + a, part * d + b)]
        return out + [Slice(f"{p}.attn.c_proj.weight", 0, a, b)]

    def kv_group_slices(self, layer: int, group: int) -> list[Slice]:
        return self.query_head_slices(layer, group)  # no GQA: one query head per KV head

    def neuron_slices(self, layer: int, neuron: int) -> list[Slice]:
        p, j = self.layer_prefix(layer), neuron
        return [Slice(f"{p}.mlp.c_fc.weight", 1, j, j + 1), Slice(f"{p}.mlp.c_fc.bias", 0, j, j + 1),
                Slice(f"{p}.mlp.c_proj.weight", 0, j, j + 1)]


ADAPTERS: dict[str, type[ArchitectureAdapter]] = {
    t: cls for cls in (LlamaAdapter, GPT2Adapter) for t in cls.model_types
}


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    model_type = getattr(model.config, "model_type", None)
    cls = ADAPTERS.get(model_type)
    if cls is None:
        raise TicketLabError(
            f"unsupported architecture {model_type!r}: Ticket Lab has adapters for "
            f"{', '.join(sorted(ADAPTERS))}. Add an ArchitectureAdapter in pruning/adapters.py to support it."
        )
    return cls(model)
