"""WikiText-2 perplexity: the packed/chunked path equals a plain forward, tickets apply and restore, bad data
files are one clear error."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from analysis import perplexity as P
from pruning.errors import TicketLabError
from pruning.prune import make_ticket


def _reference(loaded, spans) -> tuple[float, int]:
    tokens = P.load_tokens(loaded.tokenizer)
    total, count = 0.0, 0
    with torch.no_grad():
        for a, b in spans:
            ids = tokens[a:b][None]
            logits = loaded.model(input_ids=ids).logits[0, :-1]
            total += float(F.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += b - a - 1
    return total, count


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_matches_plain_forward(fixture, request):
    loaded = request.getfixturevalue(fixture)
    r = P.perplexity(loaded, seq_len=64, limit=3, batch_size=2)
    spans = P.windows(len(P.load_tokens(loaded.tokenizer)), 64, 3)
    total, count = _reference(loaded, spans)
    assert r["n_windows"] == 3 and r["n_tokens"] == count  # the last, shorter window included
    assert r["nll"] == pytest.approx(total / count, rel=1e-5)
    assert r["value"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert r["stderr"] > 0 and r["nll_stderr"] > 0
    assert r["stderr"] == pytest.approx(r["value"] * r["nll_stderr"])


def test_windows_cover_the_file_without_overlap():
    spans = P.windows(1000, 128)
    assert spans[0] == (0, 128) and spans[-1] == (896, 1000)
    assert all(b == c for (_, b), (c, _) in zip(spans, spans[1:], strict=False))
    picked = P.windows(1000, 128, limit=3)
    assert picked == [spans[0], spans[4], spans[7]]  # spread evenly, first and last included
    assert P.windows(1001, 128)[-1] == (896, 1001)
    assert P.windows(897, 128)[-1] == (768, 896)  # a 1-token tail scores nothing: dropped


def test_last_short_window_is_scored(tiny_llama):
    n = len(P.load_tokens(tiny_llama.tokenizer))
    spans = P.windows(n, 200)
    tail = spans[-1]
    assert tail[1] - tail[0] < 200
    # limit picks the first and last window when asked for two
    r = P.perplexity(tiny_llama, seq_len=200, limit=2, batch_size=4)
    total, count = _reference(tiny_llama, [spans[0], tail])
    assert r["n_tokens"] == count
    assert r["nll"] == pytest.approx(total / count, rel=1e-5)


def test_ticket_applied_and_restored(tiny_llama):
    before = {n: p.detach().clone() for n, p in tiny_llama.model.named_parameters()}
    dense = P.perplexity(tiny_llama, seq_len=64, limit=2)
    ticket = make_ticket(tiny_llama, "magnitude", 0.9)
    pruned = P.perplexity(tiny_llama, ticket, seq_len=64, limit=2)
    assert pruned["ticket"] == ticket.id and pruned["value"] != dense["value"]
    for n, p in tiny_llama.model.named_parameters():
        assert torch.equal(p, before[n])
    assert P.perplexity(tiny_llama, seq_len=64, limit=2)["value"] == dense["value"]


def test_bad_arguments(tiny_llama):
    with pytest.raises(TicketLabError, match="256 positions"):
        P.perplexity(tiny_llama, seq_len=512, limit=1)
    with pytest.raises(TicketLabError, match="at least 1"):
        P.perplexity(tiny_llama, seq_len=64, limit=0)
    with pytest.raises(TicketLabError, match="batch size"):
        P.perplexity(tiny_llama, seq_len=64, limit=1, batch_size=0)


def test_missing_or_empty_data_file(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(tmp_path))
    with pytest.raises(TicketLabError, match="corpora/wikitext-2/test.txt"):
        P.perplexity(tiny_llama, seq_len=64, limit=1)
    f = tmp_path / "corpora" / "wikitext-2" / "test.txt"
    f.parent.mkdir(parents=True)
    f.write_text("   \n")
    with pytest.raises(TicketLabError, match="empty; expected the WikiText-2 test split"):
        P.perplexity(tiny_llama, seq_len=64, limit=1)
    f.write_bytes(b"\xff\xfe\xfa not utf-8")
    with pytest.raises(TicketLabError, match="not UTF-8"):
        P.perplexity(tiny_llama, seq_len=64, limit=1)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_adapter_body_head_split_is_exact_and_positions_come_from_it(fixture, request):
    lm = request.getfixturevalue(fixture)
    split = lm.adapter.body_and_head()
    assert split is not None and split[1] is lm.model.get_output_embeddings()
    batch = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        chunked = P._window_nll(lm.model, batch, split)
        plain = P._window_nll(lm.model, batch, None)
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-4)
    # Llama says max_position_embeddings, GPT-2 n_positions: the adapter answers for both
    assert lm.adapter.max_positions == 256
    with pytest.raises(TicketLabError, match="256 positions"):
        P.perplexity(lm, seq_len=257, limit=1)
