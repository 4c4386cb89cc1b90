"""GPT-2 family: fused `c_attn` (q|k|v along its output columns), Conv1D `[in, out]` weights, one KV
head per query head (so the GQA rule reduces to: a head's q, k and v columns go together)."""

from __future__ import annotations

from torch import nn

from ..errors import TicketLabError
from .base import ArchitectureAdapter, LinearRef, Slice, resized_like


class GPT2Adapter(ArchitectureAdapter):
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

    @property
    def max_positions(self) -> int | None:
        return getattr(self.config, "n_positions", None)

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

    def kv_head_slices(self, layer: int, kv_head: int) -> list[Slice]:
        return []  # a head's k and v columns are already its query head's slices

    def neuron_slices(self, layer: int, neuron: int) -> list[Slice]:
        p, j = self.layer_prefix(layer), neuron
        return [Slice(f"{p}.mlp.c_fc.weight", 1, j, j + 1), Slice(f"{p}.mlp.c_fc.bias", 0, j, j + 1),
                Slice(f"{p}.mlp.c_proj.weight", 0, j, j + 1)]

    # --- materialization ------------------------------------------------------------------------------
    def stock_shape(self, shape: dict) -> bool:
        return shape["num_attention_heads"] == self.num_heads  # GPT-2 derives the head width as n_embd / n_head

    def write_config(self, config, num_layers: int, shape: dict | None, layers_dropped: bool) -> None:
        if layers_dropped and getattr(config, "scale_attn_by_inverse_layer_idx", False):
            raise TicketLabError("this GPT-2 scales attention by its layer index; dropping layers would change "
                                 "the scaling of the later ones, so materialize refuses layer removal for it.")
        config.n_layer = num_layers
        config.n_inner = (shape or self.dense_shape())["intermediate_size"]

    def reshape_layer(self, layer: nn.Module, shape: dict) -> None:
        attn, mlp = layer.attn, layer.mlp
        h, m = shape["num_attention_heads"], shape["intermediate_size"]
        d, width = attn.embed_dim, h * attn.head_dim
        attn.c_attn = resized_like(attn.c_attn, d, 3 * width)
        attn.c_proj = resized_like(attn.c_proj, width, d)
        attn.num_heads, attn.split_size = h, width  # GPT2Attention splits q|k|v by split_size
        mlp.c_fc = resized_like(mlp.c_fc, d, m)
        mlp.c_proj = resized_like(mlp.c_proj, m, d)
