"""`evaluate`: run evaluation suites on the dense model or a ticket and record them in the ledger.

One call is one ledger run (`kind="eval"`): its metric rows, lm-eval samples (compact) and attribution
heads are written in one transaction when every suite has finished, or the run is marked failed with
nothing written. Every metric row carries its direction (analysis.metric_meta) and the setup that
changes scores (limit, batch size, dtype, padding/scoring, plus `extra["setup"]`), so `compare` only
puts like next to like.

Suites: `ppl` (WikiText-2 test perplexity), `safety` (lm-eval suite, analysis.safety), `instruct`
(generated answers: IFEval and XSTest through lm-eval and analysis.generation; each task's transcript
set is stored content-addressed, analysis.transcripts, and tied to the run by its metric rows),
`attribution` (captum head attributions on CrowS-Pairs, analysis.attribution), `latency`
(prefill/decode tokens/s, analysis.latency), `all` (every one, in that order).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from pruning.errors import TicketLabError
from pruning.ticket import Ticket

from . import metric_meta
from .ledger import Ledger, MetricRow
from .ledger.read_model import ticket_recorded
from .perplexity import DEFAULT_BATCH_SIZE as PPL_BATCH_SIZE
from .perplexity import DEFAULT_SEQ_LEN, perplexity
from .safety import BBQ_PER_CATEGORY, run_safety
from .safety import DEFAULT_BATCH_SIZE as SAFETY_BATCH_SIZE

GEN_BATCH_SIZE = 32  # prompts decoded together (instruct suite); see benchmarks/generation.py

SUITES = tuple(metric_meta.SUITES)
ATTRIBUTION_PAIRS = 16  # CrowS-Pairs pairs attributed when no --limit is given

Progress = Callable[[int, int, str], None]


def suites_for(suite: str) -> list[str]:
    if suite == "all":
        return list(SUITES)
    names = [s.strip() for s in suite.split(",") if s.strip()]
    bad = [s for s in names if s not in SUITES]
    if bad or not names:
        raise TicketLabError(f"unknown suite {suite!r}: use {', '.join(SUITES)} or all.")
    return names


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _row(suite: str, task: str, metric: str, value, stderr=None, n=None, limit=None, batch_size=None,
         dtype=None, padding=None, setup: dict | None = None, **extra) -> MetricRow:
    direction, ideal = metric_meta.direction(task, metric)
    return MetricRow(suite=suite, task=task, metric=metric, value=_clean(value), stderr=_clean(stderr),
                     direction=direction, ideal=ideal, n_samples=n, limit=limit,
                     batch_size=None if batch_size is None else str(batch_size), dtype=dtype, padding=padding,
                     extra={"setup": setup or {}, **extra})


def _ppl(loaded, ticket, limit, batch_size, seq_len, progress) -> tuple[dict, list[MetricRow], dict]:
    r = perplexity(loaded, ticket, seq_len=seq_len, limit=limit, batch_size=batch_size or PPL_BATCH_SIZE,
                   progress=progress)
    common = dict(n=r["n_windows"], limit=limit, batch_size=r["batch_size"], dtype=r["dtype"],
                  padding=r["padding"], setup={"seq_len": seq_len, "file": r["file"]},
                  n_tokens=r["n_tokens"], n_windows_total=r["n_windows_total"])
    rows = [_row("ppl", r["task"], "perplexity", r["perplexity"], r["stderr"], **common),
            _row("ppl", r["task"], "nll", r["nll"], r["nll_stderr"], **common)]
    results = {r["task"]: {"perplexity,none": r["perplexity"], "perplexity_stderr,none": r["stderr"],
                           "nll,none": r["nll"], "nll_stderr,none": r["nll_stderr"]}}
    config = {k: r[k] for k in ("seq_len", "limit", "batch_size", "dtype", "padding", "n_tokens", "n_windows",
                                "n_windows_total", "file")}
    return results, rows, config


def tasks_of(suite: str, tasks: list[str] | str | None) -> list[str] | None:
    """The `--tasks` that belong to `suite` (None: every task of the suite)."""
    if tasks is None:
        return None
    from .safety import benchmark_registry as registry

    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    info = {n: registry.task(n) for n in names}
    return [n for n in names if (info[n].suite if info[n] else suite) == suite]  # unknown: each suite names it


def _safety(loaded, ticket, tasks, limit, batch_size, bbq_per_category, hub, progress, run,
            suite: str = "safety", chat: bool = True, lm=None) -> tuple[dict, list, dict]:
    """`lm`: an lm-eval model scoring instead of the in-memory one (a served artifact, analysis.serving)."""
    if suite == "instruct":
        res = run_safety(loaded, ticket, tasks=tasks, limit=limit, suite="instruct", chat=chat,
                         gen_batch_size=batch_size or GEN_BATCH_SIZE, progress=progress, lm=lm)
    else:
        res = run_safety(loaded, ticket, tasks=tasks, limit=limit, batch_size=batch_size or SAFETY_BATCH_SIZE,
                         bbq_per_category=bbq_per_category, hub=hub, progress=progress, lm=lm)
    cfg = res.config
    sets = _transcripts(res) if suite == "instruct" else {}
    rows = []
    for task, values in res.results.items():
        # run settings the task's YAML names as changing its scores (BBQ: the per-category cap)
        setup = {"source": cfg["source"], **cfg.get("task_setup", {}).get(task, {})}
        extra = {}
        if task in sets:  # generation: the decoding settings change scores; the transcript set is the evidence
            setup.update({k: sets[task]["decoding"].get(k) for k in ("max_new_tokens", "chat_template")})
            extra["transcripts"] = sets[task]["sha256"]
        for key, value in values.items():
            metric, _, filt = key.partition(",")
            if metric.endswith("_stderr"):
                continue
            name = metric if filt in ("", "none") else key
            stderr = values.get(f"{metric}_stderr,{filt}")
            counted = res.n_docs.get(task, {}).get(metric)  # a score resting on part of the documents
            rows.append(_row(suite, task, name, value, stderr, n=res.n_samples.get(task), limit=limit,
                             batch_size=cfg["batch_size"] if not sets else cfg["generation"]["batch_size"],
                             dtype=cfg["dtype"], padding=cfg["padding"] if not sets else "left (generation)",
                             setup=setup, lm_eval=cfg["lm_eval"], version=cfg["versions"].get(task), **extra,
                             **({"n_docs": counted} if counted is not None else {})))
    if run is not None:
        for task, samples in res.samples.items():
            outcome = {r["doc_id"]: r["outcome"] for r in sets.get(task, {}).get("records", [])}
            # the ledger keeps scores and verdicts; the texts are in the transcript set
            run.samples += [(task, s["doc_id"], {**{k: v for k, v in s.items() if k not in _TEXT},
                                                 **({"outcome": outcome[s["doc_id"]]} if s["doc_id"] in outcome else {})})
                            for s in samples]
    if sets:
        cfg["transcripts"] = {t: v["sha256"] for t, v in sets.items()}
    return res.results, rows, cfg


_TEXT = ("prompt", "completion", "max_gen_toks")


def _transcripts(res) -> dict[str, dict]:
    """Build and store each generation task's transcript set; task -> {sha256, decoding, records}."""
    from . import transcripts
    from .safety import benchmark_registry as registry

    gens = res.config.get("generation") or {}
    out = {}
    for task, samples in res.samples.items():
        info = registry.task(task)
        if not samples or "completion" not in samples[0]:
            continue
        n = samples[0].get("max_gen_toks")
        decoding = next((g for g in gens.get("settings", []) if g.get("max_new_tokens") == n), {})
        doc = transcripts.build(task, samples, info.transcript_hook if info else None, decoding)
        out[task] = {"sha256": transcripts.store(doc), "decoding": decoding, "records": doc["records"]}
    return out


def _attribution(loaded, ticket, limit, progress, run, subject) -> tuple[dict, list, dict]:
    from . import attribution
    from .ledger.lab_records import attribution_statements

    n_pairs = limit or ATTRIBUTION_PAIRS
    r = attribution.head_attributions(loaded, ticket, n_pairs=n_pairs, progress=progress)
    if run is not None:
        run.extra_sql += attribution_statements(run.id, subject, attribution.attribution_rows(r))
    comp = r.completeness
    obj = list(r.objective)
    se = statistics.stdev(obj) / math.sqrt(len(obj)) if len(obj) > 1 else None
    setup = {"steps": r.steps, "seed": r.seed, "baseline": r.baseline, "n_pairs": r.n_pairs}
    common = dict(n=r.n_pairs, limit=limit, dtype=str(loaded.dtype), setup=setup)
    rows = [_row("attribution", "attribution", "objective_mean", statistics.fmean(obj), se, **common),
            _row("attribution", "attribution", "relative_max_abs_delta", comp["relative_max_abs_delta"], **common)]
    layer = r.layer_totals.tolist()
    results = {"attribution": {"objective_mean,none": rows[0].value, "objective_mean_stderr,none": se,
                               "relative_max_abs_delta,none": comp["relative_max_abs_delta"]}}
    return results, rows, {"method": r.method, **setup, "completeness": comp, "layer_totals": layer}


def _latency(loaded, ticket, batch_size) -> tuple[dict, list, dict]:
    from . import latency

    table = latency.latency_table(loaded, ticket, batch_size=batch_size or 1)
    mine = table[-1]  # the ticket's row when a ticket is given, else dense
    dense = table[0]
    keys = ("prefill_tokens_per_s", "decode_tokens_per_s", "generate_tokens_per_s", "time_to_first_token_s",
            "prefill_ratio", "decode_ratio", "generate_ratio")
    setup = {k: mine.get(k) for k in ("prompt_len", "gen_tokens", "prompt_sha256", "device", "repeats")}
    setup["host"] = (mine.get("machine") or {}).get("host")
    common = dict(n=mine.get("repeats"), batch_size=mine.get("batch_size"), dtype=mine.get("dtype"), setup=setup,
                  dense={k: dense.get(k) for k in keys[:4]})
    rows = [_row("latency", "latency", k, mine.get(k), **common) for k in keys if mine.get(k) is not None]
    results = {"latency": {f"{k},none": mine.get(k) for k in keys}}
    return results, rows, {"rows": [{k: v for k, v in row.items() if k != "machine"} for row in table],
                           "machine": mine.get("machine")}


def evaluate(loaded, ticket: Ticket | None, suite: str = "all", tasks: list[str] | str | None = None,
             limit: int | None = None, ledger: Ledger | None = None, command: str = "ticketlab eval",
             progress: Progress | None = None, batch_size: int | None = None, seq_len: int = DEFAULT_SEQ_LEN,
             bbq_per_category: int | None = BBQ_PER_CATEGORY, hub: bool = False, record: bool = True,
             chat: bool = True) -> dict:
    """Run `suite` (ppl, safety, attribution, latency, a comma list, or all) and record it as one ledger run.

    `limit`: ppl windows (spread over the test set), safety documents per task (lm-eval's first N),
    attribution pairs. `batch_size`: windows (ppl), packed rows (safety), prompts (instruct, latency);
    None = each suite's default. `chat=False`: generation with the plain prompt instead of the model's
    chat template. `record=False` runs without touching the ledger."""
    names = suites_for(suite)
    if limit is not None and limit < 1:
        raise TicketLabError(f"--limit must be at least 1 (got {limit}).")
    subject = ticket.id if ticket is not None else "dense"
    params = {"suite": suite, "suites": names, "tasks": tasks, "limit": limit, "batch_size": batch_size,
              "seq_len": seq_len, "dtype": str(loaded.dtype), "device": str(loaded.device), "model": loaded.spec,
              "bbq_per_category": bbq_per_category, "hub": hub, "chat_template": chat}
    partials: list[str] = []

    def step(name: str) -> Progress | None:
        if progress is None:
            return None
        return lambda done, total, what="": progress(done, total, f"{name}: {what}" if what else name)

    def body(run) -> dict:
        results: dict[str, dict] = {}
        configs: dict[str, dict] = {}
        for name in names:
            if name == "ppl":
                res, rows, cfg = _ppl(loaded, ticket, limit, batch_size, seq_len, step("ppl"))
            elif name in ("safety", "instruct"):
                mine = tasks_of(name, tasks)
                if mine == [] and any(tasks_of(other, tasks) for other in names if other != name):
                    continue  # --tasks names only another suite's tasks
                res, rows, cfg = _safety(loaded, ticket, mine, limit, batch_size,
                                         bbq_per_category, hub, step(name), run, suite=name, chat=chat)
                partials.extend(cfg.pop("partials", []))
            elif name == "attribution":
                res, rows, cfg = _attribution(loaded, ticket, limit, step("attribution"), run, subject)
            else:
                res, rows, cfg = _latency(loaded, ticket, batch_size)
            results.update(res)
            configs[name] = cfg
            if run is not None:
                run.metrics += rows
        return {"subject": subject, "dense_sha256": loaded.weights_sha256, "model": loaded.spec, "suite": suite,
                "results": results, "config": configs}

    if not record:
        out = body(None)
        _remove(partials)
        return {"run_id": None, **out}
    ledger = ledger or Ledger()
    ledger.record_model(loaded)
    with ledger.run("eval", command, subject=subject, dense_sha256=loaded.weights_sha256, params=params) as run:
        if ticket is not None and not ticket_recorded(ledger, ticket.id):
            from .survival import survival_tables

            run.extra_sql += ledger.ticket_rows(ticket, survival_tables(ticket.masks, loaded.adapter))
        out = body(run)
    _remove(partials)  # recorded: the generation checkpoints have served (kept when the run failed: resume)
    return {"run_id": run.id, **out}


def _remove(paths: list[str]) -> None:
    from pathlib import Path

    for p in paths:
        Path(p).unlink(missing_ok=True)
