"""Batched, deterministic greedy decoding for any loaded model: dense, a masked ticket (inside
`pruning.ticket.applied`) or a materialized ticket all go through `generate`.

Why a loop of our own rather than `model.generate`: a row that has stopped leaves the batch at once
(its KV cache rows are dropped), so a batch costs what its live rows cost, not what its longest answer
costs; and the loop checkpoints between batches so a killed run resumes where it stopped.

How the batch stays exact (tests/test_generation.py checks it token for token against one prompt at a
time): prompts are left-padded, the 2-D attention mask marks the padding, position ids count only real
tokens (`cumsum(mask) - 1`), the KV cache grows by one column per step for every row, and each step's
mask covers the whole cache. Greedy (argmax) decoding with fixed batches in a fixed order is
deterministic: the same model and prompts give byte-identical transcripts on a rerun.

Prompts are rendered with the model's own chat template (one user turn, the generation prompt added);
a tokenizer without a template is a clear error that offers `chat=False` (the plain prompt). Decoding
stops at the end-of-turn / end-of-sequence tokens (the tokenizer's eos and the model's generation
config eos ids) or after `max_new_tokens`.

Resuming: with `checkpoint=PATH`, each finished batch is added to PATH (an atomic rewrite through
`pruning.durable`) under a key of the model identity, prompts and settings; a rerun with the same key
skips the finished prompts, a different key starts afresh. Only the caller records results, after every
prompt is done, so no half-written transcript set is ever recorded.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pruning import durable
from pruning.errors import TicketLabError

Progress = Callable[[int, int, str], None]
MAX_NEW_TOKENS_RANGE = (1, 4096)
DEFAULT_BATCH_SIZE = 16  # prompts per batch; see benchmarks/generation.py
FORMAT_VERSION = 1  # of the checkpoint and of the transcript hash's input


@dataclass
class Generation:
    prompts: list[str]
    completions: list[str]
    tokens: list[list[int]]  # generated token ids, stop token excluded
    stopped: list[str]  # "eos" (an end-of-turn / eos token) or "length" (max_new_tokens reached)
    prompt_tokens: int
    seconds: float
    settings: dict = field(default_factory=dict)
    resumed: int = 0  # prompts taken from the checkpoint

    @property
    def generated_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)

    @property
    def sha256(self) -> str:
        return transcript_sha256(self.prompts, self.completions, self.settings)


def transcript_sha256(prompts: list[str], completions: list[str], settings: dict) -> str:
    """The hash of a transcript set: prompts, completions (in prompt order) and the decoding settings."""
    body = json.dumps({"v": FORMAT_VERSION, "settings": settings, "pairs": list(zip(prompts, completions, strict=True))},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def check_max_new_tokens(value) -> int:
    low, high = MAX_NEW_TOKENS_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TicketLabError(f"max-new-tokens must be a whole number from {low} to {high} (got {value!r}); "
                             f"IFEval answers fit in 512, XSTest's refusal check reads the first sentences.")
    return value


def stop_ids(model, tokenizer) -> list[int]:
    """End-of-turn / end-of-sequence ids: the tokenizer's eos and the model's generation config's."""
    ids = set()
    for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(i) for i in source)
    if not ids:
        raise TicketLabError("the model's tokenizer names no end-of-sequence token, so generation cannot stop; "
                             "use a checkpoint whose tokenizer sets eos_token.")
    return sorted(ids)


def encode(tokenizer, prompts: list[str], chat: bool = True) -> list[list[int]]:
    """Token ids of each prompt: one user turn in the model's chat template (or the plain prompt)."""
    if chat and not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or "this model"
        raise TicketLabError(f"{name} has no chat template, so prompts cannot be put in its chat format; "
                             f"run with the plain prompt instead (--plain-prompt / chat=False) or use an "
                             f"instruct checkpoint whose tokenizer has a chat_template.")
    out = []
    for p in prompts:
        if not isinstance(p, str) or not p:
            raise TicketLabError(f"every prompt must be non-empty text (got {p!r}).")
        if chat:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                tokenize=True, return_dict=False)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
        else:
            ids = tokenizer(p, add_special_tokens=True)["input_ids"]
        out.append([int(i) for i in ids])
    return out


def _key(identity: str, prompts: list[str], settings: dict) -> str:
    return hashlib.sha256(json.dumps([FORMAT_VERSION, identity, prompts, settings], sort_keys=True,
                                     ensure_ascii=False).encode()).hexdigest()


def _load_checkpoint(path: Path | None, key: str) -> dict[int, dict]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # written atomically, so this is not ours (or another version): start afresh
    if not isinstance(data, dict) or data.get("key") != key:
        return {}
    return {int(i): v for i, v in data.get("done", {}).items()}


@torch.inference_mode()
def _decode_batch(model, rows: list[list[int]], pad_id: int, stops: torch.Tensor,
                  max_new_tokens: int, max_positions: int | None) -> list[tuple[list[int], str]]:
    from transformers import DynamicCache

    device = next(model.parameters()).device
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, width - len(r):] = torch.tensor(r)
        mask[b, width - len(r):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    budget = max_new_tokens if max_positions is None else min(max_new_tokens, max_positions - width)
    if budget < 1:
        raise TicketLabError(f"a prompt of {width} tokens leaves no room to generate in the model's "
                             f"{max_positions}-token window.")
    cache = DynamicCache()
    out: list[list[int]] = [[] for _ in rows]
    why = ["length"] * len(rows)
    live = torch.arange(len(rows), device=device)  # batch row -> original row
    # logits_to_keep=1: only the last position goes through the LM head (49k x hidden per token)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1]
    last = pos[:, -1]
    stops = stops.to(device)
    for step in range(budget):
        nxt = logits.float().argmax(-1)
        done = torch.isin(nxt, stops)
        for row, tok, end in zip(live.tolist(), nxt.tolist(), done.tolist(), strict=True):
            if end:
                why[row] = "eos"
            else:
                out[row].append(tok)
        keep = (~done).nonzero().flatten()
        if step == budget - 1 or keep.numel() == 0:
            break
        if keep.numel() < live.numel():  # finished rows leave the batch and the cache
            live, nxt, mask, last = live[keep], nxt[keep], mask[keep], last[keep]
            cache.batch_select_indices(keep)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        last = last + 1
        logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=last[:, None],
                       cache=cache, use_cache=True).logits[:, -1]
    return list(zip(out, why, strict=True))


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = DEFAULT_BATCH_SIZE,
             chat: bool = True, progress: Progress | None = None, checkpoint: str | Path | None = None,
             identity: str = "", max_positions: int | None = None) -> Generation:
    """Greedy completions of `prompts` (returned in their order). `identity` (model weights and ticket)
    keys the checkpoint so a resumed run never mixes two models' answers."""
    check_max_new_tokens(max_new_tokens)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise TicketLabError(f"generation batch size must be a whole number >= 1 (got {batch_size!r}).")
    t0 = time.perf_counter()
    encoded = encode(tokenizer, prompts, chat)
    stops = torch.tensor(stop_ids(model, tokenizer))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(stops[0])
    settings = {"decoding": "greedy", "max_new_tokens": max_new_tokens, "chat_template": bool(chat),
                "stop_ids": stops.tolist(), "dtype": str(next(model.parameters()).dtype)}
    path = Path(checkpoint) if checkpoint is not None else None
    key = _key(identity, prompts, {**settings, "batch_size": batch_size})
    done = _load_checkpoint(path, key)
    resumed = len(done)
    # longest prompts first: similar lengths share a batch (little padding), and memory peaks early
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    produced = sum(len(v["tokens"]) for v in done.values())
    for batch in batches:
        if all(i in done for i in batch):
            continue
        for i, (toks, why) in zip(batch, _decode_batch(model, [encoded[i] for i in batch], pad_id, stops,
                                                       max_new_tokens, max_positions), strict=True):
            done[i] = {"tokens": toks, "stopped": why}
            produced += len(toks)
        if path is not None:
            durable.atomic_write_json(path, {"key": key, "done": {str(k): v for k, v in done.items()}})
            durable.crash_point("generation.batch")
        if progress:
            progress(len(done), len(prompts), f"{produced:,} tokens generated")
    tokens = [done[i]["tokens"] for i in range(len(prompts))]
    texts = [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
    return Generation(prompts=list(prompts), completions=texts, tokens=tokens,
                      stopped=[done[i]["stopped"] for i in range(len(prompts))],
                      prompt_tokens=sum(len(e) for e in encoded), seconds=time.perf_counter() - t0,
                      settings=settings, resumed=resumed)
