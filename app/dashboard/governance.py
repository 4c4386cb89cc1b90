"""The dashboard side of governance: sign-in, the decision form, the deployment panel, the audit and bundle
signature status. Every action is taken as the signed-in person (their key, unlocked with their passphrase
in this session), never for a name typed into a box, and calls `analysis.governance` exactly as the
`ticketlab decide / promote / rollback / export / audit / verify` commands do.

Forms are bound to their ticket: their widget keys carry the ticket id, so switching the candidate shows
a fresh form, and each button names the ticket it acts on.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import streamlit as st

from pruning import settings
from pruning.errors import TicketLabError

from . import data

SIGNER = "gov_signer"


def modules() -> SimpleNamespace:
    """The governance modules the pages call, imported on first use (pages without governance skip the cost)."""
    from analysis.governance import (
        audit,
        decisions,
        deploy,
        export,
        identity,
        keys,
        policy,
        review,
        state,
        verify,
    )

    return SimpleNamespace(review=review, decisions=decisions, deploy=deploy, policy=policy, identity=identity,
                           verify=verify, export=export, state=state, audit=audit, keys=keys)


@st.cache_data(ttl=300, max_entries=4, show_spinner=False)
def _gov_state_at(key: tuple):
    return modules().state.load(data.ledger())


def _gov_state():
    """The replayed governance log, once per ledger change."""
    return _gov_state_at(data.stamp())


# --- sign-in ---------------------------------------------------------------------------------------
def _oidc_person() -> str | None:
    """The registered person an identity-provider sign-in maps to, where `st.login` is configured: the file
    <state>/oidc-people.toml maps e-mail addresses to names (`"alice@lab.org" = "alice"`)."""
    user = getattr(st, "user", None)
    if user is None or not getattr(user, "is_logged_in", False):
        return None
    mapping = settings.state_dir() / "oidc-people.toml"
    try:
        people = tomllib.loads(mapping.read_text()).get("people", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return people.get(getattr(user, "email", None))


def signer():
    """The signed-in person's unlocked key, if it is still their registered key."""
    s = st.session_state.get(SIGNER)
    if s is None:
        return None
    person = _gov_state().registry.people.get(s.name)
    if person is None or person.key_id != s.key_id:  # revoked or replaced since: sign in again
        st.session_state.pop(SIGNER, None)
        return None
    return s


def sign_in(key: str = "gov") -> object | None:
    """Who acts on this page. Offline: pick your registered name and unlock your key with its passphrase.
    With an identity provider configured, the name comes from `st.login` and only the passphrase is asked."""
    gov = modules()
    me = signer()
    st_ = _gov_state()
    if st_.ledger_id is None:
        st.info("This ledger has no signed registry yet: initialise it with `ticketlab init --admin NAME`; until "
                "then nobody can decide, promote or export signed bundles.", icon=":material/key:")
        return None
    if me is not None:
        roles = ", ".join(sorted(st_.registry.people[me.name].roles)) or "no role"
        c1, c2 = st.columns([4, 1])
        c1.caption(f"signed in as **{me.name}** ({roles}); actions are signed with key `{me.key_id[:12]}`")
        if c2.button("Sign out", key=f"{key}_signout"):
            st.session_state.pop(SIGNER, None)
            st.rerun()
        return me
    oidc = _oidc_person()
    with st.form(f"{key}_signin"):
        names = sorted(n for n, p in st_.registry.people.items() if p.key_id)
        if oidc:
            st.markdown(f"signed in with your identity provider as **{oidc}**")
            name = oidc
        else:
            name = st.selectbox("who you are (registered people)", names, index=None, key=f"{key}_signin_name")
        pw = st.text_input("passphrase of your key", type="password", key=f"{key}_signin_pw")
        go = st.form_submit_button("Unlock my key")
    if go:
        try:
            if not name:
                raise TicketLabError("pick your name first.")
            s = gov.keys.unlock(name, pw)
            person = st_.registry.people.get(s.name)
            if person is None or person.key_id != s.key_id:
                raise TicketLabError(f"the key for {name} in {gov.keys.key_dir()} is not {name}'s registered key.")
        except TicketLabError as e:
            st.error(str(e), icon=":material/lock:")
        else:
            st.session_state[SIGNER] = s
            st.rerun()
    return None


# --- reviews ---------------------------------------------------------------------------------------
@st.cache_data(ttl=300, max_entries=64, show_spinner=False)
def _review(ticket: str, baseline: str, policy: str, key: tuple):
    gov = modules()
    if policy:
        pol = gov.policy.load_policy(policy)
    else:
        st_ = gov.state.load(data.ledger())
        pol = gov.state.current_policy(st_) if st_.ledger_id else gov.policy.load_policy(None)
    return gov.review.review_ticket(data.ledger(), ticket, baseline=baseline, policy=pol)


def _file_stamp(path: str) -> tuple:
    try:
        s = Path(path).expanduser().stat()
        return (s.st_mtime_ns, s.st_size)
    except OSError:
        return (0, 0)


def review(ticket: str, baseline: str, policy: str = ""):
    """The review under the pinned policy, or (a policy file given) a what-if preview under that file."""
    return _review(ticket, baseline, policy or "", (data.stamp(), _file_stamp(policy) if policy else None))


def policy_box(key: str = "rev_policy") -> str:
    """An optional what-if policy file; empty means the pinned policy. Returns the path or ''."""
    path = st.text_input("what-if policy file (optional preview; decisions always use the pinned policy)",
                         value="", key=key, placeholder="pinned policy")
    if path.strip():
        st.warning(f"WHAT-IF PREVIEW against {path.strip()}: this records nothing, and the decision form below "
                   f"still evaluates the pinned policy.", icon=":material/science:")
    return path.strip()


@st.cache_data(ttl=300, max_entries=16, show_spinner=False)
def _audit(key: tuple) -> dict:
    return modules().audit.audit(data.ledger())


def _after_write(message: str) -> None:
    data.forget()
    _gov_state_at.clear()
    _review.clear()
    _audit.clear()
    st.session_state["gov_flash"] = message
    st.rerun()


def flash() -> None:
    msg = st.session_state.pop("gov_flash", None)
    if msg:
        st.success(msg, icon=":material/check_circle:")


def signed_records(ticket: str) -> None:
    """Who signed what about this ticket: its creation, every decision, with whether each signature verifies."""
    gov = modules()
    st_ = _gov_state()
    creation = gov.state.creation_of(st_, ticket)
    st.caption(f"created by **{creation['actor']}** (signed record #{creation['seq']})" if creation else
               "**nobody has signed as this ticket's creator**: it cannot be approved until its creator runs "
               f"`ticketlab sign-ticket {ticket}` (or signs below)")
    rows = gov.state.decision_rows(st_, ticket)
    if rows:
        df = pd.DataFrame(rows)[["seq", "decided_at", "decision", "reviewer", "signed", "reason", "override",
                                 "override_reason", "policy_name", "policy_version", "passed"]]
        df["signed"] = df["signed"].map({True: "verified", False: "DOES NOT VERIFY"})
        st.dataframe(df, hide_index=True, width="stretch")


def decision_form(ticket: str, baseline: str, policy: str = "", review=None) -> None:
    """Approve or reject `ticket` as the signed-in reviewer, under the pinned policy."""
    gov = modules()
    flash()
    signed_records(ticket)
    me = sign_in("dec")
    if me is None:
        return
    st_ = _gov_state()
    if gov.state.creation_of(st_, ticket) is None and "engineer" in st_.registry.people[me.name].roles:
        if st.button(f"Sign as the creator of {ticket}", key=f"claim_{ticket}"):
            try:
                gov.identity.sign_creation(data.ledger(), me, ticket)
            except TicketLabError as e:
                st.error(str(e), icon=":material/warning:")
            else:
                _after_write(f"{me.name} signed as creator of {ticket}")
    pinned = _review(ticket, baseline, "", (data.stamp(), None))
    with st.form(f"decision_{ticket}"):  # keyed by ticket: another candidate gets a fresh, empty form
        decision = st.radio("decision", ["approve", "reject"], horizontal=True, key=f"dec_decision_{ticket}")
        reason = st.text_area("reason (recorded and signed)", key=f"dec_reason_{ticket}", height=80)
        override = st.checkbox("override the pinned policy (approve although a rule fails or evidence is missing)",
                               key=f"dec_override_{ticket}", disabled=pinned.passed)
        override_reason = st.text_input("override reason", key=f"dec_override_reason_{ticket}", disabled=pinned.passed)
        go = st.form_submit_button(f"Sign and record the decision on {ticket} as {me.name}", type="primary")
    if go:
        try:
            row = gov.decisions.decide(data.ledger(), ticket, decision, me, reason, override=override,
                                       override_reason=override_reason, baseline=baseline)
        except TicketLabError as e:
            st.error(str(e), icon=":material/warning:")
        else:
            _after_write(f"recorded decision #{row['seq']}: {row['decision']} of {row['ticket_id']} signed by "
                         f"{row['reviewer']}" + (" (override)" if row["override"] else ""))


def deployment_panel(ticket: str, dense_sha256: str) -> None:
    gov = modules()
    st_ = _gov_state()
    current = gov.state.deployment_pointer(st_, dense_sha256)
    stack = gov.state.stack(st_, dense_sha256)
    st.markdown(f"Deployed now for dense model `{dense_sha256[:12]}`: **{current}**"
                + (" — this ticket" if current == ticket else ""))
    hist = gov.state.history(st_, dense_sha256)
    if hist:
        df = pd.DataFrame(hist).drop(columns=["dense_sha256", "row_hash", "decision_hash", "policy_sha256"],
                                     errors="ignore")
        df["signed"] = df["signed"].map({True: "verified", False: "DOES NOT VERIFY"})
        st.dataframe(df.sort_values("seq", ascending=False), hide_index=True, width="stretch")
    else:
        st.caption("No deployment moves yet: the dense model serves itself.")
    me = signer()
    if me is None:
        st.caption("Sign in above (deployer role) to promote or roll back.")
        return
    left, right = st.columns(2)
    with left.form(f"promote_{ticket}"):
        reason = st.text_input("reason", key=f"dep_reason_{ticket}")
        go = st.form_submit_button(f"Promote {ticket} as {me.name}", type="primary", disabled=current == ticket)
    if go:
        try:
            row = gov.deploy.promote(data.ledger(), ticket, me, reason)
        except TicketLabError as e:
            left.error(str(e), icon=":material/warning:")
        else:
            _after_write(f"promoted {row['target']} (was {row['previous']}), signed by {row['by_user']}")
    with right.form(f"rollback_{ticket}"):
        earlier = list(reversed(stack[:-1]))
        to = st.selectbox("roll back to", ["previous"] + earlier, key=f"rb_to_{ticket}", disabled=len(stack) < 2)
        reason_rb = st.text_input("reason", key=f"rb_reason_{ticket}")
        go_rb = st.form_submit_button(f"Roll back {dense_sha256[:12]} as {me.name}", disabled=len(stack) < 2)
    if go_rb:
        try:
            row = gov.deploy.rollback(data.ledger(), me, reason_rb, to=None if to == "previous" else to,
                                      model=dense_sha256)
        except TicketLabError as e:
            right.error(str(e), icon=":material/warning:")
        else:
            _after_write(f"rolled back to {row['target']} (was {row['previous']}), signed by {row['by_user']}")


def audit_status() -> None:
    try:
        report = _audit(data.stamp())
    except TicketLabError as e:
        st.error(str(e), icon=":material/warning:")
        return
    if not report["initialised"]:
        st.info("No signed governance records yet (`ticketlab init`).", icon=":material/key:")
    elif report["ok"]:
        st.success(f"Audit: {report['records']} signed records, every signature and role valid; the ledger holds "
                   f"all {report['witnessed']} heads of the witness log.", icon=":material/lock:")
    else:
        st.error(f"Audit FAILS: {modules().audit.audit_message(report)}", icon=":material/gpp_bad:")
    for note in report.get("notes", []):
        st.caption(note)


# --- bundles ---------------------------------------------------------------------------------------
def bundle_status(bundle: Path) -> None:
    """Verify a bundle with the local ledger's trusted keys: files, ticket id, signature and signer."""
    gov = modules()
    if not st.button("Verify the bundle (hashes, ticket id, signature, signer)", key=f"exp_verify_{bundle}"):
        return
    st_ = _gov_state()
    trust = st_.registry.trust() if st_.ledger_id else None
    try:
        with st.spinner("hashing and checking the signature…"):
            result = gov.verify.verify_bundle(bundle, trust=trust)
    except TicketLabError as e:
        st.error(str(e), icon=":material/gpp_bad:")
        return
    (st.success if result["ok"] else st.warning)(verified_words(result),
                                                 icon=":material/lock:" if result["ok"] else ":material/help:")


def verified_words(result: dict) -> str:
    """What `verify_bundle` established, in words: who signed, who approved (and whether by override), what
    was checked and, first, what was not. Never "verified" for an unsigned or unchecked bundle."""
    who = f"signed by **{result['signed_by']}**" if result["signed_by"] else "**UNSIGNED: nobody vouches for it**"
    review = result.get("review") or "unreviewed"
    approved = f" · {review}" + (f" by **{result['approved_by']}**" if result.get("approved_by") else "")
    head = ("Verified: " if result["ok"] else "NOT verified: ") + who + approved
    missing = "".join(f"  \nNOT CHECKED: {u}" for u in result["unchecked"])
    return f"{head}{missing}  \nchecked: {', '.join(result['checked'])}"


def exporters(ticket: str) -> tuple[dict | None, list[str]]:
    """(the approval, who may sign its bundle: the approving reviewer, then every deployer)."""
    st_ = _gov_state()
    approval = modules().state.approval_of(st_, ticket)
    if approval is None:
        return None, []
    deployers = sorted(n for n, p in st_.registry.people.items() if "deployer" in p.roles and p.key_id)
    return approval, [approval["reviewer"]] + [n for n in deployers if n != approval["reviewer"]]


def approval_words(approval: dict) -> str:
    """'approved by alice (#12)', or 'approved by OVERRIDE of the policy by alice (#12): reason'."""
    if approval.get("override"):
        return (f"approved by **override** of the policy by {approval['reviewer']} (decision #{approval['seq']}): "
                f"{approval.get('override_reason') or 'no reason given'}")
    return f"approved by {approval['reviewer']} (decision #{approval['seq']})"


def signed_export(ticket: str, fmt: str, out: str, overwrite: bool) -> None:
    """Export an approved ticket signed by the signed-in person: its approving reviewer, or a deployer (the
    bundle then carries the reviewer's signed approval; `verify` checks both). The key never leaves this
    session. Someone else is told whom to ask, and gets no button that can only fail."""
    gov = modules()
    approval, may = exporters(ticket)
    if approval is not None:
        (st.warning if approval.get("override") else st.caption)(approval_words(approval))
    me = sign_in("exp")
    if me is None or approval is None:
        return
    if me.name not in may:
        st.info(f"{me.name} cannot sign this bundle: it is signed by {approval['reviewer']}, who approved it, or by a "
                f"deployer ({', '.join(may[1:]) or 'nobody holds that role yet'}). Ask one of them to sign in here.",
                icon=":material/person_search:")
        return
    role = gov.export.exporter_role(approval, me.name)
    what = "as its approver" if role == "approver" else f"as deployer; carries {approval['reviewer']}'s signed approval"
    if st.button(f"Export {ticket} signed by {me.name} ({what})", type="primary", key=f"exp_signed_{ticket}_{fmt}"):
        try:
            with st.spinner(f"exporting {ticket} as {fmt}…"):
                m = gov.export.export_bundle(data.ledger(), ticket, out, fmt, signer=me, overwrite=overwrite)
        except TicketLabError as e:
            st.error(str(e), icon=":material/warning:")
        else:
            st.success(f"bundle {out}: {len(m['files'])} files, signed by {me.name} ({what})", icon=":material/lock:")
