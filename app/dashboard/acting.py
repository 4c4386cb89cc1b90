"""Acting on a ticket from the Review page: the decision form and the deployment panel, shaped by the
signed-in person's roles (what they may do first, the rest explained, never a button that can only fail)
and aware of the present: a decision that another one overtook since this page showed the ticket asks
for confirmation naming it; forms empty after a write; each write is confirmed with its record number.

Decisions and moves run the use cases the CLI runs (`usecases.decide`, `usecases.promote`), signed with the
signed-in person's key; claiming a ticket calls `analysis.governance.identity.sign_creation` as the CLI does.
"""

from __future__ import annotations

import streamlit as st

from analysis.governance.record_types import APPROVE, CHOICES
from pruning.errors import TicketLabError

from . import data, governance

FIELDS = ("dec_decision_{t}", "dec_reason_{t}", "dec_override_{t}", "dec_override_reason_{t}")


def _latest(st_, ticket: str) -> dict | None:
    return governance.modules().state.latest_decision(st_, ticket)


def _words(d: dict) -> str:
    what = "approved" + (" by override" if d.get("override") else "") if d["decision"] == APPROVE else "rejected"
    return (f"{d['reviewer']} {what} it at {str(d['decided_at'])[:19].replace('T', ' ')} (decision #{d['seq']}"
            + (f": “{d['reason']}”" if d.get("reason") else "") + ")")


def _record(ticket: str, baseline: str, me, form: dict) -> None:
    from usecases.decide import DecideRequest, decide

    try:
        request = DecideRequest.build(ticket=ticket, decision=form["decision"], reason=form["reason"], as_name=me.name,
                                      override=form["override"], override_reason=form["override_reason"],
                                      baseline=baseline)
        row = decide(request, signer=me, ledger=data.ledger()).as_dict()
    except TicketLabError as e:
        governance.say(e)
        return
    st.session_state[f"dec_seen_{ticket}"] = row["seq"]
    st.session_state.pop(f"dec_pending_{ticket}", None)
    governance.after_write(f"recorded decision #{row['seq']}: {row['decision']} of {row['ticket_id']} signed by "
                           f"{row['reviewer']}" + (" (override)" if row["override"] else ""),
                           clear=tuple(f.format(t=ticket) for f in FIELDS))


def _creator_claim(ticket: str, me, roles: set[str]) -> None:
    gov = governance.modules()
    if gov.state.creation_of(governance._gov_state(), ticket) is not None or "engineer" not in roles:
        return
    if st.button(f"Sign as the creator of {ticket}", key=f"claim_{ticket}"):
        try:
            row = gov.identity.sign_creation(data.ledger(), me, ticket)
        except TicketLabError as e:
            governance.say(e)
        else:
            governance.after_write(f"{me.name} signed as creator of {ticket} (record #{row['seq']})")


def decision_form(ticket: str, baseline: str, me, roles: set[str]) -> None:
    """Approve or reject `ticket` as the signed-in reviewer, under the pinned policy."""
    st_ = governance._gov_state()
    seen_key = f"dec_seen_{ticket}"
    if seen_key not in st.session_state:  # what this page showed when it first drew the ticket's form
        shown = _latest(st_, ticket)
        st.session_state[seen_key] = shown["seq"] if shown else 0
    _creator_claim(ticket, me, roles)
    if "reviewer" not in roles:
        st.caption(f"Deciding needs the reviewer role ({me.name} holds {', '.join(sorted(roles)) or 'no role'}); "
                   f"reviewers here: {', '.join(governance.holders('reviewer')) or 'none yet (ask an admin)'}.")
        return
    pending = st.session_state.get(f"dec_pending_{ticket}")
    if pending:
        now = _latest(governance.fresh_state(), ticket)
        st.warning(f"Since this page showed {ticket}, {_words(now)}. Record your "
                   f"{pending['decision']} after it?", icon=":material/history:")
        c1, c2 = st.columns(2)
        if c1.button(f"Yes, record my {pending['decision']} after decision #{now['seq']}", type="primary",
                     key=f"dec_confirm_{ticket}"):
            _record(ticket, baseline, me, pending)
        if c2.button("Cancel (record nothing)", key=f"dec_cancel_{ticket}"):
            st.session_state.pop(f"dec_pending_{ticket}", None)
            st.session_state[seen_key] = now["seq"]
            for field, value in zip(FIELDS, pending.values(), strict=True):  # the form comes back as it was
                st.session_state[governance.key(field.format(t=ticket))] = value
            st.rerun()
        return
    pinned = governance.review(ticket, baseline)
    with st.form(f"decision_{ticket}"):  # keyed by ticket: another candidate gets a fresh, empty form
        decision = st.radio("decision", list(CHOICES), horizontal=True, key=governance.key(f"dec_decision_{ticket}"))
        reason = st.text_area("reason (recorded and signed)", key=governance.key(f"dec_reason_{ticket}"), height=80)
        override = st.checkbox("override the pinned policy (approve although a rule fails or evidence is missing)",
                               key=governance.key(f"dec_override_{ticket}"), disabled=pinned.passed)
        override_reason = st.text_input("override reason", key=governance.key(f"dec_override_reason_{ticket}"),
                                        disabled=pinned.passed)
        go = st.form_submit_button(f"Sign and record the decision on {ticket} as {me.name}", type="primary")
    if not go:
        return
    form = {"decision": decision, "reason": reason, "override": override, "override_reason": override_reason}
    now = _latest(governance.fresh_state(), ticket)
    if now is not None and now["seq"] != st.session_state[seen_key]:  # another decision landed meanwhile
        st.session_state[f"dec_pending_{ticket}"] = form
        st.rerun()
    _record(ticket, baseline, me, form)


def deployment_panel(ticket: str, dense_sha256: str, me, roles: set[str]) -> None:
    import pandas as pd

    from usecases import promote as moves

    gov = governance.modules()
    st_ = governance._gov_state()
    current = gov.state.deployment_pointer(st_, dense_sha256)
    stack = gov.state.stack(st_, dense_sha256)
    st.markdown(f"Deployed now for dense model `{dense_sha256[:12]}`: **{current}**"
                + (" — this ticket" if current == ticket else ""))
    hist = gov.state.history(st_, dense_sha256)
    if hist:
        df = pd.DataFrame(hist).drop(columns=["dense_sha256", "row_hash", "decision_hash", "policy_sha256"],
                                     errors="ignore")
        df["signed"] = df["signed"].map({True: "verified", False: "DOES NOT VERIFY"})
        from . import tables

        st.dataframe(tables.clean_text(df.sort_values("seq", ascending=False)), hide_index=True, width="stretch")
    else:
        st.caption("No deployment moves yet: the dense model serves itself.")
    if me is None:
        st.caption("Sign in above (deployer role) to promote or roll back.")
        return
    if "deployer" not in roles:
        st.caption(f"Promoting and rolling back need the deployer role ({me.name} holds "
                   f"{', '.join(sorted(roles)) or 'no role'}); deployers here: "
                   f"{', '.join(governance.holders('deployer')) or 'none yet (ask an admin)'}.")
        return
    approved = gov.state.approval_of(st_, ticket) is not None
    left, right = st.columns(2)
    if current == ticket:
        left.caption(f"{ticket} is the deployed ticket.")
    elif not approved:
        left.caption(f"{ticket} is not approved: only approved tickets are promoted (ask a reviewer).")
    else:
        with left.form(f"promote_{ticket}"):
            reason = st.text_input("reason", key=governance.key(f"dep_reason_{ticket}"))
            go = st.form_submit_button(f"Promote {ticket} as {me.name}", type="primary")
        if go:
            try:
                row = moves.promote(moves.PromoteRequest.build(ticket=ticket, reason=reason, as_name=me.name),
                                    signer=me, ledger=data.ledger()).move.as_dict()
            except TicketLabError as e:
                governance.say(e, left)
            else:
                governance.after_write(f"promoted {row['target']} (was {row['previous']}): record #{row['seq']}, "
                                       f"signed by {row['by_user']}", clear=(f"dep_reason_{ticket}",))
    if len(stack) < 2:
        right.caption("Nothing to roll back to: no earlier deployment of this dense model.")
        return
    with right.form(f"rollback_{ticket}"):
        earlier = list(reversed(stack[:-1]))
        to = st.selectbox("roll back to", ["previous"] + earlier, key=governance.key(f"rb_to_{ticket}"))
        reason_rb = st.text_input("reason", key=governance.key(f"rb_reason_{ticket}"))
        go_rb = st.form_submit_button(f"Roll back {dense_sha256[:12]} as {me.name}")
    if go_rb:
        try:
            request = moves.RollbackRequest.build(reason=reason_rb, to=None if to == "previous" else to,
                                                  model=dense_sha256, as_name=me.name)
            row = moves.rollback(request, signer=me, ledger=data.ledger()).move.as_dict()
        except TicketLabError as e:
            governance.say(e, right)
        else:
            governance.after_write(f"rolled back to {row['target']} (was {row['previous']}): record #{row['seq']}, "
                                   f"signed by {row['by_user']}", clear=(f"rb_reason_{ticket}", f"rb_to_{ticket}"))


# --- browser prunes signed as their creator ------------------------------------------------------------
SIGN_PRUNES = "sign_prunes"


def remember_prune(job: dict | None, me) -> None:
    """A prune job started by a signed-in engineer: its ticket is signed as theirs when it finishes."""
    if job is not None and me is not None:
        st.session_state.setdefault(SIGN_PRUNES, {})[job["id"]] = me.name


def sign_finished_prunes() -> None:
    """Sign, as their creator, the tickets of this session's finished prune jobs (when the engineer who
    started them is still signed in); a toast says what was signed, an error what could not be."""
    waiting = st.session_state.get(SIGN_PRUNES)
    if not waiting:
        return
    from app import jobs

    me = governance.signer()
    for job_id, name in list(waiting.items()):
        try:
            job = jobs.get(job_id)
        except (TicketLabError, OSError):
            waiting.pop(job_id)
            continue
        if job.get("status") in ("starting", "running"):
            continue
        waiting.pop(job_id)
        ticket = (job.get("result") or {}).get("id") if isinstance(job.get("result"), dict) else None
        if job.get("status") != "succeeded" or not ticket:
            continue
        if me is None or me.name != name:
            st.toast(f"{ticket} is not signed: {name} signed out before it finished. Sign in as {name} and press "
                     f"“Sign as the creator” on the Review page.", icon=":material/key_off:")
            continue
        gov = governance.modules()
        if gov.state.creation_of(governance.fresh_state(), ticket) is not None:
            continue
        try:
            row = gov.identity.sign_creation(data.ledger(), me, ticket)
        except TicketLabError as e:
            st.toast(governance.browser_words(str(e)), icon=":material/warning:")
        else:
            data.forget()
            st.toast(f"{me.name} signed as creator of {ticket} (record #{row['seq']})", icon=":material/verified:")
