"""Compare two subjects (ticket ids or "dense") metric by metric, only like with like.

Two metric rows are comparable when they were measured the same way (`analysis.like_for_like`, the rule
the review and the policy use too): the same limit (or both full), batch size, dtype, padding/scoring and
`extra["setup"]` (perplexity window length, BBQ cap, lm-eval data source, attribution settings...). For each metric both subjects have, the newest comparable pair is
shown with the delta (B - A) and whether |delta| is within the combined standard error
sqrt(se_A^2 + se_B^2) (`analysis.uncertainty`: the two runs score the same documents, so that bound
treats paired samples as independent and is conservative). A side resting on too few documents, or
without a usable standard error, gives no call: "within" is None with the reason in `noise`. Metrics measured on both sides but never the same way are listed as
not comparable, with the settings that differ.
"""

from __future__ import annotations

import math

from pruning.errors import TicketLabError

from . import like_for_like, metric_meta, uncertainty
from .ledger import Ledger, evidence_store


def resolve_subject(ledger: Ledger, ref: str, other: str | None = None) -> dict:
    """{"subject", "dense_sha256", "label"} for a ticket id/prefix, or "dense" (whose weights are the
    other side's ticket's dense model, else the latest dense model evaluated)."""
    if ref != "dense":
        t = ledger.get_ticket(ref)
        return {"subject": t["id"], "dense_sha256": t["dense_sha256"], "label": t["id"], "method": t["method"],
                "sparsity": t["achieved_sparsity"], "name": t["name"]}
    if other is not None and other != "dense":
        sha = ledger.get_ticket(other)["dense_sha256"]
    else:
        sha = evidence_store.latest_dense_sha256(ledger)
        if sha is None:
            raise TicketLabError("no dense-model metrics in the ledger yet: run `ticketlab eval dense` first.")
    return {"subject": "dense", "dense_sha256": sha, "label": f"dense ({sha[:12]})", "method": None,
            "sparsity": 0.0, "name": None}


def metric_rows(ledger: Ledger, subject: str, dense_sha256: str) -> list[dict]:
    """Every metric of a subject from successful runs, newest first."""
    return evidence_store.comparison_rows(ledger, subject, dense_sha256)


def _latest_by_setup(rows: list[dict]) -> dict[tuple, dict[str, dict]]:
    out: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        per = out.setdefault((r["suite"], r["task"], r["metric"]), {})
        per.setdefault(like_for_like.setup_key(r), r)  # rows are newest first
    return out


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def compare(a: str, b: str, ledger: Ledger | None = None) -> dict:
    ledger = ledger or Ledger()
    if a == "dense" and b == "dense":
        raise TicketLabError("compare needs at least one ticket: `ticketlab compare TICKET dense`.")
    sa, sb = resolve_subject(ledger, a, b), resolve_subject(ledger, b, a)
    la = _latest_by_setup(metric_rows(ledger, sa["subject"], sa["dense_sha256"]))
    lb = _latest_by_setup(metric_rows(ledger, sb["subject"], sb["dense_sha256"]))
    rows, not_comparable = [], []
    for key in sorted(set(la) & set(lb)):
        common = [k for k in la[key] if k in lb[key]]  # A's setups, newest first
        if not common:
            ra, rb = next(iter(la[key].values())), next(iter(lb[key].values()))
            not_comparable.append({"suite": key[0], "task": key[1], "metric": key[2],
                                   "differs": like_for_like.differences(ra, rb)})
            continue
        ra, rb = la[key][common[0]], lb[key][common[0]]
        va, vb = _num(ra["value"]), _num(rb["value"])
        ea, eb = _num(ra["stderr"]), _num(rb["stderr"])
        delta = vb - va if va is not None and vb is not None else None
        na, nb = uncertainty.docs_of(ra), uncertainty.docs_of(rb)
        combined = uncertainty.combined(ea, na, eb, nb)
        meta = metric_meta.meta_for(key[1], key[2])
        rows.append({"suite": key[0], "task": key[1], "metric": key[2], "a": va, "a_stderr": ea, "b": vb,
                     "b_stderr": eb, "a_n": na, "b_n": nb, "delta": delta, "combined_stderr": combined,
                     "within_stderr": uncertainty.within_noise(delta, ea, na, eb, nb),
                     "noise": uncertainty.noise_words(ea, na, eb, nb),
                     "direction": meta.direction if meta else ra["direction"],
                     "ideal": meta.ideal if meta else ra["ideal"],
                     "change": metric_meta.change(key[1], key[2], va, vb), "setup": like_for_like.setup_of(ra),
                     "a_run": ra["run_id"], "b_run": rb["run_id"]})
    only = lambda x, y: [{"suite": k[0], "task": k[1], "metric": k[2]} for k in sorted(set(x) - set(y))]  # noqa: E731
    return {"a": sa, "b": sb, "rows": rows, "not_comparable": not_comparable, "only_a": only(la, lb),
            "only_b": only(lb, la)}


def _fmt(v, se=None, n=None) -> str:
    if v is None:
        return "-"
    s = f"{v:.4g}"
    if uncertainty.too_few(n):
        return s + f" (n={n})"
    return s + (f" ± {se:.2g}" if uncertainty.usable(se, n) is not None else "")


def format_table(result: dict) -> str:
    a, b = result["a"]["label"], result["b"]["label"]
    lines = [f"A = {a}   B = {b}   (delta = B - A; 'within' = |delta| <= sqrt(seA² + seB²))", ""]
    header = f"{'task':<40} {'metric':<34} {'A':>22} {'B':>22} {'delta':>10}  within  change"
    lines += [header, "-" * len(header)]
    for r in result["rows"]:
        within = {True: "yes", False: "NO", None: "?"}[r["within_stderr"]]
        dirn = r["direction"] + (f"={r['ideal']:g}" if r["direction"] == "target" and r["ideal"] is not None else "") \
            if r["direction"] else "?"
        lines.append(f"{r['task']:<40} {r['metric']:<34} {_fmt(r['a'], r['a_stderr'], r.get('a_n')):>22} "
                     f"{_fmt(r['b'], r['b_stderr'], r.get('b_n')):>22} {_fmt(r['delta']):>10}  {within:<6}  "
                     f"{r['change'] or '-'} ({dirn})")
    unsure = [r for r in result["rows"] if r["within_stderr"] is None and r["delta"] is not None]
    if unsure:
        lines.append(f"within '?': cannot tell for {len(unsure)} metrics, e.g. {unsure[0]['metric']}: "
                     f"{unsure[0]['noise'] or 'no standard error'} (run more documents: raise or drop --limit)")
    if not result["rows"]:
        lines.append("(no metric was measured the same way for both)")
    for r in result["not_comparable"]:
        diff = ", ".join(f"{k}: {v[0]} vs {v[1]}" for k, v in r["differs"].items())
        lines.append(f"not comparable: {r['task']} {r['metric']} ({diff})")
    for side in ("only_a", "only_b"):
        if result[side]:
            lines.append(f"only {side[-1].upper()}: {len(result[side])} metrics "
                         f"({', '.join(sorted({r['task'] for r in result[side]}))})")
    return "\n".join(lines)
