"""Serving formats (compressed-tensors W8A8 / W4A16, round-to-nearest) composed with tickets, the artifact
identity in the manifest, and `verify` tying the approving evidence to the shipped artifact. No vLLM here
(tests/test_serving_vllm.py starts it)."""

import json

import pytest
import torch
from govern_helpers import METRICS, approved_ticket, setup_lab

from analysis.governance import state as gstate
from analysis.governance.export import export_bundle
from analysis.governance.verify import verify_bundle
from analysis.ledger import MetricRow
from pruning import serving_format as sf
from pruning.errors import TicketLabError


def _tag_evidence(ledger, ticket_id: str, dense: str, artifact: str) -> None:
    """Metric rows for the ticket as `serve-eval` writes them: measured on an exported artifact."""
    with ledger.run("eval", "test: evaluated as shipped", subject=ticket_id, dense_sha256=dense) as run:
        for suite, task, metric, *values, se in METRICS:
            direction = {"perplexity": "lower", "acc": "higher"}.get(metric, "target")
            ideal = {"pct_stereotype": 0.5}.get(metric, 0.0 if direction == "target" else None)
            run.add_metric(MetricRow(suite, task, metric, values[1], se, direction, ideal, n_samples=100,
                                     dtype="float32", extra={"artifact": {"id": artifact}}))


def test_w8a8_bundle_keeps_the_mask_exact_and_names_its_artifact(tiny_llama, state, monkeypatch):
    from safetensors import safe_open

    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama, sparsity=0.5)
    out = state / "w8a8"
    m = export_bundle(lab.ledger, t.id, out, "masked-weights", unreviewed=False, signer=lab["alice"],
                      loaded=tiny_llama, quantize="w8a8")
    q = json.loads((out / "config.json").read_text())["quantization_config"]
    assert q["quant_method"] == "compressed-tensors" and q["format"] == "int-quantized"
    assert q["config_groups"]["group_0"]["input_activations"]["dynamic"] is True
    name = "model.layers.0.self_attn.q_proj.weight"
    with safe_open(str(out / "model.safetensors"), "pt") as h:
        stored = h.get_tensor(name)
        assert stored.dtype == torch.int8 and h.get_tensor(name.replace("weight", "weight_scale")).shape[1] == 1
    mask = t.masks[name]
    assert (stored[~mask] == 0).all() and (stored[mask] != 0).float().mean() > 0.9  # pruned exact, kept kept
    a = m["artifact"]
    assert a["quantization"]["scheme"] == "w8a8" and a["quantization"]["method"].startswith("round-to-nearest")
    assert a["weights_bytes"] < a["dense_weights_bytes"] and a["bytes_vs_dense"] < 1
    assert m["deployer"]["loader"]["mask_exact"] and m["deployer"]["loader"]["check"]["top1_agreement"] > 0.5
    assert m["evidence"]["measured_on"] == ["lab"] and m["evidence"]["this_artifact"] == a["id"]
    # approved on the lab's float application, shipped quantized: not what was reviewed
    trust = gstate.load(lab.ledger).registry.trust()
    with pytest.raises(TicketLabError, match="evidence: the approving evidence was measured on the lab's float"):
        verify_bundle(out, trust=trust, loaded=tiny_llama)
    # evaluated as shipped (rows carry the artifact id): the same export (deterministic RTN) now verifies,
    # including that its int8 tensors are the dense model's under the masks, quantized again
    _tag_evidence(lab.ledger, t.id, tiny_llama.weights_sha256, a["id"])
    m2 = export_bundle(lab.ledger, t.id, out, "masked-weights", signer=lab["alice"], loaded=tiny_llama,
                       quantize="w8a8", overwrite=True)
    assert m2["artifact"]["id"] == a["id"] and m2["evidence"]["measured_on"] == [a["id"]]
    result = verify_bundle(out, trust=trust, loaded=tiny_llama)
    assert result["ok"] and "approving evidence was measured on this artifact" in result["checked"]
    assert "pruned weights are exact zeros after quantization" in result["checked"]
    assert any("quantized again" in c for c in result["checked"])


def test_evidence_from_another_artifact_fails_verify(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama, sparsity=0.5)
    _tag_evidence(lab.ledger, t.id, tiny_llama.weights_sha256, "f" * 64)  # e.g. measured on the w4a16 export
    out = state / "other"
    export_bundle(lab.ledger, t.id, out, "masked-weights", signer=lab["alice"], loaded=tiny_llama, quantize="w8a8")
    with pytest.raises(TicketLabError, match="measured on artifact ffffffffffff, this bundle's artifact is"):
        verify_bundle(out)


def test_unquantized_bundle_records_its_artifact_and_lab_evidence_counts(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama, sparsity=0.5)
    m = export_bundle(lab.ledger, t.id, state / "plain", "masked-weights", signer=lab["alice"], loaded=tiny_llama)
    assert m["artifact"]["quantization"] is None and m["artifact"]["bytes_vs_dense"] == pytest.approx(1, abs=0.01)
    result = verify_bundle(state / "plain", trust=gstate.load(lab.ledger).registry.trust(), loaded=tiny_llama)
    assert result["ok"] and "artifact id" in result["checked"]
    # an artifact id edited into the manifest (digest recomputed, as a forger would) does not pass
    from analysis.governance.verify import manifest_digest

    manifest = json.loads((state / "plain" / "manifest.json").read_text())
    manifest["artifact"]["id"] = "0" * 64
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (state / "plain" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TicketLabError, match="artifact: its tensors hash to"):
        verify_bundle(state / "plain")


def test_w4a16_group_size_must_fit_every_layer(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama, sparsity=0.5)
    with pytest.raises(TicketLabError, match=r"group size 128 does not fit layer model\.layers\.0\.self_attn\.q_proj: "
                                             r"its 64 input columns.*--group-size 64"):
        export_bundle(lab.ledger, t.id, state / "g", "masked-weights", signer=lab["alice"], loaded=tiny_llama,
                      quantize="w4a16")
    assert not (state / "g").exists()  # nothing half-written
    m = export_bundle(lab.ledger, t.id, state / "g", "masked-weights", signer=lab["alice"], loaded=tiny_llama,
                      quantize="w4a16", group_size=32)
    assert m["artifact"]["quantization"]["format"] == "pack-quantized"
    assert m["artifact"]["quantization"]["group_size"] == 32
    name = "model.layers.1.mlp.down_proj.weight"
    stored = sf.stored_weight(state / "g", name)  # unpacked from int32 words
    assert stored.shape == t.masks[name].shape and (stored[~t.masks[name]] == 0).all()
    assert stored.abs().max() <= 8 and stored.abs().max() >= 6  # 4-bit range, used
    # the 4-bit file is much smaller than the int8 one would be
    assert m["artifact"]["weights_bytes"] < m["artifact"]["dense_weights_bytes"]


def test_structured_ticket_materialized_then_quantized(tiny_llama, state, monkeypatch):
    from transformers import AutoModelForCausalLM

    from analysis.recording import record_prune
    from pruning.calibration import from_corpus
    from pruning.prune import make_ticket

    ledger = setup_lab(state, tiny_llama, monkeypatch).ledger
    t = make_ticket(tiny_llama, "neurons", 0.5, calib=from_corpus(tiny_llama.tokenizer, 2, 16, 0))
    t.save()
    record_prune(tiny_llama, t, "test", ledger)
    m = export_bundle(ledger, t.id, state / "mq", "materialized", unreviewed=True, loaded=tiny_llama, quantize="w8a8")
    loaded_back = AutoModelForCausalLM.from_pretrained(state / "mq")  # compressed-tensors, stock loader
    assert loaded_back.config.intermediate_size == 64
    assert m["deployer"]["loader"]["unquantized_check"]["same_logits"]
    assert m["deployer"]["loader"]["check"]["loads"]
    plain = export_bundle(ledger, t.id, state / "mp", "materialized", unreviewed=True, loaded=tiny_llama)
    assert m["artifact"]["weights_bytes"] < plain["artifact"]["weights_bytes"] < plain["artifact"]["dense_weights_bytes"]
    assert verify_bundle(state / "mq")["format"] == "materialized"


def test_bad_quantization_requests_are_one_clear_error(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama, sparsity=0.5)
    with pytest.raises(TicketLabError, match="--quantize needs weights"):
        export_bundle(lab.ledger, t.id, state / "x", "masks", signer=lab["alice"], loaded=tiny_llama, quantize="w8a8")
    with pytest.raises(TicketLabError, match="unknown quantization 'int3'"):
        sf.make_recipe("int3")
    with pytest.raises(TicketLabError, match="--group-size applies to w4a16 only"):
        sf.make_recipe("w8a8", 64)


def test_export_page_block_shows_the_artifact_and_its_newest_serve_check(tiny_llama, state, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from analysis.ledger import Ledger
    from analysis.serving.check import record

    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama, sparsity=0.5)
    out = state / "exports" / "q"
    m = export_bundle(lab.ledger, t.id, out, "masked-weights", signer=lab["alice"], loaded=tiny_llama, quantize="w8a8")

    def block(bundle: str) -> None:
        import json as j
        from pathlib import Path

        from app.dashboard import serving_panel

        serving_panel.show(Path(bundle), j.loads((Path(bundle) / "manifest.json").read_text()))

    at = AppTest.from_function(block, args=(str(out),)).run()
    shown = "\n".join(c.value for c in at.caption)
    assert f"artifact `{m['artifact']['id'][:12]}`" in shown and "w8a8 (round-to-nearest" in shown
    assert "evidence measured on: the lab's float application" in shown
    assert f"not checked in a serving engine yet: `ticketlab serve-check {out}`" in shown
    # a check that did not load, then one that did: the newest of this artifact is shown
    base = {"bundle": str(out), "ticket": t.id, "artifact": m["artifact"]["id"]}
    record(Ledger(), {**base, "loads": False, "error": "vLLM did not start (exit 1): ValueError: boom (log: x.log)"},
           "test")
    at = AppTest.from_function(block, args=(str(out),)).run()
    assert "does not load in vLLM: vLLM did not start (exit 1): ValueError: boom" in at.error[0].value
    record(Ledger(), {**base, "loads": True, "engine": "vllm 0.32.0+cpu",
                      "outputs": {"exact_match_rate": 0.5, "token_agreement": 0.75},
                      "speed": {"8": {"ticket": {"tokens_per_s": 40.0}, "ratio_vs_dense": 1.25}}}, "test")
    at = AppTest.from_function(block, args=(str(out),)).run()
    shown = "\n".join(c.value for c in at.caption)
    assert not at.error and "loads in vllm 0.32.0+cpu · exact match 50%, token agreement 75%" in shown
    assert "8 concurrent: 40.0 tok/s (1.25x dense)" in shown
