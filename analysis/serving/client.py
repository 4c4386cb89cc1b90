"""Requests to an OpenAI-compatible vLLM server: greedy completions and throughput at a concurrency.

Standard library HTTP only (urllib), so the check runs wherever the project runs; a remote server is
just another base URL.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from pruning.errors import TicketLabError


def post(base_url: str, path: str, body: dict, timeout: float = 600.0) -> dict:
    req = urllib.request.Request(f"{base_url.rstrip('/')}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:300]
        raise TicketLabError(f"the server at {base_url} refused {path} (HTTP {e.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        raise TicketLabError(f"no answer from {base_url}{path} ({e}); is the server running?") from None


def served_model(base_url: str) -> str:
    """The model name the server answers to (the first one it lists)."""
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/v1/models", timeout=30) as r:
            data = json.loads(r.read())["data"]
    except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
        raise TicketLabError(f"{base_url} does not answer /v1/models like an OpenAI-compatible server ({e}); "
                             f"give the base URL of a running vLLM server (e.g. http://host:8000).") from None
    if not data:
        raise TicketLabError(f"{base_url} serves no model.")
    return data[0]["id"]


def max_model_len(base_url: str) -> int | None:
    """The context length the server reports for its model (vLLM lists it in /v1/models), else None."""
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/v1/models", timeout=30) as r:
            value = (json.loads(r.read())["data"] or [{}])[0].get("max_model_len")
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return None
    return int(value) if value else None


def complete(base_url: str, model: str, prompt: str, max_tokens: int, ignore_eos: bool = False) -> dict:
    """One greedy completion: {'text', 'token_ids' (None when the server does not return them), 'tokens'}."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
            "return_token_ids": True}
    if ignore_eos:
        body["ignore_eos"] = True
    out = post(base_url, "/v1/completions", body)
    choice = out["choices"][0]
    return {"text": choice["text"], "token_ids": choice.get("token_ids"),
            "tokens": int((out.get("usage") or {}).get("completion_tokens") or 0)}


def greedy(base_url: str, model: str, prompts: list[str], max_tokens: int) -> list[dict]:
    return [complete(base_url, model, p, max_tokens) for p in prompts]


def throughput(base_url: str, model: str, prompts: list[str], concurrency: int, max_tokens: int,
               requests: int | None = None) -> dict:
    """`requests` completions of exactly `max_tokens` tokens each (EOS ignored, so every subject generates
    the same amount), `concurrency` in flight at once: output tokens/s and per-request latency."""
    n = requests or max(concurrency * 2, 4)
    jobs = [prompts[i % len(prompts)] for i in range(n)]

    def one(prompt: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        out = complete(base_url, model, prompt, max_tokens, ignore_eos=True)
        return time.perf_counter() - t0, out["tokens"]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, jobs))
    wall = time.perf_counter() - t0
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {"concurrency": concurrency, "requests": n, "max_tokens": max_tokens, "tokens": tokens,
            "wall_s": wall, "tokens_per_s": tokens / wall if wall > 0 else None,
            "latency_mean_s": statistics.fmean(latencies), "latency_p50_s": latencies[len(latencies) // 2],
            "latency_max_s": latencies[-1]}
