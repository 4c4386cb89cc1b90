"""Structured pruning: importance scores, the GQA rule, allocation, and the ticket it records."""

from __future__ import annotations

import math

import pytest
import torch

from pruning.calibration import CalibrationSet
from pruning.errors import TicketLabError
from pruning.importance import (
    UnitSlices,
    activation_scores,
    magnitude_scores,
)
from pruning.methods.structured import select_lowest
from pruning.prune import make_ticket
from pruning.structure import per_layer_lists, removed
from pruning.ticket import Ticket

HD, D = 16, 64  # tiny Llama: head_dim, hidden


@pytest.fixture
def calib():
    g = torch.Generator().manual_seed(0)
    return CalibrationSet(torch.randint(0, 1000, (4, 16), generator=g), {"source": "test", "seed": 0})


def _scale(loaded, slices, factor):
    with torch.no_grad():
        for s in slices:
            p = loaded.adapter.parameter(s.param).data
            if s.axis == 0:
                p[s.start:s.stop] *= factor
            else:
                p[:, s.start:s.stop] *= factor


def _four_layer(family):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from pruning.adapters import adapter_for

    if family == "llama":
        m = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=24, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2, attention_bias=True))
    else:
        m = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=32, n_layer=4, n_head=4, n_positions=16))
    return adapter_for(m)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_unit_slices_equal_the_adapters_own(family):
    adapter = _four_layer(family)
    units = UnitSlices(adapter)
    for layer in range(adapter.num_layers):
        assert units("query", layer) == [adapter.query_head_slices(layer, h) for h in range(adapter.num_heads)]
        assert units("kv_group", layer) == [adapter.kv_group_slices(layer, g) for g in range(adapter.num_kv_heads)]
        assert units("neuron", layer) == [adapter.neuron_slices(layer, j) for j in range(adapter.intermediate_size)]
        assert {s.param for s in units("layer", layer)[0]} == set(adapter.layer_parameters(layer))
        own = units("kv_own", layer)
        if family == "gpt2":
            assert all(o == [] for o in own)
        else:  # key and value rows (and biases) of the KV head only
            assert all({s.param.split(".")[-2] for s in o} == {"k_proj", "v_proj"} for o in own)


def test_magnitude_hand_computed_and_ties(tiny_llama, calib):
    lm = tiny_llama
    with torch.no_grad():
        for ref in lm.adapter.linears(0):
            if ref.kind in "qkvo":
                lm.adapter.parameter(ref.name).fill_(1.0)
    # Layer 0: every KV group holds k rows, v rows, 2 query heads' q rows and o columns: 6 x (16 x 64) ones.
    scores = magnitude_scores(lm.adapter, "kv_group")
    assert scores[0].tolist() == [math.sqrt(6 * HD * D)] * 2
    _scale(lm, lm.adapter.kv_group_slices(1, 1), 0.01)
    t = make_ticket(lm, "heads", 0.5, calib=calib)
    # layer 0 is a tie: the lower index goes; layer 1: group 1 is the weakest
    assert per_layer_lists(t.structure, "kv_heads", 2) == [[0], [1]]
    assert per_layer_lists(t.structure, "query_heads", 2) == [[0, 1], [2, 3]]


def test_neuron_magnitude_hand_computed(tiny_llama, calib):
    lm = tiny_llama
    a = torch.tensor([(j * 37) % 128 for j in range(128)], dtype=torch.float32)  # a permutation of 0..127
    p = f"{lm.adapter.layer_prefix(0)}.mlp"
    with torch.no_grad():
        lm.model.get_parameter(f"{p}.gate_proj.weight").copy_(a[:, None].expand(128, D))
        lm.model.get_parameter(f"{p}.up_proj.weight").copy_(a[:, None].expand(128, D))
        lm.model.get_parameter(f"{p}.down_proj.weight").copy_(a[None, :].expand(D, 128))
    scores = magnitude_scores(lm.adapter, "neuron")
    torch.testing.assert_close(scores[0], a.double() * math.sqrt(3 * D))
    t = make_ticket(lm, "neurons", 0.25, calib=calib)
    assert removed(t.structure, "neurons")[0] == sorted(j for j in range(128) if a[j] < 32)
    assert t.masks[f"{p}.down_proj.weight"][:, a < 32].any().item() is False
    assert t.structure["unit_sparsity"] == 0.25 and "neurons" in t.structure["sparsity_means"]


def test_gqa_rule_query_units(tiny_llama, calib):
    lm = tiny_llama
    for layer in range(2):
        for h, factor in ((0, 0.001), (1, 0.01)):  # both query heads of KV group 0 are the weakest, head 0 most
            _scale(lm, lm.adapter.query_head_slices(layer, h), factor)
    k0 = f"{lm.adapter.layer_prefix(0)}.self_attn.k_proj.weight"
    o0 = f"{lm.adapter.layer_prefix(0)}.self_attn.o_proj.weight"
    one = make_ticket(lm, "heads", 0.25, options={"unit": "query"}, calib=calib)
    assert per_layer_lists(one.structure, "query_heads", 2) == [[0], [0]]
    assert per_layer_lists(one.structure, "kv_heads", 2) == [[], []]
    assert one.masks[k0].all()  # the KV head still serves query head 1
    assert not one.masks[o0][:, :HD].any() and one.masks[o0][:, HD:].all()
    both = make_ticket(lm, "heads", 0.5, options={"unit": "query"}, calib=calib)
    assert per_layer_lists(both.structure, "query_heads", 2) == [[0, 1], [0, 1]]
    assert per_layer_lists(both.structure, "kv_heads", 2) == [[0], [0]]
    assert not both.masks[k0][:HD].any() and both.masks[k0][HD:].all()
    assert "query heads" in both.structure["gqa_rule"]


def test_kv_group_unit_takes_all_its_query_heads(tiny_llama, calib):
    lm = tiny_llama
    _scale(lm, lm.adapter.kv_group_slices(0, 1), 0.01)
    t = make_ticket(lm, "heads", 0.5, options={"unit": "kv_group"}, calib=calib)
    assert removed(t.structure, "kv_heads")[0] == [1] and removed(t.structure, "query_heads")[0] == [2, 3]
    q = t.masks[f"{lm.adapter.layer_prefix(0)}.self_attn.q_proj.weight"]
    assert not q[2 * HD:].any() and q[:2 * HD].all()


def test_never_removes_everything(tiny_llama, tiny_gpt2, calib):
    for lm in (tiny_llama, tiny_gpt2):
        for method, opts in [("heads", {}), ("heads", {"unit": "query", "per_layer": "global"}),
                             ("neurons", {}), ("neurons", {"per_layer": "global"})]:
            t = make_ticket(lm, method, 0.99, options=opts, calib=calib)
            per_layer = t.structure["units_per_layer"]
            unit = {"kv_group": "kv_heads", "query": "query_heads", "neuron": "neurons"}[t.structure["unit"]]
            gone = per_layer_lists(t.structure, unit, lm.adapter.num_layers)
            assert all(len(r) < per_layer for r in gone) and sum(map(len, gone)) >= per_layer - 1
        t = make_ticket(lm, "layers", 0.99, calib=calib)
        assert len(removed(t.structure, "layers")) == lm.adapter.num_layers - 1


def test_select_lowest_uniform_and_global_hand_computed():
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 100.0]], dtype=torch.float64)
    assert select_lowest(scores, 0.5, "uniform") == [[0, 1], [0, 1]]
    # per-layer L2 normalisation: row 0 / sqrt(30) = .18 .37 .55 .73; row 1 / sqrt(10300) = .099 x3, .985
    assert select_lowest(scores, 0.5, "global") == [[0], [0, 1, 2]]
    # the layer cap (keep one) pushes the rest elsewhere; ties go to the lower index
    assert select_lowest(torch.zeros(2, 3, dtype=torch.float64), 0.5, "global") == [[0, 1], [0]]
    assert select_lowest(scores, 0.0, "global") == [[], []]


def test_activation_scores_are_output_norms(tiny_llama, tiny_gpt2, calib):
    for lm in (tiny_llama, tiny_gpt2):
        a = lm.adapter
        seen: list[torch.Tensor] = []
        module = a.module(next(r.module_name for r in a.linears(1) if r.kind == "o"))
        handle = module.register_forward_pre_hook(lambda m, args, seen=seen: seen.append(args[0].detach().double()))
        try:
            scores = activation_scores(lm, "query", calib, max_batch_tokens=32)
        finally:
            handle.remove()
        x = torch.cat([s.reshape(-1, s.shape[-1]) for s in seen])
        expected = x.reshape(x.shape[0], a.num_heads, a.head_dim).pow(2).sum(dim=(0, 2)).sqrt()
        torch.testing.assert_close(scores[1], expected, rtol=1e-6, atol=1e-9)
        layers = activation_scores(lm, "layer", calib)
        assert layers.shape == (a.num_layers, 1) and (layers > 0).all()


def test_ticket_records_structure_and_round_trips(tiny_llama, tiny_gpt2, calib, state):
    t = make_ticket(tiny_llama, "heads", 0.5, options={"importance": "taylor", "per_layer": "global"}, calib=calib)
    s = t.structure
    assert s["kind"] == "heads" and s["unit"] == "kv_group" and s["importance"] == "taylor"
    assert "fraction of KV groups" in s["sparsity_means"] and s["units_removed"] == 2
    loaded = Ticket.load(t.save())
    assert loaded.id == t.id and loaded.structure == s
    again = make_ticket(tiny_llama, "heads", 0.5, options={"importance": "taylor", "per_layer": "global"}, calib=calib)
    assert again.id == t.id
    g = make_ticket(tiny_gpt2, "heads", 0.25, calib=calib)
    h = removed(g.structure, "query_heads")[0][0]
    bias = g.masks[f"{tiny_gpt2.adapter.layer_prefix(0)}.attn.c_attn.bias"]
    for part in range(3):  # the head's q, k and v biases go with it
        assert not bias[part * D + h * HD: part * D + (h + 1) * HD].any()
    assert int((~bias).sum()) == 3 * HD
    lt = make_ticket(tiny_gpt2, "layers", 0.5, options={"importance": "activation"}, calib=calib)
    assert removed(Ticket.load(lt.save()).structure, "layers") == removed(lt.structure, "layers")


def test_bad_options(tiny_llama, calib):
    with pytest.raises(TicketLabError, match="importance"):
        make_ticket(tiny_llama, "heads", 0.3, options={"importance": "oracle"}, calib=calib)
    with pytest.raises(TicketLabError, match="takes no option"):
        make_ticket(tiny_llama, "layers", 0.3, options={"unit": "query"}, calib=calib)
