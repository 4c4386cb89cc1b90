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

import functools
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


SPARE_COLUMNS = 64  # cache columns allocated ahead, so a decode step writes in place instead of copying
PREFILL_ROWS = 16  # newcomers prefilled together: bounds the prefill's activations and attention scores


@functools.cache
def _growing_layer():
    """A KV-cache layer class (built on first use: transformers loads lazily) whose keys/values are views of
    the first `n` columns of a zero-filled buffer with spare columns. transformers' DynamicLayer
    concatenates the whole cache at every step; at batch 64 and 400 columns that copy cost more than the
    matmuls (benchmarks/generation.py). Here a step writes one column."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def lazy_initialization(self, key_states, value_states) -> None:
            self.device, self.n, self.kbuf, self.vbuf = key_states.device, 0, None, None
            self.is_initialized = True

        def set(self, kbuf: torch.Tensor, vbuf: torch.Tensor, n: int) -> None:
            self.kbuf, self.vbuf, self.n = kbuf, vbuf, n
            self.keys, self.values = kbuf[:, :, :n], vbuf[:, :, :n]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            q = key_states.shape[-2]
            if self.kbuf is None or self.n + q > self.kbuf.shape[-2]:
                kbuf = _zeros_like_cols(key_states, self.n + q + SPARE_COLUMNS)
                vbuf = _zeros_like_cols(value_states, self.n + q + SPARE_COLUMNS)
                if self.kbuf is not None:
                    kbuf[:, :, :self.n], vbuf[:, :, :self.n] = self.keys, self.values
                self.kbuf, self.vbuf = kbuf, vbuf
            self.kbuf[:, :, self.n:self.n + q] = key_states
            self.vbuf[:, :, self.n:self.n + q] = value_states
            self.set(self.kbuf, self.vbuf, self.n + q)
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.n if self.is_initialized else 0

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.set(self.kbuf[indices], self.vbuf[indices], self.n)

    return GrowingLayer


def _zeros_like_cols(t: torch.Tensor, columns: int, rows: int | None = None) -> torch.Tensor:
    b, h, _, d = t.shape
    return t.new_zeros((b if rows is None else rows, h, columns, d))


def _new_cache():
    from transformers.cache_utils import Cache

    return Cache(layer_class_to_replicate=_growing_layer())


class _Batch:
    """The running batch: one row per prompt being decoded, all rows sharing the cache's columns. A row's
    prompt is left-padded to the common width; `mask` marks its real columns, `pos` is the position of
    its last real token (padding never counts). Rows that stopped stay (ignored) until the next regroup,
    which drops them, admits newcomers and trims the leading columns that are padding for every row:
    one copy of the cache per regroup, not one per finished row."""

    def __init__(self, device):
        self.device = device
        self.rows: list[int] = []  # prompt index of each batch row; -1 once it has stopped
        self.cache = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=device)
        self.pos = torch.zeros((0,), dtype=torch.long, device=device)

    @property
    def dead(self) -> int:
        return sum(r < 0 for r in self.rows)

    def regroup(self, groups: list[tuple[list[int], object, torch.Tensor, torch.Tensor]]) -> None:
        """Drop the stopped rows, append each prefilled group (prompt indices, its cache, mask, positions)."""
        keep = [j for j, r in enumerate(self.rows) if r >= 0]
        old = self.cache
        mask = self.mask[keep] if keep else self.mask[:0]
        lead = int(mask.any(0).long().argmax()) if keep else 0  # first column some kept row uses
        run = mask.shape[1] - lead if keep else 0
        width = max([run, *(g[2].shape[1] for g in groups)])
        total = len(keep) + sum(len(g[0]) for g in groups)
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        first = old if old is not None else groups[0][1]
        for li, layer in enumerate(first.layers):
            parts = [(old.layers[li], index, lead, run)] if keep else []
            parts += [(g[1].layers[li], None, 0, g[2].shape[1]) for g in groups]
            bufs = []
            for src in ("keys", "values"):
                buf = _zeros_like_cols(getattr(layer, src), width + SPARE_COLUMNS, rows=total)
                at = 0
                for part, rows_, start, n in parts:
                    t = getattr(part, src)
                    t = t[rows_] if rows_ is not None else t
                    buf[at:at + t.shape[0], :, width - n:width] = t[:, :, start:start + n]
                    at += t.shape[0]
                bufs.append(buf)
            layer.set(bufs[0], bufs[1], width)
        self.cache = first
        masks = [mask[:, lead:]] + [g[2] for g in groups]
        self.mask = torch.cat([torch.nn.functional.pad(m, (width - m.shape[1], 0)) for m in masks])
        self.pos = torch.cat([self.pos[index], *(g[3] for g in groups)])
        self.rows = [self.rows[j] for j in keep] + [i for g in groups for i in g[0]]


@torch.inference_mode()
def _prefill(model, rows: list[list[int]], pad_id: int, device):
    """Left-padded prefill of new prompts: their cache, mask, last positions and next-token logits."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, width - len(r):] = torch.tensor(r)
        mask[b, width - len(r):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = _new_cache()
    # logits_to_keep=1: only the last position goes through the LM head (49k x hidden per token)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1]
    return cache, mask, pos[:, -1], logits


@torch.inference_mode()
def _decode(model, encoded: list[list[int]], pending: list[int], pad_id: int, stops: list[int],
            budgets: list[int], batch_size: int, on_done: Callable[[int, list[int], str], None]) -> None:
    """Continuous batching: the batch is kept full by admitting pending prompts (in the given order) as
    rows stop. Each row's tokens depend only on its own prompt (masked padding, positions counting real
    tokens), so the schedule changes the cost, not the answers; the schedule itself is fixed by the
    prompts and their answers, so a rerun repeats it exactly."""
    device = next(model.parameters()).device
    stopset = set(stops)
    pending = list(pending)
    batch = _Batch(device)
    out: dict[int, list[int]] = {}
    logits = None
    # a regroup copies the cache, so stopped rows wait (computed, ignored) until an eighth have stopped
    slack = max(1, batch_size // 8)
    while True:
        live = len(batch.rows) - batch.dead
        if pending and (live == 0 or batch.dead >= slack or batch_size - len(batch.rows) >= slack):
            groups, room = [], batch_size - live
            while pending and room > 0:
                take = pending[:min(room, PREFILL_ROWS)]
                del pending[:len(take)]
                room -= len(take)
                cache, mask, pos, lg = _prefill(model, [encoded[i] for i in take], pad_id, device)
                groups.append((take, cache, mask, pos, lg))
                for i in take:
                    out[i] = []
            kept = [j for j, r in enumerate(batch.rows) if r >= 0]
            logits = torch.cat(([logits[kept]] if kept else []) + [g[4] for g in groups])
            batch.regroup([g[:4] for g in groups])
        elif batch.dead and (batch.dead >= max(1, len(batch.rows) // 8) or live == 0):
            kept = [j for j, r in enumerate(batch.rows) if r >= 0]
            logits = logits[kept]
            batch.regroup([])
        if not batch.rows:
            return
        nxt = logits.float().argmax(-1)
        for j, (row, tok) in enumerate(zip(batch.rows, nxt.tolist(), strict=True)):  # one sync per step
            if row < 0:
                continue
            if tok in stopset:
                batch.rows[j] = -1
                on_done(row, out.pop(row), "eos")
                continue
            out[row].append(tok)
            if len(out[row]) >= budgets[row]:
                batch.rows[j] = -1
                on_done(row, out.pop(row), "length")
        if len(batch.rows) == batch.dead and not pending:
            return
        if len(batch.rows) == batch.dead:
            continue  # all stopped: regroup and admit before computing anything
        alive = torch.tensor([r >= 0 for r in batch.rows], device=device)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=-1)
        batch.pos = batch.pos + alive  # a stopped row's position stays inside the model's window
        logits = model(input_ids=nxt[:, None], attention_mask=batch.mask, position_ids=batch.pos[:, None],
                       cache=batch.cache, use_cache=True).logits[:, -1]


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
    budgets = []
    for e in encoded:
        room = max_new_tokens if max_positions is None else min(max_new_tokens, max_positions - len(e))
        if room < 1:
            raise TicketLabError(f"a prompt of {len(e)} tokens leaves no room to generate in the model's "
                                 f"{max_positions}-token window.")
        budgets.append(room)
    # longest prompts first: newcomers admitted together have similar lengths (little padding in their
    # prefill), and memory peaks early
    order = sorted((i for i in range(len(prompts)) if i not in done), key=lambda i: (-len(encoded[i]), i))
    produced = sum(len(v["tokens"]) for v in done.values())
    fresh = 0

    def finished(i: int, toks: list[int], why: str) -> None:
        nonlocal produced, fresh
        done[i] = {"tokens": toks, "stopped": why}
        produced += len(toks)
        fresh += 1
        if fresh >= batch_size or len(done) == len(prompts):
            fresh = 0
            if path is not None:
                durable.atomic_write_json(path, {"key": key, "done": {str(k): v for k, v in done.items()}})
                durable.crash_point("generation.batch")
            if progress:
                progress(len(done), len(prompts), f"{produced:,} tokens generated")

    if order:
        _decode(model, encoded, order, pad_id, stops.tolist(), budgets, batch_size, finished)
    tokens = [done[i]["tokens"] for i in range(len(prompts))]
    texts = [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
    return Generation(prompts=list(prompts), completions=texts, tokens=tokens,
                      stopped=[done[i]["stopped"] for i in range(len(prompts))],
                      prompt_tokens=sum(len(e) for e in encoded), seconds=time.perf_counter() - t0,
                      settings=settings, resumed=resumed)
