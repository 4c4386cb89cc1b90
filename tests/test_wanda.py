"""Wanda and the layer-by-layer runner on hand-computed cases and on tiny Llama (GQA) and GPT-2 models."""

import pytest
import torch

from pruning.calibration import CalibrationSet
from pruning.errors import TicketLabError
from pruning.layerwise import run_layerwise
from pruning.masks import prune_lowest_per_row
from pruning.method_registry import PruneOptions
from pruning.methods.wanda import wanda_mask, wanda_scores
from pruning.prune import make_ticket
from pruning.ticket import Ticket, applied

# |W| x ||X||: rows 1-3 rank differently from |W| alone; ties (row 1's two 4s, row 2's 2s) go to
# the lower column index first.
W = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1],
                  [1, 4, 1, 4, 1, 4, 1, 4],
                  [0.5, -0.5, 2, 2, 2, 2, -0.5, 0.5],
                  [-3, 3, 3, 3, 1, 1, -1, 1]])
NORMS = torch.tensor([4.0, 3, 2, 1, 1, 2, 3, 4])
# scores: [4 3 2 1 1 2 3 4] / [4 12 2 4 1 8 3 16] / [2 1.5 4 2 2 4 1.5 2] / [12 9 6 3 1 2 3 4]
T, F = True, False


def calib_set(n=6, length=24, seed=1):
    return CalibrationSet(torch.randint(0, 49152, (n, length), generator=torch.Generator().manual_seed(seed)),
                          {"source": "test", "n": n, "length": length, "seed": seed})


def test_hand_computed_per_row_4x8():
    mask = wanda_mask(wanda_scores(W, NORMS), 0.5, None)
    assert mask.tolist() == [[T, T, F, F, F, F, T, T],
                             [F, T, F, T, F, T, F, T],
                             [F, F, T, F, T, T, F, T],
                             [T, T, T, F, F, F, F, T]]
    assert prune_lowest_per_row(W.abs(), 0.5)[3].tolist() == [T, T, T, T, F, F, F, F]  # magnitude differs


def test_hand_computed_2_4():
    mask = wanda_mask(wanda_scores(W, NORMS), 0.5, (2, 4))
    assert mask.tolist() == [[T, T, F, F, F, F, T, T],
                             [F, T, F, T, F, T, F, T],
                             [F, F, T, T, F, T, F, T],
                             [T, T, F, F, F, F, T, T]]


def test_layer0_masks_match_independent_norms(tiny_llama):
    """Layer 0 sees dense inputs: its masks must be Wanda's on norms computed here by hand."""
    calib = calib_set()
    t = make_ticket(tiny_llama, "wanda", 0.5, calib=calib)
    m = tiny_llama.model.model
    with torch.no_grad():
        x = m.layers[0].input_layernorm(m.embed_tokens(calib.tokens)).reshape(-1, 64)
    norms = x.pow(2).sum(0).sqrt()
    for proj in ("q_proj", "k_proj", "v_proj"):
        w = getattr(m.layers[0].self_attn, proj).weight
        expected = prune_lowest_per_row(w.abs() * norms, 0.5)
        assert torch.equal(t.masks[f"model.layers.0.self_attn.{proj}.weight"], expected)


def test_layer1_sees_pruned_layer0(tiny_llama):
    """Layer 1's statistics come from layer 0 already pruned (the papers' sequential mode)."""
    calib = calib_set()
    t = make_ticket(tiny_llama, "wanda", 0.5, calib=calib)
    m = tiny_llama.model.model
    only0 = Ticket(masks={k: v for k, v in t.masks.items() if ".layers.0." in k}, dense=t.dense, method="wanda",
                   params={}, target_sparsity=0.5)
    with torch.no_grad(), applied(tiny_llama, only0):
        h1 = tiny_llama.model(calib.tokens, output_hidden_states=True).hidden_states[1]
        x = m.layers[1].input_layernorm(h1).reshape(-1, 64)
    w = m.layers[1].self_attn.q_proj.weight
    expected = prune_lowest_per_row(w.abs() * x.pow(2).sum(0).sqrt(), 0.5)
    assert torch.equal(t.masks["model.layers.1.self_attn.q_proj.weight"], expected)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_nm_holds_in_every_group(model, pattern, request):
    loaded = request.getfixturevalue(model)
    n, m = map(int, pattern.split(":"))
    t = make_ticket(loaded, "wanda", None, options={"pattern": pattern}, calib=calib_set())
    assert len(t.masks) == len(loaded.adapter.linears())
    for ref in loaded.adapter.linears():
        view = t.masks[ref.name].t() if ref.transposed else t.masks[ref.name]
        groups = view.reshape(view.shape[0], -1, m).sum(-1)
        assert (groups == n).all(), ref.name
    assert t.target_sparsity == pytest.approx(1 - n / m)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_unstructured_rows_dense_restored_and_deterministic(model, request):
    loaded = request.getfixturevalue(model)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    t = make_ticket(loaded, "wanda", 0.5, calib=calib_set())
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # runner put the dense weights back
    for ref in loaded.adapter.linears():
        mask = t.masks[ref.name]
        assert mask.shape == loaded.adapter.parameter(ref.name).shape
        view = mask.t() if ref.transposed else mask
        assert (view.sum(1) == view.shape[1] // 2).all()  # per output row
    assert t.calibration["n"] == 6 and t.weights == {}
    assert make_ticket(loaded, "wanda", 0.5, calib=calib_set()).id == t.id


def test_runner_restores_dense_weights_on_error(tiny_gpt2):
    before = {k: v.clone() for k, v in tiny_gpt2.model.state_dict().items()}

    def decide(i, refs, stats):
        if i == 1:
            raise RuntimeError("boom")
        return {r.name: (torch.zeros_like(tiny_gpt2.adapter.weight_view(r), dtype=torch.bool), None) for r in refs}

    with pytest.raises(RuntimeError, match="boom"):
        run_layerwise(tiny_gpt2, calib_set(), PruneOptions(0.5), decide)
    after = tiny_gpt2.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_wanda_needs_calibration(tiny_llama):
    with pytest.raises(TicketLabError, match="calibration"):
        make_ticket(tiny_llama, "wanda", 0.5)
