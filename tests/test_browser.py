"""A real browser through the dashboard: `ticketlab app` as a subprocess on a free port, Debian's chromium
driven by Playwright, on a tiny model and a ledger with signed governance (real keys):
prune -> survival heatmap -> the reviewer path on two tickets (switching candidates between decisions;
the ledger must record each decision on the ticket it was made for) -> an evaluation that stays visible
across a refresh -> a signed export. Screenshots go to tests/artifacts/."""

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


@pytest.fixture
def governed(state, monkeypatch):
    """Keys for ada (admin), alice (reviewer) and carol (engineer); the ledger initialised by ada."""
    from govern_helpers import make_key, passphrase

    from analysis.governance import admin, keys
    from analysis.ledger import Ledger

    monkeypatch.setenv("TICKETLAB_KEY_DIR", str(state / "keys"))
    monkeypatch.delenv("TICKETLAB_PASSPHRASE", raising=False)
    people = {n: make_key(n) for n in ("ada", "alice", "carol")}
    admin.init_ledger(Ledger(), people["ada"])
    admin.register(Ledger(), people["ada"], "alice", keys.public_path("alice"), ("reviewer",))
    admin.register(Ledger(), people["ada"], "carol", keys.public_path("carol"), ("engineer",))
    return people, passphrase


@pytest.fixture
def server(state, tiny_llama_dir, governed):
    env = dict(os.environ, TICKETLAB_USER="operator")  # the server's user has no key: its tickets are unsigned
    port = free_port()
    log = state / "server.log"
    proc = start_server(port, str(tiny_llama_dir), env=env, log=log)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


def _shot(page, name: str) -> None:
    snapshot(page, ARTIFACTS / f"{name}.png")


def _choose(page, label: str, option: str) -> None:
    """Pick `option` (text it contains) in the Streamlit select box labelled `label` (a rerun that lands
    while the list opens closes it again: try a few times)."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=label).first
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
        return


def _sign_in(page, who: str, passphrase) -> None:
    from playwright.sync_api import expect

    _choose(page, "who you are", who)
    page.get_by_label("passphrase of your key").fill(passphrase(who))
    page.get_by_role("button", name="Unlock my key").click()
    expect(page.get_by_text(re.compile(f"signed in as {who}"))).to_be_visible()


def _two_signed_tickets(tiny_llama_dir, carol) -> list[str]:
    """Two candidates made by carol (signed creators), recorded as `ticketlab prune` records them."""
    from analysis.recording import record_prune
    from pruning.models import load_model
    from pruning.prune import make_ticket

    loaded = load_model(str(tiny_llama_dir))
    out = []
    for method, seed in (("magnitude", 1), ("random", 2)):
        t = make_ticket(loaded, method, 0.6, seed=seed)
        t.save()
        record_prune(loaded, t, "test", signer=carol)
        out.append(t.id)
    return out


def test_prune_survival_review_two_tickets_evaluate_export(server, tiny_llama_dir, state, governed):
    from playwright.sync_api import expect, sync_playwright

    from analysis.governance.state import decision_rows
    from analysis.ledger import Ledger
    from app import jobs

    people, passphrase = governed
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)

        # no tickets yet: one click prunes a first ticket in the background
        page.goto(server)
        settle(page)
        expect(page.get_by_text("The ledger is empty")).to_be_visible()
        page.get_by_role("button", name=re.compile("Prune a first ticket")).click()
        expect(page.get_by_text(re.compile(r"Tickets \(1\)"))).to_be_visible(timeout=180_000)
        settle(page)
        _shot(page, "1-models")

        # survival heatmaps, with a hover value and the colour scale stated
        page.get_by_role("link", name="Survival").first.click()
        settle(page)
        expect(page.get_by_text("Surviving weights: layer × matrix")).to_be_visible()
        expect(page.get_by_text(re.compile("colour scale")).first).to_be_visible()
        plots = page.locator(".js-plotly-plot")
        assert plots.count() >= 3
        box = plots.first.locator(".nsewdrag").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.25)
        expect(page.locator(".hoverlayer .hovertext").first).to_contain_text("weights", timeout=10_000)
        _shot(page, "2-survival")

        # the reviewer: two candidates, a decision on each, switching between them
        first, second = _two_signed_tickets(tiny_llama_dir, people["carol"])
        page.goto(f"{server}/review?ticket={first}")
        settle(page)
        expect(page.get_by_text("Verdict").first).to_be_visible()
        _sign_in(page, "alice", passphrase)
        settle(page)
        page.get_by_label("reason (recorded and signed)").fill("first candidate: acceptable")
        override = page.get_by_text("override the pinned policy")
        if override.count():  # the tiny model has no full evaluations: approving needs an override
            override.click()
            page.get_by_label("override reason").fill("tiny test model has no full evaluations")
        page.get_by_role("button", name=f"Sign and record the decision on {first} as alice").click()
        expect(page.get_by_text(re.compile(f"recorded decision #\\d+: approve of {first}"))).to_be_visible()
        settle(page)
        expect(page.get_by_text(re.compile("approved (with override )?by alice")).first).to_be_visible()
        # switch the candidate: the form is the second ticket's, empty, and its button names it
        _choose(page, "candidate ticket", second[:10])
        settle(page)
        assert page.get_by_label("reason (recorded and signed)").input_value() == ""
        page.get_by_text("reject", exact=True).click()
        page.get_by_label("reason (recorded and signed)").fill("second candidate: not better than the first")
        page.get_by_role("button", name=f"Sign and record the decision on {second} as alice").click()
        expect(page.get_by_text(re.compile(f"recorded decision #\\d+: reject of {second}"))).to_be_visible()
        settle(page)
        _shot(page, "3-review")
        recorded = [(d["ticket_id"], d["decision"], d["reviewer"], d["reason"]) for d in decision_rows(Ledger())]
        assert recorded == [(first, "approve", "alice", "first candidate: acceptable"),
                            (second, "reject", "alice", "second candidate: not better than the first")]

        # an evaluation: the job stays visible across a refresh, in the sidebar of every page
        page.get_by_role("link", name="Benchmarks").first.click()
        settle(page)
        page.get_by_role("tab", name="Evaluate").click()
        page.get_by_role("button", name="Evaluate in the background").click()
        expect(page.get_by_role("link", name=re.compile(r"Jobs \(1 running\)"))).to_be_visible(timeout=30_000)
        page.reload()
        settle(page)
        expect(page.get_by_role("link", name=re.compile(r"Jobs \(1 running\)"))).to_be_visible()
        running = [j for j in jobs.list_jobs() if j["kind"] == "eval"][0]
        expect(page.get_by_test_id("stSidebar").get_by_text(running["label"])).to_be_visible()
        page.get_by_role("link", name=re.compile(r"Jobs \(1 running\)")).click()
        settle(page)
        expect(page.get_by_text(running["label"]).first).to_be_visible()
        _shot(page, "5-jobs")
        page.get_by_role("button", name="Cancel").first.click()
        expect(page.get_by_text("cancelled").first).to_be_visible(timeout=30_000)

        # export the approved ticket, signed by its reviewer; verify it; download the zip
        page.get_by_role("link", name="Export").first.click()
        settle(page)
        _choose(page, "ticket", first[:10])
        settle(page)
        _sign_in(page, "alice", passphrase)
        page.get_by_role("button", name=f"Export {first} signed by alice").click()
        expect(page.get_by_text(re.compile("signed by alice")).first).to_be_visible(timeout=180_000)
        settle(page)
        _choose(page, "bundle", first)
        settle(page)
        page.get_by_role("button", name=re.compile("Verify the bundle")).click()
        expect(page.get_by_text(re.compile("signed by alice; checked")).first).to_be_visible()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download as zip").click()
        target = ARTIFACTS / "bundle.zip"
        download.value.save_as(target)
        with zipfile.ZipFile(target) as z:
            name = next(n for n in z.namelist() if n.endswith("/manifest.json"))
            manifest = json.loads(z.read(name))
        assert manifest["ticket"]["id"] == first
        settle(page)
        _shot(page, "4-export")
        browser.close()
