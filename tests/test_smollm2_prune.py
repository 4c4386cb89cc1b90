"""Wanda on the real SmolLM2-135M-Instruct: a 2:4 ticket really is 2:4 in every group of every tensor."""

import pytest
import torch

from pruning.calibration import from_corpus
from pruning.models import load_model
from pruning.prune import make_ticket


@pytest.mark.smollm
def test_wanda_2_4_on_smollm2(state):
    loaded = load_model("smollm2-135m-instruct")
    before = {r.name: loaded.adapter.parameter(r.name).detach().clone() for r in loaded.adapter.linears(0)}
    calib = from_corpus(loaded.tokenizer, 4, 128, seed=0)
    t = make_ticket(loaded, "wanda", 0.5, options={"pattern": "2:4"}, calib=calib)
    refs = loaded.adapter.linears()
    assert set(t.masks) == {r.name for r in refs} and len(refs) == 7 * loaded.adapter.num_layers
    for ref in refs:
        mask = t.masks[ref.name]
        assert mask.shape == loaded.adapter.parameter(ref.name).shape
        assert (mask.reshape(mask.shape[0], -1, 4).sum(-1) == 2).all(), ref.name
    assert t.achieved_sparsity == 0.5 and t.calibration["n"] == 4 and t.calibration["length"] == 128
    for name, w in before.items():
        assert torch.equal(loaded.adapter.parameter(name), w)
