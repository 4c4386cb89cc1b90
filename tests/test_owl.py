"""OWL allocation: hand-computed outlier ratios and sparsities, and OWL inside magnitude, wanda, sparsegpt."""

import pytest
import torch

from pruning.allocation import outlier_ratio, owl_layer_sparsities, owl_sparsities
from pruning.calibration import CalibrationSet
from pruning.errors import TicketLabError
from pruning.masks import prune_lowest
from pruning.method_registry import PruneMethod, PruneOptions, get_method
from pruning.prune import calibration_needed, make_ticket


def calib_set(n=6, length=24, seed=1):
    return CalibrationSet(torch.randint(0, 49152, (n, length), generator=torch.Generator().manual_seed(seed)),
                          {"source": "test", "n": n, "length": length, "seed": seed})


def test_outlier_ratio_hand_computed():
    # mean over both tensors = (9 + 100) / 10 = 10.9; only 100 > 5 x 10.9
    assert outlier_ratio([torch.ones(3, 3), torch.tensor([100.0])], 5.0) == pytest.approx(0.1)
    assert outlier_ratio([torch.ones(4)], 5.0) == 0.0


def test_owl_sparsities_hand_computed():
    # ratios min-max onto [0, 2 x 0.08] = [0, 0.16, 0.08], mean 0.08 -> 0.7 - [-0.08, 0.08, 0]
    s = owl_sparsities([0.1, 0.3, 0.2], 0.7, 0.08)
    assert s == pytest.approx([0.78, 0.62, 0.70])
    assert sum(s) / 3 == pytest.approx(0.7)
    assert owl_sparsities([0.2, 0.2], 0.5, 0.08) == [0.5, 0.5]
    with pytest.raises(TicketLabError, match="owl_lambda"):
        owl_sparsities([0.0, 1.0], 0.95, 0.08)


def _layer_sparsity(ticket, adapter, layer):
    masks = [ticket.masks[r.name] for r in adapter.linears(layer)]
    return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_owl_layers_differ_mean_is_target(method, tiny_llama):
    t = make_ticket(tiny_llama, method, 0.7, options={"allocation": "owl"}, calib=calib_set())
    per_layer = [_layer_sparsity(t, tiny_llama.adapter, i) for i in range(2)]
    # two layers: min-max normalisation puts them at exactly target +- lambda; wanda and magnitude
    # round each row's / tensor's count down to whole weights (rows of 64 here: up to 1/64 fewer)
    assert sorted(per_layer) == pytest.approx([0.62, 0.78], abs=1 / 64)
    assert sum(per_layer) / 2 == pytest.approx(0.7, abs=1 / 64)
    assert t.calibration is not None


def test_magnitude_owl_is_magnitude_at_owl_sparsities(tiny_gpt2):
    calib = calib_set()
    options = PruneOptions(0.6, options={"allocation": "owl", "owl_lambda": 0.08, "owl_m": 5.0})
    per_layer, ratios = owl_layer_sparsities(tiny_gpt2, calib, options)
    assert len(ratios) == 2 and per_layer[0] != per_layer[1]
    t = make_ticket(tiny_gpt2, "magnitude", 0.6, options={"allocation": "owl"}, calib=calib)
    for ref in tiny_gpt2.adapter.linears():
        w = tiny_gpt2.adapter.weight_view(ref)
        assert torch.equal(t.masks[ref.name], prune_lowest(w.abs(), per_layer[ref.layer]).t())


def test_magnitude_defaults_unchanged_and_owl_needs_calibration(tiny_llama):
    t = make_ticket(tiny_llama, "magnitude", 0.5)
    ref = tiny_llama.adapter.linears()[0]
    assert torch.equal(t.masks[ref.name], prune_lowest(tiny_llama.adapter.parameter(ref.name).abs(), 0.5))
    assert t.calibration is None
    spec = get_method("magnitude")
    assert not calibration_needed(spec, spec.validate({}))
    assert calibration_needed(spec, spec.validate({"allocation": "owl"}))
    with pytest.raises(TicketLabError, match="with these options needs calibration"):
        make_ticket(tiny_llama, "magnitude", 0.5, options={"allocation": "owl"})


@pytest.mark.parametrize("options,match", [({"allocation": "owl", "pattern": "2:4"}, "N:M"),
                                           ({"allocation": "owl", "scope": "global"}, "global")])
def test_owl_refuses_meaningless_combinations(tiny_llama, options, match):
    with pytest.raises(TicketLabError, match=match):
        make_ticket(tiny_llama, "magnitude", 0.5, options=options, calib=calib_set())


def test_needs_calibration_may_depend_on_options():
    spec = PruneMethod("x", lambda *a: None, "", needs_calibration=lambda o: o.get("importance") == "taylor")
    assert calibration_needed(spec, {"importance": "taylor"})
    assert not calibration_needed(spec, {"importance": "magnitude"})
    assert calibration_needed(spec, {"importance": "magnitude", "allocation": "owl"})
