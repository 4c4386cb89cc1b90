"""The verdict line on screen (Models, Review, Export): analysis.governance.verdict's words, each part
coloured by its tone."""

from __future__ import annotations

import streamlit as st

from analysis.governance import verdict as vd
from pruning.errors import TicketLabError

from . import comparison_view, data

COLOUR = {vd.GOOD: "green", vd.BAD: "red", vd.WARN: "orange", vd.NEUTRAL: "gray"}


def state_of(ticket: str):
    """The ticket's governance state (one replay of the governance log per ledger change)."""
    from analysis.governance.state import TicketState

    return data.ticket_states().get(ticket) or TicketState(ticket_id=ticket, creator=None, review_status="unreviewed")


def review_words(ticket: str) -> str:
    return vd.review_words(state_of(ticket)).text


def _escape(text: str) -> str:
    return text.replace("[", "\\[").replace("]", "\\]").replace("*", "\\*").replace("$", "\\$")


def markdown(v: vd.Verdict) -> str:
    return " · ".join(f":{COLOUR.get(p.tone, 'gray')}[{_escape(p.text)}]" if p.tone != vd.NEUTRAL else _escape(p.text)
                      for p in v.parts()).replace(": ·", ":")


@st.cache_data(ttl=300, max_entries=64, show_spinner=False)
def _review(ticket: str, baseline: str, key: tuple):
    from analysis.governance.review import review_ticket

    try:
        policy = vd.policy_in_force(data.ledger())
        return review_ticket(data.ledger(), ticket, baseline=baseline, policy=policy), None
    except TicketLabError as e:  # no policy pinned yet, a baseline without results...
        return None, str(e)


def build(ticket: str, baseline_subject: str = "dense", baseline_label: str = "dense", review=None) -> vd.Verdict:
    problem = None
    if review is None:
        review, problem = _review(ticket, baseline_subject, data.stamp())
    rows = comparison_view.rows(baseline_subject, ticket).to_dict("records")
    rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]
    v = vd.verdict_of(ticket, state_of(ticket), review, rows,
                      baseline="dense" if baseline_subject == "dense" else baseline_label)
    if problem:
        v.policy = vd.Part(f"policy not checked ({problem.rstrip('.')})", vd.WARN)
    return v


def show(ticket: str, baseline_subject: str = "dense", baseline_label: str = "dense", review=None,
         where=None) -> vd.Verdict:
    """Draw the verdict line in a bordered box; returns it (its `.text` is the plain line)."""
    v = build(ticket, baseline_subject, baseline_label, review)
    box = (where or st).container(border=True)
    box.markdown(f"**Verdict** `{ticket[:12]}` — {markdown(v)}")
    return v
