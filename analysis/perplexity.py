"""Perplexity on WikiText-2 test: the whole file tokenized once, cut into non-overlapping windows of
`seq_len` tokens (the last one shorter), every token after a window's first scored once.

The value is exp of the token-weighted mean NLL. Its standard error treats windows as the sampling
units (tokens inside a window are not independent): the ratio-estimator stderr of the mean NLL over
per-window sums, carried to perplexity by the delta method (se_ppl = ppl * se_nll).

Speed: only the model body runs over whole windows; the LM head (a 49k-way matmul on SmolLM2, about a
fifth of the FLOPs) and the log-softmax run in chunks of positions, so logits for a whole batch are
never held at once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pruning import settings
from pruning.adapters import body_and_head as _body_and_head
from pruning.errors import TicketLabError
from pruning.ticket import Ticket, applied

WIKITEXT_TEST = "corpora/wikitext-2/test.txt"
TASK = "wikitext2"
DEFAULT_SEQ_LEN = 512
DEFAULT_BATCH_SIZE = 4
QUICK_WINDOWS = 32  # the stated quick subset: 32 windows spread evenly over the test set (~16k tokens)
HEAD_CHUNK = 1024  # positions per LM-head matmul

Progress = Callable[[int, int, str], None]


def body_and_head(model: torch.nn.Module):
    """(body, head) when logits are exactly `head(body(x).last_hidden_state)`, else None (the adapter's rule)."""
    return _body_and_head(model)


@functools.lru_cache(maxsize=4)
def _tokens(tokenizer_key: str, path: str, mtime_ns: int, tokenizer) -> tuple[int, ...]:
    text = _read_text(path)
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return tuple(ids)


def _read_text(path: str) -> str:
    try:
        text = open(path, encoding="utf-8").read()
    except UnicodeDecodeError as e:
        raise TicketLabError(f"{path} is not UTF-8 text ({e}); expected the WikiText-2 test split, one "
                             f"paragraph per line.") from e
    if len(text.split()) < 2:
        raise TicketLabError(f"{path} is empty; expected the WikiText-2 test split, one paragraph per line.")
    return text


def load_tokens(tokenizer) -> torch.Tensor:
    """The WikiText-2 test file as one token stream (no BOS/EOS added)."""
    path = settings.data_file(WIKITEXT_TEST)
    key = f"{getattr(tokenizer, 'name_or_path', '')}|{type(tokenizer).__name__}|{len(tokenizer)}"
    ids = _tokens(key, str(path), path.stat().st_mtime_ns, tokenizer)
    return torch.tensor(ids, dtype=torch.long)


def windows(n_tokens: int, seq_len: int, limit: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) of the non-overlapping windows; with `limit`, that many spread evenly over the file."""
    if seq_len < 2:
        raise TicketLabError(f"seq_len must be at least 2 (got {seq_len}).")
    spans = [(s, min(s + seq_len, n_tokens)) for s in range(0, n_tokens, seq_len)]
    spans = [(a, b) for a, b in spans if b - a >= 2]
    if limit is not None:
        if limit < 1:
            raise TicketLabError(f"limit must be at least 1 window (got {limit}).")
        if limit < len(spans):
            picks = np.unique(np.linspace(0, len(spans) - 1, limit).round().astype(int))
            spans = [spans[i] for i in picks]
    return spans


def _window_nll(model, batch: torch.Tensor, split=None) -> torch.Tensor:
    """Summed NLL of tokens 1.. of each row of `batch` [B, L] -> [B] (float64). `split`: the adapter's
    (body, head), or None for the plain forward."""
    targets = batch[:, 1:]
    if split is None:
        logits = model(input_ids=batch).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        return nll.view(targets.shape).double().sum(1)
    body, head = split
    hidden = body(input_ids=batch).last_hidden_state[:, :-1]
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_t = targets.reshape(-1)
    out = torch.empty(flat_t.shape[0], dtype=torch.float32, device=batch.device)
    for s in range(0, flat_t.shape[0], HEAD_CHUNK):
        logits = head(flat_h[s:s + HEAD_CHUNK]).float()
        out[s:s + HEAD_CHUNK] = F.cross_entropy(logits, flat_t[s:s + HEAD_CHUNK], reduction="none")
    return out.view(targets.shape).double().sum(1)


def perplexity(loaded, ticket: Ticket | None = None, seq_len: int = DEFAULT_SEQ_LEN, limit: int | None = None,
               batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress | None = None) -> dict:
    """Token-level perplexity of WikiText-2 test for the dense model, or with `ticket` applied.

    `limit`: score only that many windows, spread evenly over the test set (QUICK_WINDOWS is the
    stated quick subset); None scores all of them."""
    if batch_size < 1:
        raise TicketLabError(f"batch size must be at least 1 (got {batch_size}).")
    max_pos = loaded.adapter.max_positions
    if max_pos and seq_len > max_pos:
        raise TicketLabError(f"seq_len {seq_len} exceeds the model's {max_pos} positions; use --seq-len {max_pos}.")
    tokens = load_tokens(loaded.tokenizer)
    spans = windows(len(tokens), seq_len, limit)
    full = [s for s in spans if s[1] - s[0] == seq_len]
    short = [s for s in spans if s[1] - s[0] != seq_len]
    batches = [full[i:i + batch_size] for i in range(0, len(full), batch_size)] + [[s] for s in short]
    device = loaded.device
    sums: dict[tuple[int, int], float] = {}
    done = 0
    split = loaded.adapter.body_and_head()
    with applied(loaded, ticket), torch.inference_mode():
        for group in batches:
            batch = torch.stack([tokens[a:b] for a, b in group]).to(device)
            for span, value in zip(group, _window_nll(loaded.model, batch, split).tolist(), strict=True):
                sums[span] = value
            done += len(group)
            if progress:
                progress(done, len(spans), f"{sum(b - a - 1 for a, b in sums):,} tokens")
    nll = np.array([sums[s] for s in spans])
    counts = np.array([b - a - 1 for a, b in spans], dtype=np.float64)
    n_tokens = float(counts.sum())
    mean = float(nll.sum() / n_tokens)
    if not math.isfinite(mean):
        raise TicketLabError("perplexity is not finite: the model produced NaN or infinite log-probabilities.")
    n = len(spans)
    se = None
    if n >= 2:  # ratio estimator: windows are the sampling units
        resid = nll - mean * counts
        se = float(math.sqrt(n / (n - 1) * float((resid ** 2).sum())) / n_tokens)
    ppl = math.exp(mean)
    return {"task": TASK, "value": ppl, "stderr": ppl * se if se is not None else None, "perplexity": ppl,
            "nll": mean, "nll_stderr": se, "n_tokens": int(n_tokens), "n_windows": n,
            "n_windows_total": len(windows(len(tokens), seq_len)), "seq_len": seq_len, "limit": limit,
            "batch_size": batch_size, "dtype": str(loaded.dtype), "padding": "none (equal windows; last alone)",
            "file": WIKITEXT_TEST, "ticket": ticket.id if ticket is not None else None}
