"""The scorecard: one self-contained HTML page for an auditor who never opens the dashboard.

Baseline against ticket (every shared metric with stderr), survival heatmaps, bias breakdowns with
error bars, the policy results, and the ticket's decisions and deployment history. plotly.js is
embedded once, inline, so the page works offline.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path

from pruning import durable

from .. import uncertainty
from ..ledger import Ledger, governance_store
from ..metric_meta import category_of, direction, meta_for, task_title
from . import evidence as ev
from .decisions import audit, decision_rows
from .deploy import current, history
from .policy import Policy
from .reader import snapshot
from .review import Review, review_ticket

STATUS_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "missing": "#9a6700", "pending": "#57606a"}


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _num(v, se=None, n=None) -> str:
    if v is None:
        return "&ndash;"
    s = f"{v:.4g}" if isinstance(v, float) else _e(v)
    told = uncertainty.describe(se, n)
    return s + (f" <small>{_e(told)}</small>" if told else "")


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    if not rows:
        body = f"<tr><td colspan='{len(headers)}'><em>none recorded</em></td></tr>"
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Figures:
    """Plotly figures as HTML fragments; the first one carries plotly.js inline, the rest reuse it."""

    def __init__(self):
        self.first = True

    def __call__(self, fig) -> str:
        fig.update_layout(margin=dict(l=40, r=20, t=50, b=40), template="plotly_white")
        out = fig.to_html(full_html=False, include_plotlyjs=self.first, config={"displaylogo": False})
        self.first = False
        return out


def build_report(ledger: Ledger, ticket_ref: str, baseline: str = "dense", policy: Policy | str | None = None) -> str:
    import plotly.graph_objects as go

    with snapshot(ledger) as db:
        return _build(db, ticket_ref, baseline, policy, go)


def _build(ledger, ticket_ref: str, baseline: str, policy, go) -> str:
    ticket = ledger.get_ticket(ticket_ref)
    review = review_ticket(ledger, ticket["id"], baseline=baseline, policy=policy)
    base = ev.resolve_baseline(ledger, ticket, baseline)
    cand_rows = ev.metric_rows(ledger, ticket["id"], ticket["dense_sha256"])
    base_rows = ev.metric_rows(ledger, base.subject, base.dense_sha256)
    fig = _Figures()
    parts = [_header(ticket, review, base), _policy_section(review),
             _metrics_section(cand_rows, base_rows, base.label, fig, go),
             _bias_section(cand_rows, base_rows, base.label, fig, go),
             _survival_section(ledger, ticket["id"], fig, go),
             _transcripts_section(ledger, ticket, base),
             _governance_section(ledger, ticket)]
    return _page(f"Ticket {ticket['id']} scorecard", "\n".join(parts))


def write_report(ledger: Ledger, ticket_ref: str, out: str | Path, baseline: str = "dense",
                 policy: Policy | str | None = None) -> Path:
    out = Path(out).expanduser().resolve()
    page = build_report(ledger, ticket_ref, baseline, policy)
    durable.atomic_write_text(out, page)  # shared permissions, fsynced, never half-written
    return out


def _header(ticket: dict, review: Review, base: ev.Subject) -> str:
    params = json.loads(ticket["params"]) if isinstance(ticket["params"], str) else ticket["params"]
    verdict = "passes" if review.passed else "does not pass"
    rows = [["ticket", f"<code>{_e(ticket['id'])}</code> {_e(ticket['name'] or '')}"],
            ["method", f"{_e(ticket['method'])} <code>{_e(json.dumps(params, sort_keys=True))}</code>"],
            ["sparsity", f"target {_num(ticket['target_sparsity'])}, achieved {_num(ticket['achieved_sparsity'])}"],
            ["dense model", f"<code>{_e(ticket['dense_sha256'])}</code>"],
            ["parent", _e(ticket["parent"] or "none")], ["created", f"{_e(ticket['created_at'])} by {_e(review.creator or 'unknown')}"],
            ["baseline", _e(base.label)],
            ["policy", f"{_e(review.policy['name'])} (<code>{_e(review.policy['sha256'][:16])}</code>): {verdict}"],
            ["generated", _e(dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))]]
    return f"<h1>Ticket {_e(ticket['id'])}</h1>" + _table(["", ""], rows, "kv")


def _policy_section(review: Review) -> str:
    rows = []
    for r in review.results:
        colour = STATUS_COLOURS.get(r.status, "#000")
        status = _e(r.status.upper()) + (" <small>(indicative)</small>" if r.indicative else "")
        rows.append([f"<b style='color:{colour}'>{status}</b>", _e(r.rule), _e(r.item),
                     _num(r.baseline, r.baseline_stderr), _num(r.candidate, r.candidate_stderr),
                     "&ndash;" if r.delta is None else f"{r.delta:+.4g}", _e(r.limit), _e(r.detail)])
    c = review.counts()
    quick = (f" {c['indicative']} result(s) rest on quick (--limit) runs only: indicative, not decision evidence."
             if c.get("indicative") else "")
    return (f"<h2>Policy results</h2><p>{c['pass']} pass, {c['fail']} fail, {c['missing']} missing evidence, "
            f"{c['pending']} pending.{quick}</p>"
            + _table(["status", "rule", "item", "baseline", "ticket", "delta", "limit", "detail"], rows))


def _pairs(cand_rows, base_rows):
    cand = ev.latest(cand_rows, full_only=False)
    out = []
    for key, c in sorted(cand.items()):
        b, _ = ev.like_for_like(c, base_rows)
        out.append((key, c, b))
    return out


def _metrics_section(cand_rows, base_rows, base_label, fig, go) -> str:
    rows, names, rel = [], [], []
    for (task, metric), c, b in _pairs(cand_rows, base_rows):
        delta = None if b is None or b["value"] is None or c["value"] is None else c["value"] - b["value"]
        rows.append([_e(c["suite"]), _e(task), _e(metric), _num(b["value"], b["stderr"], uncertainty.docs_of(b)) if b else "&ndash;",
                     _num(c["value"], c["stderr"], uncertainty.docs_of(c)), "&ndash;" if delta is None else f"{delta:+.4g}",
                     "full" if c["limit"] is None else f"limit {c['limit']}"])
        if delta is not None and b["value"] and (c.get("direction") or direction(task, metric)[0]) != "target":  # % of a value near its ideal misleads
            names.append(f"{task}/{metric}")
            rel.append(100.0 * delta / abs(b["value"]))
    out = f"<h2>Baseline ({_e(base_label)}) against the ticket</h2>"
    out += _table(["suite", "task", "metric", "baseline", "ticket", "delta", "run"], rows)
    if names:
        f = go.Figure(go.Bar(x=rel, y=names, orientation="h", marker_color="#0969da"))
        f.update_layout(title="Change against the baseline (%), metrics with a better direction", height=120 + 22 * len(names), xaxis_title="%")
        out += fig(f)
    return out


def _bias_section(cand_rows, base_rows, base_label, fig, go) -> str:
    """One chart per breakdown family: every target metric (bias scores, with the ideal drawn) and every
    metric the task YAMLs break down by category, overall first; families come from the metric registry."""
    out = "<h2>Bias breakdowns</h2>"
    families: dict[tuple[str, str], list] = {}
    for (task, metric), c, b in _pairs(cand_rows, base_rows):
        part = category_of(task, metric)
        root = (part.task, part.metric) if part else (task, metric)
        meta = meta_for(task, metric)
        target = (meta.direction if meta else c.get("direction")) == "target"
        families.setdefault(root, []).append((part.category if part else "overall", c, b, target, part is not None))
    shown = False
    for (task, metric), items in families.items():
        if not any(t or p for _, _, _, t, p in items):
            continue
        shown = True
        meta = meta_for(task, metric)
        ideal = meta.ideal if meta and meta.direction == "target" else items[0][1].get("ideal")
        labels = [label for label, *_ in items]
        f = go.Figure()
        for name, pick in ((base_label, 2), ("ticket", 1)):
            vals = [(it[pick] or {}).get("value") for it in items]
            errs = [uncertainty.usable((it[pick] or {}).get("stderr"), uncertainty.docs_of(it[pick] or {})) or 0.0
                    for it in items]  # no bar for "too few examples to tell"
            f.add_trace(go.Bar(name=name, x=labels, y=vals, error_y=dict(type="data", array=errs, visible=True)))
        if ideal is not None:
            f.add_hline(y=ideal, line_dash="dash", annotation_text=f"ideal {ideal:g}")
        title = (meta.label if meta and meta.label else metric) + f" · {task_title(task)}"
        f.update_layout(title=title, barmode="group", height=420)
        out += fig(f)
    return out if shown else out + "<p><em>No bias results or breakdowns recorded for this ticket.</em></p>"


def _survival_section(ledger: Ledger, ticket_id: str, fig, go) -> str:
    out = "<h2>Where the weights survive</h2>"
    layer = governance_store.survival_by_layer(ledger, ticket_id)
    if not layer:
        return out + "<p><em>No survival tables recorded for this ticket.</em></p>"
    mats = sorted({r["matrix"] for r in layer})
    layers = sorted({r["layer"] for r in layer})
    z = [[None] * len(mats) for _ in layers]
    for r in layer:
        z[layers.index(r["layer"])][mats.index(r["matrix"])] = r["kept"] / r["total"] if r["total"] else None
    f = go.Figure(go.Heatmap(z=z, x=mats, y=layers, zmin=0, zmax=1, colorscale="Viridis", colorbar_title="kept"))
    f.update_layout(title="Kept fraction per layer and matrix", yaxis_title="layer", yaxis_dtick=1,
                    height=300 + 12 * len(layers))
    out += fig(f)
    heads = governance_store.survival_by_query_head(ledger, ticket_id)
    if heads:
        hl = sorted({r["layer"] for r in heads})
        hh = sorted({r["head"] for r in heads})
        z = [[None] * len(hh) for _ in hl]
        for r in heads:
            z[hl.index(r["layer"])][hh.index(r["head"])] = r["kept"] / r["total"] if r["total"] else None
        f = go.Figure(go.Heatmap(z=z, x=hh, y=hl, zmin=0, zmax=1, colorscale="Viridis", colorbar_title="kept"))
        f.update_layout(title="Kept fraction per query head", xaxis_title="head", yaxis_title="layer", xaxis_dtick=1,
                        yaxis_dtick=1,
                        height=300 + 12 * len(hl))
        out += fig(f)
    return out


def _governance_section(ledger: Ledger, ticket: dict) -> str:
    decisions = [[_e(d["seq"]), _e(d["decided_at"]), _e(d["decision"]), _e(d["reviewer"]), _e(d["reason"]),
                  ("yes: " + _e(d["override_reason"])) if d["override"] else "no", _e(d["policy_name"]),
                  "pass" if d["passed"] else "fail", f"<code>{_e(d['row_hash'][:16])}</code>"]
                 for d in decision_rows(ledger, ticket["id"])]
    moves = [[_e(m["seq"]), _e(m["moved_at"]), _e(m["action"]), _e(m["previous"]), _e(m["target"]), _e(m["by_user"]),
              _e(m["reason"])] for m in history(ledger, ticket["dense_sha256"])]
    report = audit(ledger)
    chain = ("intact" if report["ok"] else "<b style='color:#cf222e'>BROKEN</b>: " + _e(
        "; ".join(e.get("problem", "") for e in report["tables"].values() if not e["ok"]) or "see ticketlab audit"))
    now = current(ledger, ticket["dense_sha256"])
    return ("<h2>Decisions</h2>" + _table(["#", "when (UTC)", "decision", "reviewer", "reason", "override", "policy",
                                           "policy result", "row hash"], decisions)
            + f"<h2>Deployment history</h2><p>Deployed now for this dense model: <code>{_e(now)}</code>. "
              f"Audit of the decision and deployment chains: {chain}.</p>"
            + _table(["#", "when (UTC)", "action", "from", "to", "by", "why"], moves))


def _transcripts_section(ledger, ticket: dict, base: ev.Subject) -> str:
    """Generated answers (analysis.transcripts): each task's transcript-set hashes and a sample of the
    prompts whose outcome changed against the baseline, with both answers and the checker's reasons."""
    from ..transcripts import evidence

    found = evidence(ledger, ticket["id"], base.subject, ticket["dense_sha256"])
    if not found:
        return ("<h2>Generated answers</h2><p class='muted'>No generated answers recorded for this ticket: "
                "<code>ticketlab eval TICKET --suite instruct</code> records them.</p>")
    out = ["<h2>Generated answers</h2>"]
    for task, e in found.items():
        scope = "full run" if e["limit"] is None else f"--limit {e['limit']} (indicative)"
        head = (f"<p><b>{_e(task)}</b> · {_e(scope)} · ticket transcript set <code>{_e(e['ticket_sha256'])}</code>"
                + (f" · {_e(base.label)} <code>{_e(e['baseline_sha256'])}</code>" if e["baseline_sha256"] else "")
                + "</p>")
        out.append(head)
        if e["changed"] is None:
            out.append(f"<p class='muted'>{_e(e.get('note') or 'no like-for-like baseline set to compare with')}</p>")
            continue
        out.append(f"<p>{e['changed']} of {e['prompts']} prompts changed outcome"
                   + (f"; the first {len(e['sample'])}:" if e["sample"] else ".") + "</p>")
        rows = [[_e(s["prompt"]), f"<b>{_e(s['baseline']['outcome'])}</b><br>{_e(s['baseline']['reason'])}"
                 f"<pre>{_e(s['baseline']['completion'])}</pre>",
                 f"<b>{_e(s['ticket']['outcome'])}</b><br>{_e(s['ticket']['reason'])}"
                 f"<pre>{_e(s['ticket']['completion'])}</pre>"] for s in e["sample"]]
        if rows:
            out.append(_table(["prompt", _e(base.label), "ticket"], rows))
    return "\n".join(out)


def _page(title: str, body: str) -> str:
    css = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1f2328}"
           "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}"
           "th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}"
           "th{background:#f6f8fa}table.kv td:first-child{font-weight:600}code{font-size:.95em}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{css}</style></head><body>{body}"
            f"<footer><p><small>Generated by Ticket Lab. Self-contained: no network needed.</small></p></footer>"
            f"</body></html>")
