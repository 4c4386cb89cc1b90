"""The architecture adapters own head geometry and the GQA rule: one implementation, checked on a GQA
Llama and on GPT-2, and used by every method, IMP, materialize and survival."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from analysis.survival import survival_by_head
from pruning import structure
from pruning.adapters import ADAPTERS, ArchitectureAdapter, HeadRemoval, adapter_for
from pruning.calibration import CalibrationSet
from pruning.errors import TicketLabError
from pruning.lottery.masks import heads_to_masks
from pruning.materialize import plan_for
from pruning.prune import make_ticket

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def calib():
    return CalibrationSet(torch.randint(0, 1000, (2, 8), generator=torch.Generator().manual_seed(0)), {"source": "t"})


def _masks_for(adapter, removal_per_layer: dict[int, HeadRemoval]) -> dict[str, torch.Tensor]:
    """Weight masks (2-D parameters) that remove exactly the given heads, from the adapter's slices."""
    masks = {r.name: torch.ones(adapter.parameter(r.name).shape, dtype=torch.bool) for r in adapter.linears()}
    for layer, removal in removal_per_layer.items():
        for s in adapter.head_removal_slices(layer, removal):
            if s.param in masks:
                m = masks[s.param]
                if s.axis == 0:
                    m[s.start:s.stop] = False
                else:
                    m[:, s.start:s.stop] = False
    return masks


def test_gqa_rule_on_llama_gqa(tiny_llama):
    a = tiny_llama.adapter  # 4 query heads share 2 KV heads
    assert (a.num_heads, a.num_kv_heads, a.group_size) == (4, 2, 2)
    assert [a.kv_head_of(h) for h in range(4)] == [0, 0, 1, 1] and list(a.query_heads_of(1)) == [2, 3]
    # a query head alone leaves its KV head (the other query head still reads it)
    assert a.close_heads(query=[0]) == HeadRemoval((0,), ())
    assert a.close_heads(query=[1, 2]) == HeadRemoval((1, 2), ())
    # the last reader gone: the KV head goes too
    assert a.close_heads(query=[0, 1, 3]) == HeadRemoval((0, 1, 3), (0,))
    # a KV head asked for takes all of its query heads with it
    assert a.close_heads(kv=[1]) == HeadRemoval((2, 3), (1,))
    assert a.close_heads(query=[0], kv=[1]) == HeadRemoval((0, 2, 3), (1,))
    with pytest.raises(TicketLabError, match="out of range"):
        a.close_heads(query=[4])
    # a KV head's own slices are its k and v rows; its group adds its query heads' q rows and o columns
    own = a.kv_head_slices(0, 1)
    assert {s.param.split(".")[-2] for s in own} == {"k_proj", "v_proj"}
    assert all((s.axis, s.start, s.stop) == (0, 16, 32) for s in own)
    assert a.kv_group_slices(0, 1) == own + a.query_head_slices(0, 2) + a.query_head_slices(0, 3)


def test_gqa_rule_on_gpt2(tiny_gpt2):
    a = tiny_gpt2.adapter  # no GQA: a query head and its KV head are one
    assert (a.num_heads, a.num_kv_heads, a.group_size) == (4, 4, 1)
    assert a.close_heads(query=[2]) == HeadRemoval((2,), (2,))
    assert a.close_heads(kv=[1, 3]) == HeadRemoval((1, 3), (1, 3))
    assert a.kv_head_slices(0, 2) == []  # its k and v columns are part of the query head's slices
    assert a.kv_group_slices(0, 2) == a.query_head_slices(0, 2)
    parts = {(s.param.split(".")[-1], s.start) for s in a.query_head_slices(0, 2) if "c_attn" in s.param}
    assert parts == {(p, part * 64 + 32) for p in ("weight", "bias") for part in range(3)}  # q, k and v thirds


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_every_head_remover_follows_the_one_rule(model, request, calib):
    """Structured pruning, IMP's head masks, materialize's plan and survival all agree with close_heads."""
    lm = request.getfixturevalue(model)
    a = lm.adapter
    t = make_ticket(lm, "heads", 0.5, options={"unit": "query"}, calib=calib)
    asked = structure.removed(t.structure, "query_heads")
    expected = {layer: a.close_heads(query=q) for layer, q in asked.items()}
    assert structure.removed(t.structure, "kv_heads") == {k: list(r.kv) for k, r in expected.items() if r.kv}
    want = _masks_for(a, expected)
    assert all(torch.equal(t.masks[n], want[n]) for n in want)
    # IMP's head masks for the same removed query heads
    names = [r.name for r in a.linears()]
    imp_masks, imp_structure = heads_to_masks(a, names, asked, {n: a.parameter(n).shape for n in names})
    assert imp_structure["removed"] == t.structure["removed"]
    assert all(torch.equal(imp_masks[n], want[n]) for n in names)
    # materialize keeps exactly the heads the rule keeps
    plan = plan_for(a, t)
    for lp in plan.layers:
        assert lp.q_keep == [h for h in range(a.num_heads) if h not in expected[lp.source].query]
    # survival: a removed KV head has nothing left, a kept one everything
    for layer, head, kind, kept, total in survival_by_head(t.masks, a):
        if kind == "kv":
            assert kept == (0 if head in expected[layer].kv else total)


def test_imp_masks_drop_a_kv_head_with_its_last_query_head(tiny_llama):
    a = tiny_llama.adapter
    names = [r.name for r in a.linears()]
    shapes = {n: a.parameter(n).shape for n in names}
    masks, s = heads_to_masks(a, names, {0: [2, 3], 1: [1]}, shapes)
    assert structure.removed(s, "kv_heads") == {0: [1]} and structure.removed(s, "query_heads") == {0: [2, 3], 1: [1]}
    k0 = masks["model.layers.0.self_attn.k_proj.weight"]
    assert not k0[16:].any() and k0[:16].all()
    assert masks["model.layers.1.self_attn.k_proj.weight"].all()  # head 1's KV head still serves head 0


def test_family_facts(tiny_llama, tiny_gpt2):
    for lm, family in ((tiny_llama, "llama"), (tiny_gpt2, "gpt2")):
        a = lm.adapter
        assert a.family == family and a.max_positions == 256
        body, head = a.body_and_head()
        assert body is lm.model.base_model and head is lm.model.get_output_embeddings()
        shape = a.dense_shape()
        assert a.stock_shape(shape)
    # Llama's config validation needs hidden % heads == 0; GPT-2 derives head width from n_head
    assert not tiny_llama.adapter.stock_shape({**tiny_llama.adapter.dense_shape(), "num_attention_heads": 3})
    assert not tiny_gpt2.adapter.stock_shape({**tiny_gpt2.adapter.dense_shape(), "num_attention_heads": 2})


def test_a_new_family_is_one_adapter_class(tiny_llama):
    """Defining a subclass registers it for its model types; nothing else needs to change."""
    from pruning.adapters.llama import LlamaAdapter

    class MyLlamaLike(LlamaAdapter):
        family = "my-llama"
        model_types = ("my-llama-test",)

    try:
        assert ADAPTERS["my-llama-test"] is MyLlamaLike
        tiny_llama.model.config.model_type = "my-llama-test"
        assert isinstance(adapter_for(tiny_llama.model), MyLlamaLike)
    finally:
        tiny_llama.model.config.model_type = "llama"
        del ArchitectureAdapter.registry["my-llama-test"]
    tiny_llama.model.config.model_type = "bert"
    try:
        with pytest.raises(TicketLabError, match="unsupported architecture 'bert'.*pruning/adapters"):
            adapter_for(tiny_llama.model)
    finally:
        tiny_llama.model.config.model_type = "llama"


def test_no_family_branches_outside_the_adapters():
    """Architecture facts live in pruning/adapters/: nothing else compares a family or model type, or works
    out which query heads share a KV head (`.group_size` arithmetic: the GQA rule is `close_heads`)."""
    # `adapter.group_size` (query heads per KV head) or heads // kv_heads arithmetic; a quantization
    # recipe's own `group_size` (columns sharing a scale) is another concept and not flagged.
    pattern = re.compile(r"""(family|model_type)\s*[!=]=|[!=]=\s*["'](gpt2|llama)["']|adapter\.group_size\b"""
                         r"""|num_(attention_)?heads\s*//\s*\S*num_(key_value|kv)_heads""")
    offenders = []
    for top in ("pruning", "analysis", "app"):
        for path in sorted((REPO / top).rglob("*.py")):
            if path.is_relative_to(REPO / "pruning" / "adapters"):
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
