"""Checking an export bundle: every file's sha256 against the manifest, no file missing or added, the
manifest's own hash, the ticket id recomputed from the masks, and (masked weights) that every pruned
weight really is zero."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pruning.calibration import sha256_file  # noqa: F401  (re-exported for bundle code)
from pruning.errors import TicketLabError

BUNDLE_FORMAT = "ticketlab-bundle/1"
MANIFEST = "manifest.json"


def file_digests(root: Path) -> dict[str, dict]:
    """relative path -> {sha256, bytes} for every file under root except the manifest."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST:
            out[p.relative_to(root).as_posix()] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def manifest_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def verify_bundle(directory: str | Path) -> dict:
    """Returns a summary when everything matches; raises one TicketLabError naming every file that does not."""
    root = Path(directory)
    mf = root / MANIFEST
    if not mf.is_file():
        raise TicketLabError(f"{root} is not a Ticket Lab bundle: no {MANIFEST}.")
    try:
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TicketLabError(f"{mf} is not valid JSON ({e}): the bundle is damaged.") from e
    if manifest.get("format") != BUNDLE_FORMAT:
        raise TicketLabError(f"{mf}: unknown bundle format {manifest.get('format')!r} (expected {BUNDLE_FORMAT}).")
    problems: list[str] = []
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        problems.append(f"{MANIFEST}: its content does not match its manifest_sha256 (edited after export)")
    listed = manifest.get("files") or {}
    actual = file_digests(root)
    for rel, want in sorted(listed.items()):
        got = actual.get(rel)
        if got is None:
            problems.append(f"{rel}: missing")
        elif got["sha256"] != want["sha256"]:
            problems.append(f"{rel}: sha256 {got['sha256'][:16]} does not match the manifest's {want['sha256'][:16]}")
    problems += [f"{rel}: not in the manifest (added after export)" for rel in sorted(set(actual) - set(listed))]
    ticket_id = manifest.get("ticket", {}).get("id")
    ticket = None
    if (root / "ticket").is_dir():
        from pruning.ticket import Ticket

        try:
            ticket = Ticket.load(root / "ticket")
        except TicketLabError as e:
            problems.append(f"ticket/: {e}")
        else:
            if ticket.id != ticket_id:
                problems.append(f"ticket/: the masks give ticket id {ticket.id}, the manifest says {ticket_id}")
    else:
        problems.append("ticket/: missing")
    if ticket is not None and manifest.get("bundle_format") == "masked-weights" and not problems:
        problems += _pruned_are_zero(root, ticket)
    if problems:
        raise TicketLabError(f"bundle {root} does not verify: " + "; ".join(problems))
    return {"ok": True, "bundle": str(root), "ticket": ticket_id, "format": manifest.get("bundle_format"),
            "files": len(listed), "review": manifest.get("review", {}).get("status")}


def _pruned_are_zero(root: Path, ticket) -> list[str]:
    from safetensors import safe_open

    located = {}
    for f in sorted(root.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():
                located[k] = f
    problems = []
    for name, mask in ticket.masks.items():
        f = located.get(name)
        if f is None:
            if "lm_head" not in name:
                problems.append(f"{name}: masked by the ticket but not in the bundle's weights")
            continue
        with safe_open(str(f), framework="pt") as h:
            w = h.get_tensor(name)
        if tuple(w.shape) != tuple(mask.shape):
            problems.append(f"{f.name}: {name} has shape {tuple(w.shape)}, the mask {tuple(mask.shape)}")
        elif bool((w[~mask] != 0).any()):
            problems.append(f"{f.name}: {name} has non-zero weights where the ticket prunes")
    return problems
