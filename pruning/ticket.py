"""A ticket: boolean masks over a dense model's weights plus the lineage that made them.

On disk a ticket is a directory:
- `masks.safetensors`: for each pruned parameter, under the parameter's own name, a uint8 tensor of
  the row-major mask bits packed as `numpy.packbits(mask.ravel(), bitorder="little")` (1 = kept);
- `ticket.json`: metadata, including each tensor's shape;
- `weights.safetensors` (only for methods that change surviving weights): the changed tensors.

The id is the first 16 hex digits of a sha256 over the canonical masks, any stored weights and the
metadata that determines them (not the name, creation time or library versions). Loading recomputes
it and refuses a mismatch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import durable, settings
from .errors import TicketLabError
from .refs import MIN_PREFIX, resolve_ref

__all__ = ["FORMAT", "MIN_PREFIX", "Ticket", "applied", "check_compatible", "find_ticket", "resolve_ref"]

FORMAT = "ticketlab-ticket/1"


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    bits = np.packbits(mask.detach().cpu().numpy().astype(np.uint8).ravel(), bitorder="little")
    return torch.from_numpy(bits)


def unpack_mask(packed: torch.Tensor, shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    count = int(np.prod(shape)) if len(shape) else 1
    bits = np.unpackbits(packed.numpy(), count=count, bitorder="little")
    return torch.from_numpy(bits.astype(bool)).view(*shape)


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("ticketlab", "torch", "transformers", "safetensors", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _tensor_digest(h, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


@dataclass
class Ticket:
    masks: dict[str, torch.Tensor]  # parameter name -> bool mask in the parameter's shape (True = kept)
    dense: dict  # {"spec", "weights_sha256", "family", "model_type"}
    method: str
    params: dict
    target_sparsity: float
    seed: int | None = None
    calibration: dict | None = None
    parent: str | None = None
    lineage: dict = field(default_factory=dict)  # e.g. IMP round, rewind point, experiment
    structure: dict | None = None  # structured tickets: removed heads / neurons / layers
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # surviving weights the method changed
    name: str | None = None
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    versions: dict = field(default_factory=library_versions)
    path: Path | None = None
    # (key, sha256) of the last hash: hashing every mask costs seconds on a real model and `id` is read
    # often. The key is cheap: the metadata JSON plus each tensor's identity and in-place version counter,
    # so a changed field or an edited mask is hashed again rather than served stale.
    _hash_cache: tuple | None = field(default=None, init=False, repr=False, compare=False)

    # --- identity ----------------------------------------------------------------------------------
    def _id_payload(self) -> dict:
        return {"format": FORMAT, "dense_sha256": self.dense["weights_sha256"], "method": self.method,
                "params": self.params, "target_sparsity": self.target_sparsity, "seed": self.seed,
                "calibration": self.calibration, "parent": self.parent, "lineage": self.lineage,
                "structure": self.stored_structure}

    @property
    def stored_structure(self) -> dict | None:
        """The structure as saved: an older ticket's own schema (what its id was made from; `Ticket.load`
        normalizes `structure` for readers), else `structure`."""
        return self.__dict__.get("_stored_structure", self.structure)

    @property
    def content_sha256(self) -> str:
        payload = json.dumps(self._id_payload(), sort_keys=True, separators=(",", ":"))
        key = (payload, tuple((n, id(t), t._version) for n, t in sorted(self.masks.items())),
               tuple((n, id(t), t._version) for n, t in sorted(self.weights.items())))
        if self._hash_cache is not None and self._hash_cache[0] == key:
            return self._hash_cache[1]
        h = hashlib.sha256(payload.encode())
        for name in sorted(self.masks):
            _tensor_digest(h, "mask:" + name, pack_mask(self.masks[name]))
            h.update(json.dumps(list(self.masks[name].shape)).encode())
        for name in sorted(self.weights):
            _tensor_digest(h, "weight:" + name, self.weights[name])
        self._hash_cache = (key, h.hexdigest())
        return self._hash_cache[1]

    @property
    def id(self) -> str:
        return self.content_sha256[:16]

    # --- statistics ------------------------------------------------------------------------------
    @property
    def achieved_sparsity(self) -> float:
        total = sum(m.numel() for m in self.masks.values())
        kept = sum(int(m.sum()) for m in self.masks.values())
        return 1.0 - kept / total if total else 0.0

    def tensor_stats(self) -> dict[str, dict]:
        return {n: {"shape": list(m.shape), "numel": m.numel(), "kept": int(m.sum())} for n, m in self.masks.items()}

    # --- storage ---------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"format": FORMAT, "id": self.id, "content_sha256": self.content_sha256, "name": self.name,
                "dense": self.dense, "method": self.method, "params": self.params,
                "target_sparsity": self.target_sparsity, "achieved_sparsity": self.achieved_sparsity,
                "seed": self.seed, "calibration": self.calibration, "parent": self.parent,
                "lineage": self.lineage, "structure": self.stored_structure,
                "tensors": self.tensor_stats(),
                "weights": {"file": "weights.safetensors", "tensors": sorted(self.weights)} if self.weights else None,
                "mask_encoding": "numpy.packbits(mask.ravel(), bitorder='little'), uint8, 1 = kept",
                "tie_rule": "among equal scores the lower row-major index is pruned first",
                "created_at": self.created_at, "versions": self.versions}

    def save(self, root: Path | None = None) -> Path:
        """Write durably and atomically; idempotent and repairing, so runs resume and crashes heal.

        The id is the content, so a complete ticket already stored under it (it loads and its hash
        checks) is kept as is. A damaged or partial one (e.g. truncated by a crash) is replaced. Two
        processes saving the same ticket at once both succeed and leave one complete copy."""
        root = Path(root or settings.tickets_dir())
        tid = self.id
        target = root / tid
        durable.remove_stale_temps(root)
        for _ in range(3):  # a concurrent writer may swap in its copy while we look
            if _complete(target, tid):
                break
            try:
                with durable.atomic_dir(target, replace=target.exists() or target.is_symlink()) as tmp:
                    self._write(tmp)
                break
            except FileExistsError:  # another process renamed its copy in first: check it on the next turn
                continue
        else:
            raise TicketLabError(f"ticket {tid} could not be stored in {root}: another process keeps replacing it.")
        self.path = target
        return target

    def _write(self, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({n: pack_mask(m) for n, m in self.masks.items()}, str(folder / "masks.safetensors"))
        if self.weights:
            save_file({n: t.detach().cpu().contiguous() for n, t in self.weights.items()},
                      str(folder / "weights.safetensors"))
        durable.crash_point("ticket.save.partial")
        # ticket.json last: a folder without it is visibly not a ticket
        (folder / "ticket.json").write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> Ticket:
        from safetensors.torch import load_file

        path = Path(path)
        meta_file = path / "ticket.json"
        if not meta_file.exists():
            raise TicketLabError(f"{path} is not a ticket directory (no ticket.json).")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as e:
            raise TicketLabError(f"{meta_file} is not valid JSON ({e}); the ticket is damaged: re-create it.") from e
        if meta.get("format") != FORMAT:
            raise TicketLabError(f"{meta_file}: unknown ticket format {meta.get('format')!r} (expected {FORMAT}).")
        try:
            packed = load_file(str(path / "masks.safetensors"))
        except Exception as e:
            raise TicketLabError(f"{path / 'masks.safetensors'} is truncated or corrupt ({e}); re-create the ticket.") from e
        masks = {}
        for name, stats in meta["tensors"].items():
            if name not in packed:
                raise TicketLabError(f"{path}: mask for {name} is missing from masks.safetensors.")
            expected = (int(np.prod(stats["shape"])) + 7) // 8
            if packed[name].numel() != expected:
                raise TicketLabError(f"{path}: mask for {name} has {packed[name].numel()} bytes, expected {expected} "
                                     f"for shape {stats['shape']}; the file is damaged.")
            masks[name] = unpack_mask(packed[name], stats["shape"])
        weights = {}
        if meta.get("weights"):
            wfile = str(meta["weights"].get("file") or "")
            if Path(wfile).is_absolute() or not (path / wfile).resolve().is_relative_to(path.resolve()):
                # a ticket's files live in its own folder; `../` or an absolute path would load weights from elsewhere
                raise TicketLabError(f"{meta_file}: weights.file {wfile!r} points outside the ticket folder; "
                                     f"re-create the ticket.")
            try:
                weights = load_file(str(path / wfile))
            except Exception as e:
                raise TicketLabError(f"{path}: weights.safetensors is truncated or corrupt ({e}).") from e
        t = cls(masks=masks, dense=meta["dense"], method=meta["method"], params=meta["params"],
                target_sparsity=meta["target_sparsity"], seed=meta.get("seed"), calibration=meta.get("calibration"),
                parent=meta.get("parent"), lineage=meta.get("lineage") or {}, structure=meta.get("structure"),
                weights=weights, name=meta.get("name"), created_at=meta["created_at"],
                versions=meta.get("versions", {}), path=path)
        if t.content_sha256 != meta.get("content_sha256") or t.id != meta.get("id"):
            raise TicketLabError(f"ticket {path} does not match its id {meta.get('id')}: its masks, weights or "
                                 f"metadata were changed after it was made. Re-create it; do not edit tickets by hand.")
        from .structure import normalize

        # Older tickets name removed units in one of two earlier schemas: readers get the one schema, while
        # the id (and what a re-save writes) stays the stored structure's (`_stored_structure`).
        normalized = normalize(t.structure)
        if normalized != t.structure:
            t._stored_structure = t.structure
            t.structure = normalized
        return t


def _complete(path: Path, tid: str) -> bool:
    """Whether a stored ticket is whole: it loads, its hash checks and it is the id asked for."""
    if not (path / "ticket.json").is_file():
        return False
    try:
        return Ticket.load(path).id == tid
    except (TicketLabError, KeyError, TypeError, ValueError):
        return False


def find_ticket(ref: str, root: Path | None = None) -> Path:
    """A ticket directory from a path, a full id or a unique id prefix (see `resolve_ref`)."""
    p = Path(ref).expanduser()
    if (p / "ticket.json").exists():
        return p
    root = Path(root or settings.tickets_dir())
    ids = [d.name for d in root.iterdir() if (d / "ticket.json").is_file()] if root.is_dir() else []
    return root / resolve_ref(ref, ids, "ticket", str(root))


def check_compatible(ticket: Ticket, model: torch.nn.Module, weights_sha256: str) -> None:
    if ticket.dense["weights_sha256"] != weights_sha256:
        raise TicketLabError(
            f"ticket {ticket.id} was made from dense weights {ticket.dense['weights_sha256'][:12]} "
            f"({ticket.dense.get('spec')}), but the loaded model's weights hash to {weights_sha256[:12]}. "
            f"Load the ticket's own dense model.")
    params = dict(model.named_parameters())
    for name, mask in ticket.masks.items():
        if name not in params:
            raise TicketLabError(f"ticket {ticket.id} masks {name}, which the loaded model does not have.")
        if tuple(mask.shape) != tuple(params[name].shape):
            raise TicketLabError(f"ticket {ticket.id}: mask for {name} has shape {tuple(mask.shape)}, "
                                 f"the weight has {tuple(params[name].shape)}.")


@contextlib.contextmanager
def applied(loaded, ticket: Ticket | None) -> Iterator[None]:
    """Apply a ticket to a loaded dense model for the duration of the block, then restore the dense
    weights exactly, so one cached model can serve many tickets. Saves only the values it zeroes
    (and the tensors it replaces), not a second copy of the model."""
    if ticket is None:
        yield
        return
    model = loaded.model
    check_compatible(ticket, model, loaded.weights_sha256)
    if getattr(model, "_ticketlab_applied", None):
        raise TicketLabError(f"ticket {model._ticketlab_applied} is already applied to this model; nest no tickets.")
    params = dict(model.named_parameters())
    saved_values: dict[str, torch.Tensor] = {}
    saved_whole: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, w in ticket.weights.items():
                saved_whole[name] = params[name].data.clone()
                params[name].data.copy_(w.to(params[name].dtype))
            for name, mask in ticket.masks.items():
                p = params[name].data
                drop = ~mask.to(p.device)
                if name not in saved_whole:
                    saved_values[name] = p[drop].clone()
                p[drop] = 0
        model._ticketlab_applied = ticket.id
        yield
    finally:
        with torch.no_grad():
            for name, values in saved_values.items():
                params[name].data[~ticket.masks[name].to(params[name].device)] = values
            for name, w in saved_whole.items():
                params[name].data.copy_(w)
        model._ticketlab_applied = None
