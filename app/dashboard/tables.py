"""How numbers look in the dashboard's tables: no "None", sensible rounding (a stderr that is
floating-point noise reads 0), signed deltas, and the colours of better / worse / within noise.

Cells stay numbers (the pandas Styler only formats them), so sorting a column sorts by value.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis import uncertainty

BETTER, WORSE, NOISE = "#1a7f37", "#cf222e", "#6e7781"
CHANGE_BG = {"better": "#dafbe1", "worse": "#ffebe9", "same": "#f6f8fa"}
STATUS_BG = {"pass": "#dafbe1", "fail": "#ffebe9", "missing": "#fff8c5", "pending": "#ddf4ff"}


def is_blank(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def num(v, digits: int = 4) -> str:
    """A value to `digits` significant digits; blank for a missing one."""
    if is_blank(v):
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float) and not math.isfinite(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def stderr(v, value=None) -> str:
    """Two significant digits; 0 when it is below floating-point noise of the value (1e-16 from a
    constant sample reads 0, not 1.1e-16)."""
    if is_blank(v):
        return ""
    scale = abs(value) if isinstance(value, int | float) and not is_blank(value) else 1.0
    if abs(v) <= 1e-9 * max(scale, 1.0):
        return "0"
    return f"{v:.2g}"


def signed(v, digits: int = 3) -> str:
    if is_blank(v):
        return ""
    return ("+" if v > 0 else "−" if v < 0 else "±") + f"{abs(v):.{digits}g}"


def pct(v) -> str:
    if is_blank(v):
        return ""
    return ("+" if v > 0 else "−" if v < 0 else "±") + f"{abs(v):.1f} %"


def plain(text) -> str:
    """A text cell shown literally where cells are rendered as Markdown (st.table): `bbq*/*bias*` keeps its
    asterisks and `>= 0.2` does not become a quote."""
    if is_blank(text):
        return ""
    out = str(text).replace(">=", "≥").replace("<=", "≤")
    for ch in ("\\", "*", "_", "[", "]", "<", ">", "#", "|"):  # `code` stays code
        out = out.replace(ch, "\\" + ch)
    return out


def tone(change: str | None, within_noise: bool | None) -> str:
    """The text colour of a delta: grey within noise, else green better / red worse."""
    if within_noise:
        return NOISE
    return {"better": BETTER, "worse": WORSE}.get(change or "", NOISE)


def clean_text(df: pd.DataFrame) -> pd.DataFrame:
    """Object (text) columns with blanks instead of None / NaN."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(lambda v: "" if is_blank(v) else v)
    return out


def styled_comparison(df: pd.DataFrame):
    """A comparison frame (analysis.baseline_review rows) as a Styler: rounded, signed, coloured by change."""
    view = df.copy()
    unsure = view["noise"].fillna("") if "noise" in view else pd.Series("", index=view.index)
    view["within_noise"] = [{True: "yes", False: "no"}.get(w, "cannot tell" if u else "")
                            for w, u in zip(view["within_noise"], unsure, strict=True)]
    view["change"] = view["change"].fillna("")
    colours = [tone(c, w == "yes") for c, w in zip(view["change"], view["within_noise"], strict=True)]

    def paint(col: pd.Series) -> list[str]:
        return [f"color: {c}; font-weight: 600" for c in colours]

    def shade(col: pd.Series) -> list[str]:
        return [f"background-color: {CHANGE_BG.get(c, 'white')}" if w != "yes" else "" for c, w
                in zip(view["change"], view["within_noise"], strict=True)]

    formats = {"baseline": num, "ticket": num, "delta": signed, "delta_pct": pct, "severity": lambda v: num(v, 2),
               "ideal": num, "limit": lambda v: "" if is_blank(v) else f"quick: {int(v)}"}
    for col in ("baseline_stderr", "ticket_stderr"):
        if col in view:
            # "too few examples to tell (3 documents)" where a number would be noise itself
            counts = view.get(col.replace("_stderr", "_n"), pd.Series(None, index=view.index))
            view[col] = [uncertainty.describe(v, None if is_blank(n) else int(n)).removeprefix("± ") or ""
                         for v, n in zip(view[col], counts, strict=True)]
    styler = view.style.format({k: f for k, f in formats.items() if k in view})
    styler = styler.apply(paint, subset=[c for c in ("delta", "delta_pct") if c in view])
    return styler.apply(shade, subset=[c for c in ("change",) if c in view])


def number_columns(df: pd.DataFrame) -> dict:
    """st.dataframe column settings giving every float column 4 significant digits (not 24.687292)."""
    import streamlit as st

    return {c: st.column_config.NumberColumn(str(c), format="%.4g") for c in df.columns if df[c].dtype.kind == "f"}
