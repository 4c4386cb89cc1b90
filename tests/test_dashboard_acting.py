"""Issue 21 on the Review page (AppTest): decisions that know the present, forms that empty, promote and
rollback confirmed with their record numbers, and the sign-in's idle lock and rate limit (issue 19)."""

from __future__ import annotations

import time
from pathlib import Path

from govern_helpers import approved_ticket, make_recorded_ticket, passphrase, setup_lab
from streamlit.testing.v1 import AppTest

from analysis.governance import state as gstate

MAIN = Path(__file__).resolve().parents[1] / "app" / "dashboard" / "main.py"


def page(name: str, **query) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.run()
    at.switch_page(f"views/{name}.py")
    at.query_params.update(query)
    at.run()
    return at


def texts(at: AppTest) -> str:
    return "\n".join(str(x.value) for kind in ("markdown", "info", "success", "warning", "error", "caption")
                     for x in getattr(at, kind))


def button(at: AppTest, label: str):
    hits = [b for b in at.button if b.label == label]
    assert hits, f"no button {label!r}; have {[b.label for b in at.button]}"
    return hits[0]


def sign_in(at: AppTest, name: str, pw: str, key: str = "dec") -> None:
    at.selectbox(key=f"{key}_signin_name").set_value(name)
    at.text_input(key=f"{key}_signin_pw").set_value(pw)
    button(at, "Unlock my key").click().run()


def decide(at: AppTest, t: str, who: str, decision: str, reason: str) -> None:
    at.radio(key=f"dec_decision_{t}").set_value(decision)
    at.text_area(key=f"dec_reason_{t}").set_value(reason)
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
    assert first["decision"] == "approve" and one.text_area(key=f"dec_reason_{t}").value == ""

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
    assert one.text_area(key=f"dec_reason_{t}").value == "approve again"  # kept: nothing was recorded


def test_promote_and_rollback_confirm_with_record_numbers(state, tiny_llama, monkeypatch):
    monkeypatch.setenv("TICKETLAB_APP_MODEL", tiny_llama.spec)
    lab = setup_lab(state, tiny_llama, monkeypatch)
    a, b = approved_ticket(lab, tiny_llama).id, approved_ticket(lab, tiny_llama, sparsity=0.6).id
    from analysis.governance import deploy

    deploy.promote(lab.ledger, a, lab["dave"], "first")
    at = page("review", ticket=b)
    sign_in(at, "dave", passphrase("dave"))
    at.text_input(key=f"dep_reason_{b}").set_value("better")
    button(at, f"Promote {b} as dave").click().run()
    seq = gstate.moves(lab.ledger)[-1]["seq"]
    assert f"promoted {b} (was {a}): record #{seq}, signed by dave" in texts(at)
    at.text_input(key=f"rb_reason_{b}").set_value("regression in production")
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
