"""Four people, one browser (issue 21): `ticketlab app` as a subprocess on a free port, Debian's chromium driven
by Playwright, on the tiny model. Only keys exist at the start (made as `ticketlab keygen` makes them):
- ada (admin) creates the ledger and registers the others on the Admin page;
- carol (engineer) prunes on the Prune page, and the finished ticket is signed as hers; a reload keeps her
  signed in (the browser holds a token, never the passphrase); the survival heatmap answers a hover;
- alice (reviewer) decides in two tabs: the second tab, which never saw the first tab's rejection, is asked
  to confirm, naming it, before its approval is recorded;
- dave (deployer) promotes, exports the bundle signed as deployer (carrying alice's signed approval),
  verifies it and downloads it.
Screenshots go to tests/artifacts/."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import pytest

from app.dashboard.screenshots import CHROMIUM, free_port, launch, settle, snapshot, start_server, stop_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} not found: install Debian's chromium (`make browser`)"),
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PEOPLE = {"alice": "reviewer", "carol": "engineer", "dave": "deployer"}


@pytest.fixture
def server(state, tiny_llama_dir, monkeypatch):
    """Keys for ada and the three others (nothing registered, no ledger yet), and the app on them."""
    from govern_helpers import make_key, passphrase

    monkeypatch.setenv("TICKETLAB_KEY_DIR", str(state / "keys"))
    monkeypatch.delenv("TICKETLAB_PASSPHRASE", raising=False)
    for name in ("ada", *PEOPLE):
        make_key(name)
    env = dict(os.environ, TICKETLAB_USER="operator")  # the server's own user has no key
    port = free_port()
    proc = start_server(port, str(tiny_llama_dir), env=env, log=state / "server.log")
    yield f"http://127.0.0.1:{port}", passphrase
    stop_server(proc)


def _shot(page, name: str) -> None:
    snapshot(page, ARTIFACTS / f"{name}.png")


def _choose(page, label: str, option: str, test_id: str = "stSelectbox") -> None:
    """Pick `option` (text it contains) in the Streamlit select box (or multiselect) labelled `label` (a rerun
    that lands while the list opens closes it again: try a few times)."""
    box = page.get_by_test_id(test_id).filter(has_text=label).first
    for attempt in range(4):
        settle(page)
        box.locator("input").first.click()
        choice = page.get_by_role("option").filter(has_text=option).first
        try:
            choice.wait_for(state="visible", timeout=5_000)
        except Exception:
            if attempt == 3:
                _shot(page, f"failed-choose-{label.replace(' ', '_')}")
                raise
            page.keyboard.press("Escape")
            continue
        choice.click()
        if test_id == "stMultiSelect":
            page.keyboard.press("Escape")
        return


def _sign_in(page, who: str, passphrase, then: str = "signed in as {who}") -> None:
    from playwright.sync_api import expect

    _choose(page, "who you are", who)
    page.get_by_label("passphrase of your key").fill(passphrase(who))
    page.get_by_role("button", name="Unlock my key").click()
    try:
        expect(page.get_by_text(re.compile(then.format(who=who))).first).to_be_visible()
    except AssertionError:
        _shot(page, f"failed-sign-in-{who}")
        raise


def _sign_out(page) -> None:
    page.get_by_role("button", name="Sign out").click()
    settle(page)


def test_four_people_one_browser(server, state):
    from playwright.sync_api import expect, sync_playwright

    from analysis.governance import state as gstate
    from analysis.ledger import Ledger
    from app import jobs

    base, passphrase = server
    with sync_playwright() as pw:
        browser = launch(pw)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)

        # ada, the admin: creates the ledger and registers the team in the browser
        page.goto(f"{base}/admin")
        settle(page)
        expect(page.get_by_text("has no signed registry yet")).to_be_visible()
        page.get_by_label(re.compile("^your name")).fill("ada")
        page.get_by_label("passphrase of your key").fill(passphrase("ada"))
        page.get_by_role("button", name="Create the ledger").click()
        expect(page.get_by_text(re.compile(r"ledger created \(record #1\): ada is its first admin"))).to_be_visible()
        for name, role in PEOPLE.items():
            settle(page)
            page.get_by_role("tab", name="Register").click()
            page.get_by_label("their name").fill(name)
            _choose(page, "roles", role, test_id="stMultiSelect")
            page.get_by_role("button", name="Register and sign").click()
            expect(page.get_by_text(f"registered {name} ({role})")).to_be_visible()
        _shot(page, "1-admin")
        _sign_out(page)
        assert {n: p.roles for n, p in gstate.load(Ledger()).registry.people.items()} == {
            "ada": {"admin"}, **{n: {r} for n, r in PEOPLE.items()}}

        # carol, the engineer: prunes; the finished ticket is signed as hers; a reload keeps her signed in
        page.goto(f"{base}/prune")
        settle(page)
        page.get_by_text("Unsigned until an engineer signs").click()
        _sign_in(page, "carol", passphrase, then="signed as {who}'s")
        page.get_by_role("button", name="Prune in the background").click()
        expect(page.get_by_text("signed by its creator carol").first).to_be_visible(timeout=180_000)
        ticket = jobs.list_jobs()[0]["result"]["id"]
        assert gstate.creation_of(gstate.load(Ledger()), ticket)["actor"] == "carol"
        page.reload()
        settle(page)
        expect(page.get_by_text(re.compile("signed as carol's"))).to_be_visible()
        page.goto(f"{base}/survival?ticket={ticket}")
        settle(page)
        plots = page.locator(".js-plotly-plot")
        box = plots.first.locator(".nsewdrag").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.25)
        expect(page.locator(".hoverlayer .hovertext").first).to_contain_text("weights", timeout=10_000)
        _shot(page, "2-survival")

        # alice, the reviewer, in two tabs: both show the ticket undecided
        page.goto(f"{base}/review?ticket={ticket}")
        settle(page)
        _sign_out(page)  # carol's sign-in came along (same browser)
        _sign_in(page, "alice", passphrase)
        other = context.new_page()
        other.goto(f"{base}/review?ticket={ticket}")
        settle(other)
        expect(other.get_by_text(re.compile("signed in as alice"))).to_be_visible()  # the same browser's sign-in
        page.get_by_text("reject", exact=True).click()
        page.get_by_label("reason (recorded and signed)").fill("first look: not convinced")
        page.get_by_role("button", name=f"Sign and record the decision on {ticket} as alice").click()
        expect(page.get_by_text(re.compile(f"recorded decision #\\d+: reject of {ticket}"))).to_be_visible()
        first = gstate.latest_decision(Ledger(), ticket)
        other.get_by_label("reason (recorded and signed)").fill("second look: fine for the pilot")
        other.get_by_text("override the pinned policy").click()  # the tiny model has no full evaluations
        other.get_by_label("override reason").fill("tiny test model: no full evaluations")
        other.get_by_role("button", name=f"Sign and record the decision on {ticket} as alice").click()
        expect(other.get_by_text(re.compile(f"Since this page showed {ticket}, alice rejected it at"))).to_be_visible()
        assert gstate.latest_decision(Ledger(), ticket)["seq"] == first["seq"]  # nothing recorded before the answer
        _shot(other, "3-two-tabs")
        other.get_by_role("button", name=f"Yes, record my approve after decision #{first['seq']}").click()
        expect(other.get_by_text(re.compile(f"recorded decision #\\d+: approve of {ticket} signed by alice "
                                            r"\(override\)"))).to_be_visible()
        other.close()

        # dave, the deployer: promotes, exports as deployer, verifies and downloads
        page.reload()
        settle(page)
        _sign_out(page)
        _sign_in(page, "dave", passphrase)
        page.get_by_label("reason").fill("pilot rollout")
        page.get_by_role("button", name=f"Promote {ticket} as dave").click()
        expect(page.get_by_text(re.compile(f"promoted {ticket} \\(was dense\\): record #\\d+, signed by dave"))
               ).to_be_visible()
        page.goto(f"{base}/export?ticket={ticket}")
        settle(page)
        expect(page.get_by_text("approved by override of the policy by alice").first).to_be_visible()
        page.get_by_role("button", name=f"Export {ticket} signed by dave (as deployer; carries alice's signed "
                                        f"approval)").click()
        expect(page.get_by_text(re.compile("files, signed by dave")).first).to_be_visible(timeout=180_000)
        settle(page)
        page.get_by_role("button", name=re.compile("Verify the bundle")).click()
        expect(page.get_by_text(re.compile("Verified: signed by dave · approved by override of the policy"))
               ).to_be_visible()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download as zip").click()
        target = ARTIFACTS / "bundle.zip"
        download.value.save_as(target)
        with zipfile.ZipFile(target) as z:
            manifest = json.loads(z.read(next(n for n in z.namelist() if n.endswith("/manifest.json"))))
        assert manifest["ticket"]["id"] == ticket and manifest["exported_by"] == "dave"
        _shot(page, "4-export")
        browser.close()
