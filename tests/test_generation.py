"""analysis.generation: batched greedy decoding equals one prompt at a time (and `model.generate`),
is deterministic, refuses bad settings with one clear line, and resumes after kill -9."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from analysis.generation import encode, generate, stop_ids
from pruning.errors import TicketLabError

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Hello!", "Write a short poem about the sea and the sky, in three lines.", "What is 2 + 2?",
           "Name a colour.", "Explain, in one long sentence, why the sky is blue during the day and dark at night.",
           "ok"]


def _one_at_a_time(loaded, prompts, n):
    return [generate(loaded.model, loaded.tokenizer, [p], max_new_tokens=n, batch_size=1).tokens[0] for p in prompts]


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_batched_equals_one_at_a_time(fixture, request):
    loaded = request.getfixturevalue(fixture)
    batched = generate(loaded.model, loaded.tokenizer, PROMPTS, max_new_tokens=10, batch_size=4)
    assert batched.tokens == _one_at_a_time(loaded, PROMPTS, 10)
    assert all(len(t) == 10 for t in batched.tokens)  # a random model never says end-of-turn here
    # and equals transformers' own greedy generate, one prompt at a time, no padding at all
    for p, toks in zip(PROMPTS[:3], batched.tokens, strict=False):
        ids = torch.tensor([encode(loaded.tokenizer, [p])[0]])
        ref = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                                    eos_token_id=stop_ids(loaded.model, loaded.tokenizer), pad_token_id=0)
        assert ref[0, ids.shape[1]:].tolist() == toks


REFILL_PROMPTS = ["a", "Write a short poem about the sea and the sky, in three lines, then explain it.", "2+2?",
                  "Name a colour you like and say why in a full sentence or two.", "ok", "Why is the sky blue?",
                  "List three prime numbers greater than ten, one per line, with a word about each.", "hey",
                  "Describe a cat.", "x"]


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_continuous_batching_refills_equal_one_at_a_time(fixture, request):
    """More prompts than batch rows, prompt lengths from 1 word to 20, and answers of different lengths
    (a context window just wider than the longest prompt gives each prompt its own budget): rows leave,
    newcomers are prefilled and merged into the running cache mid-decode (left-padded to its width),
    and every answer still equals the prompt decoded alone and transformers' own greedy generate."""
    loaded = request.getfixturevalue(fixture)
    model, tok = loaded.model, loaded.tokenizer
    lens = [len(e) for e in encode(tok, REFILL_PROMPTS)]
    window = max(lens) + 3
    calls: list[tuple[int, int]] = []  # (rows, query length) of every forward
    hook = model.register_forward_pre_hook(lambda m, a, kw: calls.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    try:
        batched = generate(model, tok, REFILL_PROMPTS, max_new_tokens=12, batch_size=3, max_positions=window)
    finally:
        hook.remove()
    alone = [generate(model, tok, [p], max_new_tokens=12, batch_size=1, max_positions=window).tokens[0]
             for p in REFILL_PROMPTS]
    ref = []
    for p, n in zip(REFILL_PROMPTS, lens, strict=True):
        ids = torch.tensor([encode(tok, [p])[0]])
        ref.append(model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=min(12, window - n),
                                  do_sample=False, eos_token_id=stop_ids(model, tok), pad_token_id=0)
                   [0, ids.shape[1]:].tolist())
    assert batched.tokens == alone == ref
    assert [len(t) for t in batched.tokens] == [min(12, window - n) for n in lens]
    assert len({len(t) for t in batched.tokens}) >= 4
    assert max(r for r, _ in calls) <= 3
    # a refill: newcomers prefilled (query length > 1) joined rows already decoding (query length 1), so
    # the next decode step ran more rows than that prefill had
    assert any(q > 1 and nq == 1 and nr > r for (r, q), (nr, nq) in zip(calls, calls[1:], strict=False))


@pytest.mark.smollm
def test_smollm2_rows_leave_the_batch_when_they_stop(state):
    """On the real instruct model some answers end with <|im_end|> and leave the batch (their cache
    rows dropped) while the others go on: each still equals the prompt decoded alone."""
    from pruning.models import load_model

    smol = load_model("smollm2-135m-instruct")
    prompts = ["hi", "Write a long poem about the sea.", "What is 2 + 2? Answer with the number only.",
               "Tell me about Paris.", "Say yes.", "Name the capital of France in one word.",
               "Describe, in a long and detailed paragraph, how a bicycle works."]
    batched = generate(smol.model, smol.tokenizer, prompts, max_new_tokens=16, batch_size=3)  # refills
    assert batched.tokens == _one_at_a_time(smol, prompts, 16)
    assert "eos" in batched.stopped and "length" in batched.stopped
    assert "4" in batched.completions[2]


def test_deterministic_and_hashed(tiny_llama):
    a = generate(tiny_llama.model, tiny_llama.tokenizer, PROMPTS, max_new_tokens=6, batch_size=3)
    b = generate(tiny_llama.model, tiny_llama.tokenizer, PROMPTS, max_new_tokens=6, batch_size=3)
    assert a.completions == b.completions and a.sha256 == b.sha256
    c = generate(tiny_llama.model, tiny_llama.tokenizer, PROMPTS, max_new_tokens=5, batch_size=3)
    assert c.sha256 != a.sha256  # the settings are part of the hash


def test_chat_template_is_the_models_own(tiny_llama):
    ids = encode(tiny_llama.tokenizer, ["Hi there"])[0]
    text = tiny_llama.tokenizer.decode(ids)
    assert text.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")


def test_no_chat_template_is_a_clear_error_offering_the_plain_prompt(tiny_llama):
    tok = tiny_llama.tokenizer
    saved, tok.chat_template = tok.chat_template, None
    try:
        with pytest.raises(TicketLabError, match="no chat template.*plain prompt"):
            generate(tiny_llama.model, tok, ["hi"], max_new_tokens=2)
        plain = generate(tiny_llama.model, tok, ["hi"], max_new_tokens=2, chat=False)
    finally:
        tok.chat_template = saved
    assert len(plain.tokens[0]) == 2 and plain.settings["chat_template"] is False


@pytest.mark.parametrize("bad", [0, -1, 5000, 2.5, True, "12"])
def test_max_new_tokens_out_of_range(tiny_llama, bad):
    with pytest.raises(TicketLabError, match="max-new-tokens must be a whole number from 1 to 4096"):
        generate(tiny_llama.model, tiny_llama.tokenizer, ["hi"], max_new_tokens=bad)


def test_empty_prompt_and_bad_batch_size(tiny_llama):
    with pytest.raises(TicketLabError, match="non-empty text"):
        generate(tiny_llama.model, tiny_llama.tokenizer, ["hi", ""], max_new_tokens=2)
    with pytest.raises(TicketLabError, match="batch size"):
        generate(tiny_llama.model, tiny_llama.tokenizer, ["hi"], max_new_tokens=2, batch_size=0)


SCRIPT = """
import json, sys
from pruning.models import load_model
from analysis.generation import generate
loaded = load_model(sys.argv[1])
prompts = json.loads(sys.argv[2])
g = generate(loaded.model, loaded.tokenizer, prompts, max_new_tokens=6, batch_size=2, checkpoint=sys.argv[3],
             identity="tiny")
print(json.dumps({"resumed": g.resumed, "sha": g.sha256, "tokens": g.tokens}))
"""


def test_kill_9_mid_generation_resumes(tiny_llama_dir, tiny_llama, tmp_path):
    """Killed (SIGKILL) after its second batch: the checkpoint holds exactly the finished batches, the
    rerun takes them and generates the rest, and the result equals an uninterrupted run."""
    ckpt = tmp_path / "partial.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", SCRIPT, str(tiny_llama_dir), json.dumps(PROMPTS), str(ckpt)]
    killed = subprocess.run(argv, env={**env, "TICKETLAB_CRASH_AT": "generation.batch@2"}, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -9
    saved = json.loads(ckpt.read_text())
    assert len(saved["done"]) == 4  # two batches of two, nothing half-written
    resumed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert out["resumed"] == 4
    fresh = generate(tiny_llama.model, tiny_llama.tokenizer, PROMPTS, max_new_tokens=6, batch_size=2)
    assert out["tokens"] == fresh.tokens and out["sha"] == fresh.sha256
    # a checkpoint of other settings (or another model identity) is not taken
    other = generate(tiny_llama.model, tiny_llama.tokenizer, PROMPTS, max_new_tokens=5, batch_size=2,
                     checkpoint=ckpt, identity="tiny")
    assert other.resumed == 0
