"""Who is signed in: an unlocked key held by the server for this browser, never the passphrase.

- The unlocked key lives in the server's memory under a random token; the browser keeps only the token
  (a cookie, so a reload or a second tab of the same browser stays signed in). The passphrase is used
  once to unlock the key and is not kept anywhere.
- The key is dropped after `IDLE_S` seconds without a page run that uses it ($TICKETLAB_SIGNIN_IDLE_S,
  default 15 minutes), and at once on "Sign out", in every tab that shares the token.
- Wrong passphrases are rate-limited per person across all sessions: after `MAX_FAILURES` within
  `FAILURE_WINDOW_S`, further attempts for that name are refused until the window has passed, so the
  dashboard cannot be used to guess a passphrase quickly.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import dataclass

import streamlit as st

from pruning.errors import TicketLabError

COOKIE = "ticketlab_signin"
SESSION_KEY = "gov_signer"
TOKEN_KEY = "gov_signin_token"
MAX_FAILURES = 5
FAILURE_WINDOW_S = 300.0


def idle_s() -> float:
    """How long an unlocked key stays in the server without use."""
    try:
        return max(1.0, float(os.environ.get("TICKETLAB_SIGNIN_IDLE_S", "900")))
    except ValueError:
        return 900.0


@dataclass
class _Entry:
    signer: object
    last_used: float


@st.cache_resource(show_spinner=False)
def _store() -> dict:
    """Server-wide: tokens -> unlocked keys, and name -> recent failure times (with one lock)."""
    return {"tokens": {}, "failures": {}, "lock": threading.Lock()}


def _cookie_token() -> str | None:
    try:
        return st.context.cookies.get(COOKIE)
    except Exception:  # no browser request behind this session (AppTest, a script run)
        return None


def _set_cookie(token: str | None) -> None:
    """Write (or clear) the token cookie in the browser. Streamlit has no cookie writer: a zero-height
    component runs one line of script in the page's own origin (st.iframe runs an HTML string same-origin)."""
    value = f"{COOKIE}={token}; path=/; SameSite=Strict" if token else \
        f"{COOKIE}=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; SameSite=Strict"
    st.iframe(f"<script>window.parent.document.cookie = {value!r};</script>", height=1)


def current():
    """The signed-in person's unlocked key for this browser, or None (never signed in, signed out, or
    dropped after the idle time: then `dropped_for_idle()` says so once)."""
    store = _store()
    token = st.session_state.get(TOKEN_KEY) or _cookie_token()
    if not token:
        st.session_state.pop(SESSION_KEY, None)
        return None
    now = time.monotonic()
    with store["lock"]:
        entry = store["tokens"].get(token)
        if entry is not None and now - entry.last_used > idle_s():
            del store["tokens"][token]
            st.session_state["gov_idle_dropped"] = entry.signer.name
            entry = None
        if entry is None:
            st.session_state.pop(SESSION_KEY, None)
            st.session_state.pop(TOKEN_KEY, None)
            return None
        entry.last_used = now
    st.session_state[TOKEN_KEY] = token
    st.session_state[SESSION_KEY] = entry.signer
    return entry.signer


def dropped_for_idle() -> str | None:
    """The name whose key was just dropped for idleness (once), for a one-line notice."""
    return st.session_state.pop("gov_idle_dropped", None)


def _refuse_if_throttled(name: str) -> None:
    store = _store()
    now = time.monotonic()
    with store["lock"]:
        recent = [t for t in store["failures"].get(name, []) if now - t < FAILURE_WINDOW_S]
        store["failures"][name] = recent
    if len(recent) >= MAX_FAILURES:
        wait = int(FAILURE_WINDOW_S - (now - recent[0])) + 1
        raise TicketLabError(f"too many wrong passphrases for {name} ({len(recent)} in the last "
                             f"{int(FAILURE_WINDOW_S // 60)} minutes): try again in {wait} s.")


def unlock(name: str, passphrase: str, check) -> object:
    """Unlock `name`'s key with `passphrase`, under the rate limit; `check(signer)` refuses a key that is
    not the person's registered one. On success the key is held for this browser."""
    from analysis.governance import keys

    if not name:
        raise TicketLabError("pick your name in “who you are” first.")
    _refuse_if_throttled(name)
    try:
        signer = keys.unlock(name, passphrase)
    except TicketLabError:
        store = _store()  # every failed attempt counts, whatever the cause
        with store["lock"]:
            store["failures"].setdefault(name, []).append(time.monotonic())
        raise
    check(signer)
    token = secrets.token_urlsafe(32)
    store = _store()
    with store["lock"]:
        store["tokens"][token] = _Entry(signer, time.monotonic())
        store["failures"].pop(name, None)
    st.session_state[TOKEN_KEY] = token
    st.session_state[SESSION_KEY] = signer
    st.session_state["gov_set_cookie"] = token
    return signer


def sign_out() -> None:
    store = _store()
    token = st.session_state.pop(TOKEN_KEY, None) or _cookie_token()
    with store["lock"]:
        store["tokens"].pop(token, None)
    st.session_state.pop(SESSION_KEY, None)
    st.session_state["gov_set_cookie"] = ""


def sync_cookie() -> None:
    """After a sign-in or sign-out (which rerun the page), bring the browser's cookie in line."""
    token = st.session_state.pop("gov_set_cookie", None)
    if token is not None:
        _set_cookie(token or None)
