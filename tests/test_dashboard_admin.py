"""The Admin page (issue 21, AppTest): a ledger created, people registered, roles changed, a key revoked, a
policy pinned after its diff, the trust file written: each a signed record through analysis.governance.admin."""

from __future__ import annotations

import json

from dashboard_helpers import button, keyed, page, sign_in, texts
from govern_helpers import make_key, passphrase

from analysis.governance import keys
from analysis.governance import state as gstate
from analysis.governance.verify import load_trust
from analysis.ledger import Ledger


def test_admin_sets_up_the_ledger_and_its_people_in_the_browser(state, tiny_llama, monkeypatch):
    monkeypatch.setenv("TICKETLAB_APP_MODEL", tiny_llama.spec)
    monkeypatch.setenv("TICKETLAB_KEY_DIR", str(state / "keys"))
    monkeypatch.delenv("TICKETLAB_PASSPHRASE", raising=False)
    for name in ("alice", "carol"):
        make_key(name)
    at = page("admin")
    assert not at.exception, [e.value for e in at.exception]
    assert "has no signed registry yet" in texts(at)
    # ada makes her key here, then creates the ledger with it
    at.text_input(key="adm_kg_name").set_value("ada")
    at.text_input(key="adm_kg_pw").set_value(passphrase("ada"))
    at.text_input(key="adm_kg_pw2").set_value(passphrase("ada"))
    button(at, "Make the key").click().run()
    assert keys.private_path("ada").exists()
    at.text_input(key="adm_init_name").set_value("ada")
    at.text_input(key="adm_init_pw").set_value(passphrase("ada"))
    button(at, "Create the ledger").click().run()
    assert not at.exception, [e.value for e in at.exception]
    st_ = gstate.load(Ledger())
    assert st_.ledger_id and st_.registry.people["ada"].roles == {"admin"}
    assert "ledger created (record #1): ada is its first admin" in texts(at)
    assert "signed in as **ada** (admin)" in texts(at)  # the key unlocked to create the ledger stays unlocked

    keyed(at.text_input, "adm_reg_name").set_value("alice")
    keyed(at.multiselect, "adm_reg_roles").set_value(["reviewer"])
    button(at, "Register and sign").click().run()
    assert "registered alice (reviewer)" in texts(at) and keyed(at.text_input, "adm_reg_name").value == ""
    keyed(at.text_input, "adm_reg_name").set_value("carol")
    keyed(at.multiselect, "adm_reg_roles").set_value(["engineer"])
    button(at, "Register and sign").click().run()
    at.selectbox(key="adm_roles_who").set_value("alice").run()
    keyed(at.multiselect, "adm_roles_alice_set").set_value(["reviewer", "deployer"])
    button(at, "Sign the new roles of alice").click().run()
    keyed(at.selectbox, "adm_rev_who").set_value("carol")
    keyed(at.text_input, "adm_rev_reason").set_value("left the team")
    button(at, "Revoke the key and sign").click().run()
    reg = gstate.load(Ledger()).registry
    assert reg.people["alice"].roles == {"reviewer", "deployer"} and reg.people["carol"].key_id is None
    rows = gstate.load(Ledger()).rows
    assert [r["kind"] for r in rows] == ["init", "policy", "register", "register", "roles", "revoke"]
    assert {r["actor"] for r in rows} == {"ada"}

    # a policy edit: the diff against the pinned one first, then the pin
    box = next(t for t in at.text_area if (t.key or "").startswith("adm_pol_text"))
    pinned = box.value
    box.set_value(pinned.replace('name = "', 'name = "strict-', 1)).run()
    diff = [c.value for c in at.code if c.language == "diff"]
    assert diff and "\n-name = " in diff[0] and '\n+name = "strict-' in diff[0]
    button(at, "Pin this policy as version 2 and sign").click().run()
    assert gstate.policy_versions(Ledger())[-1]["version"] == 2

    at.text_input(key="adm_trust_out").set_value(str(state / "trust.json"))
    button(at, "Sign and write the trust file").click().run()
    trust = load_trust(state / "trust.json")  # refuses a trust file no admin signed
    assert set(trust["people"]) == {"ada", "alice", "carol"}
    assert json.loads((state / "trust.json").read_text())["signed_by"] == "ada"

    # alice is no admin: told so, and offered no admin form
    button(at, "Sign out").click().run()
    sign_in(at, "adm", "alice", passphrase("alice"))
    assert "Administration needs the admin role (alice holds deployer, reviewer); admins here: ada" in texts(at)
    assert not [b for b in at.button if "sign" in b.label.lower() and b.label != "Sign out"]
