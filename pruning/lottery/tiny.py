"""The small Llama-style model that IMP trains from scratch, its tokenizer, and the corpus split.

Why this size (measured on this machine, one thread, while others worked; see benchmarks/imp.py):
- Tokenizer: byte-level BPE trained on the train split (4,096 entries by default here; the issue-18 default
  protocol uses 1,024 so that the blocks, not the embedding, hold the capacity). It is checked to cover every
  split (encode -> decode gives the text back), stored with the experiment, and its hash is part of the
  experiment id. WikiText-2 is already
  word-tokenised with rare words as `<unk>`, so 4k merges cover nearly every frequent word in one
  token (1.41 tokens per word); a 49k vocabulary (SmolLM2's) would make the tied embedding 6M of
  the model's parameters and the LM head most of its compute, while a word-level vocabulary of 4k
  would map ~10% of the words to `<unk>` and flatter the loss. With 4k the embedding is 0.5M of 1.3M.
- Model (TinyConfig's defaults): 4 layers, hidden 128, 4 query heads sharing 2 KV heads (GQA, so the
  adapter's KV-group logic is exercised), SwiGLU width 384, tied embeddings, context 128. The issue-18
  default protocol uses 3 layers of hidden 64 / SwiGLU 192 (147k prunable block weights, 66k embedding),
  38k tokens/s on one core, so its whole experiment fits 2 hours (see protocol.py).
- Data: WikiText-2's two files we carry (`valid.txt`, then `test.txt`: 122 top-level `= Title =`
  articles) split by ARTICLE, never by line, so no article straddles two sets: article i (counted
  over both files in that order) goes to validation when i % 10 == 8, to held-out when i % 10 == 9,
  to train otherwise (80/10/10). Validation chooses T and early-stops every run; held-out is only
  reported. The tiny model is ours, so using test.txt here does not touch any pretrained model's
  perplexity evaluation. The split record (file sha256s, rule, counts) is stored in the experiment
  and in every ticket.

The tokenizer is deterministic (BPE training on a fixed text, checked across processes) and is saved
with every checkpoint as a `PreTrainedTokenizerFast`, so `pruning.models.load_model(dir)` loads it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import settings
from ..calibration import sha256_file
from ..durable import atomic_dir
from ..errors import TicketLabError

CORPORA = ("corpora/wikitext-2/valid.txt", "corpora/wikitext-2/test.txt")
EVERY = 10
VALIDATION_INDEX = 8
HELDOUT_INDEX = 9
_HEADING = re.compile(r"^ = [^=].* = $")
EOS = "<|endoftext|>"


@dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 4096
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_positions: int = 128

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CorpusSplit:
    train: list[str]
    validation: list[str]
    heldout: list[str]
    record: dict


def _articles(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    starts = [i for i, line in enumerate(lines) if _HEADING.match(line)]
    bounds = starts + [len(lines)]
    return ["\n".join(lines[bounds[i]:bounds[i + 1]]) for i in range(len(starts))]


def split_corpus(corpora: tuple[str, ...] = CORPORA, every: int = EVERY, validation_index: int = VALIDATION_INDEX,
                 heldout_index: int = HELDOUT_INDEX) -> CorpusSplit:
    """Articles of WikiText files -> train / validation / held-out by article index modulo `every`."""
    if every < 3 or len({validation_index, heldout_index}) < 2 or not all(0 <= i < every for i in
                                                                            (validation_index, heldout_index)):
        raise TicketLabError(f"split: every={every} with validation index {validation_index} and held-out index "
                             f"{heldout_index} leaves an empty set; use every >= 3 and two different indices "
                             f"in [0, every).")
    articles: list[str] = []
    hashes = {}
    for relative in corpora:
        path = settings.data_file(relative)
        articles += _articles(path)
        hashes[relative] = sha256_file(path)
    parts: dict[str, list[str]] = {"train": [], "validation": [], "heldout": []}
    for i, a in enumerate(articles):
        k = i % every
        parts["validation" if k == validation_index else "heldout" if k == heldout_index else "train"].append(a)
    empty = [name for name, texts in parts.items() if not texts]
    if empty:
        raise TicketLabError(f"split: the {empty[0]} set is empty ({len(articles)} articles in "
                             f"{', '.join(corpora)}, lines like ' = Title = '); give a corpus with at least "
                             f"{every} articles or a smaller split modulus.")
    record = {"corpora": list(corpora), "corpus_sha256": hashes, "unit": "article",
              "rule": f"article index % {every}: == {validation_index} validation, == {heldout_index} held-out, "
                      f"else train (indices over the files in order)",
              "articles": len(articles), "train_articles": len(parts["train"]),
              "validation_articles": len(parts["validation"]), "heldout_articles": len(parts["heldout"])}
    return CorpusSplit(parts["train"], parts["validation"], parts["heldout"], record)


def token_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """Articles -> one 1-D token stream, each article followed by EOS (so windows see document breaks)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def train_tokenizer(texts: list[str], vocab_size: int = 4096):
    """Byte-level BPE on the given texts, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise TicketLabError(f"vocab size {vocab_size} is too small for byte-level BPE (256 bytes + merges).")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                   unk_token=None, model_max_length=1 << 30)


def check_coverage(tokenizer, parts: dict[str, list[str]]) -> None:
    """Every article of every split must come back from encode -> decode unchanged and without an unknown
    token; a tokenizer that loses text would score a loss on something other than the corpus."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)  # decode without the transformers clean-up
    unk = tokenizer.unk_token_id if hasattr(tokenizer, "unk_token_id") else None
    for name, texts in parts.items():
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
            back = backend.decode(ids, skip_special_tokens=False)
            if (unk is not None and unk in ids) or back != text:
                at = next((i for i, (a, b) in enumerate(zip(text, back, strict=False)) if a != b),
                          min(len(text), len(back)))
                raise TicketLabError(f"protocol setting tokenizer: it does not cover the {name} split: the text "
                                     f"{text[max(0, at - 20):at + 20]!r} does not survive encode/decode (unknown "
                                     f"token or lost characters). Use a byte-level tokenizer (the default trains "
                                     f"one on the train split) or a larger tiny.vocab_size.")


def shared_tokenizer(root: Path, config: TinyConfig, split: CorpusSplit) -> tuple[Path, str]:
    """The tokenizer trained on the split's train part, built once per (corpus, split rule, vocabulary) under
    `root/tokenizers/` and checked to cover every split; returns its folder and the sha256 of its
    tokenizer.json, which is part of the experiment id."""
    import hashlib
    import json

    key = hashlib.sha256(json.dumps({"corpus_sha256": split.record["corpus_sha256"], "rule": split.record["rule"],
                                     "vocab_size": config.vocab_size, "kind": "byte-level BPE"},
                                    sort_keys=True).encode()).hexdigest()[:16]
    target = root / "tokenizers" / key
    if not (target / "tokenizer.json").exists():
        tok = train_tokenizer(split.train, config.vocab_size)
        check_coverage(tok, {"train": split.train, "validation": split.validation, "heldout": split.heldout})
        _atomic_dir(target, lambda tmp: tok.save_pretrained(tmp))
    return target, sha256_file(target / "tokenizer.json")


def copy_tokenizer(source: Path, target: Path) -> Path:
    """The experiment's own copy of its tokenizer (stored with it), written atomically once."""
    import shutil

    if not (target / "tokenizer.json").exists():
        _atomic_dir(target, lambda tmp: [shutil.copy2(f, tmp / f.name) for f in source.iterdir() if f.is_file()])
    return target


def build_model(config: TinyConfig, seed: int, eos_id: int = 0):
    """A freshly initialised tiny Llama; the seed fixes every initial weight."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                      intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
                      num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
                      max_position_embeddings=config.max_positions, tie_word_embeddings=True,
                      bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id, attention_dropout=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return LlamaForCausalLM(cfg)


def save_checkpoint(model, tokenizer_source: Path | str | None, target: Path) -> Path:
    """A model directory `load_model` accepts (config, safetensors weights, tokenizer), written atomically."""
    from transformers import AutoTokenizer

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer_source is not None:
            AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(tmp)

    return _atomic_dir(target, write)


def _atomic_dir(target: Path, write) -> Path:
    # an existing folder here is incomplete (callers check completeness first): replace it
    with atomic_dir(target, replace=True) as tmp:
        write(tmp)
    return target
