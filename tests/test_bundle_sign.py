"""Signed bundles: what an insider does to a bundle or a ticket folder, and how `verify` / `export` catch it."""

import json
import shutil

import pytest
from govern_helpers import approved_ticket, make_recorded_ticket, setup_lab

from analysis.governance import signing
from analysis.governance import state as gstate
from analysis.governance.export import export_bundle
from analysis.governance.verify import file_digests, manifest_digest, verify_bundle
from app.cli import main
from pruning.errors import TicketLabError
from pruning.ticket import Ticket


@pytest.fixture
def signed(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    out = state / "bundle"
    export_bundle(lab.ledger, t.id, out, "masked-weights", signer=lab["alice"], loaded=tiny_llama)
    return lab, t, out, gstate.load(lab.ledger).registry.trust()


def _rewrite_manifest(out, change) -> dict:
    """Edit the manifest, then recompute every digest, as an attacker with a text editor and sha256sum would."""
    m = json.loads((out / "manifest.json").read_text())
    change(m)
    m["files"] = file_digests(out)
    m["manifest_sha256"] = manifest_digest(m)
    (out / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True))
    return m


def test_signed_bundle_verifies_with_trusted_keys_and_says_what_it_cannot_check_without(signed, tiny_llama, capsys):
    lab, t, out, trust = signed
    result = verify_bundle(out, trust=trust, loaded=tiny_llama)
    assert result["ok"] and result["signed_by"] == "alice" and result["unchecked"] == []
    bare = verify_bundle(out, loaded=tiny_llama)
    assert not bare["ok"] and "no trusted keys" in bare["unchecked"][0]
    # the CLI next to the ledger the bundle came from uses that ledger's registry; elsewhere it says what it lacks
    assert main(["verify", str(out)]) == 0
    assert "keys from the ledger" in capsys.readouterr().out


def test_manifest_edited_and_digest_recomputed_fails(signed, tiny_llama, capsys):
    lab, t, out, trust = signed

    def promote_metrics(m):
        m["review"]["decision"]["reviewer"] = "bob"
        for x in m["metrics"]:
            if x["metric"] == "perplexity" and x["subject"] == "ticket":
                x["value"] = 19.0

    _rewrite_manifest(out, promote_metrics)
    with pytest.raises(TicketLabError, match="model.sig does not verify.*manifest.json"):
        verify_bundle(out, trust=trust, loaded=tiny_llama)
    from analysis.governance import trustfile

    signed_trust = trustfile.export(gstate.load(lab.ledger), lab["ada"])  # an admin's signed trust file
    (lab.state / "trust.json").write_text(json.dumps(signed_trust))
    assert main(["verify", str(out), "--trust", str(lab.state / "trust.json")]) == 2
    assert "bundle signature" in capsys.readouterr().err


def test_bundle_resigned_by_a_non_reviewer_fails(signed, tiny_llama):
    lab, t, out, trust = signed
    carol = lab["carol"]
    # carol edits the manifest and signs the bundle with her own key, claiming alice signed it ...
    _rewrite_manifest(out, lambda m: m["review"].update(status="approved"))
    signing.sign_bundle(out, carol)
    with pytest.raises(TicketLabError, match="Key mismatch|does not verify"):
        verify_bundle(out, trust=trust, loaded=tiny_llama)
    # ... or naming herself as the signer
    _rewrite_manifest(out, lambda m: m["signature"].update(signer="carol", key_id=carol.key_id))
    signing.sign_bundle(out, carol)
    with pytest.raises(TicketLabError) as e:
        verify_bundle(out, trust=trust, loaded=tiny_llama)
    assert "signed by carol, but alice approved it and carol is not a deployer" in str(e.value)
    # a reviewer who did not approve this ticket cannot vouch for it either
    bob = lab["bob"]
    _rewrite_manifest(out, lambda m: m["signature"].update(signer="bob", key_id=bob.key_id))
    signing.sign_bundle(out, bob)
    with pytest.raises(TicketLabError, match="signed by bob, but alice approved it"):
        verify_bundle(out, trust=trust, loaded=tiny_llama)


def test_surviving_weights_swapped_are_caught_against_the_dense_model(signed, tiny_llama):
    from safetensors.torch import load_file, save_file

    lab, t, out, trust = signed
    weights = load_file(out / "model.safetensors")
    name = next(n for n in t.masks)
    w = weights[name].clone()
    w[t.masks[name]] *= 2  # surviving weights changed, pruned ones still zero
    weights[name] = w
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    (out / "model.sig").unlink()
    _rewrite_manifest(out, lambda m: m.update(tensors=signing.tensor_digests(out)))
    with pytest.raises(TicketLabError, match=f"{name} is not the dense model's weights under the ticket's masks"):
        verify_bundle(out, loaded=tiny_llama)


def test_ticket_b_in_ticket_a_folder_does_not_export_as_a(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    a = approved_ticket(lab, tiny_llama, sparsity=0.5)
    b = make_recorded_ticket(tiny_llama, lab.ledger, sparsity=0.7, signer=lab["carol"])
    for f in b.path.iterdir():
        shutil.copy(f, a.path / f.name)
    with pytest.raises(TicketLabError, match=f"holds ticket {b.id}, not {a.id}"):
        export_bundle(lab.ledger, a.id, state / "out", "masks", signer=lab["alice"], loaded=tiny_llama)
    assert not (state / "out").exists()
    # a bundle whose ticket/ was swapped after export names the mismatch
    shutil.rmtree(a.path)
    shutil.copytree(b.path, a.path)
    (a.path / "ticket.json").write_text((b.path / "ticket.json").read_text())
    good = approved_ticket(lab, tiny_llama, sparsity=0.6)
    export_bundle(lab.ledger, good.id, state / "g", "masks", signer=lab["alice"], loaded=tiny_llama)
    shutil.rmtree(state / "g" / "ticket")
    shutil.copytree(b.path, state / "g" / "ticket")
    _rewrite_manifest(state / "g", lambda m: None)
    with pytest.raises(TicketLabError, match=f"holds ticket {b.id}, not {good.id}"):
        verify_bundle(state / "g")


def test_weights_file_outside_the_ticket_is_refused(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    meta = json.loads((t.path / "ticket.json").read_text())
    for where in ("../elsewhere/weights.safetensors", "/etc/passwd"):
        meta["weights"] = {"file": where, "tensors": []}
        (t.path / "ticket.json").write_text(json.dumps(meta))
        with pytest.raises(TicketLabError, match="weights.file .* points outside the ticket folder"):
            export_bundle(lab.ledger, t.id, state / "out", "masks", signer=lab["alice"], loaded=tiny_llama)
        with pytest.raises(TicketLabError, match="points outside the ticket folder"):
            Ticket.load(t.path)  # every loader refuses it, not only export
    assert not (state / "out").exists()
