"""Taylor importance (issue 9, finding 8) is Michel et al. 2019: the mean over calibration examples of
|dL(x)/d gate| for a gate on the unit's output, checked against real gates hooked into the model."""

import pytest
import torch

from pruning.calibration import CalibrationSet
from pruning.importance import taylor_scores


def _gated(loaded, calib, module_of, width_of, group):
    """Mean over sequences of |dL/d gate| with a gate of ones multiplying each unit's slice of the inputs of
    `module_of(layer)` (the projection the unit's output feeds), computed with autograd on the gates."""
    adapter, model = loaded.adapter, loaded.model
    layers = adapter.num_layers
    units = width_of // group
    total = torch.zeros(layers, units, dtype=torch.float64)
    gates = [torch.ones(units, dtype=torch.float32, requires_grad=True) for _ in range(layers)]
    handles = []
    for layer in range(layers):
        def pre(module, args, layer=layer):
            x = args[0]
            return (x * gates[layer].repeat_interleave(group),)
        handles.append(adapter.module(module_of(layer)).register_forward_pre_hook(pre))
    try:
        for i in range(calib.n):
            for g in gates:
                g.grad = None
            x = calib.tokens[i:i + 1]
            model(input_ids=x, labels=x, use_cache=False).loss.backward()
            total += torch.stack([g.grad.double().abs() for g in gates])
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return total / calib.n


@pytest.fixture
def calib():
    return CalibrationSet(torch.randint(0, 1000, (4, 12), generator=torch.Generator().manual_seed(0)))


def test_head_taylor_is_the_mean_absolute_gate_gradient_per_example(tiny_llama, calib):
    a = tiny_llama.adapter
    expected = _gated(tiny_llama, calib, lambda i: f"model.layers.{i}.self_attn.o_proj",
                      a.num_heads * a.head_dim, a.head_dim)
    got = taylor_scores(tiny_llama, "query", calib)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-9)
    # the old |sum over the set| form is smaller wherever per-example signs disagree (it cancels)
    signed = _gated_signed_sum(tiny_llama, calib, a)
    assert (signed <= got + 1e-9).all() and (signed < got - 1e-7).any()


def test_neuron_taylor_gates_the_down_projection_input(tiny_llama, calib):
    a = tiny_llama.adapter
    expected = _gated(tiny_llama, calib, lambda i: f"model.layers.{i}.mlp.down_proj", a.intermediate_size, 1)
    got = taylor_scores(tiny_llama, "neuron", calib)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-9)


def _gated_signed_sum(loaded, calib, a):
    """|mean over examples of dL/d gate| (what a sum of gradients over the whole set measures)."""
    model = loaded.model
    gates = [torch.ones(a.num_heads, requires_grad=True) for _ in range(a.num_layers)]
    handles = [a.module(f"model.layers.{i}.self_attn.o_proj").register_forward_pre_hook(
        lambda m, args, i=i: (args[0] * gates[i].repeat_interleave(a.head_dim),)) for i in range(a.num_layers)]
    try:
        for i in range(calib.n):
            x = calib.tokens[i:i + 1]
            (model(input_ids=x, labels=x, use_cache=False).loss / calib.n).backward()
        return torch.stack([g.grad.double() for g in gates]).abs()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
