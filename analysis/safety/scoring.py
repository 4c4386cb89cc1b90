"""lm-eval's HFLM with a faster loglikelihood path: no token sequence is run through the model twice.

lm-eval scores each (context, continuation) request as its own padded row, so a BBQ question with 12
answer choices runs its context 12 times, and TruthfulQA's long six-shot prompt runs once per choice of
mc1 and again for mc2. Here requests are first de-duplicated (mc1's choices are mostly mc2's), then
grouped by context, and each group's continuations go into one packed row as a token trie rooted at
the context: shared context once, shared continuation prefixes once (a CrowS-Pairs pair shares
everything before its first differing word; every CrowS-Pairs sentence shares lm-eval's prefix token).
A 4-D attention mask lets each trie node see only itself and its ancestors, and its position id is its
depth, so the logits that score a continuation are exactly those of `context + continuation` alone (up
to float rounding). A continuation's last token is never an input: nothing is predicted from it. Rows
are sorted by length and batched like lm-eval's; only the positions that score a token go through the
LM head.

Tokenisation, the empty-context prefix token and left truncation are lm-eval's own (HFLM.loglikelihood
and its `max_length` rule), so the requests are identical; only the arithmetic is shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..perplexity import HEAD_CHUNK, body_and_head

Progress = Callable[[int, int, str], None]
DEFAULT_ROW_TOKENS = 512  # packed row budget; 256/512/1024 time alike (eval_speed.py), 512 runs fewer tokens
SCORING = "shared-prefix"  # recorded as the `padding` of every safety metric row


@dataclass
class ScoreStats:
    requests: int = 0
    unique: int = 0
    contexts: int = 0
    rows: int = 0
    tokens: int = 0  # input tokens run through the model (padding excluded)
    naive_tokens: int = 0  # what one row per request would have run
    seconds: float = 0.0
    batches: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "batches"}
        d["requests_per_s"] = self.requests / self.seconds if self.seconds else None
        d["tokens_per_s"] = self.tokens / self.seconds if self.seconds else None
        return d


def _truncate(ctx: list[int], cont: list[int], max_length: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """lm-eval's rule: keep the last max_length + 1 tokens of context + continuation."""
    if len(cont) > max_length:
        raise ValueError(f"a continuation of {len(cont)} tokens exceeds the model's {max_length}")
    if len(ctx) + len(cont) > max_length + 1:
        whole = (ctx + cont)[-(max_length + 1):]
        ctx = whole[: len(whole) - len(cont)]
    return tuple(ctx), tuple(cont)


class _Row:
    """One packed row: a token trie over `context + continuation[:-1]` sequences. Each node is one input
    token; it attends to itself and its ancestors and its position is its depth, so every path is scored
    exactly as that sequence alone."""

    def __init__(self):
        self.tokens: list[int] = []
        self.parent: list[int] = []
        self.depth: list[int] = []
        self.children: dict[tuple[int, int], int] = {}
        self.preds: list[tuple[int, int, int]] = []  # (node predicting the token, target token, owner)

    def new_nodes(self, seq: tuple[int, ...]) -> int:
        node = -1
        for n, tok in enumerate(seq):
            nxt = self.children.get((node, tok))
            if nxt is None:
                return len(seq) - n
            node = nxt
        return 0

    def add(self, ctx: tuple[int, ...], cont: tuple[int, ...], owner: int) -> None:
        path, node = [], -1
        for tok in ctx + cont[:-1]:  # nothing is predicted from a continuation's last token
            nxt = self.children.get((node, tok))
            if nxt is None:
                nxt = len(self.tokens)
                self.tokens.append(tok)
                self.parent.append(node)
                self.depth.append(self.depth[node] + 1 if node >= 0 else 0)
                self.children[(node, tok)] = nxt
            path.append(nxt)
            node = nxt
        for m, tok in enumerate(cont):  # token m is predicted at the node just before it
            self.preds.append((path[len(ctx) - 1 + m], tok, owner))

    def __len__(self) -> int:
        return len(self.tokens)


def _rows(items: list[tuple[tuple[int, ...], tuple[int, ...]]], budget: int) -> list[_Row]:
    """Pack (context, continuation) items, sorted so that shared prefixes sit together, into tries of at
    most max(budget, 2 x context) tokens: a long context is repeated at most once per its own length of
    other tokens. A row may be longer than the model's window: depths, not row offsets, are the
    positions, and no depth exceeds lm-eval's truncation limit."""
    rows, row = [], _Row()
    for i in sorted(range(len(items)), key=lambda i: items[i][0] + items[i][1]):
        ctx, cont = items[i]
        if row.preds and len(row) + row.new_nodes(ctx + cont[:-1]) > max(budget, 2 * len(ctx)):
            rows.append(row)
            row = _Row()
        row.add(ctx, cont, i)
    if row.preds:
        rows.append(row)
    rows.sort(key=lambda r: -len(r))
    return rows


def _batch_tensors(rows: list[_Row], pad_id: int, device, dtype):
    width = max(len(r) for r in rows)
    n = len(rows)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    pos = np.zeros((n, width), dtype=np.int64)
    allowed = np.zeros((n, width, width), dtype=bool)
    pred_b, pred_p, target, owner = [], [], [], []
    for b, row in enumerate(rows):
        k = len(row)
        ids[b, :k] = row.tokens
        pos[b, :k] = row.depth
        anc = allowed[b]
        for q, par in enumerate(row.parent):  # parents precede children: ancestors are already filled
            if par >= 0:
                anc[q] = anc[par]
            anc[q, q] = True
        anc[np.arange(k, width), np.arange(k, width)] = True  # padding attends to itself: no NaN
        for node, tok, own in row.preds:
            pred_b.append(b)
            pred_p.append(node)
            target.append(tok)
            owner.append(own)
    mask = torch.zeros((n, 1, width, width), dtype=dtype)
    mask.masked_fill_(~torch.from_numpy(allowed)[:, None], torch.finfo(dtype).min)
    t = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    return (torch.from_numpy(ids).to(device), torch.from_numpy(pos).to(device), mask.to(device),
            t(pred_b), t(pred_p), t(target), t(owner))


def score(model: torch.nn.Module, requests: list[tuple[list[int], list[int]]], max_length: int,
          batch_size: int, pad_id: int, row_tokens: int = DEFAULT_ROW_TOKENS,
          progress: Progress | None = None, stats: ScoreStats | None = None,
          plan_only: bool = False) -> list[tuple[float, bool]]:
    """(sum of log-probabilities, is greedy) for each (context tokens, continuation tokens) request.
    `plan_only`: pack and count (stats) without running the model; every answer is (0.0, False)."""
    split = body_and_head(model)
    if split is None:
        raise ValueError("shared-prefix scoring needs a model whose logits are head(body(x))")
    body, head = split
    t0 = time.perf_counter()
    stats = stats if stats is not None else ScoreStats()
    keys = [_truncate(list(c), list(x), max_length) for c, x in requests]
    index: dict[tuple, int] = {}
    where = [index.setdefault(key, len(index)) for key in keys]
    items = list(index)
    if any(not cont for _, cont in items):
        raise ValueError("empty continuation")
    rows = _rows(items, max(1, row_tokens))
    stats.requests += len(requests)
    stats.unique += len(items)
    stats.contexts += len({ctx for ctx, _ in items})
    stats.rows += len(rows)
    stats.naive_tokens += sum(len(c) + len(x) - 1 for c, x in keys)
    if plan_only:
        stats.tokens += sum(len(r) for r in rows)
        return [(0.0, False)] * len(requests)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    logprob = torch.zeros(len(items), dtype=torch.float64)
    misses = torch.zeros(len(items), dtype=torch.long)
    done = 0
    with torch.inference_mode():
        for s in range(0, len(rows), batch_size):
            chunk = rows[s:s + batch_size]
            ids, pos, mask, pb, pp, tgt, own = _batch_tensors(chunk, pad_id, device, dtype)
            hidden = body(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
            sel = hidden[pb, pp]
            for a in range(0, sel.shape[0], HEAD_CHUNK):
                logits = head(sel[a:a + HEAD_CHUNK]).float()
                t = tgt[a:a + HEAD_CHUNK]
                lp = logits.gather(1, t[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
                miss = (logits.argmax(-1) != t).long()
                o = own[a:a + HEAD_CHUNK].cpu()
                logprob.index_add_(0, o, lp.double().cpu())
                misses.index_add_(0, o, miss.cpu())
            stats.tokens += sum(len(r) for r in chunk)
            stats.batches.append(len(chunk))
            done += len(chunk)
            if progress:
                progress(done, len(rows), f"{stats.tokens:,} tokens")
    stats.seconds += time.perf_counter() - t0
    return [(float(logprob[i]), bool(misses[i] == 0)) for i in where]


def make_lm(model, tokenizer, batch_size: int, row_tokens: int = DEFAULT_ROW_TOKENS,
            progress: Progress | None = None, plan_only: bool = False):
    """An HFLM over the in-memory model whose loglikelihood requests go through `score`."""
    from lm_eval.models.huggingface import HFLM

    class SharedPrefixHFLM(HFLM):
        def __init__(self):
            super().__init__(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            self.stats = ScoreStats()
            self.row_tokens = row_tokens
            self.progress = progress
            self.shared = body_and_head(model) is not None

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=True)

        def generate_until(self, requests, disable_tqdm: bool = False):
            # generation tasks (IFEval, XSTest) decode through analysis.generation, the one decoding path
            from .generating import generate_until

            return generate_until(self, requests)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
            if not self.shared or self.backend != "causal":
                return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
            pad = self.tokenizer.pad_token_id
            pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
            return score(self.model, [(c, x) for _, c, x in requests], self.max_length, int(self.batch_size),
                         pad, self.row_tokens, self.progress, self.stats, plan_only=plan_only)

    return SharedPrefixHFLM()
