"""Checking an export bundle, with or without the ledger.

Always: every file's sha256 against the manifest (none missing or added), the manifest's own digest,
the ticket id recomputed from the masks (and `weights.file` inside the ticket), the tensors' hashes
recorded at export, and for masked weights that every pruned weight is zero. With trusted keys (a
trust file from `ticketlab people export`, or the local ledger the bundle came from): the
model-signing signature over every file; that its signer is the exporter allowed to sign it (the reviewer
whose signed decision in the manifest approves exactly this ticket, or a deployer); that this decision
record is the approver's own signature (so a deployer-signed bundle still proves who approved it, and
whether it was an override); the signed creation record and ledger head. With the dense
model at hand: that the surviving weights are the dense model's (the recorded weights hash). What
could not be checked is returned in `unchecked`, and `ok` is False then: no key, no "ok".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pruning.calibration import sha256_file  # noqa: F401  (re-exported for bundle code)
from pruning.errors import TicketLabError

from . import chain, keys, signing, trustfile
from .record_types import APPROVE, DecisionBody
from .witness import head_payload

BUNDLE_FORMAT = "ticketlab-bundle/1"
MANIFEST = "manifest.json"


def file_digests(root: Path) -> dict[str, dict]:
    """relative path -> {sha256, bytes} for every file under root except the manifest and its signature."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in (MANIFEST, signing.SIG_FILE):
            out[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def manifest_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def load_bound_ticket(folder: Path, ticket_id: str):
    """The ticket in `folder`, refused unless it is `ticket_id`: the folder's name, the id its content hashes
    to and the id asked for agree (`Ticket.load` refuses a weights file outside the folder)."""
    from pruning.ticket import Ticket

    folder = Path(folder)
    ticket = Ticket.load(folder)
    if ticket.id != ticket_id:
        raise TicketLabError(f"the folder {folder} holds ticket {ticket.id}, not {ticket_id}: its files were replaced "
                             f"by another ticket's. Nothing was exported; restore the folder or re-create the ticket.")
    if folder.name not in (ticket_id, "ticket"):  # "ticket" is the folder's fixed name inside a bundle
        raise TicketLabError(f"ticket {ticket_id} lives in a folder named {folder.name!r}: a ticket's folder is named "
                             f"by its id. Move it to {folder.with_name(ticket_id)}.")
    return ticket


def _read_manifest(root: Path) -> dict:
    mf = root / MANIFEST
    if not mf.is_file():
        raise TicketLabError(f"{root} is not a Ticket Lab bundle: no {MANIFEST}.")
    try:
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TicketLabError(f"{mf} is not valid JSON ({e}): the bundle is damaged.") from e
    if manifest.get("format") != BUNDLE_FORMAT:
        raise TicketLabError(f"{mf}: unknown bundle format {manifest.get('format')!r} (expected {BUNDLE_FORMAT}).")
    return manifest


def load_trust(path: str | Path) -> dict:
    p = Path(path).expanduser()
    try:
        trust = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise TicketLabError(f"trust file {p} cannot be read ({e}); write one with `ticketlab people export`.") from e
    if not isinstance(trust, dict) or not isinstance(trust.get("people"), dict):
        raise TicketLabError(f"trust file {p} is not a Ticket Lab trust file (from `ticketlab people export`).")
    return trustfile.check(trust, str(p))  # signed by an admin it lists, with the ledger's anchor


def _key(trust: dict, name: str | None, key_id: str | None) -> tuple[str | None, str]:
    """(public PEM, '') of a trusted, unrevoked key of `name`, or (None, why not)."""
    person = trust["people"].get(name or "")
    if person is None:
        return None, f"{name!r} is not among the trusted people"
    entry = person.get("keys", {}).get(key_id or "")
    if entry is None:
        return None, f"key {str(key_id)[:12]} is not a trusted key of {name}"
    if entry.get("revoked"):
        return None, f"{name}'s key {str(key_id)[:12]} has been revoked"
    return entry["public_key"], ""


def _record_ok(record: dict | None, trust: dict) -> str:
    """'' when a signed governance record carried in the manifest is genuine, else why not."""
    if not record:
        return "missing"
    pem, why = _key(trust, record.get("actor"), record.get("key_id"))
    if pem is None:
        return why
    if chain.row_hash(record) != record.get("row_hash"):
        return "its content does not match its hash"
    if not keys.verify(pem, chain.signed_bytes(record), record.get("signature", "")):
        return f"its signature does not verify with {record.get('actor')}'s key"
    return ""


def _governance(root: Path, manifest: dict, ticket_id: str, trust: dict, content: str | None = None) -> list[str]:
    """`content`: the full content hash of the bundle's ticket/ (recomputed); the signed records must bind it,
    not only its 64-bit id."""
    problems = []
    sig = manifest.get("signature") or {}
    signer = sig.get("signer")
    pem, why = _key(trust, signer, sig.get("key_id"))
    if pem is None:
        return [f"bundle signature: {why}"]
    bad = signing.verify_signature(root, pem)
    if bad:
        problems.append(f"bundle signature: {bad}")
    decision = (manifest.get("review") or {}).get("decision") or {}
    record = decision.get("record")
    bad = _record_ok(record, trust)
    if bad:
        problems.append(f"decision record: {bad}")
    else:
        body = chain.body_of(record)
        if record["kind"] != DecisionBody.KIND or body.get("decision") != APPROVE or record["subject"] != ticket_id:
            problems.append(f"decision record #{record['seq']} is not an approval of {ticket_id}")
        elif "reviewer" not in trust["people"].get(record["actor"], {}).get("roles", []):
            problems.append(f"decision record: {record['actor']} is not a reviewer, so cannot approve")
        elif record["actor"] != signer and "deployer" not in trust["people"][signer].get("roles", []):
            problems.append(f"the bundle is signed by {signer}, but {record['actor']} approved it and {signer} is "
                            f"not a deployer")
        elif record["actor"] == signer and "reviewer" not in trust["people"][signer].get("roles", []):
            problems.append(f"bundle signature: {signer} is not a reviewer, so cannot vouch for an approval")
        elif any(decision.get(k) != body.get(k) for k in ("reason", "override", "policy_sha256")):
            problems.append("the manifest's decision summary differs from the signed decision record")
        elif content and body.get("content_sha256") != content:
            problems.append(f"decision record #{record['seq']} approves content {str(body.get('content_sha256'))[:16]}, "
                            f"but the bundle's ticket hashes to {content[:16]} (same id, other content)")
    creation = (manifest.get("ticket") or {}).get("creation_record")
    bad = _record_ok(creation, trust)
    if bad:
        problems.append(f"creation record: {bad}")
    elif creation["subject"] != ticket_id or (record and chain.body_of(record).get("creation_hash") != creation["row_hash"]):
        problems.append("the creation record is not the one the approval rests on")
    elif content and chain.body_of(creation).get("content_sha256") != content:
        problems.append("the creation record binds other content than the bundle's ticket")
    head = manifest.get("ledger_head") or {}
    hpem, why = _key(trust, head.get("actor"), head.get("key_id"))
    if hpem is None or not keys.verify(hpem, head_payload(head.get("ledger_id", ""), head.get("seq", 0),
                                                          head.get("head", "")), head.get("signature", "")):
        problems.append(f"ledger head: not signed by a trusted key ({why or 'signature does not verify'})")
    if trust.get("ledger_id") and head.get("ledger_id") != trust["ledger_id"]:
        problems.append(f"ledger head: from ledger {head.get('ledger_id')}, the trusted keys are ledger {trust['ledger_id']}'s")
    return problems


def verify_bundle(directory: str | Path, trust: dict | str | Path | None = None, dense: str | None = None,
                  loaded=None) -> dict:
    """A summary when nothing is wrong (with `ok` False and `unchecked` filled when key material or the dense
    model was missing); one TicketLabError naming every problem otherwise."""
    root = Path(directory)
    manifest = _read_manifest(root)
    problems: list[str] = []
    checked: list[str] = ["file hashes", "manifest digest", "ticket id"]
    unchecked: list[str] = []
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
    ticket_id = (manifest.get("ticket") or {}).get("id")
    ticket = None
    if (root / "ticket").is_dir():
        try:
            ticket = load_bound_ticket(root / "ticket", ticket_id)
        except TicketLabError as e:
            problems.append(f"ticket/: {e}")
    else:
        problems.append("ticket/: missing")
    fmt = manifest.get("bundle_format")
    if ticket is not None and fmt in ("masked-weights", "materialized") and not problems:
        problems += _weights(root, manifest, ticket, fmt, checked)
        if fmt == "masked-weights":
            problems += _against_dense(root, manifest, ticket, dense, loaded, checked, unchecked)
    trust = load_trust(trust) if isinstance(trust, str | Path) else trust
    signed = bool(manifest.get("signature"))
    if not signed:
        unchecked.append("signature: the bundle is not signed (an --unreviewed export, or made before bundles were "
                         "signed), so nobody vouches for it")
    elif trust is None:
        unchecked.append("signature, signer's role, signed decision and ledger head: no trusted keys (pass --trust "
                         "FILE from `ticketlab people export`, or verify next to the ledger it came from)")
    else:
        problems += _governance(root, manifest, ticket_id, trust, ticket.content_sha256 if ticket is not None else None)
        checked += ["model-signing signature", "signer may export it (the approver or a deployer)",
                    "the approver's signed decision", "signed creation", "signed ledger head"]
    if problems:
        raise TicketLabError(f"bundle {root} does not verify: " + "; ".join(problems))
    review = manifest.get("review") or {}
    decision = review.get("decision") or {}
    approved = review.get("status") == "approved"
    return {"ok": not unchecked, "bundle": str(root), "ticket": ticket_id, "format": fmt, "files": len(listed),
            "review": review_words(review), "override": bool(approved and decision.get("override")),
            "approved_by": decision.get("reviewer") if approved else None,
            "signed_by": (manifest.get("signature") or {}).get("signer"), "checked": checked, "unchecked": unchecked}


def local_trust(directory: str | Path, ledger=None) -> tuple[dict | None, str]:
    """The keys to verify a bundle with when no trust file is given: the local ledger's registry, but only
    when the bundle's signed head names that ledger and the person's trust anchor vouches for it (a
    re-initialised ledger's keys vouch for nothing). Returns (trust or None, where the keys came from, in
    words). One rule for the CLI and the dashboard."""
    from analysis.ledger import Ledger
    from pruning import settings

    from . import anchor, state

    path = Path(ledger.path) if ledger is not None else settings.ledger_path()
    try:
        head = json.loads((Path(directory) / MANIFEST).read_text()).get("ledger_head") or {}
    except (OSError, ValueError):
        return None, ""
    if not path.exists() or not head:
        return None, ""
    st = state.load(ledger if ledger is not None else Ledger(path))
    if st.ledger_id != head.get("ledger_id"):
        return None, ""
    problem = anchor.problem(st)
    if problem:
        return None, f" (the local ledger's keys are not used: {problem})"
    return st.registry.trust(), f" (keys from the ledger {path})"


def review_words(review: dict) -> str | None:
    """The manifest's review status in words; an approval that overrode the policy says so (and why)."""
    status = review.get("status")
    decision = review.get("decision") or {}
    if status == "approved" and decision.get("override"):
        why = (decision.get("override_reason") or "").strip()
        return "approved by override of the policy" + (f" ({why})" if why else "")
    return status


def _weights(root: Path, manifest: dict, ticket, fmt: str, checked: list[str]) -> list[str]:
    problems = []
    recorded = manifest.get("tensors") or {}
    if recorded:
        got = signing.tensor_digests(root)
        diff = sorted(n for n in set(recorded) | set(got) if recorded.get(n) != got.get(n))
        problems += [f"{n}: tensor differs from the one recorded at export" for n in diff[:10]]
        checked.append("tensor hashes recorded at export")
    problems += _shipped(root, manifest, ticket, checked)
    if fmt == "masked-weights" and not (manifest.get("artifact") or {}).get("quantization"):
        problems += _pruned_are_zero(root, ticket)
        checked.append("pruned weights are zero")
    return problems


def _shipped(root: Path, manifest: dict, ticket, checked: list[str]) -> list[str]:
    """The artifact's id recomputed from its tensors, pruned weights exact zeros in a quantized artifact,
    and that the approving evidence was measured on this artifact (analysis.serving.artifact)."""
    from pruning import serving_format

    from ..serving import artifact as shipped

    recorded = manifest.get("artifact")
    if not recorded:
        return []  # a bundle from before artifacts were recorded: its files are still checked above
    problems = []
    got = shipped.artifact_id(root)
    if got != recorded.get("id"):
        problems.append(f"artifact: its tensors hash to {got[:12]}, the manifest says {str(recorded.get('id'))[:12]}")
    checked.append("artifact id")
    if recorded.get("quantization") and manifest.get("bundle_format") == "masked-weights":
        problems += [f"quantized weights: {p}" for p in serving_format.masked_nonzero(root, ticket.masks)]
        checked.append("pruned weights are exact zeros after quantization")
    why = shipped.evidence_problem(manifest, got)
    if why:
        problems.append(f"evidence: {why}")
    elif manifest.get("evidence"):
        checked.append("approving evidence was measured on this artifact")
    return problems


def _against_dense(root: Path, manifest: dict, ticket, dense: str | None, loaded, checked: list[str],
                   unchecked: list[str]) -> list[str]:
    """Surviving weights equal the dense model's (whose weights hash the ticket records), changed ones the ticket's."""
    import torch
    from safetensors import safe_open

    from pruning.ticket import applied

    if loaded is None:
        spec = dense or ticket.dense.get("spec")
        if not dense and not _local(spec):
            unchecked.append(f"surviving weights against the dense model: {spec} is not on this machine (pass --dense)")
            return []
        from pruning.models import load_model

        try:
            loaded = load_model(spec, device="cpu", dtype=manifest.get("weights_dtype") or "float32")
        except TicketLabError as e:
            unchecked.append(f"surviving weights against the dense model: {e}")
            return []
    if loaded.weights_sha256 != ticket.dense["weights_sha256"]:
        return [f"the dense model given hashes to {loaded.weights_sha256[:12]}, the ticket was made from "
                f"{ticket.dense['weights_sha256'][:12]}: not its dense model"]
    quantization = (manifest.get("artifact") or {}).get("quantization")
    if quantization:  # deterministic RTN: quantizing the dense model under the ticket again gives the same tensors
        from ..serving.artifact import requantized_differences

        problems = requantized_differences(root, loaded, ticket, quantization)
        checked.append("quantized weights are the dense model's under the ticket's masks, quantized again")
        return problems[:10]
    problems = []
    with applied(loaded, ticket):
        expected = dict(loaded.model.named_parameters())
        for f in sorted(root.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as h:
                for name in h.keys():
                    if name in expected and not torch.equal(h.get_tensor(name), expected[name].detach().cpu()):
                        problems.append(f"{f.name}: {name} is not the dense model's weights under the ticket's masks")
    checked.append("surviving weights are the dense model's")
    return problems[:10]


def _local(spec: str | None) -> bool:
    from pruning.models import EMBEDDED

    return bool(spec) and (spec in EMBEDDED or Path(spec).expanduser().is_dir())


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
