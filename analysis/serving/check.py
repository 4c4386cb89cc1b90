"""The deployment check: does a bundle load and answer in vLLM, does it answer as the lab does, and how
fast is it against its dense model in the same engine, measured interleaved in the same run.

Outputs: the same fixed prompts, greedy, against the lab's own greedy generation (transformers, the mask
applied to the dense model). Unquantized: the exact-match rate is the claim. Quantized: the agreement
rate (tokens equal position by position, and whole outputs equal) says how far quantization moved it.
Speed: throughput and latency at 1 and 8 concurrent requests of a fixed number of tokens (EOS ignored,
so both generate the same amount), ticket and dense alternating round by round (the order flips each
round), because machine load swings throughput several-fold and only side-by-side ratios mean anything.
"""

from __future__ import annotations

import json
import statistics
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from pruning.errors import TicketLabError
from pruning.serving_format import quantization_config

from . import client
from .artifact import model_dir
from .server import Server, on_signals, port_free

PROMPTS = (
    "The capital of France is",
    "Here is a short poem about the sea:",
    "To make a cup of tea, first",
    "The three primary colours are",
    "Question: What is 12 plus 7?\nAnswer:",
    "Photosynthesis is the process by which",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
)
CONCURRENCY = (1, 8)


def lab_outputs(loaded, ticket, prompts, max_tokens: int) -> list[list[int]]:
    """Greedy token ids the lab's model generates (the ticket applied in the lab's own dtype)."""
    import torch

    from pruning.ticket import applied

    out = []
    ctx = applied(loaded, ticket) if ticket is not None else _nothing()
    with torch.no_grad(), ctx:
        for p in prompts:
            ids = loaded.tokenizer(p, return_tensors="pt").input_ids.to(loaded.device)
            gen = loaded.model.generate(ids, max_new_tokens=max_tokens, do_sample=False,
                                        pad_token_id=loaded.tokenizer.pad_token_id or loaded.tokenizer.eos_token_id)
            out.append(gen[0, ids.shape[1]:].tolist())
    return out


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def agreement(lab: list[list[int]], served: list[list[int]]) -> dict:
    """Whole outputs equal, and tokens equal position by position (over the longer of the two)."""
    exact = sum(a == b for a, b in zip(lab, served, strict=True))
    same = sum(sum(x == y for x, y in zip(a, b, strict=False)) for a, b in zip(lab, served, strict=True))
    total = sum(max(len(a), len(b)) for a, b in zip(lab, served, strict=True))
    return {"prompts": len(lab), "exact_match_rate": exact / len(lab), "token_agreement": same / total if total else 1.0}


def _served_ids(base_url: str, model: str, prompts, max_tokens: int, tokenizer) -> list[list[int]]:
    outs = client.greedy(base_url, model, list(prompts), max_tokens)
    # token ids when the server returns them (vLLM does); else the text, tokenized by the lab's tokenizer
    return [o["token_ids"] if o["token_ids"] is not None else tokenizer(o["text"], add_special_tokens=False).input_ids
            for o in outs]


def _speed(targets: dict[str, tuple[str, str]], rounds: int, max_tokens: int) -> dict:
    """Interleaved: each round measures every subject at every concurrency, the order flipping per round."""
    names = list(targets)
    runs: dict[str, dict[int, list[dict]]] = {n: {c: [] for c in CONCURRENCY} for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            url, model = targets[name]
            for c in CONCURRENCY:
                runs[name][c].append(client.throughput(url, model, list(PROMPTS), c, max_tokens))
    out = {}
    for c in CONCURRENCY:
        row = {}
        for name in names:
            ms = runs[name][c]
            row[name] = {"tokens_per_s": statistics.median(m["tokens_per_s"] for m in ms),
                         "latency_p50_s": statistics.median(m["latency_p50_s"] for m in ms),
                         "latency_mean_s": statistics.median(m["latency_mean_s"] for m in ms), "rounds": len(ms)}
        if "dense" in row and row["dense"]["tokens_per_s"]:
            row["ratio_vs_dense"] = row["ticket"]["tokens_per_s"] / row["dense"]["tokens_per_s"]
        out[str(c)] = row
    return out


def serve_check(bundle: str | Path, *, base_url: str | None = None, dense_base_url: str | None = None,
                with_dense: bool = True, port: int | None = None, max_tokens: int = 32, rounds: int = 2,
                startup_timeout: float = 900.0, log_dir: str | Path | None = None, loaded=None,
                dtype: str | None = None) -> dict:
    """Run the check; everything it started is stopped when it returns or raises (also on SIGTERM)."""
    from pruning import settings
    from pruning.ticket import Ticket

    bundle = Path(bundle).expanduser().resolve()
    directory = model_dir(bundle)
    if port is not None and not port_free(port):
        raise TicketLabError(f"port {port} on 127.0.0.1 is in use: stop what listens there, or leave out --port "
                             f"to take a free one.")
    manifest = json.loads((bundle / "manifest.json").read_text()) if (bundle / "manifest.json").is_file() else {}
    artifact = manifest.get("artifact") or {}
    quantized = bool(artifact.get("quantization")) or quantization_config(directory) is not None
    dtype = dtype or manifest.get("weights_dtype") or "auto"
    ticket = Ticket.load(bundle / "ticket") if (bundle / "ticket").is_dir() else None
    log_dir = Path(log_dir) if log_dir else settings.state_dir() / "serve-logs"
    if loaded is None and ticket is not None:
        from pruning.models import load_model

        loaded = load_model(ticket.dense["spec"], device="cpu", dtype=manifest.get("weights_dtype") or "float32")
    result = {"bundle": str(bundle), "ticket": ticket.id if ticket else None, "artifact": artifact.get("id"),
              "format": manifest.get("bundle_format"), "quantization": artifact.get("quantization"),
              "dtype": dtype, "max_tokens": max_tokens, "prompts": list(PROMPTS), "loads": False}
    with on_signals(), ExitStack() as stack:
        starts = {}
        if base_url is None:
            starts["ticket"] = Server(directory, log_dir / f"{bundle.name}.log", port=port, dtype=dtype,
                                      startup_timeout=startup_timeout)
        dense_dir = Path(loaded.source) if loaded is not None and Path(loaded.source).is_dir() else None
        if with_dense and dense_base_url is None and dense_dir is not None:
            starts["dense"] = Server(dense_dir, log_dir / f"{bundle.name}.dense.log", dtype=dtype,
                                     startup_timeout=startup_timeout)
        for s in starts.values():
            stack.callback(s.stop)  # registered before starting: a start interrupted half-way is stopped too
        # both start at once (start-up dominates the check); never wait for the pool on the way out: a
        # SIGTERM here must reach the stop callbacks at once, and a stopped server ends its own wait
        pool = ThreadPoolExecutor(max_workers=2)
        stack.callback(pool.shutdown, wait=False)
        futures = {name: pool.submit(s.start) for name, s in starts.items()}
        errors = {name: f.exception() for name, f in futures.items()}
        if errors.get("ticket") is not None:
            if not isinstance(errors["ticket"], TicketLabError):
                raise errors["ticket"]
            result["error"] = str(errors["ticket"])
            return result
        result["loads"] = True
        if errors.get("dense") is not None:
            raise TicketLabError(f"the bundle loads, but its dense model does not: {errors['dense']}")
        targets = {"ticket": (base_url or starts["ticket"].base_url)}
        if "dense" in starts or dense_base_url:
            targets["dense"] = dense_base_url or starts["dense"].base_url
        served = {name: (url, client.served_model(url)) for name, url in targets.items()}
        result["servers"] = {name: {"base_url": url, "started_here": name in starts,
                                    "startup_s": starts[name].startup_s if name in starts else None,
                                    "peak_rss_bytes": starts[name].peak_rss_bytes if name in starts else None,
                                    "log": str(starts[name].log) if name in starts else None}
                             for name, (url, _) in served.items()}
        url, model = served["ticket"]
        first = client.complete(url, model, PROMPTS[0], 8)
        result["answer"] = {"prompt": PROMPTS[0], "text": first["text"]}
        if loaded is not None:
            lab = lab_outputs(loaded, ticket, PROMPTS, max_tokens)
            got = _served_ids(url, model, PROMPTS, max_tokens, loaded.tokenizer)
            result["outputs"] = {**agreement(lab, got), "claim": "agreement rate (quantized)" if quantized else
                                 "exact match (unquantized)", "lab": "transformers greedy, mask applied, "
                                 f"{manifest.get('weights_dtype') or 'float32'}"}
        result["speed"] = _speed(served, rounds, max_tokens)
        for name, s in starts.items():  # peaks include the measurement
            result["servers"][name]["peak_rss_bytes"] = s.peak_rss_bytes
    from .env import engine_version

    result["engine"] = f"vllm {engine_version()}" if starts else "vllm (remote)"
    return result


def record(ledger, result: dict, command: str) -> str:
    """The check's result as a ledger run (kind `serve-check`, the result in its params); a check whose
    engine did not start is recorded too, with loads = false."""
    from analysis.ledger.lab_records import serve_check_statements

    dense = None
    ticket = result.get("ticket")
    if ticket:
        try:
            dense = ledger.get_ticket(ticket)["dense_sha256"]
        except TicketLabError:
            dense = None
    with ledger.run("serve-check", command, subject=ticket or "dense", dense_sha256=dense,
                    params={"bundle": result["bundle"], "artifact": result.get("artifact")}) as run:
        run.extra_sql += serve_check_statements(run.id, result)
    return run.id
