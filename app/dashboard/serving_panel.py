"""The Export page's serving block: what a bundle ships (format, quantization, bytes against dense), which
artifact its evidence was measured on, and the newest `ticketlab serve-check` of that artifact."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from analysis.ledger import read_model
from app.dashboard import data


def last_check(artifact: str | None, bundle: Path) -> dict | None:
    """The newest serve-check run of this artifact (or of this bundle folder when it has no artifact id)."""
    for r in read_model.serve_checks().rows(data.ledger()):
        try:
            p = json.loads(r.params or "{}")
        except ValueError:
            continue
        if (artifact and p.get("artifact") == artifact) or (not artifact and p.get("bundle") == str(bundle)):
            return {**p, "run_id": r.id, "ended_at": r.ended_at}
    return None


def show(bundle: Path, manifest: dict) -> None:
    artifact = manifest.get("artifact") or {}
    st.markdown("**Serving**")
    if not artifact:
        st.caption("no shipped artifact recorded (a masks bundle, or one exported before artifacts were recorded): "
                   "nothing a serving engine loads.")
        return
    q = artifact.get("quantization")
    ratio = artifact.get("bytes_vs_dense")
    st.caption(f"artifact `{str(artifact.get('id'))[:12]}` · {artifact.get('serving_format')}"
               + (f" · {q['scheme']} ({q['method']}{', group ' + str(q['group_size']) if q.get('group_size') else ''})"
                  if q else "")
               + (f" · weights {artifact['weights_bytes'] / 1e6:,.1f} MB, {ratio:.0%} of dense" if ratio else ""))
    ev = manifest.get("evidence") or {}
    on = ev.get("measured_on") or []
    if on:
        words = ["this artifact" if x == artifact.get("id") else ("the lab's float application" if x == "lab"
                 else f"another artifact ({x[:12]})") for x in on]
        st.caption("evidence measured on: " + ", ".join(words))
    check = last_check(artifact.get("id"), bundle)
    if check is None:
        st.caption(f"not checked in a serving engine yet: `ticketlab serve-check {bundle}`")
        return
    if not check.get("loads"):
        st.error(f"does not load in vLLM: {check.get('error')}", icon=":material/error:")
        return
    parts = [f"loads in {check.get('engine', 'vLLM')}"]
    out = check.get("outputs")
    if out:
        parts.append(f"exact match {out['exact_match_rate']:.0%}, token agreement {out['token_agreement']:.0%} with "
                     f"the lab")
    for c, row in (check.get("speed") or {}).items():
        ratio = f" ({row['ratio_vs_dense']:.2f}x dense)" if "ratio_vs_dense" in row else ""
        parts.append(f"{c} concurrent: {row['ticket']['tokens_per_s']:.1f} tok/s{ratio}")
    st.caption(" · ".join(parts) + f"  (serve-check run {check['run_id']})")
