"""Transcripts as evidence: what the model said to each prompt of a generation task, stored
content-addressed and tied to the run and the subject (dense or a ticket id) through the ledger.

A transcript set is one task's prompts, completions, verdicts (outcome and the checker's reason, from
the task YAML's `transcript_hook`) and decoding settings, as canonical JSON. Its sha256 is its address:
`<state>/transcripts/<sha256>.json`, written once through `pruning.durable` (a rerun that says the same
thing writes nothing new). The ledger ties it to the run: every metric row of the task carries
`extra.transcripts = <sha256>`, written in the run's one transaction, so a set is only ever *recorded*
once it is complete, and a set whose run failed is an unreferenced file, never evidence.

`pairs(base, cand)` puts two subjects' answers to the same prompts side by side and marks the prompts
whose outcome changed (dense refused, ticket complied; dense followed the instructions, ticket did not).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pruning import durable, settings
from pruning.errors import TicketLabError

from . import like_for_like

FORMAT = 1
SAMPLE_SIZE = 5  # changed transcripts carried by the report and the export bundle


def transcripts_dir() -> Path:
    return settings.state_dir() / "transcripts"


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _hook(path: str | None):
    if not path:
        return lambda record: ("", "")
    from .safety.benchmark_registry import hook

    return hook(path, "transcript_hook")


def build(task: str, samples: list[dict], hook: str | None, decoding: dict) -> dict:
    """The transcript set of one task from the runner's kept samples (each with prompt and completion)."""
    verdict = _hook(hook)
    records = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        outcome, reason = verdict(s)
        records.append({**{k: v for k, v in s.items() if k != "max_gen_toks"}, "outcome": outcome, "reason": reason})
    return {"format": FORMAT, "task": task, "decoding": decoding, "records": records}


def store(doc: dict) -> str:
    data = canonical(doc)
    sha = hashlib.sha256(data).hexdigest()
    path = transcripts_dir() / f"{sha}.json"
    if not (path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha):
        path.parent.mkdir(parents=True, exist_ok=True)
        durable.atomic_write_bytes(path, data)  # a damaged copy is replaced, a good one kept
    return sha


def load(sha: str) -> dict:
    path = transcripts_dir() / f"{sha}.json"
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TicketLabError(f"transcript set {sha[:12]} is not in {transcripts_dir()} ({e.strerror}); it is kept "
                             f"in the state folder of the machine that ran the evaluation: rerun "
                             f"`ticketlab eval SUBJECT --suite instruct` here.") from e
    if hashlib.sha256(data).hexdigest() != sha:
        raise TicketLabError(f"{path} does not match its hash (damaged or edited); rerun the evaluation to "
                             f"write it again.")
    return json.loads(data)


def recorded(ledger, subject: str, dense_sha256: str | None = None) -> list[dict]:
    """The transcript sets the ledger ties to `subject`: newest first, one row per (run, task), with the
    run's limit (None = full) and its whole setup (analysis.like_for_like: limit, dtype, decoding...)."""
    from .ledger.read_model import instruct_metrics

    seen, out = set(), []
    rows = instruct_metrics(subject, dense_sha256).rows(ledger)
    for row in sorted(rows, key=lambda r: str(r.started_at), reverse=True):
        extra = json.loads(row.extra or "{}")
        sha = extra.get("transcripts")
        if not sha or (row.run_id, row.task) in seen:
            continue
        seen.add((row.run_id, row.task))
        setup = like_for_like.setup_of({"limit": row.limit, "batch_size": row.batch_size, "dtype": row.dtype,
                                        "padding": row.padding, "extra": extra})
        out.append({"run_id": row.run_id, "task": row.task, "limit": row.limit, "sha256": sha,
                    "setup": setup, "started_at": str(row.started_at)})
    return out


def latest_pair(ledger, base: str, cand: str, task: str, dense_sha256: str | None = None
                ) -> tuple[dict, dict] | None:
    """The newest like-for-like (analysis.like_for_like: the same limit, dtype and decoding setup) transcript sets
    of two subjects for a task: full runs first, else the newest quick runs of the same limit."""
    mine = [r for r in recorded(ledger, cand, dense_sha256) if r["task"] == task]
    theirs = [r for r in recorded(ledger, base, dense_sha256) if r["task"] == task]
    for c in sorted(mine, key=lambda r: r["limit"] is not None):
        for b in theirs:
            if like_for_like.same(b, c):  # the one rule compare and review apply
                return b, c
    return None


def pairs(base: dict, cand: dict) -> list[dict]:
    """The two sets' answers to the prompts both have, side by side; `changed`: the outcome differs."""
    theirs = {r["doc_id"]: r for r in base["records"]}
    out = []
    for c in cand["records"]:
        b = theirs.get(c["doc_id"])
        if b is None:
            continue
        out.append({"doc_id": c["doc_id"], "prompt": c.get("prompt", ""), "base": b, "cand": c,
                    "changed": b.get("outcome") != c.get("outcome")})
    return out


def changed_sample(base: dict, cand: dict, n: int = SAMPLE_SIZE) -> list[dict]:
    """The first `n` prompts (by document order) whose outcome changed, compactly, for reports."""
    return [{"doc_id": p["doc_id"], "prompt": p["prompt"],
             "baseline": {k: p["base"].get(k) for k in ("completion", "outcome", "reason")},
             "ticket": {k: p["cand"].get(k) for k in ("completion", "outcome", "reason")}}
            for p in pairs(base, cand) if p["changed"]][:n]


def evidence(ledger, ticket_id: str, baseline: str = "dense", dense_sha256: str | None = None,
             n: int = SAMPLE_SIZE) -> dict[str, dict]:
    """What the report and the export bundle carry per generation task: the ticket's newest transcript
    set's hash (the whole set), and against the baseline's like-for-like set, how many prompts changed
    outcome and a sample of them. A set missing from this machine's state folder is named, not fatal."""
    out: dict[str, dict] = {}
    for task in sorted({r["task"] for r in recorded(ledger, ticket_id, dense_sha256)}):
        newest = next(r for r in recorded(ledger, ticket_id, dense_sha256) if r["task"] == task)
        entry = {"ticket_sha256": newest["sha256"], "limit": newest["limit"], "baseline": baseline,
                 "baseline_sha256": None, "prompts": None, "changed": None, "sample": []}
        pair = latest_pair(ledger, baseline, ticket_id, task, dense_sha256)
        if pair is not None:
            b, c = pair
            entry.update(ticket_sha256=c["sha256"], limit=c["limit"], baseline_sha256=b["sha256"])
            try:
                base_doc, cand_doc = load(b["sha256"]), load(c["sha256"])
            except TicketLabError as e:
                entry["note"] = str(e)
            else:
                both = pairs(base_doc, cand_doc)
                entry.update(prompts=len(both), changed=sum(p["changed"] for p in both),
                             sample=changed_sample(base_doc, cand_doc, n))
        out[task] = entry
    return out
