"""Shared fixtures: a temporary state directory, and tiny random Llama (GQA) and GPT-2 checkpoints.

The tiny checkpoints borrow the embedded SmolLM2 tokenizer (built once into the repository's
`data/models` cache and linked into each temporary state directory), so no hub access is needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from require_all import pytest_configure, pytest_runtest_makereport  # noqa: F401  (hooks: skips fail in CI)

# Private keys are sealed with scrypt at a cost of about a second per unlock; the suite makes and unlocks
# hundreds of keys, so it lowers the cost (test_keys.py checks that the default is the strong one).
os.environ.setdefault("TICKETLAB_KDF_LOG2N", "10")

REPO = Path(__file__).resolve().parents[1]
REPO_STATE = REPO / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def _embedded_dir() -> Path:
    from pruning import settings
    from pruning.models import DEFAULT_MODEL, embedded_checkpoint

    settings.set_state_dir(REPO_STATE)
    try:
        return embedded_checkpoint(DEFAULT_MODEL)
    finally:
        settings._overrides.pop("state", None)


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    return _embedded_dir()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    env = os.environ.get("TICKETLAB_DATA_DIR")
    for candidate in [Path(env)] if env else [REPO_STATE / "reference", REPO.parent / "shared" / "data"]:
        if (candidate / "corpora").exists():
            return candidate.resolve()
    pytest.skip("reference data not found: run `make install` (links ../shared/data), `make SHARED_DATA=/path/to/data install`, or set TICKETLAB_DATA_DIR")


@pytest.fixture
def reference_data(data_dir, monkeypatch) -> Path:
    """For tests that read the reference data through `settings`: skipped without it (a failure in CI),
    and settings pointed at the copy found."""
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(data_dir))
    return data_dir


@pytest.fixture
def state(tmp_path, embedded_dir, data_dir, monkeypatch):
    """A fresh state directory with the embedded model cache linked in (no 20 s GGUF rebuild)."""
    from pruning import settings

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / embedded_dir.name).symlink_to(embedded_dir)
    monkeypatch.setenv("TICKETLAB_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(data_dir))
    monkeypatch.delenv("TICKETLAB_LEDGER", raising=False)
    settings._overrides.clear()
    yield tmp_path
    settings._overrides.clear()


def _save_tiny(model, embedded: Path, out: Path) -> Path:
    from transformers import AutoTokenizer

    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(embedded).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, embedded_dir) -> Path:
    """2 layers, 4 query heads sharing 2 KV heads (GQA), hidden 64, MLP 128."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return _save_tiny(LlamaForCausalLM(cfg), embedded_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, embedded_dir) -> Path:
    """2 layers, 4 heads, hidden 64 (Conv1D weights stored [in, out])."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=49152, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                     bos_token_id=1, eos_token_id=2)
    return _save_tiny(GPT2LMHeadModel(cfg), embedded_dir, tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture
def tiny_llama(state, tiny_llama_dir):
    from pruning.models import load_model

    return load_model(str(tiny_llama_dir))


@pytest.fixture
def tiny_gpt2(state, tiny_gpt2_dir):
    from pruning.models import load_model

    return load_model(str(tiny_gpt2_dir))
