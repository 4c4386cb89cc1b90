"""Export bundles: what a deployer receives, with a manifest that proves what it is, signed.

Layout (every format): `manifest.json`, `README.md` (Hugging Face model card), `ticket/` (the ticket
exactly as stored: masks, ticket.json, changed weights) and `model.sig`, the OpenSSF model-signing
signature over every file, made with the exporter's key: the approving reviewer, or a deployer (who
packages and ships what a reviewer approved; the reviewer's own signed approval record travels in the
manifest and `verify` checks both signatures, so a deployer can sign bytes but never an approval). `masked-weights` adds a stock
transformers checkpoint at the top level (the dense model with pruned weights set to zero);
`materialized` adds the physically smaller model from `pruning.materialize`. The manifest carries the
signed creation and decision records and the signed ledger head at export, so `verify` can check them
without the ledger and `audit --against BUNDLE` can check the ledger against the bundle. The bundle is
built in a temporary sibling and moved into place whole (`pruning.durable.atomic_dir`).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import shutil
from pathlib import Path

import torch

from pruning import serving_format as serving
from pruning.durable import atomic_dir
from pruning.errors import TicketLabError
from pruning.ticket import Ticket, applied, check_compatible, find_ticket

from .. import uncertainty
from ..ledger import Ledger, governance_store
from ..serving import artifact as shipped
from . import evidence as ev
from . import records, signing, state, witness
from .audit import require_intact
from .keys import Signer
from .reader import snapshot
from .record_types import Decision
from .verify import BUNDLE_FORMAT, MANIFEST, file_digests, load_bound_ticket, manifest_digest

FORMATS = ("masks", "masked-weights", "materialized")
CHECK_TEXT = "Ticket Lab checks that a stock loader gives the same logits as the lab."
VERSION_PACKAGES = ("ticketlab", "torch", "transformers", "safetensors", "numpy", "duckdb", "lm_eval",
                    "huggingface_hub", "accelerate", "model-signing")


def export_bundle(ledger: Ledger, ticket_ref: str, out: str | Path, fmt: str = "masked-weights", *,
                  signer: Signer | None = None, unreviewed: bool = False, overwrite: bool = False,
                  model: str | None = None, dtype: str = "float32", loaded=None, quantize: str | None = None,
                  group_size: int | None = None, serve_check: bool = False) -> dict:
    """Write a bundle of `ticket_ref` at `out`, signed by `signer`: the approving reviewer or a deployer.
    `loaded`: the ticket's dense model already in memory (else it is loaded from `model` or the ticket's
    recorded spec); it is left unchanged. An unreviewed export (`unreviewed=True`) is not signed.
    `quantize` (w8a8 | w4a16, `pruning.serving_format`): the weights are then stored quantized in
    compressed-tensors, the format vLLM loads (the surviving weights of the ticket, quantized).
    `serve_check`: serve the files about to ship in vLLM first (`analysis.serving.check`, without the dense
    comparison) and seal the result into the manifest's `serving`."""
    if fmt not in FORMATS:
        raise TicketLabError(f"unknown bundle format {fmt!r}: use {', '.join(FORMATS)}.")
    recipe = serving.make_recipe(quantize, group_size) if quantize not in (None, "none") else None
    if recipe is not None and fmt == "masks":
        raise TicketLabError("--quantize needs weights: use --format masked-weights or materialized (masks hold none).")
    out = Path(out).expanduser().resolve()
    _check_target(out, overwrite)
    st = state.load(ledger)
    row = ledger.get_ticket(ticket_ref)
    approval, last = state.approval_of(st, row["id"]), state.latest_decision(st, row["id"])
    if approval is None and not unreviewed:
        why = f"its latest decision is {last['decision']} (#{last['seq']})" if last else "it has no decision"
        raise TicketLabError(f"{row['id']} is not approved ({why}); only approved tickets export. Pass --unreviewed "
                             f"to export anyway (unsigned; the manifest and model card say so).")
    if approval is not None:
        _check_signer(ledger, st, approval, signer)
    elif signer is not None:
        raise TicketLabError(f"{row['id']} is not approved, so nobody's approval can be signed: drop --as for an "
                             f"--unreviewed export (it stays unsigned).")
    ticket = load_bound_ticket(_ticket_dir(row), row["id"])
    if fmt == "materialized" and not ticket.structure:
        raise TicketLabError(f"{ticket.id} is an unstructured ticket: nothing can be cut out physically. Use "
                             f"--format masked-weights (zeros baked in) or masks.")
    if loaded is None:
        from pruning.models import load_model

        loaded = load_model(model or ticket.dense["spec"], device="cpu", dtype=dtype)
    dtype = loaded.dtype
    check_compatible(ticket, loaded.model, loaded.weights_sha256)
    with atomic_dir(out, replace=overwrite) as tmp:
        shutil.copytree(ticket.path, tmp / "ticket", ignore=shutil.ignore_patterns(".*"))
        loader = _write_weights(loaded, ticket, tmp, fmt)
        if recipe is not None:  # prune, then quantize the survivors; the unquantized check stays on record
            loader = {**loader, "unquantized_check": loader.pop("check", None),
                      **shipped.quantize_checkpoint(tmp, loaded, ticket, recipe, loader),
                      "vllm": "expected to load (compressed-tensors); `ticketlab serve-check` tests it",
                      "how": "vLLM (`vllm serve DIR`), or transformers with compressed-tensors installed"}
        serving_check = None
        if serve_check and fmt != "masks":
            from ..serving.check import serve_check as check_served

            serving_check = check_served(tmp, loaded=loaded, with_dense=False, dtype=dtype)
        with snapshot(ledger) as db:
            manifest = _manifest(db, st, row, ticket, loaded, fmt, approval, unreviewed, loader, dtype)
        manifest["exported_by"] = signer.name if signer is not None else None
        manifest["artifact"] = shipped.section(tmp, fmt, recipe, _dense_bytes(loaded)) if fmt != "masks" else None
        manifest["evidence"] = shipped.evidence(manifest["metrics"], manifest["artifact"])
        if serving_check is not None:
            manifest["serving"] = {**serving_check, "bundle": None, "artifact": manifest["artifact"]["id"]}
        manifest["deployer"]["payload_bytes"] = sum(f["bytes"] for f in file_digests(tmp).values())
        from .modelcard import model_card

        (tmp / "README.md").write_text(model_card(manifest))
        manifest["files"] = file_digests(tmp)
        manifest["tensors"] = signing.tensor_digests(tmp) if fmt != "masks" else {}
        manifest["deployer"]["on_disk_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
        if signer is not None:
            manifest["signature"] = {"method": signing.METHOD, "file": signing.SIG_FILE, "signer": signer.name,
                                     "key_id": signer.key_id, "as": exporter_role(approval, signer.name)}
            manifest["ledger_head"] = witness.signed_head(signer, st.ledger_id, st.rows[-1])
        elif st.rows:  # unsigned, but still an anchor for `audit --against`: the newest witnessed head
            heads = [h for h in witness.read(witness.path_for(ledger)) if h["seq"] == st.head[0]]
            manifest["ledger_head"] = heads[-1] if heads else None
        manifest["manifest_sha256"] = manifest_digest(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        if signer is not None:
            signing.sign_bundle(tmp, signer)
    return manifest


def exporter_role(approval: dict, name: str) -> str:
    """In which capacity `name` signs an approved ticket's bundle: as its approver or as a deployer."""
    return "approver" if name == approval["reviewer"] else "deployer"


def _check_signer(ledger, st: state.GovState, approval: dict, signer: Signer | None) -> None:
    """An approved bundle is signed by its approving reviewer or by a deployer, with the key registered now.
    A deployer's signature covers the bundle's bytes; the approval stays the reviewer's signed record."""
    if signer is None:
        raise TicketLabError(f"an approved bundle is signed by its approving reviewer ({approval['reviewer']}) or a "
                             f"deployer: pass --as NAME and unlock that key.")
    person = st.registry.people.get(signer.name)
    if signer.name == approval["reviewer"]:
        records.require_actor(st, signer, "decision")
    elif person is not None and "deployer" in person.roles:
        records.require_actor(st, signer, "promote")
    else:
        held = ", ".join(sorted(person.roles)) if person else "no role here"
        raise TicketLabError(f"{signer.name} did not approve {approval['ticket_id']}: {approval['reviewer']} did "
                             f"(decision #{approval['seq']}). Its bundle is signed by its approver or by a deployer, "
                             f"and {signer.name} holds {held}.")
    require_intact(ledger, f"export {approval['ticket_id']} as approved")


def _check_target(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not overwrite:
        raise TicketLabError(f"{out} already exists; choose a new --out or pass --overwrite to replace it.")
    if not out.is_dir():
        raise TicketLabError(f"{out} exists and is not a directory; --overwrite only replaces an earlier bundle.")
    if any(out.iterdir()) and not _is_bundle(out):
        raise TicketLabError(f"{out} is a non-empty directory that is not a Ticket Lab bundle; --overwrite only "
                             f"replaces an earlier bundle, so nothing was touched.")


def _is_bundle(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == BUNDLE_FORMAT
    except (OSError, ValueError):
        return False


def _ticket_dir(row: dict) -> Path:
    if row.get("path") and (Path(row["path"]) / "ticket.json").exists():
        return Path(row["path"])
    return find_ticket(row["id"])


# --- weights -----------------------------------------------------------------------------------------
def _write_weights(loaded, ticket: Ticket, tmp: Path, fmt: str) -> dict:
    vllm = (f"expected to load (a standard {loaded.model.config.model_type} checkpoint); not tested here")
    if fmt == "masks":
        return {"stock_transformers": False, "vllm": "no: masks alone are not a model",
                "how": ("apply to the dense model: `pruning.ticket.Ticket.load(DIR/ticket)` then "
                        "`with applied(load_model(SPEC), ticket): ...`, or `ticketlab export --format masked-weights`")}
    if fmt == "masked-weights":
        with applied(loaded, ticket):
            loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        check = _stock_check(tmp, loaded, ticket)
        return {"stock_transformers": check["loads"] and check["same_logits"], "check": check,
                "vllm": vllm if check["loads"] else "no", "how": "transformers.AutoModelForCausalLM.from_pretrained(DIR)"}
    try:
        from pruning.materialize import materialize
    except ImportError as e:
        raise TicketLabError(f"--format materialized needs pruning.materialize, which this installation lacks ({e}).") from e
    staging = tmp / ".materialized"
    summary = {k: v for k, v in materialize(loaded, ticket, staging).items() if k != "path"}
    for p in staging.iterdir():
        os.rename(p, tmp / p.name)
    staging.rmdir()
    check = _stock_check(tmp, loaded, ticket)
    if check["loads"] and check["same_logits"]:
        return {"stock_transformers": True, "check": check, "vllm": vllm, "materialized": summary,
                "how": "transformers.AutoModelForCausalLM.from_pretrained(DIR)"}
    from pruning.materialize import load_materialized

    own = _stock_check(tmp, loaded, ticket, loader=load_materialized)
    return {"stock_transformers": False, "check": check, "project_loader_check": own, "materialized": summary,
            "vllm": "no: per-layer shapes differ, which a stock configuration cannot express",
            "how": "pruning.materialize.load_materialized(DIR) (stock transformers cannot express its shapes)"}


def _stock_check(directory: Path, loaded, ticket: Ticket, loader=None) -> dict:
    """Load the bundle with stock transformers (or `loader`) and compare its logits with the lab's applied
    ticket: what the manifest says about loading is measured, not assumed."""
    from transformers import AutoModelForCausalLM

    dtype = next(loaded.model.parameters()).dtype  # the bundle's own dtype, so like is compared with like
    try:
        if loader is None:
            stock = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
        else:
            stock = loader(directory, dtype=dtype)
    except Exception as e:  # the point is to find out whether stock code can load it
        return {"loads": False, "same_logits": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    ids = loaded.tokenizer(CHECK_TEXT, return_tensors="pt").input_ids[:, :32]
    with torch.no_grad():
        with applied(loaded, ticket):
            ref = loaded.model(ids.to(loaded.device)).logits.float().cpu()
        got = stock(ids).logits.float()
    diff = float((ref - got).abs().max()) if ref.shape == got.shape else float("inf")
    del stock
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    return {"loads": True, "same_logits": diff <= tolerance, "max_abs_logit_diff": diff, "tolerance": tolerance, "tokens": int(ids.shape[1]),
            "loader": "AutoModelForCausalLM.from_pretrained" if loader is None else loader.__name__}


# --- manifest ----------------------------------------------------------------------------------------
def _manifest(ledger: Ledger, st: state.GovState, row: dict, ticket: Ticket, loaded, fmt: str,
              approval: dict | None, unreviewed: bool, loader: dict, dtype: str) -> dict:
    dense_model = governance_store.dense_model(ledger, ticket.dense["weights_sha256"])
    review = _review_section(st, ticket.id, approval, unreviewed)
    creation = state.creation_of(st, ticket.id)
    metrics = _metrics(ledger, ticket)
    return {
        "format": BUNDLE_FORMAT, "bundle_format": fmt,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "exported_by": None,
        "ticket": {"id": ticket.id, "content_sha256": ticket.content_sha256, "name": ticket.name,
                   "method": ticket.method, "params": ticket.params, "target_sparsity": ticket.target_sparsity,
                   "achieved_sparsity": ticket.achieved_sparsity, "seed": ticket.seed,
                   "calibration": ticket.calibration, "parent": ticket.parent, "lineage": ticket.lineage,
                   "structure": ticket.structure, "created_at": ticket.created_at,
                   "created_by": creation["actor"] if creation else None,
                   "creation_record": state.record_json(creation) if creation else None,
                   "ledger_path": str(ledger.path), "ledger_id": st.ledger_id},
        "dense_model": {**ticket.dense, "n_params": dense_model["n_params"] if dense_model else None,
                        "loaded_from": loaded.source},
        "weights_dtype": dtype if fmt != "masks" else None,
        "review": review, "metrics": metrics,
        "deployer": {"loader": loader, "sparsity": _sparsity(ticket, loaded),
                     "dense_checkpoint_bytes": _dense_bytes(loaded), "size_note": _size_note(fmt),
                     **_speed(ledger, ticket)},
        "versions": _versions(),
        # generated answers: each task's full transcript-set hash and a sample of changed ones (vs dense)
        "transcripts": _transcripts(ledger, ticket),
    }


def _transcripts(ledger: Ledger, ticket: Ticket) -> dict:
    from ..transcripts import evidence

    return evidence(ledger, ticket.id, "dense", ticket.dense["weights_sha256"])


def _review_section(st: state.GovState, ticket_id: str, approval: dict | None, unreviewed: bool) -> dict:
    last = state.latest_decision(st, ticket_id)
    status = "approved" if approval else ("rejected" if last else "unreviewed")
    out = {"status": status, "override": bool(approval and approval.get("override")), "unreviewed": approval is None, "exported_with_unreviewed_flag": bool(unreviewed),
           "decision": None, "policy_results": None}
    if last is not None:
        out["decision"] = {k: last[k] for k in Decision.MANIFEST}
        out["decision"]["record"] = last["record"]  # the signed record itself: verify re-checks it offline
        pr = last["policy_results"]
        out["policy_results"] = json.loads(pr) if isinstance(pr, str) else pr
    return out


def _metrics(ledger: Ledger, ticket: Ticket) -> list[dict]:
    out = []
    for who, subject in (("ticket", ticket.id), ("dense", "dense")):
        rows = ev.metric_rows(ledger, subject, ticket.dense["weights_sha256"])
        keep: dict[tuple, dict] = {}
        for r in rows:  # newest full and newest limited result of each metric
            keep[(r["suite"], r["task"], r["metric"], r["limit"] is None)] = r
        for r in keep.values():
            out.append({"subject": who, "suite": r["suite"], "task": r["task"], "metric": r["metric"],
                        "value": r["value"], "stderr": r["stderr"], "direction": r["direction"], "ideal": r["ideal"],
                        "full": r["limit"] is None, "limit": r["limit"], "n_samples": r["n_samples"],
                        "n_docs": uncertainty.docs_of(r),
                        "dtype": r["dtype"], "batch_size": r["batch_size"], "run_id": r["run_id"],
                        "artifact": _artifact_of(r)})
    return sorted(out, key=lambda m: (m["subject"] != "ticket", m["suite"], m["task"], m["metric"], not m["full"]))


def _artifact_of(row: dict) -> str | None:
    """The exported artifact a metric row was measured on (`extra.artifact.id`), None for the lab's own."""
    extra = row.get("extra")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            return None
    return ((extra or {}).get("artifact") or {}).get("id")


def _sparsity(ticket: Ticket, loaded) -> dict:
    adapter, params = loaded.adapter, dict(loaded.model.named_parameters())
    counted = sum(m.numel() for m in ticket.masks.values())
    kept = sum(int(m.sum()) for m in ticket.masks.values())
    total = sum(p.numel() for p in params.values())
    excluded = {n: params[n].numel() for n in adapter.excluded_parameters() if n not in ticket.masks}
    tied = bool(getattr(loaded.model.config, "tie_word_embeddings", False))
    per = {}
    for name, m in sorted(ticket.masks.items()):
        per[name] = {"shape": list(m.shape), "numel": m.numel(), "kept": int(m.sum()),
                     "achieved": 1.0 - int(m.sum()) / m.numel() if m.numel() else 0.0, "target": ticket.target_sparsity}
    note = ("target is the fraction of units removed (see ticket.structure), not of weights" if ticket.structure else
            "target is the ticket's overall target; a non-uniform allocation sets per-layer targets around it"
            if (ticket.params or {}).get("allocation") not in (None, "uniform") else "target applies to every tensor")
    return {"target": ticket.target_sparsity, "achieved_counted": 1.0 - kept / counted if counted else 0.0,
            "achieved_all_parameters": (counted - kept) / total if total else 0.0, "counted_numel": counted,
            "all_parameters_numel": total,
            "counted": f"{len(ticket.masks)} masked tensors (attention and MLP projections)",
            "excluded_note": "embeddings, norms and biases" + (" (lm_head is tied to the embeddings)" if tied
                                                              else ", lm_head") + " are not pruned and not counted",
            "excluded": excluded, "target_note": note, "per_tensor": per}


def _dense_bytes(loaded) -> int | None:
    d = Path(loaded.source)
    return sum(f.stat().st_size for f in d.glob("*.safetensors")) if d.is_dir() else None


def _size_note(fmt: str) -> str:
    return {"masks": "masks only: packed bits, apply them to the dense model",
            "masked-weights": "pruned weights are stored as zeros in dense tensors, so the files are as large as "
                              "the dense model's and run at dense speed without sparse kernels",
            "materialized": "removed heads/neurons/layers are physically gone: smaller files and fewer FLOPs"}[fmt]


def _speed(ledger: Ledger, ticket: Ticket) -> dict:
    dense = ticket.dense["weights_sha256"]
    def timing(r):
        return r["suite"] == "latency" or r["task"].startswith("latency")

    mine = [r for r in ev.metric_rows(ledger, ticket.id, dense) if timing(r)]
    base = [r for r in ev.metric_rows(ledger, "dense", dense) if timing(r)]
    speed = {}
    for r in mine:
        b, _ = ev.like_for_like(r, base)
        if b and r["value"] and b["value"]:
            ratio = b["value"] / r["value"] if _lower_is_better(r) else r["value"] / b["value"]
            speed[f"{r['task']}/{r['metric']}"] = {"ticket": r["value"], "dense": b["value"], "speedup": ratio}
    if not speed:
        return {"speed_vs_dense": None, "speed_note": "not measured: run `ticketlab eval TICKET --suite latency` "
                                                      "and `ticketlab eval dense --suite latency`"}
    best = max(speed.values(), key=lambda s: s["speedup"])
    return {"speed_vs_dense": speed, "speed_note": f"measured; up to {best['speedup']:.2f}x the dense model "
                                                   f"(see speed_vs_dense; timings depend on the machine)"}


def _lower_is_better(row: dict) -> bool:
    from ..metric_meta import direction

    return (row.get("direction") or direction(row["task"], row["metric"])[0]) == "lower"


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in VERSION_PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
