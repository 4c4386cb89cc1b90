"""What every architecture adapter provides, and the rules that hold for all of them.

Everything architecture-specific is a method of the adapter (SliceGPT's pattern): which tensors are
the prunable projections, how heads and neurons map onto their rows and columns, how a layer is
re-shaped for a physically smaller model, how the config says so, and how the model splits into a
body and an LM head. Code outside `pruning/adapters/` never branches on the family.

Every pruning method works on a *linear view* of a weight: a `[out, in]` matrix, whatever the
parameter's own layout. GPT-2's `Conv1D` stores `[in, out]`, so its view is a transpose; masks are
always stored under the parameter's own name and in the parameter's own shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import TicketLabError

# The GQA rule in words, recorded in every ticket that removes heads. `ArchitectureAdapter.close_heads`
# is its one implementation.
GQA_RULE = ("a KV head is removed only together with all of the query heads that share it; "
            "removing a query head masks its q rows and its o_proj columns")


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


@dataclass(frozen=True)
class HeadRemoval:
    """The heads of one layer that go, closed under the GQA rule (see `ArchitectureAdapter.close_heads`)."""

    query: tuple[int, ...] = ()
    kv: tuple[int, ...] = ()


class ArchitectureAdapter:
    """Base class. A family subclass sets `family`, `model_types` (the configs' `model_type`s it serves)
    and the shape facts, and implements the methods marked `family`. Defining the subclass in a module
    of `pruning/adapters/` registers it."""

    family: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    registry: ClassVar[dict[str, type[ArchitectureAdapter]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for t in cls.model_types:
            ArchitectureAdapter.registry[t] = cls

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        # Names only (the set never changes for a loaded model); rebuilding it per lookup made slice queries O(params).
        self._param_names = frozenset(n for n, _ in model.named_parameters())

    # --- shape facts (set by the family's __init__) -------------------------------------------------
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

    @property
    def max_positions(self) -> int | None:  # family
        """The longest sequence the model's position encoding allows (None: unbounded)."""
        raise NotImplementedError

    def dense_shape(self) -> dict:
        """A layer's unit counts, in the keys materialized layer shapes use."""
        return {"num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
                "intermediate_size": self.intermediate_size}

    # --- modules and parameters -----------------------------------------------------------------------
    def layers(self) -> nn.ModuleList:  # family
        raise NotImplementedError

    def layer_prefix(self, layer: int) -> str:  # family
        raise NotImplementedError

    def linears(self, layer: int | None = None) -> list[LinearRef]:
        """The prunable projections (attention and MLP), in layer order."""
        layers = range(self.num_layers) if layer is None else [layer]
        return [ref for i in layers for ref in self._layer_linears(i)]

    def _layer_linears(self, layer: int) -> list[LinearRef]:  # family
        raise NotImplementedError

    def excluded_parameters(self) -> list[str]:
        """Embeddings, norms and the LM head: never pruned by default (what the ticket says it counted)."""
        linear = {r.name for r in self.linears()}
        return [n for n, _ in self.model.named_parameters() if n not in linear]

    def parameter(self, name: str) -> nn.Parameter:
        return self.model.get_parameter(name)

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def weight_view(self, ref: LinearRef) -> torch.Tensor:
        """The weight as `[out, in]`; a view, so writes reach the parameter."""
        w = self.parameter(ref.name).data
        return w.t() if ref.transposed else w

    def layer_parameters(self, layer: int) -> list[str]:
        """Every projection weight and bias of a decoder layer (zeroed together to remove the layer)."""
        prefix = self.layer_prefix(layer) + "."
        norms = self._norm_markers()
        return [n for n, _ in self.model.named_parameters()
                if n.startswith(prefix) and not any(m in n for m in norms)]

    def _norm_markers(self) -> tuple[str, ...]:
        return ("norm", "ln_")

    # --- head geometry and the GQA rule -------------------------------------------------------------------
    def kv_head_of(self, head: int) -> int:
        """The KV head a query head reads (query heads are grouped contiguously, as in transformers)."""
        return head // self.group_size

    def query_heads_of(self, kv_head: int) -> range:
        return range(kv_head * self.group_size, (kv_head + 1) * self.group_size)

    def close_heads(self, query: Iterable[int] = (), kv: Iterable[int] = ()) -> HeadRemoval:
        """The GQA rule, its one implementation: removing a KV head removes all of its query heads, and a
        KV head is removed exactly when all of its query heads are (no reader is left). Without GQA
        (group size 1) a query head and its KV head go together."""
        q, k = {int(h) for h in query}, {int(g) for g in kv}
        bad = sorted(h for h in q if not 0 <= h < self.num_heads) + sorted(
            g for g in k if not 0 <= g < self.num_kv_heads)
        if bad:
            raise TicketLabError(f"head index {bad[0]} is out of range: the model has {self.num_heads} query "
                                 f"heads and {self.num_kv_heads} KV heads per layer.")
        for g in k:
            q.update(self.query_heads_of(g))
        kv_gone = tuple(g for g in range(self.num_kv_heads) if all(h in q for h in self.query_heads_of(g)))
        return HeadRemoval(tuple(sorted(q)), kv_gone)

    def query_head_slices(self, layer: int, head: int) -> list[Slice]:  # family
        """A query head's own slices: its query rows (columns for GPT-2's fused c_attn, with its key and
        value columns there, since GPT-2 has one KV head per query head) and its output-projection inputs."""
        raise NotImplementedError

    def kv_head_slices(self, layer: int, kv_head: int) -> list[Slice]:  # family
        """A KV head's own slices beyond its query heads' (Llama: its k and v rows; GPT-2: none)."""
        raise NotImplementedError

    def kv_group_slices(self, layer: int, group: int) -> list[Slice]:
        """A KV head with all of its query heads: GQA cannot drop a KV head while a query head uses it."""
        out = list(self.kv_head_slices(layer, group))
        for h in self.query_heads_of(group):
            out += self.query_head_slices(layer, h)
        return out

    def head_removal_slices(self, layer: int, removal: HeadRemoval) -> list[Slice]:
        """Every slice a (closed) head removal masks: each removed query head's, each removed KV head's own."""
        out = [s for h in removal.query for s in self.query_head_slices(layer, h)]
        return out + [s for g in removal.kv for s in self.kv_head_slices(layer, g)]

    def neuron_slices(self, layer: int, neuron: int) -> list[Slice]:  # family
        raise NotImplementedError

    # --- materialization: the family's config and modules -------------------------------------------------
    def stock_shape(self, shape: dict) -> bool:  # family
        """Whether the family's stock config can say that every layer has `shape` (unit counts)."""
        raise NotImplementedError

    def write_config(self, config, num_layers: int, shape: dict | None, layers_dropped: bool) -> None:  # family
        """Set the layer count and unit counts on a copy of the config. `shape` None: layers differ, so the
        config keeps the dense counts as an upper bound (per-layer shapes are stored beside it)."""
        raise NotImplementedError

    def reshape_layer(self, layer: nn.Module, shape: dict) -> None:  # family
        """Replace a freshly built layer's projections by ones of `shape`'s sizes (weights loaded after)."""
        raise NotImplementedError

    # --- evaluation ---------------------------------------------------------------------------------------
    def body_and_head(self) -> tuple[nn.Module, nn.Module] | None:
        """(body, head) when logits are exactly `head(body(x).last_hidden_state)`, else None.

        Models that scale or soft-cap their logits after the head (Gemma 2, Cohere) are left to the
        plain forward path."""
        return body_and_head(self.model)


def body_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """See `ArchitectureAdapter.body_and_head`; works on any transformers causal LM."""
    cfg = model.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        return None
    body = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or body is model or head is None:
        return None
    return body, head


def resized_like(old: nn.Module, n_in: int, n_out: int) -> nn.Module:
    """A new projection of the same kind, dtype and device as `old` with other sizes (GPT-2's Conv1D
    takes (out, in) and stores [in, out]; a Linear keeps its bias flag)."""
    w = old.weight
    if type(old).__name__ == "Conv1D":
        return type(old)(n_out, n_in).to(dtype=w.dtype, device=w.device)
    return nn.Linear(n_in, n_out, bias=old.bias is not None, dtype=w.dtype, device=w.device)
