"""The side-by-side transcripts view: the baseline's and the ticket's answers to the same prompts, with
each verdict and the checker's reason, filterable to the prompts whose outcome changed (dense refused,
ticket complied; dense followed the instructions, ticket did not). Used on the Review and Benchmarks
pages. The sets are the newest like-for-like ones the ledger ties to each subject
(analysis.transcripts.latest_pair: same --limit and decoding settings)."""

from __future__ import annotations

import streamlit as st

from analysis import transcripts
from pruning.errors import TicketLabError

from . import data

PAGE = 20  # prompts drawn at once; the rest are counted


def _answer(col, who: str, record: dict) -> None:
    col.markdown(f"**{who}** · `{record.get('outcome') or '?'}`")
    col.caption(record.get("reason") or "")
    # model output is untrusted text: shown verbatim, never as markdown
    col.code(record.get("completion") or "(empty answer)", language=None, wrap_lines=True)


def transcripts_view(base: str, cand: str, key: str, baseline_label: str = "baseline",
                     dense_sha256: str | None = None) -> None:
    """Draw the view for subjects `base` (dense or a ticket id) and `cand` (a ticket id)."""
    ledger = data.ledger()
    mine = transcripts.recorded(ledger, cand, dense_sha256)
    tasks = sorted({r["task"] for r in mine})
    if not tasks:
        st.caption("No generated answers for this ticket yet: `ticketlab eval TICKET --suite instruct` (or the "
                   "Evaluate tab's instruct presets on the Benchmarks page) records them, and the baseline's too.")
        return
    c1, c2 = st.columns([1, 2])
    task = c1.selectbox("generation task", tasks, key=f"{key}_task")
    pair = transcripts.latest_pair(ledger, base, cand, task, dense_sha256)
    if pair is None:
        st.info(f"{baseline_label} has no {task} transcripts with the same --limit and decoding settings as the "
                f"ticket's: evaluate it with the same `--suite instruct` settings to compare answers.")
        return
    b, c = pair
    try:
        base_doc, cand_doc = transcripts.load(b["sha256"]), transcripts.load(c["sha256"])
    except TicketLabError as e:
        st.warning(str(e), icon=":material/warning:")
        return
    rows = transcripts.pairs(base_doc, cand_doc)
    changed = [r for r in rows if r["changed"]]
    only = c2.toggle(f"only prompts whose outcome changed ({len(changed)} of {len(rows)})", value=True,
                     key=f"{key}_changed")
    shown = changed if only else rows
    scope = "full run" if c["limit"] is None else f"quick run, --limit {c['limit']} (indicative)"
    st.caption(f"{task} · {scope} · transcript sets {b['sha256'][:12]} ({baseline_label}) and {c['sha256'][:12]} "
               f"(ticket) · greedy, max {cand_doc.get('decoding', {}).get('max_new_tokens', '?')} new tokens")
    if not shown:
        st.success("No prompt's outcome changed between the two." if only else "No prompts in common.")
        return
    for r in shown[:PAGE]:
        with st.container(border=True):
            st.markdown(f"**Prompt {r['doc_id']}**" + (" · :red[outcome changed]" if r["changed"] else ""))
            st.code(r["prompt"], language=None, wrap_lines=True)
            left, right = st.columns(2)
            _answer(left, baseline_label, r["base"])
            _answer(right, f"ticket {cand[:12]}", r["cand"])
    if len(shown) > PAGE:
        st.caption(f"{len(shown) - PAGE} more not drawn; `ticketlab report` carries a sample, the transcript sets "
                   f"hold them all.")
