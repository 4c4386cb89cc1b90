"""The deployer exports (issue 21): a bundle signed by the deployer as its exporter carries the reviewer's
signed approval, `verify` checks both, and an override approval is named as one wherever it is shown."""

import json

import pytest
from govern_helpers import approved_ticket, make_recorded_ticket, setup_lab

from analysis.governance import decisions, signing
from analysis.governance import state as gstate
from analysis.governance.export import export_bundle
from analysis.governance.verify import file_digests, manifest_digest, verify_bundle
from app.cli import main
from pruning.errors import TicketLabError


def test_deployer_signs_the_bundle_and_verify_checks_signer_and_approval(tiny_llama, state, monkeypatch, capsys):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    out = state / "by-dave"
    m = export_bundle(lab.ledger, t.id, out, "masks", signer=lab["dave"], loaded=tiny_llama)
    assert m["exported_by"] == "dave" and m["signature"]["as"] == "deployer"
    assert m["review"]["decision"]["reviewer"] == "alice" and not m["review"]["override"]
    trust = gstate.load(lab.ledger).registry.trust()
    r = verify_bundle(out, trust=trust)
    assert r["ok"] and r["signed_by"] == "dave" and r["approved_by"] == "alice" and r["review"] == "approved"
    assert "the approver's signed decision" in r["checked"]
    assert main(["verify", str(out)]) == 0
    assert "signed by dave" in capsys.readouterr().out
    # an engineer is neither the approver nor a deployer: refused, nothing written
    with pytest.raises(TicketLabError, match="carol did not approve .* alice did .* approver or by a deployer"):
        export_bundle(lab.ledger, t.id, state / "by-carol", "masks", signer=lab["carol"], loaded=tiny_llama)
    assert not (state / "by-carol").exists()


def test_deployer_signature_cannot_stand_in_for_the_approval(tiny_llama, state, monkeypatch):
    """dave signs bytes, never an approval: a decision record he rewrites no longer verifies as alice's."""
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    other = approved_ticket(lab, tiny_llama, sparsity=0.6)
    out = state / "b"
    export_bundle(lab.ledger, other.id, out, "masks", signer=lab["dave"], loaded=tiny_llama)
    trust = gstate.load(lab.ledger).registry.trust()
    m = json.loads((out / "manifest.json").read_text())
    m["review"]["decision"]["record"]["subject"] = t.id  # claim the approval was of the unapproved ticket
    m["files"] = file_digests(out)
    m["manifest_sha256"] = manifest_digest(m)
    (out / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True))
    signing.sign_bundle(out, lab["dave"])
    with pytest.raises(TicketLabError, match="decision record: its content does not match its hash"):
        verify_bundle(out, trust=trust)


def test_override_approval_is_named_in_the_manifest_and_verify(tiny_llama, state, monkeypatch, capsys):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"], sparsity=0.2)  # under the 0.4 floor
    decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "needed for the demo", override=True,
                     override_reason="sparsity floor waived for the pilot")
    out = state / "ovr"
    m = export_bundle(lab.ledger, t.id, out, "masks", signer=lab["dave"], loaded=tiny_llama)
    assert m["review"]["override"] is True
    r = verify_bundle(out, trust=gstate.load(lab.ledger).registry.trust())
    assert r["override"] and r["review"] == "approved by override of the policy (sparsity floor waived for the pilot)"
    assert main(["verify", str(out)]) == 0
    assert "review approved by override of the policy" in capsys.readouterr().out
