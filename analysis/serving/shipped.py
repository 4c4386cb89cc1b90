"""Evaluated as shipped: the exported artifact, served by vLLM, is what the suites score.

- Perplexity: the same WikiText-2 windows as `analysis.perplexity`, each sent as token ids with
  `echo` and `logprobs=0`, so the engine returns every prompt token's log-probability; the value and
  its standard error are computed exactly as the lab computes them (`perplexity.summarize`).
- Safety suite: the same task YAMLs through lm-eval's API model `local-completions` pointed at the
  server on loopback (loglikelihood requests as token ids, echo + logprobs), through the lab's own
  runner and row builder, so the rows are like for like with the lab's.
- Instruct suite (IFEval, XSTest): the same task YAMLs through the same runner, whose generation requests
  go to the engine's chat endpoint, many in flight (`engine_lm.EngineLM`: greedy, the YAML's max_gen_toks,
  the lab's stop ids); scored by the same checkers (lm-eval's IFEval instruction checkers,
  `analysis.safety.xstest`). Each task's transcript set is stored content-addressed and its hash recorded
  on the rows, as for the lab's, so the side-by-side views, the report and the bundle's sample read it.
  Where the lab has answered the same prompts for the same ticket (same decoding settings), each task's
  rows carry `extra.lab_agreement`: the share of prompts whose engine answer equals the lab's exactly.

Rows are recorded under the ticket (subject = its id) with `extra.artifact` = the artifact's id, format,
quantization and engine: `export` then names that artifact as the evidence, and `verify` checks it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pruning.errors import TicketLabError

from . import client
from .artifact import artifact_id, model_dir

SUITES = ("ppl", "safety", "instruct")
INSTRUCT_MAX_MODEL_LEN = 2048  # IFEval's longest prompt in the chat template plus its 512 new tokens


def engine_perplexity(base_url: str, model: str, tokens, seq_len: int, limit: int | None) -> dict:
    """WikiText-2 perplexity from the engine's prompt log-probabilities, windows as in the lab."""
    import numpy as np

    from analysis.perplexity import TASK, WIKITEXT_TEST, windows

    spans = windows(len(tokens), seq_len, limit)
    nll = []
    for a, b in spans:
        ids = tokens[a:b].tolist()
        out = client.post(base_url, "/v1/completions", {"model": model, "prompt": ids, "max_tokens": 1, "echo": True,
                                                        "logprobs": 0, "temperature": 0.0})
        lps = out["choices"][0]["logprobs"]["token_logprobs"][1:len(ids)]  # tokens 1.., as the lab scores them
        if len(lps) != len(ids) - 1 or any(lp is None for lp in lps):
            raise TicketLabError(f"the server at {base_url} did not return prompt log-probabilities (echo + logprobs); "
                                 f"perplexity through the engine needs a vLLM OpenAI-compatible server.")
        nll.append(-float(sum(lps)))
    nll_a = np.array(nll)
    counts = np.array([b - a - 1 for a, b in spans], dtype=np.float64)
    n_tokens = float(counts.sum())
    mean = float(nll_a.sum() / n_tokens)
    n = len(spans)
    se = float(math.sqrt(n / (n - 1) * float(((nll_a - mean * counts) ** 2).sum())) / n_tokens) if n >= 2 else None
    ppl = math.exp(mean)
    return {"task": TASK, "perplexity": ppl, "stderr": ppl * se if se is not None else None, "nll": mean,
            "nll_stderr": se, "n_tokens": int(n_tokens), "n_windows": n,
            "n_windows_total": len(windows(len(tokens), seq_len)), "seq_len": seq_len, "file": WIKITEXT_TEST}


def _api_lm(base_url: str, model: str, tokenizer_dir: Path, max_length: int):
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    return LocalCompletionsAPI(base_url=f"{base_url.rstrip('/')}/v1/completions", model=model,
                               tokenizer=str(tokenizer_dir), tokenizer_backend="huggingface",
                               tokenized_requests=True, num_concurrent=1, max_retries=3, max_length=max_length,
                               timeout=600)


def evaluate_shipped(bundle: str | Path, *, suites: tuple[str, ...] = ("ppl", "safety"), tasks=None,
                     limit: int | None = None, seq_len: int = 512, base_url: str | None = None, ledger=None,
                     command: str = "ticketlab serve-eval", startup_timeout: float = 900.0, dtype: str | None = None,
                     chat: bool = True, concurrency: int | None = None, server=None, progress=None) -> dict:
    """Score the bundle's artifact through vLLM and record the rows, tied to the artifact, under its ticket.
    `server`: a `Server` already serving this bundle (its log is named if it dies); `base_url`: any server
    serving it; neither: one is started here and stopped on the way out. `chat=False`: the instruct suite
    with the plain prompt (no chat template). `concurrency`: generation requests in flight."""
    from analysis.evaluate import _row, _safety, tasks_of
    from analysis.ledger import Ledger
    from analysis.perplexity import load_tokens
    from pruning import settings
    from pruning.ticket import Ticket

    from .engine_lm import DEFAULT_CONCURRENCY
    from .env import engine_version
    from .server import Server, on_signals

    bad = [s for s in suites if s not in SUITES]
    if bad or not suites:
        raise TicketLabError(f"serve-eval scores {', '.join(SUITES)} (a comma list, or all); not {', '.join(bad)}.")
    if limit is not None and limit < 1:
        raise TicketLabError(f"--limit must be at least 1 (got {limit}).")
    bundle = Path(bundle).expanduser().resolve()
    directory = model_dir(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    ticket = Ticket.load(bundle / "ticket")
    shipped_id = artifact_id(directory)
    if (manifest.get("artifact") or {}).get("id") not in (None, shipped_id):
        raise TicketLabError(f"{bundle}: its tensors hash to artifact {shipped_id[:12]}, its manifest says "
                             f"{manifest['artifact']['id'][:12]}; run `ticketlab verify` on it first.")
    dtype = dtype or manifest.get("weights_dtype") or "float32"
    from transformers import AutoTokenizer

    from analysis.generation import encode

    tokenizer = AutoTokenizer.from_pretrained(directory)
    if "instruct" in suites:
        encode(tokenizer, ["?"], chat)  # the lab's check: a tokenizer without a chat template is refused here
    ledger = ledger or Ledger()
    tag = {"id": shipped_id, "format": manifest.get("bundle_format"),
           "quantization": ((manifest.get("artifact") or {}).get("quantization") or {}).get("scheme"),
           "bundle": str(bundle)}
    results: dict[str, dict] = {}
    out: dict = {"subject": ticket.id, "artifact": tag, "results": results}
    params = {"suites": list(suites), "tasks": tasks, "limit": limit, "artifact": tag, "chat_template": chat,
              "concurrency": concurrency}
    with on_signals(), ledger.run("eval", command, subject=ticket.id, dense_sha256=ticket.dense["weights_sha256"],
                                  params=params) as run:
        ours = None
        if server is None and base_url is None:
            length = max(seq_len + 8, INSTRUCT_MAX_MODEL_LEN if "instruct" in suites else 1024)
            ours = server = Server(directory, settings.state_dir() / "serve-logs" / f"{bundle.name}.eval.log",
                                   dtype=dtype, startup_timeout=startup_timeout, max_model_len=length,
                                   kv_cache_bytes="1G" if "instruct" in suites else "512M")
            server.__enter__()
        try:
            url = base_url or server.base_url
            model = client.served_model(url)
            tag["engine"] = f"vllm {engine_version()}" if server is not None and base_url is None else "vllm (remote)"
            if ours is not None:
                out["server"] = {"startup_s": ours.startup_s, "log": str(ours.log)}
            if "ppl" in suites:
                r = engine_perplexity(url, model, load_tokens(tokenizer), seq_len, limit)
                common = dict(n=r["n_windows"], limit=limit, batch_size="1", dtype=dtype,
                              padding="none (equal windows; last alone)",
                              setup={"seq_len": seq_len, "file": r["file"]}, n_tokens=r["n_tokens"],
                              n_windows_total=r["n_windows_total"], artifact=tag)
                run.metrics += [_row("ppl", r["task"], "perplexity", r["perplexity"], r["stderr"], **common),
                                _row("ppl", r["task"], "nll", r["nll"], r["nll_stderr"], **common)]
                results[r["task"]] = {"perplexity,none": r["perplexity"], "perplexity_stderr,none": r["stderr"]}
            view = _EngineView(tokenizer, dtype)
            if "safety" in suites and tasks_of("safety", tasks) != []:
                lm = _api_lm(url, model, directory, max_length=_window(url, server, 2048))
                res, rows, _ = _safety(view, None, tasks_of("safety", tasks), limit, 1, None, False, None, run, lm=lm)
                for row in rows:
                    row.extra = {**(row.extra or {}), "artifact": tag}
                run.metrics += rows
                results.update(res)
            if "instruct" in suites and tasks_of("instruct", tasks) != []:
                out["generation"] = _instruct(run, ledger, ticket, url, model, directory, tokenizer, view, tag,
                                              tasks_of("instruct", tasks), limit, chat,
                                              concurrency or DEFAULT_CONCURRENCY, _window(url, server, 2048),
                                              progress, server.gone if server is not None else None)
                results.update(out["generation"].pop("results"))
        except TicketLabError:
            why = server.gone() if server is not None else None  # the engine died: its own reason and log
            if why:
                raise TicketLabError(why) from None
            raise
        finally:
            if ours is not None:
                ours.stop()
                out.setdefault("server", {})["peak_rss_bytes"] = ours.peak_rss_bytes
    return {"run_id": run.id, **out}


def _window(url: str, server, default: int) -> int:
    """The engine's context length: what the server reports, else the one it was started with."""
    if server is not None:
        return server.max_model_len
    return client.max_model_len(url) or default


def _instruct(run, ledger, ticket, url: str, model: str, directory: Path, tokenizer, view, tag: dict, tasks,
              limit, chat: bool, concurrency: int, window: int, progress, on_failure) -> dict:
    """The instruct suite through the engine: rows (tied to the artifact), transcripts, and the agreement
    of the engine's answers with the lab's for the same prompts."""
    from analysis.evaluate import _safety
    from analysis.transcripts import load

    from .engine_lm import EngineLM

    lm = EngineLM(url, model, directory, tokenizer, chat=chat, concurrency=concurrency, max_length=window,
                  engine=tag["engine"], dtype=view.dtype, progress=progress, on_failure=on_failure)
    res, rows, cfg = _safety(view, None, tasks, limit, concurrency, None, False, None, run, suite="instruct",
                             chat=chat, lm=lm)
    agreement = {}
    for task, sha in (cfg.get("transcripts") or {}).items():
        agreement[task] = lab_agreement(ledger, ticket, task, load(sha))
    for row in rows:
        row.padding = "none (vLLM: continuous batching, paged KV cache)"
        row.extra = {**(row.extra or {}), "artifact": tag, "concurrency": concurrency,
                     **({"lab_agreement": agreement[row.task]} if agreement.get(row.task) else {})}
    run.metrics += rows
    gen = cfg.get("generation") or {}
    seconds = gen.get("seconds") or 0.0
    return {"results": res, "prompts": gen.get("prompts"), "generated_tokens": gen.get("generated_tokens"),
            "seconds": seconds, "tokens_per_s": gen["generated_tokens"] / seconds if seconds else None,
            "concurrency": concurrency, "prompt_template_mismatches": lm.prompt_mismatches,
            "transcripts": cfg.get("transcripts") or {}, "lab_agreement": agreement}


def lab_agreement(ledger, ticket, task: str, engine_set: dict) -> dict | None:
    """How often the engine's answer equals the lab's, over the prompts both answered with the same decoding
    settings (max new tokens, chat template): the newest lab transcript set of this ticket and task."""
    from analysis.transcripts import load, recorded

    want = {k: engine_set["decoding"].get(k) for k in ("max_new_tokens", "chat_template")}
    for r in recorded(ledger, ticket.id, ticket.dense["weights_sha256"]):
        if r["task"] != task or {k: r["setup"].get(k) for k in want} != want:
            continue
        try:
            lab = load(r["sha256"])
        except TicketLabError:
            continue  # measured on another machine: its texts are not here
        if lab.get("decoding", {}).get("engine"):
            continue  # an engine's own set, not the lab's
        theirs = {x["doc_id"]: x for x in lab["records"]}
        both = [(x, theirs[x["doc_id"]]) for x in engine_set["records"]
                if x["doc_id"] in theirs and theirs[x["doc_id"]].get("prompt") == x.get("prompt")]
        if not both:
            continue
        same = sum(a.get("completion") == b.get("completion") for a, b in both)
        outcome = sum(a.get("outcome") == b.get("outcome") for a, b in both)
        return {"lab_transcripts": r["sha256"], "lab_run": r["run_id"], "prompts": len(both),
                "exact_match_rate": same / len(both), "same_outcome_rate": outcome / len(both)}
    return None


class _EngineView:
    """What the lab's safety runner reads from a loaded model when an API model does the scoring."""

    model = None

    def __init__(self, tokenizer, dtype: str):
        self.tokenizer, self.dtype = tokenizer, dtype
