"""AppTest helpers shared by the dashboard governance tests: open a page, read its texts, find a button,
sign in."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

MAIN = Path(__file__).resolve().parents[1] / "app" / "dashboard" / "main.py"


def page(name: str, **query) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.run()
    at.switch_page(f"views/{name}.py")
    at.query_params.update(query)
    at.run()
    return at


def texts(at: AppTest) -> str:
    return "\n".join(str(x.value) for kind in ("markdown", "info", "success", "warning", "error", "caption")
                     for x in getattr(at, kind))


def errors(at: AppTest) -> str:
    return "\n".join(e.value for e in at.error)


def button(at: AppTest, label: str):
    hits = [b for b in at.button if b.label == label]
    assert hits, f"no button {label!r}; have {[b.label for b in at.button]}"
    return hits[0]


def sign_in(at: AppTest, key: str, name: str, pw: str) -> None:
    at.selectbox(key=f"{key}_signin_name").set_value(name)
    at.text_input(key=f"{key}_signin_pw").set_value(pw)
    button(at, "Unlock my key").click().run()


def keyed(elements, base: str):
    """The widget whose key is `base` or a later generation of it (`base~N`, after a write emptied its form)."""
    hits = [e for e in elements if e.key == base or (e.key or "").startswith(base + "~")]
    assert hits, f"no widget keyed {base!r}; have {[e.key for e in elements]}"
    return hits[-1]
