"""Issue 21 on the Review page (AppTest): decisions that know the present, forms that empty, promote and
rollback confirmed with their record numbers, and the sign-in's idle lock and rate limit (issue 19)."""

from __future__ import annotations

import time

from dashboard_helpers import button, keyed, page, texts
from dashboard_helpers import sign_in as _sign_in
from govern_helpers import FAILING as FAILING_POLICY
from govern_helpers import approved_ticket, make_recorded_ticket, passphrase, setup_lab

from analysis.governance import state as gstate


def sign_in(at, name: str, pw: str) -> None:
    _sign_in(at, "dec", name, pw)


def decide(at, t: str, who: str, decision: str, reason: str) -> None:
    keyed(at.radio, f"dec_decision_{t}").set_value(decision)
    keyed(at.text_area, f"dec_reason_{t}").set_value(reason)
    button(at, f"Sign and record the decision on {t} as {who}").click().run()


def test_two_tabs_deciding_one_ticket_ask_for_confirmation_naming_the_other(state, tiny_llama, monkeypatch):
    monkeypatch.setenv("TICKETLAB_APP_MODEL", tiny_llama.spec)
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"]).id
    one, two = page("review", ticket=t), page("review", ticket=t)  # both show the ticket undecided
    sign_in(one, "alice", passphrase("alice"))
    sign_in(two, "bob", passphrase("bob"))
    decide(one, t, "alice", "approve", "within budget")
    first = gstate.latest_decision(lab.ledger, t)
    assert first["decision"] == "approve" and keyed(one.text_area, f"dec_reason_{t}").value == ""

    # the second tab never saw alice's approval: its reject is held, and the warning says who, when, what
    decide(two, t, "bob", "reject", "bias grew")
    assert gstate.latest_decision(lab.ledger, t)["seq"] == first["seq"]  # nothing recorded yet
    warning = "\n".join(w.value for w in two.warning)
    assert f"Since this page showed {t}, alice approved it at" in warning
    assert f"(decision #{first['seq']}: “within budget”). Record your reject after it?" in warning
    button(two, f"Yes, record my reject after decision #{first['seq']}").click().run()
    second = gstate.latest_decision(lab.ledger, t)
    assert (second["decision"], second["reviewer"]) == ("reject", "bob")
    assert f"recorded decision #{second['seq']}: reject of {t} signed by bob" in texts(two)

    # the first tab, acting again on what it last saw, is told about bob's rejection; cancelling records nothing
    decide(one, t, "alice", "approve", "approve again")
    assert "bob rejected it at" in "\n".join(w.value for w in one.warning)
    button(one, "Cancel (record nothing)").click().run()
    assert gstate.latest_decision(lab.ledger, t)["seq"] == second["seq"]
    assert keyed(one.text_area, f"dec_reason_{t}").value == "approve again"  # kept: nothing was recorded


def test_promote_and_rollback_confirm_with_record_numbers(state, tiny_llama, monkeypatch):
    monkeypatch.setenv("TICKETLAB_APP_MODEL", tiny_llama.spec)
    lab = setup_lab(state, tiny_llama, monkeypatch)
    a, b = approved_ticket(lab, tiny_llama).id, approved_ticket(lab, tiny_llama, sparsity=0.6).id
    from analysis.governance import deploy

    deploy.promote(lab.ledger, a, lab["dave"], "first")
    at = page("review", ticket=b)
    sign_in(at, "dave", passphrase("dave"))
    keyed(at.text_input, f"dep_reason_{b}").set_value("better")
    button(at, f"Promote {b} as dave").click().run()
    seq = gstate.moves(lab.ledger)[-1]["seq"]
    assert f"promoted {b} (was {a}): record #{seq}, signed by dave" in texts(at)
    keyed(at.text_input, f"rb_reason_{b}").set_value("regression in production")
    button(at, f"Roll back {tiny_llama.weights_sha256[:12]} as dave").click().run()
    seq = gstate.moves(lab.ledger)[-1]["seq"]
    assert f"rolled back to {a} (was {b}): record #{seq}, signed by dave" in texts(at)
    assert gstate.deployment_pointer(lab.ledger, tiny_llama.weights_sha256) == a


def test_sign_in_is_rate_limited_and_the_key_locked_when_idle(state, tiny_llama, monkeypatch):
    monkeypatch.setenv("TICKETLAB_APP_MODEL", tiny_llama.spec)
    monkeypatch.setenv("TICKETLAB_SIGNIN_IDLE_S", "1")
    lab = setup_lab(state, tiny_llama, monkeypatch)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"]).id
    at = page("review", ticket=t)
    for _ in range(5):
        sign_in(at, "eve", "guess-guess-guess")
        assert "wrong passphrase for eve's key" in at.error[0].value
        assert "$TICKETLAB_PASSPHRASE" not in at.error[0].value  # the control, not the variable
    sign_in(at, "eve", passphrase("eve"))  # the right one, but too late
    assert "too many wrong passphrases for eve (5 in the last 5 minutes): try again in" in at.error[0].value
    assert "signed in as" not in texts(at)
    sign_in(at, "alice", passphrase("alice"))  # another person is not held up
    assert "signed in as **alice**" in texts(at)
    time.sleep(1.2)
    at.run()
    assert "signed in as" not in texts(at) and "alice's key was locked after 1 min without use" in texts(at)


def test_browser_prune_is_signed_by_the_signed_in_engineer_and_labelled_apart(state, tiny_llama, monkeypatch):
    from app import jobs

    monkeypatch.setenv("TICKETLAB_APP_MODEL", tiny_llama.spec)
    setup_lab(state, tiny_llama, monkeypatch)
    at = page("prune")
    assert "Unsigned until an engineer signs" in "\n".join(e.label for e in at.expander)
    _sign_in(at, "prune", "carol", passphrase("carol"))
    assert "signed as carol's (their creator) when the job finishes" in texts(at)
    button(at, "Prune in the background").click().run()
    at.selectbox(key="p_magnitude_pattern").set_value("2:4")
    at.text_input(key="p_magnitude_name").set_value("semi")
    button(at, "Prune in the background").click().run()
    listed = jobs.list_jobs()[:2]
    second = next(j for j in listed if "--pattern" in j["argv"])
    first = next(j for j in listed if "--pattern" not in j["argv"])
    assert first["label"] != second["label"]  # the same label for both used to hide which was which
    assert second["label"].startswith("prune magnitude 50% pattern=2:4 “semi”")
    for job in (first, second):
        assert jobs.wait(job["id"], timeout=180)["status"] == "succeeded"
    at.run()  # the next page run signs both finished tickets as carol's
    for job in (first, second):
        creation = gstate.creation_of(gstate.load(lab_ledger()), jobs.get(job["id"])["result"]["id"])
        assert creation is not None and creation["actor"] == "carol"


def lab_ledger():
    from analysis.ledger import Ledger

    return Ledger()


def test_refusals_name_the_controls_not_the_command_line_flags(state, tiny_llama, monkeypatch):
    monkeypatch.setenv("TICKETLAB_APP_MODEL", tiny_llama.spec)
    lab = setup_lab(state, tiny_llama, monkeypatch, policy=FAILING_POLICY)
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"]).id
    at = page("review", ticket=t)
    sign_in(at, "alice", passphrase("alice"))
    decide(at, t, "alice", "approve", "looks fine")
    shown = "\n".join(e.value for e in at.error)
    assert "does not pass the pinned policy" in shown and "“override the pinned policy” ticked" in shown
    assert "--" not in shown and "ticketlab " not in shown
    assert gstate.latest_decision(lab.ledger, t) is None
