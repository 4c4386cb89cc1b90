"""The verdict line (analysis.governance.verdict): one function, the same words on Models, Review and
Export. Real signed governance (keys, an initialised ledger, decisions), real metrics rows, real pages."""

from __future__ import annotations

import pytest
from govern_helpers import make_recorded_ticket, setup_lab, write_metrics
from streamlit.testing.v1 import AppTest

from analysis.governance import decisions
from analysis.governance.verdict import verdict
from app.dashboard import verdict_line

MAIN = str(verdict_line.__file__).replace("verdict_line.py", "main.py")


@pytest.fixture
def lab(state, tiny_llama, monkeypatch):
    monkeypatch.setenv("TICKETLAB_APP_MODEL", tiny_llama.spec)
    return setup_lab(state, tiny_llama, monkeypatch)


def _page(name: str, ticket: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=90)
    if name != "models":
        at.run()
        at.switch_page(f"views/{name}.py")
    at.query_params["ticket"] = ticket
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _shown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown if "**Verdict**" in m.value)


def test_unreviewed_then_approved_then_rejected(lab, tiny_llama):
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    v = verdict(lab.ledger, t.id)
    assert v.review.text == "unreviewed"
    assert v.policy.text == "passes the policy lenient"
    assert v.evidence.text == "full evidence"
    assert v.text.startswith("unreviewed · passes the policy lenient · vs dense: ")
    # the headline deltas, each with the way it went (CrowS-Pairs 0.60 -> 0.61 at stderr 0.02: noise)
    assert "pct_stereotype +0.01 (within noise)" in v.text
    decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "quality within budget")
    assert verdict(lab.ledger, t.id).text.startswith("approved by alice · passes the policy lenient · ")
    decisions.decide(lab.ledger, t.id, "reject", lab["bob"], "second look: not needed")
    v = verdict(lab.ledger, t.id)
    assert v.review.text == "rejected by bob" and v.review.tone == "bad"


def test_approved_with_override_names_who_and_what_was_unmet(lab, tiny_llama):
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"], scale=1.6)  # far worse than dense
    v = verdict(lab.ledger, t.id)
    assert v.policy.text.startswith("does not pass the policy lenient (") and v.policy.tone == "bad"
    decisions.decide(lab.ledger, t.id, "approve", lab["alice"], "needed for the demo", override=True,
                     override_reason="accepted quality loss")
    v = verdict(lab.ledger, t.id)
    assert v.review.text.startswith("approved with override by alice (unmet: ")
    assert v.review.tone == "warn"
    # the same words on every page
    for name in ("models", "review", "export"):
        shown = _shown(_page(name, t.id))
        assert "approved with override by alice" in shown, (name, shown)
        assert "does not pass the policy lenient" in shown, (name, shown)


def test_quick_only_evidence_is_said_and_rules_are_indicative(lab, tiny_llama):
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"], metrics=False)
    write_metrics(lab.ledger, "dense", tiny_llama.weights_sha256, 0, limit=20)
    write_metrics(lab.ledger, t.id, tiny_llama.weights_sha256, 1, limit=20)
    v = verdict(lab.ledger, t.id)
    assert v.evidence.text == "quick evidence only (--limit 20)"
    # the comparison pairs the quick runs with each other (like with like), so the deltas are there
    assert "vs dense: " in v.text
    from analysis.governance.review import review_ticket
    from analysis.governance.verdict import policy_in_force

    review = review_ticket(lab.ledger, t.id, policy=policy_in_force(lab.ledger))
    flagged = [r for r in review.results if getattr(r, "indicative", False) and r.status == "fail"]
    if flagged:  # quick-run failures show as failures, marked indicative
        assert f"{len(flagged)} fail (indicative)" in v.policy.text
    else:  # a policy that requires full runs and does not evaluate quick ones: evidence missing
        assert "missing" in v.policy.text


def test_a_failing_policy_with_full_runs(lab, tiny_llama):
    t = make_recorded_ticket(tiny_llama, lab.ledger, signer=lab["carol"])
    v = verdict(lab.ledger, t.id, policy=str(lab.failing))
    assert v.policy.text.startswith("does not pass the policy strict (1 fail")  # 5 % budget; the ticket is +10 %
