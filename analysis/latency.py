"""Prompt-processing and generation throughput: dense vs ticket vs materialized ticket, same prompts.

- Prefill: one forward pass over the prompt batch with a fresh KV cache, only the last position's
  logits (what `generate` computes before its first token): `batch * prompt_len / seconds`.
- Generation: `model.generate` greedy with the KV cache, exactly `gen_tokens` new tokens (min = max, so
  an early EOS cannot shorten a run). A streamer timestamps every token as it leaves the loop, so the
  same run gives the time to the first token (prefill + one sampling step) and the decode rate over the
  remaining `gen_tokens - 1` steps: `batch * (gen_tokens - 1) / seconds`. `generate_tokens_per_s` is the
  end-to-end rate (`batch * gen_tokens` over the whole call, prefill included).
Each figure is the median over `repeats` timed runs after `warmup` untimed ones. On CUDA the device is
synchronised before every clock reading. A masked ticket has the dense shapes, so it should be as fast
as dense (zeros are multiplied like any number); only a materialized ticket can be faster.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import statistics
import time
from pathlib import Path

import torch

from pruning import settings
from pruning.errors import TicketLabError
from pruning.ticket import Ticket, applied

from .ledger import machine_description

PROMPT_FILE = "corpora/wikitext-2/test.txt"
RATIO_KEYS = ("prefill_tokens_per_s", "decode_tokens_per_s", "generate_tokens_per_s")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device: torch.device) -> float:
    _sync(device)
    return time.perf_counter()


class _TokenClock:
    """A `generate` streamer that only records when each batch of tokens arrives (the first call is the prompt)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(_clock(self.device))

    def end(self) -> None:
        pass


def fixed_prompts(tokenizer, prompt_len: int = 128, batch_size: int = 1) -> torch.Tensor:
    """`[batch_size, prompt_len]` token ids: consecutive windows from the start of WikiText-2 test, the same
    for every subject of one tokenizer (so dense, ticket and materialized model read identical prompts)."""
    path = settings.data_file(PROMPT_FILE)
    need = prompt_len * batch_size
    with open(path, encoding="utf-8") as f:
        text = f.read(need * 12 + 4096)  # WikiText runs ~4-5 characters per token; read generously
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) < need:
        raise TicketLabError(f"{path} gave only {len(ids)} tokens; {need} are needed for {batch_size} prompt(s) of "
                             f"{prompt_len} tokens. Use shorter prompts or a fuller WikiText-2 test file.")
    return torch.tensor(ids[:need]).view(batch_size, prompt_len)


def _prompt_ids(tokenizer, prompts, prompt_len: int, batch_size: int) -> tuple[torch.Tensor, str]:
    if prompts is None:
        return fixed_prompts(tokenizer, prompt_len, batch_size), "wikitext-2 test"
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2 or prompts.shape[0] < 1 or prompts.shape[1] < 1:
            raise TicketLabError(f"prompt ids must be a [batch, length] tensor, got shape {tuple(prompts.shape)}.")
        return prompts.long(), "given ids"
    if isinstance(prompts, str) or not prompts:
        raise TicketLabError("prompts must be a non-empty list of strings (or a [batch, length] tensor of ids).")
    encoded = [tokenizer.encode(p, add_special_tokens=False)[:prompt_len] for p in prompts]
    encoded = [encoded[i % len(encoded)] for i in range(batch_size)]
    length = min(len(e) for e in encoded)
    if length < 1:
        raise TicketLabError("a prompt encodes to no tokens; give non-empty prompts.")
    # cut every prompt to the shortest, so the batch needs no padding (padding would change the work done)
    return torch.tensor([e[:length] for e in encoded]), "given text"


def _max_positions(model) -> int | None:
    c = model.config
    return getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)


def measure_latency(model: torch.nn.Module, tokenizer, prompts: list[str] | torch.Tensor | None = None,
                    prompt_len: int = 128, gen_tokens: int = 32, batch_size: int = 1, repeats: int = 3,
                    warmup: int = 1, device: str | torch.device | None = None) -> dict:
    """Prefill and generation tokens/s of `model` as it is now (median over `repeats`); see the module docstring."""
    for name, value, low in (("prompt_len", prompt_len, 1), ("gen_tokens", gen_tokens, 1),
                             ("batch_size", batch_size, 1), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if value < low:
            raise TicketLabError(f"{name} must be at least {low} (got {value}).")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ids, source = _prompt_ids(tokenizer, prompts, prompt_len, batch_size)
    ids = ids.to(device)
    batch, length = ids.shape
    limit = _max_positions(model)
    if limit and length + gen_tokens > limit:
        raise TicketLabError(f"prompt ({length}) + generated ({gen_tokens}) tokens exceed the model's "
                             f"{limit} positions; shorten them.")
    mask = torch.ones_like(ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    forward_kwargs = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}

    def prefill() -> float:
        t0 = _clock(device)
        model(input_ids=ids, attention_mask=mask, use_cache=True, **forward_kwargs)
        return _clock(device) - t0

    def generate() -> tuple[float, float, float]:
        clock = _TokenClock(device)
        t0 = _clock(device)
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, min_new_tokens=gen_tokens,
                             max_new_tokens=gen_tokens, pad_token_id=pad_id, streamer=clock)
        t_end = _clock(device)
        if out.shape[1] - length != gen_tokens:
            raise RuntimeError(f"generate produced {out.shape[1] - length} tokens, expected {gen_tokens}")
        # clock.times[0] is the prompt handed to the streamer; [1] the first new token
        t_first = clock.times[1] if len(clock.times) > 1 else t_end
        return t_end - t0, t_first - t0, t_end - t_first

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                prefill()
                generate()
            prefill_s = [prefill() for _ in range(repeats)]
            gen = [generate() for _ in range(repeats)]
    finally:
        model.train(was_training)
    total_s, first_s, decode_s = (statistics.median(g[i] for g in gen) for i in range(3))
    pre = statistics.median(prefill_s)
    param = next(model.parameters())
    return {
        "prefill_tokens_per_s": batch * length / pre,
        "decode_tokens_per_s": batch * (gen_tokens - 1) / decode_s if gen_tokens > 1 and decode_s > 0 else None,
        "generate_tokens_per_s": batch * gen_tokens / total_s,
        "prefill_s": pre, "time_to_first_token_s": first_s, "decode_s": decode_s, "generate_s": total_s,
        "prefill_runs_s": prefill_s, "generate_runs_s": [g[0] for g in gen],
        "prompt_len": length, "gen_tokens": gen_tokens, "batch_size": batch, "repeats": repeats, "warmup": warmup,
        "prompt_source": source,
        "prompt_sha256": hashlib.sha256(ids.cpu().numpy().tobytes()).hexdigest()[:16],
        "device": str(device), "dtype": str(param.dtype).removeprefix("torch."),
        "n_params": sum(p.numel() for p in model.parameters()), "machine": machine_description(),
    }


def _load_materialized(directory: Path, device: str, dtype: torch.dtype) -> torch.nn.Module:
    config_file = directory / "config.json"
    if not config_file.exists():
        raise TicketLabError(f"{directory} is not a materialized model directory (no config.json); "
                             f"make one with `ticketlab materialize TICKET --out DIR`.")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise TicketLabError(f"{config_file} is not valid JSON ({e}); re-create the materialized model.") from e
    if "ticketlab_loader" in config:
        from pruning.materialize import load_materialized  # written alongside; only needed for uneven layers

        wanted = inspect.signature(load_materialized).parameters
        kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if k in wanted}
        loaded = load_materialized(directory, **kwargs)
        # a causal-LM module (which has its own `.model` submodule), or a LoadedModel-like holder
        model = loaded if isinstance(loaded, torch.nn.Module) else loaded.model
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    return model.to(device=device, dtype=dtype).eval()


def latency_table(loaded, ticket: Ticket | None = None, materialized_dir: str | Path | None = None,
                  prompts: list[str] | torch.Tensor | None = None, prompt_len: int = 128, gen_tokens: int = 32,
                  batch_size: int = 1, repeats: int = 3, warmup: int = 1) -> list[dict]:
    """Rows for dense, the ticket masked in place (if given) and the materialized model (if given), all on
    the same prompt ids, each with `*_ratio` = its rate / dense's rate (above 1 = faster than dense)."""
    if materialized_dir is not None and not (Path(materialized_dir) / "config.json").exists():
        raise TicketLabError(f"{materialized_dir} is not a materialized model directory (no config.json); "
                             f"make one with `ticketlab materialize TICKET --out DIR`.")
    ids, source = _prompt_ids(loaded.tokenizer, prompts, prompt_len, batch_size)
    kwargs = {"prompts": ids, "gen_tokens": gen_tokens, "repeats": repeats, "warmup": warmup,
              "device": loaded.device}
    rows = [{"variant": "dense", "subject": "dense",
             **measure_latency(loaded.model, loaded.tokenizer, **kwargs)}]
    if ticket is not None:
        with applied(loaded, ticket):
            rows.append({"variant": "ticket", "subject": ticket.id,
                         **measure_latency(loaded.model, loaded.tokenizer, **kwargs)})
    if materialized_dir is not None:
        directory = Path(materialized_dir)
        model = _load_materialized(directory, loaded.device, next(loaded.model.parameters()).dtype)
        try:
            rows.append({"variant": "materialized", "subject": ticket.id if ticket is not None else str(directory),
                         "path": str(directory), **measure_latency(model, loaded.tokenizer, **kwargs)})
        finally:
            del model
    dense = rows[0]
    for row in rows:
        row["prompt_source"] = source
        for key in RATIO_KEYS:
            base, value = dense.get(key), row.get(key)
            row[key.replace("_tokens_per_s", "_ratio")] = value / base if value and base else None
    return rows
