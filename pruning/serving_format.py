"""Serving formats: a checkpoint rewritten in compressed-tensors, the quantized format vLLM loads.

Quantization is round-to-nearest (RTN) from the weights alone, with compressed-tensors' own scale rule
(`calculate_qparams`) and compressors. GPTQ through llmcompressor is not used: llmcompressor 0.14 pins
transformers <= 5.17 and this project runs 5.24. RTN needs no calibration data and is deterministic:
the same weights give the same tensors, so `verify` can re-quantize the dense model under the ticket
and compare the bundle's tensors exactly.

Schemes (compressed-tensors presets, `lm_head` left in the model dtype):
- `w8a8`: int8 weights, symmetric, one scale per output channel; activations quantized to int8 per
  token at run time (dynamic). Format `int-quantized`. vLLM's CPU kernels run it.
- `w4a16`: 4-bit weights, symmetric, one scale per group of `group_size` input columns; activations
  stay in the model dtype. Format `pack-quantized` (eight values per int32). Int8 weight-only is not
  offered: vLLM's CPU kernels refuse it (they implement 4-bit weight-only).

Composable with any ticket: symmetric quantization has zero point 0 and round(0 / scale) = 0, so a
pruned weight is stored as an exact 0 and stays pruned; `masked_nonzero` checks that on the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import TicketLabError

SCHEMES = {"w8a8": ("W8A8", "int-quantized"), "w4a16": ("W4A16", "pack-quantized")}
DEFAULT_GROUP_SIZE = 128
IGNORE = ("lm_head",)
FORMAT_NOTES = {
    "w8a8": "int8 weights per output channel + int8 activations per token (dynamic), round-to-nearest",
    "w4a16": "4-bit weights per group of input columns, activations in the model dtype, round-to-nearest",
}


@dataclass(frozen=True)
class Recipe:
    scheme: str  # a key of SCHEMES
    group_size: int | None = None  # w4a16 only

    def record(self) -> dict:
        """What the manifest and the ledger say about how the artifact was quantized."""
        import compressed_tensors

        preset, fmt = SCHEMES[self.scheme]
        return {"scheme": self.scheme, "preset": preset, "format": fmt, "group_size": self.group_size,
                "method": "round-to-nearest (no calibration data)", "targets": ["Linear"], "ignore": list(IGNORE),
                "library": f"compressed-tensors {compressed_tensors.__version__}", "note": FORMAT_NOTES[self.scheme]}


def make_recipe(scheme: str, group_size: int | None = None) -> Recipe:
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise TicketLabError(f"unknown quantization {scheme!r}: use {', '.join(SCHEMES)} (or none).")
    if scheme == "w8a8":
        if group_size is not None:
            raise TicketLabError("--group-size applies to w4a16 only (w8a8 has one scale per output channel).")
        return Recipe(scheme)
    group_size = DEFAULT_GROUP_SIZE if group_size is None else group_size
    if group_size < 1:
        raise TicketLabError(f"--group-size must be a positive number of input columns, not {group_size}.")
    return Recipe(scheme, group_size)


def targets(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The linear layers that are quantized: every nn.Linear but the output head."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and not any(n.split(".")[-1] == i for i in IGNORE)]


def check_fits(model: nn.Module, recipe: Recipe) -> None:
    """Grouped scales need whole groups: name the first layer whose input width the group does not divide."""
    if recipe.group_size is None:
        return
    for name, m in targets(model):
        if m.in_features % recipe.group_size:
            fits = max(g for g in (128, 64, 32, 16, 8) if m.in_features % g == 0) if m.in_features % 8 == 0 else None
            raise TicketLabError(
                f"{recipe.scheme} with group size {recipe.group_size} does not fit layer {name}: its {m.in_features} "
                f"input columns are not a multiple of {recipe.group_size}. Pass --group-size "
                + (f"{fits} (or another divisor of every layer's input width)." if fits else
                   "that divides every layer's input width.") )


def quantize(model: nn.Module, recipe: Recipe) -> None:
    """Quantize `model` in place and compress it: its state dict is then what the files hold."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from compressed_tensors.quantization.utils.helpers import calculate_qparams

    check_fits(model, recipe)
    preset, fmt = SCHEMES[recipe.scheme]
    scheme = preset_name_to_scheme(preset, ["Linear"])
    if recipe.group_size is not None:
        scheme.weights.group_size = recipe.group_size
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=list(IGNORE)),
                              show_progress=False)
    with torch.no_grad():
        for _, m in targets(model):
            args = m.quantization_scheme.weights
            w = m.weight.detach()
            if recipe.group_size is not None:  # [out, in] -> [out, groups, group_size]: a min/max per group
                g = w.unflatten(-1, (w.shape[-1] // recipe.group_size, recipe.group_size))
                lo, hi = g.amin(-1), g.amax(-1)
            else:
                lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
            scale, zero = calculate_qparams(lo, hi, args)
            m.weight_scale.data.copy_(scale.reshape(m.weight_scale.shape))
            m.weight_zero_point.data.copy_(zero.reshape(m.weight_zero_point.shape))
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    compressor.compress_model(model)
    model._ticketlab_compressor = compressor  # update_config writes its quantization_config after saving


def save(model: nn.Module, out: Path) -> None:
    """Write a model `quantize` compressed: safetensors plus config.json with its quantization_config."""
    for old in Path(out).glob("*.safetensors*"):  # the unquantized files this replaces
        old.unlink()
    model.save_pretrained(out)
    model._ticketlab_compressor.update_config(str(out))


def quantization_config(directory: Path) -> dict | None:
    import json

    try:
        return json.loads((Path(directory) / "config.json").read_text()).get("quantization_config")
    except (OSError, ValueError):
        return None


def weights_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in Path(directory).glob("*.safetensors"))


def stored_weight(directory: Path, name: str) -> torch.Tensor | None:
    """The stored values of parameter `name` (e.g. `...q_proj.weight`) in the checkpoint's own integers or
    floats, unpacked from pack-quantized int32 words; None when the checkpoint does not hold it."""
    from safetensors import safe_open

    base = name.removesuffix(".weight")
    for f in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            keys = set(h.keys())
            if name in keys:
                return h.get_tensor(name)
            if f"{base}.weight_packed" in keys:
                from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

                shape = torch.Size(h.get_tensor(f"{base}.weight_shape").tolist())
                return unpack_from_int32(h.get_tensor(f"{base}.weight_packed"), 4, shape)
    return None


def masked_nonzero(directory: Path, masks: dict[str, torch.Tensor]) -> list[str]:
    """Parameters whose pruned entries are not stored as exact zeros (quantized or not)."""
    problems = []
    for name, mask in sorted(masks.items()):
        w = stored_weight(directory, name)
        if w is None:
            continue  # e.g. a tied lm_head, or a layer cut out by materialization
        if tuple(w.shape) != tuple(mask.shape):
            problems.append(f"{name}: stored shape {tuple(w.shape)}, mask {tuple(mask.shape)}")
        elif bool((w[~mask.bool()] != 0).any()):
            problems.append(f"{name}: pruned entries are not zero in the stored weights")
    return problems
