"""Calibration data: N windows of L tokens drawn with a seed from a corpus, or a token-id file given exactly.

The record says which, so a ticket can be reproduced: corpus path and sha256, N, L and seed; or the
token file's sha256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import settings
from .errors import TicketLabError

DEFAULT_CORPUS = "corpora/wikitext-2/valid.txt"


@dataclass
class CalibrationSet:
    tokens: torch.Tensor  # [N, L] int64
    record: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def length(self) -> int:
        return int(self.tokens.shape[1])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def corpus_tokens(tokenizer, relative: str = DEFAULT_CORPUS) -> tuple[torch.Tensor, Path]:
    """The whole corpus as one 1-D token stream (no special tokens)."""
    path = settings.data_file(relative)
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise TicketLabError(f"corpus {path} is empty; expected one paragraph per line.")
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long), path


def check_length(length: int, max_positions: int | None, what: str = "--calib-len") -> None:
    """A calibration window longer than the model's positions cannot be run (or silently wraps)."""
    if max_positions is not None and length > max_positions:
        raise TicketLabError(f"{what} {length} is longer than the model's maximum positions ({max_positions}): "
                             f"use {what} {max_positions} or less.")


def from_corpus(tokenizer, n: int = 32, length: int = 512, seed: int = 0,
                corpus: str = DEFAULT_CORPUS, max_positions: int | None = None) -> CalibrationSet:
    """`max_positions`: the model's context (its adapter's `max_positions`); longer windows are refused."""
    if isinstance(n, bool) or isinstance(length, bool) or n <= 0 or length <= 1:
        raise TicketLabError(f"calibration needs --calib-samples N >= 1 windows of --calib-len L >= 2 tokens "
                             f"(got N={n}, L={length}).")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TicketLabError(f"--seed must be a whole number >= 0 (got {seed!r}).")
    check_length(length, max_positions)
    stream, path = corpus_tokens(tokenizer, corpus)
    if stream.numel() <= length:
        raise TicketLabError(f"corpus {path} has {stream.numel()} tokens, fewer than one window of {length}.")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, stream.numel() - length, (n,), generator=g)
    tokens = torch.stack([stream[s:s + length] for s in starts.tolist()])
    record = {"source": "corpus", "corpus": corpus, "corpus_sha256": sha256_file(path),
              "n": n, "length": length, "seed": seed}
    return CalibrationSet(tokens, record)


def from_token_file(path: str | Path, vocab_size: int | None = None,
                    max_positions: int | None = None) -> CalibrationSet:
    path = Path(path)
    if not path.exists():
        raise TicketLabError(f"calibration token file not found: {path}")
    try:
        if path.suffix == ".pt":
            data = torch.load(path, weights_only=True, map_location="cpu")
        elif path.suffix == ".npy":
            data = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if len(tensors) != 1:
                raise TicketLabError(f"{path} holds {len(tensors)} tensors; a calibration file holds exactly one.")
            data = next(iter(tensors.values()))
        else:
            raise TicketLabError(f"{path}: calibration tokens must be .pt, .npy or .safetensors.")
    except TicketLabError:
        raise
    except Exception as e:
        raise TicketLabError(f"calibration token file {path} could not be read: {e}") from e
    if not isinstance(data, torch.Tensor) or data.dim() != 2 or data.dtype.is_floating_point or data.dtype == torch.bool:
        raise TicketLabError(f"{path} must hold one 2-D integer tensor [N windows, L tokens].")
    data = data.long()
    check_length(int(data.shape[1]), max_positions, f"--calib-tokens {path.name} window length")
    if data.numel() == 0 or int(data.min()) < 0 or (vocab_size and int(data.max()) >= vocab_size):
        raise TicketLabError(f"{path} holds token ids outside the model's vocabulary [0, {vocab_size}).")
    record = {"source": "token_file", "file": path.name, "sha256": sha256_file(path),
              "n": int(data.shape[0]), "length": int(data.shape[1])}
    return CalibrationSet(data, record)
