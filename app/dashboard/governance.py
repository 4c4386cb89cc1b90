"""The dashboard side of governance: sign-in, the decision form, the deployment panel, the audit and bundle
signature status. Every action is taken as the signed-in person (their key, unlocked with their passphrase
in this session), never for a name typed into a box, and calls `analysis.governance` exactly as the
`ticketlab decide / promote / rollback / export / audit / verify` commands do.

Forms are bound to their ticket: their widget keys carry the ticket id, so switching the candidate shows
a fresh form, and each button names the ticket it acts on.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import streamlit as st

from pruning import settings
from pruning.errors import TicketLabError

from . import data, signin, tables


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
    """The signed-in person's unlocked key, if it is still their registered key (held for this browser by
    `signin`, dropped after its idle time)."""
    s = signin.current()
    if s is None:
        return None
    person = _gov_state().registry.people.get(s.name)
    if person is None or person.key_id != s.key_id:  # revoked or replaced since: sign in again
        signin.sign_out()
        return None
    return s


def roles_of(me) -> set[str]:
    """The roles the signed-in person holds now (empty when nobody is signed in)."""
    if me is None:
        return set()
    person = _gov_state().registry.people.get(me.name)
    return set(person.roles) if person else set()


def holders(role: str) -> list[str]:
    """Who holds `role` now with an active key: the names a page tells people to ask."""
    return sorted(n for n, p in _gov_state().registry.people.items() if role in p.roles and p.key_id)


# CLI words in messages from the shared governance functions, as the controls that do the same here
_BROWSER_WORDS = (
    (re.compile(r"Check \$TICKETLAB_PASSPHRASE or retype it\."), "Retype it in “passphrase of your key”."),
    (re.compile(r"\$TICKETLAB_PASSPHRASE"), "“passphrase of your key”"),
    (re.compile(r"needs --override --override-reason TEXT, which is recorded\. See `ticketlab review`"),
     "needs “override the pinned policy” ticked and an “override reason”, which is recorded (the rules are listed "
     "above)"),
    (re.compile(r"drop --override"), "untick “override the pinned policy”"),
    (re.compile(r"--override-reason"), "“override reason”"),
    (re.compile(r"--override"), "“override the pinned policy”"),
    (re.compile(r"--reason"), "“reason”"),
    (re.compile(r"pass --as \S+ and unlock that key"), "sign in as them"),
    (re.compile(r"`ticketlab sign-ticket [0-9a-f]+`"), "“Sign as the creator” on the Review page (engineer role)"),
    (re.compile(r"`ticketlab people role (\S+) --add (\S+)`"), r"the Admin page (“roles” of \1: add \2)"),
    (re.compile(r"`ticketlab init --admin NAME`"), "the Admin page (“Create the ledger”)"),
    (re.compile(r"--unreviewed"), "“also offer tickets that are not approved”"),
    (re.compile(r"run `ticketlab eval`"), "evaluate it (Benchmarks → Evaluate)"),
)


def browser_words(message: str) -> str:
    """A governance message with its command-line flags replaced by the names of the controls here."""
    for pattern, words in _BROWSER_WORDS:
        message = pattern.sub(words, message)
    return message


def say(e: Exception, where=None) -> None:
    (where or st).error(browser_words(str(e)), icon=":material/warning:")


def sign_in(key: str = "gov") -> object | None:
    """Who acts on this page. Offline: pick your registered name and unlock your key with its passphrase.
    With an identity provider configured, the name comes from `st.login` and only the passphrase is asked.
    The unlocked key stays with the server for this browser (a reload keeps it), never the passphrase."""
    gov = modules()
    me = signer()
    st_ = _gov_state()
    if st_.ledger_id is None:
        st.info("This ledger has no signed registry yet: an admin creates it on the Admin page (“Create the "
                "ledger”); until then nobody can decide, promote or export signed bundles.", icon=":material/key:")
        return None
    if me is not None:
        roles = ", ".join(sorted(st_.registry.people[me.name].roles)) or "no role"
        c1, c2 = st.columns([4, 1])
        c1.caption(f"signed in as **{me.name}** ({roles}); actions are signed with key `{me.key_id[:12]}`; the "
                   f"key is locked after {int(signin.idle_s() // 60) or 1} min without use")
        if c2.button("Sign out", key=f"{key}_signout"):
            signin.sign_out()
            st.rerun()
        return me
    idle = signin.dropped_for_idle()
    if idle:
        st.caption(f"{idle}'s key was locked after {int(signin.idle_s() // 60) or 1} min without use: sign in again.")
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
        def registered(s) -> None:
            person = st_.registry.people.get(s.name)
            if person is None or person.key_id != s.key_id:
                raise TicketLabError(f"the key for {s.name} in {gov.keys.key_dir()} is not {s.name}'s registered key.")

        try:
            signin.unlock(name, pw, registered)
        except TicketLabError as e:
            st.error(browser_words(str(e)), icon=":material/lock:")
        else:
            st.rerun()
    return None


# --- reviews ---------------------------------------------------------------------------------------
@st.cache_data(ttl=300, max_entries=64, show_spinner=False)
def _review(ticket: str, baseline: str, policy: str, key: tuple):
    gov = modules()
    pol = gov.state.policy_in_force(gov.state.load(data.ledger()), policy or None)
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


def key(base: str) -> str:
    """The widget key of a form field: `base`, with a generation suffix once a write has emptied its form
    (a new key is a new, empty widget; the browser keeps an old widget's value whatever the server pops)."""
    n = st.session_state.get(f"_gen_{base}", 0)
    return base if n == 0 else f"{base}~{n}"


def after_write(message: str, clear: tuple[str, ...] = ()) -> None:
    """After a signed write: read the ledger afresh, empty the form that made it (`clear`: its fields' base
    keys, as given to `key`), and show `message` once on the rerun."""
    data.forget()
    _gov_state_at.clear()
    _review.clear()
    _audit.clear()
    for base in clear:
        st.session_state.pop(key(base), None)
        st.session_state[f"_gen_{base}"] = st.session_state.get(f"_gen_{base}", 0) + 1
    st.session_state["gov_flash"] = message
    st.rerun()


def fresh_state():
    """The governance log as it is now, not as cached for this page run (for checks just before a write)."""
    return modules().state.load(data.ledger())


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
               "**nobody has signed as this ticket's creator**: it cannot be approved until an engineer who made it "
               "signs in here and presses “Sign as the creator”")
    rows = gov.state.decision_rows(st_, ticket)
    if rows:
        df = pd.DataFrame(rows)[["seq", "decided_at", "decision", "reviewer", "signed", "reason", "override",
                                 "override_reason", "policy_name", "policy_version", "passed"]]
        df["signed"] = df["signed"].map({True: "verified", False: "DOES NOT VERIFY"})
        df["override"] = df["override"].map({True: "override", False: ""})
        df["passed"] = df["passed"].map({True: "passed", False: "failed"})
        st.dataframe(tables.clean_text(df), hide_index=True, width="stretch", column_config={
            "seq": st.column_config.NumberColumn("record #", format="%d"),
            "passed": st.column_config.TextColumn("policy"), "override": st.column_config.TextColumn("override?")})


def audit_status() -> None:
    try:
        report = _audit(data.stamp())
    except TicketLabError as e:
        st.error(str(e), icon=":material/warning:")
        return
    if not report["initialised"]:
        st.info("No signed governance records yet: an admin creates the ledger on the Admin page.", icon=":material/key:")
    elif report["ok"]:
        st.success(f"Audit: {report['records']} signed records, every signature and role valid; the ledger holds "
                   f"all {report['witnessed']} heads of the witness log.", icon=":material/lock:")
    else:
        st.error(f"Audit FAILS: {modules().audit.audit_message(report)}", icon=":material/gpp_bad:")
    for note in report.get("notes", []):
        st.caption(note)


# --- bundles ---------------------------------------------------------------------------------------
def verify_with_local_keys(bundle: Path) -> dict:
    """`verify_bundle` with the keys `local_trust` allows (the CLI's rule: the bundle's ledger, vouched for
    by the trust anchor); why the local keys were refused is listed with what was not checked."""
    gov = modules()
    trust, source = gov.verify.local_trust(bundle, data.ledger())
    result = gov.verify.verify_bundle(bundle, trust=trust)
    if source.startswith(" (the local ledger's keys are not used"):
        result["unchecked"].append(source.strip(" ()"))
    return result


def bundle_status(bundle: Path) -> None:
    """Verify a bundle with the local ledger's trusted keys: files, ticket id, signature and signer."""
    if not st.button("Verify the bundle (hashes, ticket id, signature, signer)", key=f"exp_verify_{bundle}"):
        return
    try:
        with st.spinner("hashing and checking the signature…"):
            result = verify_with_local_keys(bundle)
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
            say(e)
        else:
            st.success(f"bundle {out}: {len(m['files'])} files, signed by {me.name} ({what})", icon=":material/lock:")
