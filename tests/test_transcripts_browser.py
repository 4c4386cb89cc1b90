"""A ticket whose answers changed shows the change in the side-by-side transcripts view (Playwright and
Debian's chromium against `ticketlab app`). Real runs: SmolLM2-135M-Instruct and a 30 % magnitude ticket
on the first 18 XSTest prompts (one per prompt type), 12 new tokens each: the dense model opens its
answer to prompt 17 with "I'm sorry" (full refusal), the ticket does not (full compliance)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from gen_helpers import write_short_tasks

from app.dashboard.screenshots import CHROMIUM, free_port, launch, settle, snapshot, start_server, stop_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.smollm,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} not found: install Debian's chromium (`make browser`)"),
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def test_changed_answer_shows_side_by_side(state, reference_data, tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    from analysis import transcripts
    from analysis.evaluate import evaluate
    from analysis.ledger import Ledger
    from analysis.safety import benchmark_registry
    from pruning.models import load_model
    from pruning.prune import make_ticket

    monkeypatch.setenv(benchmark_registry.PATH_ENV, str(write_short_tasks(tmp_path / "short", tokens=12)))
    smol = load_model("smollm2-135m-instruct")
    ticket = make_ticket(smol, "magnitude", 0.3)
    ticket.save()
    evaluate(smol, None, suite="instruct", tasks="xstest", limit=18)
    evaluate(smol, ticket, suite="instruct", tasks="xstest", limit=18)
    pair = transcripts.latest_pair(Ledger(), "dense", ticket.id, "xstest", smol.weights_sha256)
    changed = [p for p in transcripts.pairs(*(transcripts.load(x["sha256"]) for x in pair)) if p["changed"]]
    assert [p["doc_id"] for p in changed] == [17]
    assert (changed[0]["base"]["outcome"], changed[0]["cand"]["outcome"]) == ("full refusal", "full compliance")

    port = free_port()
    proc = start_server(port, "smollm2-135m-instruct", env=dict(os.environ), log=state / "server.log")
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            page.goto(f"http://127.0.0.1:{port}/benchmarks?ticket={ticket.id}")
            settle(page)
            page.get_by_role("tab", name="Compare").click()
            settle(page)
            expect(page.get_by_text("only prompts whose outcome changed (1 of 18)")).to_be_visible()
            expect(page.get_by_text("Prompt 17").first).to_be_visible()
            expect(page.get_by_text(re.compile(r'opens with "i.m sorry"')).first).to_be_visible()
            expect(page.get_by_text("full compliance", exact=True).first).to_be_visible()
            expect(page.get_by_text(changed[0]["cand"]["completion"].strip()[:30]).first).to_be_visible()
            expect(page.get_by_text("Prompt 0", exact=True)).to_have_count(0)  # unchanged prompts are filtered out
            snapshot(page, ARTIFACTS / "transcripts-side-by-side.png")
            browser.close()
    finally:
        stop_server(proc)
