"""The dashboard's governance forms (AppTest): actions only as a signed-in person, forms bound to their ticket,
and who signed what, the trail and the bundle signature shown."""

from __future__ import annotations

from dashboard_helpers import button, errors, keyed, page, sign_in, texts
from govern_helpers import make_recorded_ticket, passphrase, setup_lab

from analysis.governance import state as gstate


def test_decide_and_deploy_only_as_the_signed_in_person(state, tiny_llama, monkeypatch):
    monkeypatch.setenv("TICKETLAB_APP_MODEL", tiny_llama.spec)
    lab = setup_lab(state, tiny_llama, monkeypatch)
    a = make_recorded_ticket(tiny_llama, lab.ledger, sparsity=0.5, signer=lab["carol"])
    b = make_recorded_ticket(tiny_llama, lab.ledger, sparsity=0.6, signer=lab["carol"])
    at = page("review", ticket=a.id)
    assert not at.exception, [e.value for e in at.exception]
    # no box to type a reviewer's name: only a sign-in with a key
    assert not [t for t in at.text_input if "reviewer" in (t.key or "")]
    assert not [bt for bt in at.button if bt.label.startswith("Sign and record")]
    sign_in(at, "dec", "alice", "not-alices-passphrase")
    assert "wrong passphrase for alice's key" in errors(at)
    sign_in(at, "dec", "alice", passphrase("alice"))
    assert "signed in as **alice** (reviewer)" in texts(at)

    # the form is bound to its ticket: what was typed for a never reaches b, and the button names b
    keyed(at.text_area, f"dec_reason_{a.id}").set_value("within budget")
    at.selectbox(key="rev_ticket").set_value(b.id).run()
    assert keyed(at.text_area, f"dec_reason_{b.id}").value == ""
    assert [bt.label for bt in at.button if bt.label.startswith("Sign and record")] == [
        f"Sign and record the decision on {b.id} as alice"]
    at.selectbox(key="rev_ticket").set_value(a.id).run()
    assert keyed(at.text_area, f"dec_reason_{a.id}").value == ""  # and back on a, its form starts afresh
    keyed(at.text_area, f"dec_reason_{a.id}").set_value("within budget")
    button(at, f"Sign and record the decision on {a.id} as alice").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"approve of {a.id} signed by alice" in texts(at)
    s = gstate.ticket_state(lab.ledger, a.id)
    assert (s.review_status, s.decided_by, s.signed) == ("approved", "alice", True)
    assert gstate.ticket_state(lab.ledger, b.id).review_status == "unreviewed"  # the other ticket is untouched

    # the form empties after the write (issue 21: it stayed filled, one more click recorded another decision)
    assert keyed(at.text_area, f"dec_reason_{a.id}").value == ""
    # alice is no deployer: no promote button that can only fail, and whom to ask instead
    assert not [bt for bt in at.button if bt.label.startswith(("Promote", "Roll back"))]
    assert "Promoting and rolling back need the deployer role (alice holds reviewer); deployers here: dave" in texts(at)
    button(at, "Sign out").click().run()
    sign_in(at, "dec", "dave", passphrase("dave"))
    # a deployer sees the deployment panel first, and no decision form (explained)
    shown = [m.value for m in at.markdown if m.value.startswith("#### ")]
    assert shown == ["#### Deployment", "#### Decision"]
    assert not [bt for bt in at.button if bt.label.startswith("Sign and record")]
    assert "Deciding needs the reviewer role (dave holds deployer); reviewers here: alice, bob" in texts(at)
    keyed(at.text_input, f"dep_reason_{a.id}").set_value("ship it")
    button(at, f"Promote {a.id} as dave").click().run()
    promoted = gstate.moves(lab.ledger)[-1]
    assert f"promoted {a.id} (was dense): record #{promoted['seq']}, signed by dave" in texts(at)
    assert "every signature and role valid" in texts(at)


def test_export_signed_by_the_approver_or_a_deployer_and_its_signature_shown(state, tiny_llama, monkeypatch):
    """Issue 21: the deployer's main button used to be an export that could only fail."""
    from analysis.governance import decisions

    monkeypatch.setenv("TICKETLAB_APP_MODEL", tiny_llama.spec)
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "fine")
    ex = page("export", ticket=t.id)
    ex.selectbox(key="exp_format").set_value("masks").run()
    sign_in(ex, "exp", "bob", passphrase("bob"))
    # bob neither approved it nor deploys: told whom to ask, and offered no button that can only fail
    assert "bob cannot sign this bundle: it is signed by alice, who approved it, or by a deployer (dave)" in texts(ex)
    assert not [b for b in ex.button if b.label.startswith("Export")]
    button(ex, "Sign out").click().run()
    sign_in(ex, "exp", "dave", passphrase("dave"))
    button(ex, f"Export {t.id} signed by dave (as deployer; carries alice's signed approval)").click().run()
    assert not ex.exception, [e.value for e in ex.exception]
    assert not ex.error, [e.value for e in ex.error]
    assert "signed by dave" in texts(ex)
    ex = page("export", ticket=t.id)
    button(ex, "Verify the bundle (hashes, ticket id, signature, signer)").click().run()
    shown = "\n".join(s.value for s in ex.success)
    assert "Verified: signed by **dave** · approved by **alice**" in shown and "model-signing signature" in shown


def test_review_page_on_a_ledger_without_signed_registry(state, tiny_llama, monkeypatch):
    from analysis.ledger import Ledger

    monkeypatch.setenv("TICKETLAB_APP_MODEL", tiny_llama.spec)
    monkeypatch.setenv("TICKETLAB_KEY_DIR", str(state / "keys"))
    t = make_recorded_ticket(tiny_llama, Ledger(), signer=None)
    at = page("review", ticket=t.id)
    assert not at.exception, [e.value for e in at.exception]
    assert "no signed registry yet" in texts(at) and "nobody has signed as this ticket's creator" in texts(at)
    assert not [bt for bt in at.button if bt.label.startswith(("Sign and record", "Promote"))]
