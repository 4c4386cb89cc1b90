"""The shipped artifact of a bundle: the checkpoint a serving engine loads, optionally quantized.

Its identity (`artifact_id`) is the sha256 over its tensors' hashes and its quantization config: what
the engine computes with, independent of file layout. The manifest records it, the signature covers
the files it is computed from, evaluation rows measured on it carry it (`extra.artifact`), and `verify`
recomputes it, so evidence measured on another artifact cannot pass for this one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from pruning import serving_format as sf
from pruning.errors import TicketLabError
from pruning.ticket import Ticket, applied

LAB = "lab"  # evidence measured on the lab's in-memory application of the mask (no exported artifact)


def artifact_id(root: Path) -> str:
    from analysis.governance.signing import tensor_digests

    body = {"tensors": tensor_digests(Path(root)), "quantization": sf.quantization_config(root)}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def quantize_checkpoint(directory: Path, loaded, ticket: Ticket, recipe: sf.Recipe, loader: dict) -> dict:
    """Replace the checkpoint written in `directory` by its quantized form and check it: pruned weights
    still exact zeros, and how often its next-token choice agrees with the lab's float application."""
    from transformers import AutoModelForCausalLM

    if not loader.get("stock_transformers"):
        raise TicketLabError("this materialized model has per-layer shapes that a stock configuration cannot "
                             "express, so no serving engine loads it and it is not quantized; prune with the same "
                             "number of heads/neurons in every layer, or export without --quantize.")
    dtype = next(loaded.model.parameters()).dtype
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    sf.quantize(model, recipe)
    sf.save(model, directory)
    del model
    problems = sf.masked_nonzero(directory, {} if ticket.structure else ticket.masks)
    if problems:  # cannot happen with symmetric RTN; a format change that broke it must not ship
        raise RuntimeError(f"quantization did not keep the ticket's mask exact: {problems[:3]}")
    return {"quantization": recipe.record(), "mask_exact": True, "check": agreement_check(directory, loaded, ticket)}


def agreement_check(directory: Path, loaded, ticket: Ticket) -> dict:
    """Load the quantized checkpoint with stock transformers (compressed-tensors decompresses it) and compare
    next-token predictions with the lab's applied ticket on a fixed text."""
    from transformers import AutoModelForCausalLM

    from analysis.governance.export import CHECK_TEXT

    dtype = next(loaded.model.parameters()).dtype
    try:
        stock = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    except Exception as e:  # the point is to learn whether stock code loads it
        return {"loads": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    ids = loaded.tokenizer(CHECK_TEXT, return_tensors="pt").input_ids[:, :32]
    with torch.no_grad():
        with applied(loaded, ticket):
            ref = loaded.model(ids.to(loaded.device)).logits.float().cpu()
        got = stock(ids).logits.float()
    del stock
    return {"loads": True, "top1_agreement": float((ref.argmax(-1) == got.argmax(-1)).float().mean()),
            "max_abs_logit_diff": float((ref - got).abs().max()), "tokens": int(ids.shape[1]),
            "loader": "AutoModelForCausalLM.from_pretrained (compressed-tensors)"}


def requantized_differences(root: Path, loaded, ticket: Ticket, quantization: dict) -> list[str]:
    """Quantize the dense model under the ticket again with the recorded recipe and compare every stored
    tensor exactly (RTN is deterministic): [] when the bundle holds exactly that."""
    import copy

    from safetensors import safe_open

    recipe = sf.make_recipe(quantization["scheme"], quantization.get("group_size"))
    with applied(loaded, ticket):
        model = copy.deepcopy(loaded.model)
    sf.quantize(model, recipe)
    expected = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    problems = []
    for f in sorted(Path(root).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            for name in h.keys():
                want = expected.get(name)
                if want is not None and not torch.equal(h.get_tensor(name), want.to(h.get_tensor(name).dtype)):
                    problems.append(f"{f.name}: {name} is not the dense model's weights under the ticket's masks, "
                                    f"quantized with the recorded recipe")
    return problems


def section(root: Path, fmt: str, recipe: sf.Recipe | None, dense_bytes: int | None) -> dict:
    """The manifest's `artifact`: what is shipped, its id, and its bytes on disk against the dense model's."""
    size = sf.weights_bytes(root)
    return {"id": artifact_id(root), "format": fmt, "quantization": recipe.record() if recipe else None,
            "serving_format": "compressed-tensors" if recipe else "safetensors (unquantized)",
            "weights_bytes": size, "dense_weights_bytes": dense_bytes,
            "bytes_vs_dense": size / dense_bytes if dense_bytes else None}


def evidence(metrics: list[dict], artifact: dict | None) -> dict:
    """Which artifact the ticket's evidence in the manifest was measured on: this one, the lab's float
    application of the mask (`lab`), or another artifact."""
    on = sorted({m.get("artifact") or LAB for m in metrics if m["subject"] == "ticket"})
    this = artifact["id"] if artifact else None
    return {"measured_on": on, "this_artifact": this,
            "note": "lab = the mask applied to the dense model in the lab's own dtype; an id = an exported artifact "
                    "evaluated as shipped (`ticketlab serve-eval`)"}


def evidence_problem(manifest: dict, recomputed_id: str | None) -> str | None:
    """Why the approving evidence does not describe this bundle's artifact, or None when it does. Evidence
    on the lab's application counts only for an unquantized artifact (the export checked it has the lab's
    logits); a quantized artifact needs evidence measured on itself."""
    ev = manifest.get("evidence")
    if not ev or (manifest.get("review") or {}).get("status") != "approved":
        return None
    artifact = manifest.get("artifact") or {}
    quantized = bool(artifact.get("quantization"))
    for on in ev.get("measured_on") or []:
        if on == LAB and not quantized:
            continue
        if on == LAB:
            return ("the approving evidence was measured on the lab's float application of the mask, not on this "
                    "quantized artifact: evaluate the artifact (`ticketlab serve-eval BUNDLE`) and approve on that")
        if on != recomputed_id:
            return (f"the approving evidence was measured on artifact {on[:12]}, this bundle's artifact is "
                    f"{str(recomputed_id)[:12]}: it is not what was reviewed")
    return None


def model_dir(bundle: Path) -> Path:
    """The bundle folder as a checkpoint a serving engine loads, or one clear error saying why it is not."""
    bundle = Path(bundle)
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = None
    if manifest is None:
        if (bundle / "config.json").is_file():
            return bundle  # a plain checkpoint folder (e.g. the dense model)
        raise TicketLabError(f"{bundle} is neither a Ticket Lab bundle (no manifest.json) nor a model folder.")
    fmt = manifest.get("bundle_format")
    if fmt == "masks" or not (bundle / "config.json").is_file():
        raise TicketLabError(f"{bundle} is a `{fmt}` bundle: it holds no model in a serving format. Export with "
                             f"--format masked-weights or materialized (optionally --quantize w8a8|w4a16).")
    loader = (manifest.get("deployer") or {}).get("loader") or {}
    if fmt == "materialized" and not loader.get("stock_transformers", True):
        raise TicketLabError(f"{bundle} is a materialized model with per-layer shapes that no stock configuration "
                             f"expresses; vLLM cannot load it.")
    return bundle
