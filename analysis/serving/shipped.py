"""Evaluated as shipped: the exported artifact, served by vLLM, is what the suites score.

- Perplexity: the same WikiText-2 windows as `analysis.perplexity`, each sent as token ids with
  `echo` and `logprobs=0`, so the engine returns every prompt token's log-probability; the value and
  its standard error are computed exactly as the lab computes them (`perplexity.summarize`).
- Safety suite: the same task YAMLs through lm-eval's API model `local-completions` pointed at the
  server on loopback (loglikelihood requests as token ids, echo + logprobs), through the lab's own
  runner and row builder, so the rows are like for like with the lab's.

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

SUITES = ("ppl", "safety")


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


def evaluate_shipped(bundle: str | Path, *, suites: tuple[str, ...] = SUITES, tasks=None, limit: int | None = None,
                     seq_len: int = 512, base_url: str | None = None, ledger=None, command: str = "ticketlab serve-eval",
                     startup_timeout: float = 900.0, dtype: str | None = None) -> dict:
    """Score the bundle's artifact through vLLM and record the rows, tied to the artifact, under its ticket."""
    from analysis.evaluate import _row, _safety
    from analysis.ledger import Ledger
    from analysis.perplexity import load_tokens
    from pruning import settings
    from pruning.ticket import Ticket

    from .env import engine_version
    from .server import Server, on_signals

    bad = [s for s in suites if s not in SUITES]
    if bad:
        raise TicketLabError(f"serve-eval scores {', '.join(SUITES)}; not {', '.join(bad)}.")
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

    tokenizer = AutoTokenizer.from_pretrained(directory)
    ledger = ledger or Ledger()
    tag = {"id": shipped_id, "format": manifest.get("bundle_format"),
           "quantization": ((manifest.get("artifact") or {}).get("quantization") or {}).get("scheme"),
           "bundle": str(bundle)}
    results: dict[str, dict] = {}
    with on_signals(), ledger.run("eval", command, subject=ticket.id, dense_sha256=ticket.dense["weights_sha256"],
                                  params={"suites": list(suites), "limit": limit, "artifact": tag}) as run:
        server = None
        if base_url is None:
            server = Server(directory, settings.state_dir() / "serve-logs" / f"{bundle.name}.eval.log", dtype=dtype,
                            startup_timeout=startup_timeout, max_model_len=max(seq_len + 8, 1024))
            server.__enter__()
        try:
            url = base_url or server.base_url
            model = client.served_model(url)
            tag["engine"] = f"vllm {engine_version()}" if server else "vllm (remote)"
            if "ppl" in suites:
                r = engine_perplexity(url, model, load_tokens(tokenizer), seq_len, limit)
                common = dict(n=r["n_windows"], limit=limit, batch_size="1", dtype=dtype,
                              padding="none (equal windows; last alone)",
                              setup={"seq_len": seq_len, "file": r["file"]}, n_tokens=r["n_tokens"],
                              n_windows_total=r["n_windows_total"], artifact=tag)
                run.metrics += [_row("ppl", r["task"], "perplexity", r["perplexity"], r["stderr"], **common),
                                _row("ppl", r["task"], "nll", r["nll"], r["nll_stderr"], **common)]
                results[r["task"]] = {"perplexity,none": r["perplexity"], "perplexity_stderr,none": r["stderr"]}
            if "safety" in suites:
                lm = _api_lm(url, model, directory, max_length=server.max_model_len if server else 2048)
                view = _EngineView(tokenizer, dtype)
                res, rows, _ = _safety(view, None, tasks, limit, 1, None, False, None, run, lm=lm)
                for row in rows:
                    row.extra = {**(row.extra or {}), "artifact": tag}
                run.metrics += rows
                results.update(res)
        finally:
            if server is not None:
                server.stop()
    return {"run_id": run.id, "subject": ticket.id, "artifact": tag, "results": results}


class _EngineView:
    """What the lab's safety runner reads from a loaded model when an API model does the scoring."""

    model = None

    def __init__(self, tokenizer, dtype: str):
        self.tokenizer, self.dtype = tokenizer, dtype
