"""The rules live in the audit replay (issue 19): each attack an insider made with their own key and the
project's own functions, and how the attacker now loses. A record signed straight into the chain (past
`records.write`'s checks) is void: it moves nothing, the audit names it, and governance goes on."""

import hashlib

import pytest
from govern_helpers import FAILING, approved_ticket, make_recorded_ticket, setup_lab

from analysis.governance import admin, audit, chain, decisions, deploy, records, witness
from analysis.governance import state as gstate
from analysis.governance.export import export_bundle
from analysis.governance.reader import snapshot
from pruning.errors import TicketLabError


def _sign_directly(ledger, signer, kind: str, body: dict, subject: str | None) -> dict:
    """What an insider with shell access and one key does: append a genuinely signed record (and its head to
    the witness log), skipping every check `records.write` makes."""
    with ledger.transaction() as con:
        row = chain.append(con, signer, kind, body, subject)
    witness.append(witness.path_for(ledger), witness.signed_head(signer, gstate.load(ledger).ledger_id, row))
    return row


def _decision_body(lab, tid: str, who: str = "alice", decision: str = "approve", **kw) -> dict:
    with snapshot(lab.ledger) as db:
        return decisions.decision_body(db, gstate.load(db), tid, decision, who, kw.pop("reason", "looks fine"),
                                       kw.pop("override", False), kw.pop("override_reason", None), "dense")


def _void(ledger, seq: int) -> str:
    report = audit.audit(ledger)
    assert not report["ok"] and report["intact"], report["problems"]
    hit = [p for p in report["voided"] if p.startswith(f"record #{seq} ")]
    assert hit, report["voided"]
    return hit[0]


def _still_works(lab, loaded, seed: int = 7) -> None:
    """One member's bad record freezes nothing: a decision, a promotion and an approved export all proceed."""
    t = approved_ticket(lab, loaded, sparsity=0.4 + seed / 100, seed=seed)
    deploy.promote(lab.ledger, t.id, lab["dave"], "still works")
    export_bundle(lab.ledger, t.id, lab.state / f"still-{t.id}", "masks", signer=lab["alice"], loaded=loaded)


def test_rollback_to_a_ticket_never_deployed_is_void(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])  # never approved, never deployed
    dense = tiny_llama.weights_sha256
    body = {"dense_sha256": dense, "target": t.id, "previous": "dense", "reason": "trust me"}
    with pytest.raises(TicketLabError, match=f"{t.id} was never deployed for dense model"):
        records.write(lab.ledger, lab["dave"], "rollback", body, dense, doing="roll back")
    row = _sign_directly(lab.ledger, lab["dave"], "rollback", body, dense)
    assert deploy.current(lab.ledger, dense) == "dense"
    assert "was never deployed" in _void(lab.ledger, row["seq"])
    assert not gstate.ticket_state(lab.ledger, t.id).deployed
    _still_works(lab, tiny_llama)


def test_rollback_to_a_ticket_rejected_since_is_void(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    a = approved_ticket(lab, tiny_llama, sparsity=0.5)
    dense = tiny_llama.weights_sha256
    deploy.promote(lab.ledger, a.id, lab["dave"], "first")
    deploy.rollback(lab.ledger, lab["dave"], "back")
    decisions.decide(lab.ledger, a.id, "reject", lab["bob"], "found a problem")
    row = _sign_directly(lab.ledger, lab["dave"], "rollback",
                         {"dense_sha256": dense, "target": a.id, "previous": "dense", "reason": "a again"}, dense)
    assert deploy.current(lab.ledger, dense) == "dense"
    assert "rejected after it was deployed" in _void(lab.ledger, row["seq"])


def test_approval_hiding_a_failed_rule_is_void(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch, policy=FAILING)  # the ticket fails perplexity under it
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    body = _decision_body(lab, t.id)
    assert body["unmet_rules"] == ["perplexity"] and not body["passed"]
    hiding = body | {"passed": True}  # the failing rule listed, but no override and "passed"
    with pytest.raises(TicketLabError, match="does not pass the pinned policy strict|records perplexity as unmet"):
        records.write(lab.ledger, lab["alice"], "decision", hiding, t.id, doing="decide")
    r1 = _sign_directly(lab.ledger, lab["alice"], "decision", hiding, t.id)
    # ... or with the rule left out of unmet_rules altogether: the audit evaluates the signed evidence again
    lying = body | {"passed": True, "unmet_rules": []}
    r2 = _sign_directly(lab.ledger, lab["alice"], "decision", lying, t.id)
    # ... or honest about the failure but without override: approval with unmet rules needs override + reason
    r3 = _sign_directly(lab.ledger, lab["alice"], "decision", body, t.id)
    assert "records perplexity as unmet" in _void(lab.ledger, r1["seq"])
    assert "its signed evidence fails perplexity" in _void(lab.ledger, r2["seq"])
    assert "needs --override --override-reason" in _void(lab.ledger, r3["seq"])
    assert gstate.approval_of(lab.ledger, t.id) is None
    with pytest.raises(TicketLabError, match="only approved tickets can be promoted"):
        deploy.promote(lab.ledger, t.id, lab["dave"], "ship")
    with pytest.raises(TicketLabError, match="not approved|no signed approval|unreviewed"):
        export_bundle(lab.ledger, t.id, state / "b", "masks", signer=lab["alice"], loaded=tiny_llama)
    # the honest way still works: an explicit, recorded override
    decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "ok", override=True, override_reason="waived")
    assert gstate.approval_of(lab.ledger, t.id) is not None


def test_promotion_onto_another_models_pointer_or_under_an_old_policy_is_void(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    dense, other = tiny_llama.weights_sha256, "f" * 64
    approval = gstate.approval_of(lab.ledger, t.id)
    pol = gstate.current_policy(lab.ledger)
    body = {"dense_sha256": other, "target": t.id, "content_sha256": t.content_sha256, "previous": "dense",
            "reason": "ship", "decision_hash": approval["row_hash"], "policy_sha256": pol.sha256, "unmet_rules": []}
    with pytest.raises(TicketLabError, match="a promotion moves only that model's pointer"):
        records.write(lab.ledger, lab["dave"], "promote", body, other, doing="promote")
    r1 = _sign_directly(lab.ledger, lab["dave"], "promote", body, other)
    assert gstate.deployment_pointers(lab.ledger) == {}
    assert "moves only that model's pointer" in _void(lab.ledger, r1["seq"])
    # an admin pins a stricter policy; the approval was made under v1
    admin.set_policy(lab.ledger, lab["ada"], lab.failing)
    new = gstate.current_policy(lab.ledger)
    r2 = _sign_directly(lab.ledger, lab["dave"], "promote",
                        body | {"dense_sha256": dense, "policy_sha256": new.sha256}, dense)
    assert deploy.current(lab.ledger, dense) == "dense"
    assert "a reviewer must decide again" in _void(lab.ledger, r2["seq"])


def test_a_malformed_record_is_void_and_freezes_nothing(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    eve = lab["eve"]  # an engineer: she may revoke her own key
    with pytest.raises(TicketLabError, match="'key_id' is missing"):
        records.write(lab.ledger, eve, "revoke", {"name": "eve", "reason": "x"}, "eve", doing="revoke")
    r1 = _sign_directly(lab.ledger, eve, "revoke", {"name": "eve", "reason": "x"}, "eve")
    r2 = _sign_directly(lab.ledger, eve, "revoke", "not even an object", "eve")
    assert "'key_id' is missing" in _void(lab.ledger, r1["seq"])
    assert "is void" in _void(lab.ledger, r2["seq"])
    assert gstate.load(lab.ledger).registry.people["eve"].key_id == eve.key_id  # nothing changed
    _still_works(lab, tiny_llama)
    # and a record signed without the role is void too, not a freeze
    r3 = _sign_directly(lab.ledger, eve, "roles", {"name": "eve", "roles": ["admin"]}, "eve")
    assert "did not hold the admin role" in _void(lab.ledger, r3["seq"])
    assert "admin" not in gstate.roles(lab.ledger)["eve"]
    _still_works(lab, tiny_llama, seed=8)


def test_unsigned_sparsity_edited_in_the_ledger_does_not_pass_the_floor(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)  # PASSING: min_sparsity 0.4
    t = make_recorded_ticket(tiny_llama, lab.ledger, sparsity=0.1, signer=lab["carol"])
    with lab.ledger.transaction() as con:  # the engineer edits the unsigned column
        con.execute("UPDATE tickets SET achieved_sparsity = 0.5 WHERE id = ?", [t.id])
    with pytest.raises(TicketLabError, match="does not pass the pinned policy lenient .*efficiency sparsity: fail"):
        decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "honest reviewer")
    body = _decision_body(lab, t.id, reason="honest reviewer")
    assert abs(body["evidence"]["sparsity"] - t.achieved_sparsity) < 1e-12 and body["unmet_rules"] == ["efficiency"]
    assert body["evidence_sha256"] == hashlib.sha256(chain.canonical(body["evidence"])).hexdigest()
    # the evidence the decision signs is what the audit evaluates: edit it and the digest no longer holds
    forged = body | {"passed": True, "unmet_rules": [], "evidence": body["evidence"] | {"sparsity": 0.5}}
    row = _sign_directly(lab.ledger, lab["alice"], "decision", forged, t.id)
    assert "does not hash to the evidence digest" in _void(lab.ledger, row["seq"])
    assert gstate.approval_of(lab.ledger, t.id) is None


def test_records_bind_the_full_content_hash(tiny_llama, state, monkeypatch):
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    move = deploy.promote(lab.ledger, t.id, lab["dave"], "ship")
    rows = {r["kind"]: chain.body_of(r) for r in gstate.load(lab.ledger).rows}
    assert rows["create"]["content_sha256"] == rows["decision"]["content_sha256"] == t.content_sha256
    assert rows["promote"]["content_sha256"] == t.content_sha256 and move["signed"]
    # a creation whose id is not the start of the content hash it signs is void
    other = make_recorded_ticket(tiny_llama, lab.ledger, sparsity=0.6, signer=None)
    body = {"ticket_id": other.id, "dense_sha256": tiny_llama.weights_sha256, "content_sha256": "0" * 64,
            "method": "magnitude", "how": "claim"}
    row = _sign_directly(lab.ledger, lab["carol"], "create", body, other.id)
    assert "is not the start of the content hash" in _void(lab.ledger, row["seq"])
    assert gstate.creator_of(lab.ledger, other.id) is None


def test_fresh_ledger_takeover_fails_the_audit_and_verify(tiny_llama, state, monkeypatch, capsys):
    """eve empties the governance log, moves the witness aside, `init --admin eve`, approves and promotes with
    keys of her own: the anchor in everyone else's key directory names the ledger they trust."""
    import duckdb
    from govern_helpers import PASSING, passphrase

    from analysis.governance import anchor, keys, trustfile
    from app.cli import main

    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    trust = trustfile.export(gstate.load(lab.ledger), lab["ada"])
    (state / "trust.json").write_text(__import__("json").dumps(trust))
    team_keys = state / "keys"
    wpath = witness.path_for(lab.ledger)
    con = duckdb.connect(str(lab.ledger.path))
    con.execute("DELETE FROM governance_log")
    con.close()
    # init refuses the witness location that has a history ...
    with pytest.raises(TicketLabError, match="already holds .* heads .* had a history"):
        admin.init_ledger(lab.ledger, lab["eve"])
    wpath.rename(state / "aside.jsonl")  # ... so eve moves it aside, and uses keys of her own
    monkeypatch.setenv("TICKETLAB_KEY_DIR", str(state / "eves-keys"))
    keys.generate("eve", passphrase("eve"))
    eve = keys.unlock("eve", passphrase("eve"))
    (state / "p.toml").write_text(PASSING.replace("creator_may_approve = false", "creator_may_approve = true"))
    admin.init_ledger(lab.ledger, eve, policy_file=state / "p.toml", roles=("admin", "engineer", "reviewer",
                                                                          "deployer"))
    from analysis.governance import identity

    identity.sign_creation(lab.ledger, eve, t.id)
    decisions.decide(lab.ledger, t.id, "approve", eve, "mine")
    deploy.promote(lab.ledger, t.id, eve, "mine")
    export_bundle(lab.ledger, t.id, state / "eves-bundle", "masks", signer=eve, loaded=tiny_llama)
    assert audit.audit(lab.ledger)["ok"]  # in eve's own key directory, her anchor matches her ledger
    # everyone else's key directory holds the anchor of the ledger ada initialised
    monkeypatch.setenv("TICKETLAB_KEY_DIR", str(team_keys))
    report = audit.audit(lab.ledger)
    assert not report["ok"] and not report["intact"] and "no trust anchor for ledger" in report["problems"][0]
    with pytest.raises(TicketLabError, match="no trust anchor"):
        decisions.decide(lab.ledger, t.id, "reject", lab["alice"], "who is eve?")
    assert main(["verify", str(state / "eves-bundle")]) == 1  # the local ledger's keys vouch for nothing
    out = capsys.readouterr().out
    assert "local ledger's keys are not used" in out and "NOT CHECKED" in out
    # the dashboard's bundle loader (and its Verify button) apply the same rule: eve's keys vouch for nothing
    from app.dashboard.loading import _bundle

    seen = _bundle(state / "eves-bundle")
    assert not seen["ok"] and "model-signing signature" not in seen["checked"]
    assert any("local ledger's keys are not used" in u for u in seen["unchecked"])
    assert main(["verify", str(state / "eves-bundle"), "--trust", str(state / "trust.json")]) == 2
    assert "is not a trusted key of eve" in capsys.readouterr().err
    # and a trust file eve writes for her ledger is refused by anyone who pinned ada's anchor for that id
    assert anchor.load(trust["ledger_id"]) is not None


def test_trust_files_are_signed_by_an_admin_and_checked(tiny_llama, state, monkeypatch, capsys):
    import json

    from govern_helpers import passphrase

    from analysis.governance import trustfile
    from analysis.governance.verify import load_trust
    from app.cli import main

    setup_lab(state, tiny_llama, monkeypatch)
    monkeypatch.setenv("TICKETLAB_PASSPHRASE", passphrase("alice"))
    assert main(["people", "export", "--out", str(state / "t.json"), "--as", "alice"]) == 2
    assert "is not an admin" in capsys.readouterr().err
    monkeypatch.setenv("TICKETLAB_PASSPHRASE", passphrase("ada"))
    assert main(["people", "export", "--out", str(state / "t.json"), "--as", "ada"]) == 0
    assert load_trust(state / "t.json")["signed_by"] == "ada"
    trust = json.loads((state / "t.json").read_text())
    trust["people"]["eve"]["roles"] = ["reviewer", "admin"]  # eve promotes herself in the file
    (state / "t.json").write_text(json.dumps(trust))
    with pytest.raises(TicketLabError, match="not signed by an admin it lists"):
        load_trust(state / "t.json")
    unsigned = {k: v for k, v in trust.items() if k not in trustfile.SIGNED}
    (state / "t.json").write_text(json.dumps(unsigned))
    with pytest.raises(TicketLabError, match="not signed by an admin it lists"):
        load_trust(state / "t.json")


def test_keygen_replace_of_a_registered_key_needs_its_owner(tiny_llama, state, monkeypatch, capsys):
    from govern_helpers import passphrase

    from analysis.governance import keys
    from app.cli import main

    lab = setup_lab(state, tiny_llama, monkeypatch)
    bob_file = keys.private_path("bob")
    before = bob_file.read_bytes()
    monkeypatch.setenv("TICKETLAB_PASSPHRASE", "mallorys-new-passphrase")  # someone else at bob's key directory
    assert main(["keygen", "bob", "--replace"]) == 2
    assert "holds bob's registered key" in capsys.readouterr().err
    assert bob_file.read_bytes() == before and gstate.load(lab.ledger).registry.people["bob"].key_id == lab["bob"].key_id
    monkeypatch.setenv("TICKETLAB_OLD_PASSPHRASE", "not-bobs-passphrase")
    assert main(["keygen", "bob", "--replace"]) == 2
    assert "wrong passphrase for bob's key" in capsys.readouterr().err and bob_file.read_bytes() == before
    # bob himself: his key signs its own revocation, then the new key is written for an admin to register
    monkeypatch.setenv("TICKETLAB_OLD_PASSPHRASE", passphrase("bob"))
    monkeypatch.setenv("TICKETLAB_PASSPHRASE", "bobs-brand-new-passphrase")
    assert main(["keygen", "bob", "--replace"]) == 0
    assert "revoked (signed by bob)" in capsys.readouterr().out
    bob = gstate.load(lab.ledger).registry.people["bob"]
    assert bob.key_id is None and lab["bob"].key_id in bob.revoked
    assert keys.unlock("bob", "bobs-brand-new-passphrase").key_id != lab["bob"].key_id
    assert audit.audit(lab.ledger)["ok"]


def test_a_bundle_binds_the_tickets_full_content_hash(tiny_llama, state, monkeypatch):
    """A reviewer signs an approval record naming the ticket's id but other content, and ships it in a bundle
    she re-signs: verify compares the full content hash the signed records bind with the bundle's ticket."""
    import json

    from analysis.governance import signing
    from analysis.governance.verify import file_digests, manifest_digest, verify_bundle

    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = approved_ticket(lab, tiny_llama)
    out = state / "bundle"
    export_bundle(lab.ledger, t.id, out, "masks", signer=lab["alice"], loaded=tiny_llama)
    trust = gstate.load(lab.ledger).registry.trust()
    assert verify_bundle(out, trust=trust)["ok"]
    m = json.loads((out / "manifest.json").read_text())
    row = dict(m["review"]["decision"]["record"])
    row["body"] = chain.canonical(chain.body_of(row) | {"content_sha256": "0" * 64}).decode()
    data = chain.signed_bytes(row)
    row["row_hash"], row["signature"] = hashlib.sha256(data).hexdigest(), lab["alice"].sign(data)
    m["review"]["decision"]["record"] = row
    m["files"] = file_digests(out)
    m["manifest_sha256"] = manifest_digest(m)
    (out / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True))
    signing.sign_bundle(out, lab["alice"])
    with pytest.raises(TicketLabError, match="same id, other content"):
        verify_bundle(out, trust=trust)


def test_anchor_export_and_pin_give_a_colleague_the_ledgers_anchor(tiny_llama, state, monkeypatch, capsys):
    import json
    import shutil

    from analysis.governance import anchor
    from app.cli import main

    lab = setup_lab(state, tiny_llama, monkeypatch)
    assert main(["anchor", "export", "--out", str(state / "anchor.json")]) == 0
    elsewhere = state / "colleague-keys"
    shutil.copytree(state / "keys", elsewhere, ignore=shutil.ignore_patterns("anchors"))
    monkeypatch.setenv("TICKETLAB_KEY_DIR", str(elsewhere))  # a colleague's key directory: no anchor yet
    assert not audit.audit(lab.ledger)["intact"]
    assert main(["audit"]) == 2 and "ticketlab anchor pin FILE" in capsys.readouterr().err
    edited = json.loads((state / "anchor.json").read_text()) | {"first_record": "0" * 64}
    (state / "edited.json").write_text(json.dumps(edited))
    assert main(["anchor", "pin", str(state / "edited.json")]) == 2
    assert "is not a signed trust anchor" in capsys.readouterr().err
    assert main(["anchor", "pin", str(state / "anchor.json")]) == 0
    assert audit.audit(lab.ledger)["ok"]
    # a second, different anchor for the same ledger id is refused, not swapped in
    other = anchor.sign(gstate.load(lab.ledger), lab["ada"]) | {"first_admin_key_id": lab["eve"].key_id}
    other["signature"] = lab["ada"].sign(chain.canonical({k: other[k] for k in anchor.FIELDS}))
    with pytest.raises(TicketLabError, match="a different trust anchor for ledger .* is already pinned"):
        anchor.pin(other)
