"""Llama family (Llama, Mistral, Qwen2/3, SmolLM): separate q/k/v/o and gate/up/down projections,
grouped-query attention (`num_key_value_heads` KV heads, each read by a contiguous group of query heads)."""

from __future__ import annotations

from torch import nn

from .base import ArchitectureAdapter, LinearRef, Slice, resized_like


class LlamaAdapter(ArchitectureAdapter):
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

    @property
    def max_positions(self) -> int | None:
        return getattr(self.config, "max_position_embeddings", None)

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

    def kv_head_slices(self, layer: int, kv_head: int) -> list[Slice]:
        a, b = kv_head * self.head_dim, (kv_head + 1) * self.head_dim
        return self._rows(layer, "k", a, b) + self._rows(layer, "v", a, b)

    def neuron_slices(self, layer: int, neuron: int) -> list[Slice]:
        j = neuron
        return self._rows(layer, "gate", j, j + 1) + self._rows(layer, "up", j, j + 1) + [
            Slice(self._w(layer, "down"), 1, j, j + 1)]

    # --- materialization ------------------------------------------------------------------------------
    def stock_shape(self, shape: dict) -> bool:
        # transformers' Llama config validation insists on hidden_size % num_attention_heads == 0,
        # even with head_dim given explicitly.
        return self.hidden_size % shape["num_attention_heads"] == 0

    def write_config(self, config, num_layers: int, shape: dict | None, layers_dropped: bool) -> None:
        config.num_hidden_layers = num_layers
        config.head_dim = self.head_dim  # explicit: hidden_size / heads no longer gives it
        for k, v in (shape or self.dense_shape()).items():
            setattr(config, k, v)

    def reshape_layer(self, layer: nn.Module, shape: dict) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        h, kv, m = shape["num_attention_heads"], shape["num_key_value_heads"], shape["intermediate_size"]
        d, hd = attn.q_proj.in_features, self.head_dim
        attn.q_proj = resized_like(attn.q_proj, d, h * hd)
        attn.k_proj = resized_like(attn.k_proj, d, kv * hd)
        attn.v_proj = resized_like(attn.v_proj, d, kv * hd)
        attn.o_proj = resized_like(attn.o_proj, h * hd, d)
        # LlamaAttention reads head counts from its tensors' shapes; only the GQA repeat factor is stored.
        attn.num_key_value_groups = h // kv
        mlp.gate_proj = resized_like(mlp.gate_proj, d, m)
        mlp.up_proj = resized_like(mlp.up_proj, d, m)
        mlp.down_proj = resized_like(mlp.down_proj, m, d)
        mlp.intermediate_size = m
