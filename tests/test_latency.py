"""Latency measurement on tiny models: both phases measured, dense/ticket/materialized rows. No timing goals here."""

import json

import pytest
import torch

from analysis.latency import fixed_prompts, latency_table, measure_latency
from pruning.errors import TicketLabError
from pruning.prune import make_ticket
from pruning.ticket import Ticket

QUICK = {"prompt_len": 16, "gen_tokens": 4, "repeats": 1, "warmup": 1}


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt2"])
def test_measure_reports_positive_rates_for_both_phases(request, name):
    loaded = request.getfixturevalue(name)
    m = measure_latency(loaded.model, loaded.tokenizer, batch_size=2, **QUICK)
    assert m["prefill_tokens_per_s"] > 0 and m["decode_tokens_per_s"] > 0 and m["generate_tokens_per_s"] > 0
    assert m["prompt_len"] == 16 and m["batch_size"] == 2 and m["gen_tokens"] == 4
    assert m["time_to_first_token_s"] <= m["generate_s"] and m["prompt_source"] == "wikitext-2 test"
    assert m["machine"]["cpus"] and m["device"] == "cpu" and m["dtype"] == "float32"


def test_fixed_prompts_are_deterministic(tiny_llama):
    a = fixed_prompts(tiny_llama.tokenizer, 16, 2)
    assert a.shape == (2, 16) and torch.equal(a, fixed_prompts(tiny_llama.tokenizer, 16, 2))
    m1 = measure_latency(tiny_llama.model, tiny_llama.tokenizer, prompts=["Hello there, world.", "Hi"], batch_size=2,
                        **QUICK)
    assert m1["prompt_source"] == "given text" and m1["prompt_len"] == 1  # cut to the shortest: no padding


def test_table_dense_ticket_and_materialized_on_same_prompts(tiny_llama, tiny_llama_dir):
    ticket = make_ticket(tiny_llama, "magnitude", 0.5)
    before = {n: p.detach().clone() for n, p in tiny_llama.model.named_parameters()}
    # a stock checkpoint directory stands in for a materialized ticket (same loader path as an even one)
    rows = latency_table(tiny_llama, ticket, materialized_dir=tiny_llama_dir, **QUICK)
    assert [r["variant"] for r in rows] == ["dense", "ticket", "materialized"]
    assert rows[1]["subject"] == ticket.id and rows[0]["subject"] == "dense"
    assert len({r["prompt_sha256"] for r in rows}) == 1
    assert rows[0]["prefill_ratio"] == rows[0]["decode_ratio"] == 1.0
    for r in rows:
        assert r["prefill_tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0
        assert r["prefill_ratio"] > 0 and r["decode_ratio"] > 0 and r["generate_ratio"] > 0
    for n, p in tiny_llama.model.named_parameters():
        assert torch.equal(p, before[n])


def test_uneven_materialized_ticket_goes_through_the_project_loader(tiny_llama, tmp_path):
    from pruning.materialize import materialize

    # one KV group of layer 1 removed (its key/value head and both query heads): the layers differ,
    # so the config names the project's loader
    params = dict(tiny_llama.model.named_parameters())
    masks = {}
    for s in tiny_llama.adapter.kv_group_slices(1, 0):
        m = masks.setdefault(s.param, torch.ones_like(params[s.param], dtype=torch.bool))
        m.narrow(s.axis, s.start, s.stop - s.start).fill_(False)
    dense = {"spec": tiny_llama.spec, "weights_sha256": tiny_llama.weights_sha256, "family": tiny_llama.family,
             "model_type": tiny_llama.model.config.model_type}
    ticket = Ticket(masks=masks, dense=dense, method="hand", params={}, target_sparsity=0.0)
    out = tmp_path / "small"
    materialize(tiny_llama, ticket, out)
    assert "ticketlab_loader" in json.loads((out / "config.json").read_text())
    rows = latency_table(tiny_llama, ticket, materialized_dir=out, **QUICK)
    assert rows[2]["variant"] == "materialized" and rows[2]["n_params"] < rows[0]["n_params"]
    assert rows[2]["decode_tokens_per_s"] > 0 and rows[2]["prefill_ratio"] > 0


def test_bad_input(tiny_gpt2, tmp_path):
    with pytest.raises(TicketLabError, match="positions"):
        measure_latency(tiny_gpt2.model, tiny_gpt2.tokenizer, prompt_len=250, gen_tokens=10)
    with pytest.raises(TicketLabError, match="repeats"):
        measure_latency(tiny_gpt2.model, tiny_gpt2.tokenizer, repeats=0)
    with pytest.raises(TicketLabError, match="no config.json"):
        latency_table(tiny_gpt2, materialized_dir=tmp_path, **QUICK)
