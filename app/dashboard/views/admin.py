"""Admin: keys, the ledger's signed registry of people, roles, revocations, the pinned policy and the
trust file. Every change is a signed record made by the signed-in admin through the same functions as
`ticketlab keygen / init / people register|role|revoke|export / policy set` (analysis.governance.admin,
keys); nothing here writes the ledger any other way."""

from __future__ import annotations

import difflib
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from app.dashboard import data, governance, signin
from pruning import settings
from pruning.errors import TicketLabError

st.title("Admin")
gov = governance.modules()
from analysis.governance import admin  # noqa: E402  (after the page title: the import costs a moment)
from analysis.governance.people import ROLES  # noqa: E402

governance.flash()
state_now = governance._gov_state()


def _keygen() -> None:
    """`ticketlab keygen` in the browser: the private key is written (encrypted) to this server's key
    directory, exactly where the command line would put it; only the public key is meant to travel."""
    with st.expander(f"Make a signing key (written to {gov.keys.key_dir()})"):
        with st.form("adm_keygen", clear_on_submit=True):
            name = st.text_input("name", key="adm_kg_name")
            pw = st.text_input("passphrase", type="password", key="adm_kg_pw")
            again = st.text_input("passphrase again", type="password", key="adm_kg_pw2")
            go = st.form_submit_button("Make the key")
        if go:
            try:
                if pw != again:
                    raise TicketLabError("the two passphrases differ; nothing was written.")
                path, pem = gov.keys.generate(name, pw)
            except TicketLabError as e:
                governance.say(e)
            else:
                st.success(f"key for {name}: {path} (private) and {gov.keys.public_path(name)} (public), id "
                           f"{gov.keys.fingerprint(pem)[:16]}", icon=":material/key:")


def _create_ledger() -> None:
    st.info(f"Ledger {settings.ledger_path()} has no signed registry yet. Create it: you become its first admin, "
            f"and the shipped default policy is pinned (or the policy file you name).", icon=":material/key:")
    with st.form("adm_init"):
        name = st.text_input("your name (your key must exist: “Make a signing key” below)", key="adm_init_name")
        pw = st.text_input("passphrase of your key", type="password", key="adm_init_pw")
        policy = st.text_input("policy file to pin (optional)", key="adm_init_policy", placeholder="shipped default")
        go = st.form_submit_button("Create the ledger", type="primary")
    if go:
        try:
            me = signin.unlock(name.strip(), pw, lambda s: None)
            row = admin.init_ledger(data.ledger(), me, policy_file=policy.strip() or None)
        except TicketLabError as e:
            signin.sign_out()
            governance.say(e)
        else:
            governance.after_write(f"ledger created (record #{row['seq']}): {me.name} is its first admin")


def _people() -> None:
    reg = state_now.registry
    rows = [{"name": n, "roles": ", ".join(sorted(p.roles)), "key": (p.key_id or "")[:16],
             "state": "active" if p.key_id else "key revoked", "revoked keys": len(p.revoked)}
            for n, p in sorted(reg.people.items())]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _public_key(name: str, upload) -> Path:
    """The public key to register: an uploaded NAME.pub.pem, else the one in this server's key directory."""
    if upload is not None:
        tmp = Path(tempfile.mkdtemp(prefix="ticketlab-pub-")) / "key.pub.pem"
        tmp.write_bytes(upload.getvalue())
        return tmp
    return gov.keys.public_path(name)


def _register(me) -> None:
    with st.form("adm_register"):
        name = st.text_input("their name", key=governance.key("adm_reg_name"))
        roles = st.multiselect("roles", list(ROLES), key=governance.key("adm_reg_roles"))
        upload = st.file_uploader("their public key (NAME.pub.pem); empty: the one in the key directory",
                                  type=["pem"], key=governance.key("adm_reg_key"))
        go = st.form_submit_button("Register and sign", type="primary")
    if go:
        try:
            if not name.strip():
                raise TicketLabError("give the person's name in “name”.")
            row = admin.register(data.ledger(), me, name.strip(), _public_key(name.strip(), upload), roles)
        except TicketLabError as e:
            governance.say(e)
        else:
            governance.after_write(f"registered {name.strip()} ({', '.join(roles) or 'no role'}): record #{row['seq']}, "
                                   f"signed by {me.name}", clear=("adm_reg_name", "adm_reg_roles", "adm_reg_key"))


def _roles(me) -> None:
    names = sorted(state_now.registry.people)
    who = st.selectbox("person", names, key="adm_roles_who")
    have = sorted(state_now.registry.people[who].roles) if who else []
    with st.form(f"adm_roles_{who}"):
        want = st.multiselect("roles", list(ROLES), default=have,
                              key=governance.key(f"adm_roles_{who}_set"))
        go = st.form_submit_button(f"Sign the new roles of {who}", disabled=not who)
    if go:
        try:
            row = admin.set_roles(data.ledger(), me, who, add=sorted(set(want) - set(have)),
                                  remove=sorted(set(have) - set(want)))
        except TicketLabError as e:
            governance.say(e)
        else:
            governance.after_write(f"{who}: roles {', '.join(sorted(want)) or 'none'} (record #{row['seq']}, signed by "
                                   f"{me.name})", clear=(f"adm_roles_{who}_set",))


def _revoke(me) -> None:
    active = sorted(n for n, p in state_now.registry.people.items() if p.key_id)
    with st.form("adm_revoke"):
        who = st.selectbox("person", active, index=None, key=governance.key("adm_rev_who"))
        reason = st.text_input("reason (lost, leaked, left the team...)", key=governance.key("adm_rev_reason"))
        go = st.form_submit_button("Revoke the key and sign")
    if go:
        try:
            if not who:
                raise TicketLabError("pick whose key to revoke in “person”.")
            row = admin.revoke(data.ledger(), me, who, reason)
        except TicketLabError as e:
            governance.say(e)
        else:
            governance.after_write(f"revoked {who}'s key: record #{row['seq']}, signed by {me.name}",
                                   clear=("adm_rev_who", "adm_rev_reason"))


def _policy(me) -> None:
    versions = gov.state.policy_versions(data.ledger())
    now = versions[-1] if versions else None
    if now:
        st.caption(f"pinned now: **{now['name']}** version {now['version']} (`{now['sha256'][:12]}`), by {now['by']}")
    upload = st.file_uploader("new policy file (TOML)", type=["toml"], key="adm_pol_file")
    text = upload.getvalue().decode("utf-8", errors="replace") if upload is not None else ""
    text = st.text_area("or edit the policy here", value=text or (now["text"] if now else ""), height=220,
                        key=f"adm_pol_text_{upload.file_id if upload is not None else 'pinned'}")
    diff = list(difflib.unified_diff((now["text"] if now else "").splitlines(), text.splitlines(),
                                     f"pinned v{now['version']}" if now else "nothing pinned", "new", lineterm=""))
    if not diff:
        st.caption("No change against the pinned policy.")
        return
    st.code("\n".join(diff), language="diff")
    version = (now["version"] + 1) if now else 1
    if st.button(f"Pin this policy as version {version} and sign", type="primary", key="adm_pol_go"):
        try:
            row = admin.set_policy(data.ledger(), me, text=text)
        except TicketLabError as e:
            governance.say(e)
        else:
            governance.after_write(f"policy version {version} pinned: record #{row['seq']}, signed by {me.name}")


def _trust(me) -> None:
    out = st.text_input("trust file", value=str(settings.state_dir() / "trust.json"), key="adm_trust_out")
    if st.button("Sign and write the trust file", key="adm_trust_go"):
        try:
            path = trust_file(me, out)
        except (TicketLabError, OSError) as e:
            governance.say(e)
        else:
            st.success(f"trusted keys and roles, signed by {me.name}, written to {path}: give it to deployers to verify "
                       f"bundles with",
                       icon=":material/verified_user:")


def trust_file(me, out: str) -> Path:
    """`ticketlab people export --as ADMIN`: the registry and the ledger's anchor, signed by this admin."""
    from analysis.governance import trustfile
    from pruning.durable import atomic_write_json

    trust = trustfile.export(governance.fresh_state(), me)
    atomic_write_json(out, trust, indent=2, sort_keys=True)
    return Path(out)


if state_now.ledger_id is None:
    _create_ledger()
    _keygen()
    st.stop()
me = governance.sign_in("adm")
if me is None:
    _people()
    _keygen()
    st.stop()
if "admin" not in governance.roles_of(me):
    st.info(f"Administration needs the admin role ({me.name} holds "
            f"{', '.join(sorted(governance.roles_of(me))) or 'no role'}); admins here: "
            f"{', '.join(governance.holders('admin'))}.", icon=":material/admin_panel_settings:")
    _people()
    st.stop()
tabs = st.tabs(["People", "Register", "Roles", "Revoke", "Policy", "Trust file", "Keys"])
with tabs[0]:
    _people()
with tabs[1]:
    _register(me)
with tabs[2]:
    _roles(me)
with tabs[3]:
    _revoke(me)
with tabs[4]:
    _policy(me)
with tabs[5]:
    _trust(me)
with tabs[6]:
    _keygen()
