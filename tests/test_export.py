"""Export bundles, verification and the scorecard on tiny models."""

import json

import pytest
import torch
from govern_helpers import approved_ticket, make_recorded_ticket, setup_lab

from analysis.governance import state as gstate
from analysis.governance.export import export_bundle
from analysis.governance.verify import verify_bundle
from app.cli import main
from pruning.errors import TicketLabError
from pruning.ticket import applied


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gpt2"])
def test_stock_from_pretrained_gives_the_labs_logits(family, request, state, monkeypatch):
    from transformers import AutoModelForCausalLM

    loaded = request.getfixturevalue(family)
    team = setup_lab(state, loaded, monkeypatch)
    t = approved_ticket(team, loaded, sparsity=0.5)
    out = state / f"bundle-{family}"
    manifest = export_bundle(team.ledger, t.id, out, signer=team["alice"], loaded=loaded)
    stock = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 50, 300, 7000, 42, 9, 12000, 3]])
    with torch.no_grad(), applied(loaded, t):
        lab = loaded.model(ids).logits
    with torch.no_grad():
        assert torch.equal(stock(ids).logits, lab)
    sp = manifest["deployer"]["sparsity"]
    assert sp["achieved_counted"] == pytest.approx(0.5, abs=1e-6) and sp["per_tensor"]
    assert 0 < sp["achieved_all_parameters"] < 0.5  # embeddings are not counted, and say so
    assert any("embed" in name or "wte" in name for name in sp["excluded"])
    assert manifest["dense_model"]["weights_sha256"] == loaded.weights_sha256
    trust = gstate.load(team.ledger).registry.trust()
    result = verify_bundle(out, trust=trust, loaded=loaded)
    assert result["ok"] and result["signed_by"] == "alice" and "surviving weights are the dense model's" in result["checked"]


def test_manifest_and_model_card_say_what_a_deployer_gets(tiny_llama, state, monkeypatch):
    from huggingface_hub import ModelCard

    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    m = export_bundle(lab.ledger, t.id, state / "b", "masked-weights", signer=lab["alice"], loaded=tiny_llama)
    assert set(m["files"]) >= {"README.md", "model.safetensors", "config.json", "ticket/masks.safetensors",
                               "ticket/ticket.json"}
    assert m["ticket"]["id"] == t.id and m["ticket"]["created_by"] == "carol" and m["exported_by"] == "alice"
    assert m["signature"]["signer"] == "alice" and (state / "b" / "model.sig").is_file()
    assert m["ledger_head"]["seq"] == gstate.load(lab.ledger).head[0]
    ppl = next(x for x in m["metrics"] if x["subject"] == "ticket" and x["metric"] == "perplexity")
    assert ppl["value"] == 22.0 and ppl["full"] and ppl["limit"] is None
    crows = next(x for x in m["metrics"] if x["subject"] == "dense" and x["task"] == "crows_pairs_english")
    assert crows["stderr"] == 0.02
    assert m["review"]["policy_results"]["policy"]["name"] == "lenient" and not m["review"]["unreviewed"]
    d = m["deployer"]
    assert d["on_disk_bytes"] == sum(f["bytes"] for f in m["files"].values())
    assert d["speed_vs_dense"] is None and "not measured" in d["speed_note"]
    assert "torch" in m["versions"] and "transformers" in m["versions"]
    card = ModelCard.load(state / "b" / "README.md")
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[("wikitext", "perplexity")] == 22.0


def test_masks_bundle_and_tampered_ticket_file(tiny_llama, state, monkeypatch, capsys):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    ledger = lab.ledger
    t = make_recorded_ticket(tiny_llama, ledger, signer=lab["carol"])
    out = state / "masks"
    with pytest.raises(TicketLabError, match="not approved .*--unreviewed"):
        export_bundle(ledger, t.id, out, "masks", loaded=tiny_llama)
    assert not out.exists()
    m = export_bundle(ledger, t.id, out, "masks", unreviewed=True, loaded=tiny_llama)
    assert m["review"]["status"] == "unreviewed" and m["review"]["unreviewed"]
    assert "Unreviewed export" in (out / "README.md").read_text()
    assert not (out / "model.safetensors").exists() and m["deployer"]["loader"]["stock_transformers"] is False
    from analysis.governance import audit

    assert m["ledger_head"]["seq"] == gstate.load(ledger).head[0]  # unsigned, yet an anchor for the audit
    assert audit.audit(ledger, against=[out])["ok"]
    unsigned = verify_bundle(out)  # files check out, but nobody vouches for it: not "ok"
    assert not unsigned["ok"] and "not signed" in unsigned["unchecked"][0]
    meta = json.loads((out / "ticket" / "ticket.json").read_text())
    meta["target_sparsity"] = 0.1
    (out / "ticket" / "ticket.json").write_text(json.dumps(meta))
    assert main(["verify", str(out)]) == 2
    err = capsys.readouterr().err
    assert "ticket/ticket.json: sha256" in err and "does not match its id" in err
    (out / "extra.bin").write_bytes(b"x")
    with pytest.raises(TicketLabError, match="extra.bin: not in the manifest"):
        verify_bundle(out)


def test_export_target_rules_never_lose_anything(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    ledger, alice = lab.ledger, lab["alice"]
    t = approved_ticket(lab, tiny_llama)
    out = state / "exists"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(TicketLabError, match="already exists; .*--overwrite"):
        export_bundle(ledger, t.id, out, "masks", signer=alice, loaded=tiny_llama)
    with pytest.raises(TicketLabError, match="not a Ticket Lab bundle"):
        export_bundle(ledger, t.id, out, "masks", signer=alice, overwrite=True, loaded=tiny_llama)
    assert (out / "precious.txt").read_text() == "keep me"
    with pytest.raises(TicketLabError, match="unstructured ticket"):
        export_bundle(ledger, t.id, state / "mat", "materialized", signer=alice, loaded=tiny_llama)
    with pytest.raises(TicketLabError, match="bob did not approve .* alice did"):
        export_bundle(ledger, t.id, state / "bob", "masks", signer=lab["bob"], loaded=tiny_llama)
    with pytest.raises(TicketLabError, match="signed by its approving reviewer \\(alice\\)"):
        export_bundle(ledger, t.id, state / "anon", "masks", loaded=tiny_llama)
    good = state / "good"
    export_bundle(ledger, t.id, good, "masks", signer=alice, loaded=tiny_llama)
    export_bundle(ledger, t.id, good, "masked-weights", signer=alice, overwrite=True, loaded=tiny_llama)
    assert verify_bundle(good)["format"] == "masked-weights"
    assert not [p for p in state.iterdir() if p.name.startswith((".good", ".exists", ".mat"))]  # no temp dirs left


def test_scorecard_is_one_self_contained_page(tiny_llama, state, monkeypatch):
    from analysis.governance import decisions

    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    decisions.decide(lab.ledger, t.id, "approve", lab["bob"], "looks <fine>")
    out = state / "card.html"
    assert main(["report", t.id, "--baseline", "dense", "--out", str(out)]) == 0
    page = out.read_text()
    from plotly.offline import get_plotlyjs

    assert "<script src=" not in page and page.count(get_plotlyjs()[:300]) == 1  # plotly.js inline, once
    assert page.count("Plotly.newPlot") >= 4  # change, CrowS-Pairs, BBQ, survival figures
    assert "looks &lt;fine&gt;" in page and "crows_pairs_english_gender" in page and "Policy results" in page
    assert "Deployment history" in page and "intact" in page


def test_materialized_bundle_of_a_structured_ticket(tiny_llama, state, monkeypatch):
    from transformers import AutoModelForCausalLM

    from pruning.calibration import from_corpus
    from pruning.prune import make_ticket

    ledger = setup_lab(state, tiny_llama, monkeypatch).ledger
    calib = from_corpus(tiny_llama.tokenizer, 2, 16, 0)
    t = make_ticket(tiny_llama, "neurons", 0.5, calib=calib)
    t.save()
    from analysis.recording import record_prune

    record_prune(tiny_llama, t, "test", ledger)
    m = export_bundle(ledger, t.id, state / "mat", "materialized", unreviewed=True, loaded=tiny_llama)
    loader = m["deployer"]["loader"]
    assert loader["stock_transformers"] and loader["check"]["max_abs_logit_diff"] < 1e-4
    assert loader["materialized"]["parameters"] < loader["materialized"]["parameters_dense"]
    assert (state / "mat" / "model.safetensors").stat().st_size < m["deployer"]["dense_checkpoint_bytes"]
    stock = AutoModelForCausalLM.from_pretrained(state / "mat")
    assert stock.config.intermediate_size == 64
    result = verify_bundle(state / "mat")
    assert result["format"] == "materialized" and "tensor hashes recorded at export" in result["checked"]
    from safetensors.torch import load_file, save_file

    weights = load_file(state / "mat" / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1
    save_file(weights, state / "mat" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(TicketLabError, match="model.safetensors: sha256"):
        verify_bundle(state / "mat")


def test_measured_speed_is_reported_against_dense(tiny_llama, state, monkeypatch):
    from analysis.ledger import MetricRow

    ledger = setup_lab(state, tiny_llama, monkeypatch).ledger
    t = make_recorded_ticket(tiny_llama, ledger)
    for subject, rate in (("dense", 100.0), (t.id, 125.0)):
        with ledger.run("eval", "latency", subject=subject, dense_sha256=tiny_llama.weights_sha256) as run:
            run.add_metric(MetricRow("latency", "latency", "decode_tokens_per_s", rate, direction="higher"))
    m = export_bundle(ledger, t.id, state / "fast", "masks", unreviewed=True, loaded=tiny_llama)
    assert m["deployer"]["speed_vs_dense"]["latency/decode_tokens_per_s"]["speedup"] == pytest.approx(1.25)
