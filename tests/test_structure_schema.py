"""One `structure` schema for removed units; tickets saved with either older schema load with their ids."""

from __future__ import annotations

import json

import pytest
import torch

from pruning import structure
from pruning.adapters import GQA_RULE
from pruning.calibration import CalibrationSet
from pruning.errors import TicketLabError
from pruning.prune import make_ticket
from pruning.ticket import Ticket

IMP_RULE = ("query heads by L2 norm of their q rows and o columns; a KV head goes when all of its query heads "
            "have; at least one head kept per layer")


@pytest.fixture
def calib():
    return CalibrationSet(torch.randint(0, 1000, (2, 8), generator=torch.Generator().manual_seed(0)), {"source": "t"})


def _old_structured_heads(new: dict) -> dict:
    """The structure `--method heads` wrote before the one schema (per-layer lists; `removed` = query heads)."""
    q = structure.per_layer_lists(new, "query_heads", 2)
    kv = structure.per_layer_lists(new, "kv_heads", 2)
    return {"kind": "heads", "importance": new["importance"], "sparsity_means": new["sparsity_means"],
            "unit": new["unit"], "per_layer": new["per_layer"], "removed": q, "kv_removed": kv,
            "removed_units": kv if new["unit"] == "kv_group" else q, "num_heads": 4, "num_kv_heads": 2,
            "gqa_rule": GQA_RULE, "units_per_layer": new["units_per_layer"], "units_removed": new["units_removed"],
            "unit_sparsity": new["unit_sparsity"]}


def _as_old(ticket: Ticket, old_structure: dict) -> Ticket:
    return Ticket(masks=ticket.masks, dense=ticket.dense, method=ticket.method, params=ticket.params,
                  target_sparsity=ticket.target_sparsity, seed=ticket.seed, calibration=ticket.calibration,
                  structure=old_structure, weights=ticket.weights)


def test_new_tickets_write_the_one_schema(tiny_llama, calib):
    heads = make_ticket(tiny_llama, "heads", 0.5, calib=calib).structure
    assert heads["schema"] == structure.SCHEMA and heads["kind"] == "heads"
    assert set(heads["removed"]) == {"query_heads", "kv_heads"}
    neurons = make_ticket(tiny_llama, "neurons", 0.25, calib=calib).structure
    assert set(neurons["removed"]) == {"neurons"} and set(neurons["removed"]["neurons"]) == {"0", "1"}
    layers = make_ticket(tiny_llama, "layers", 0.5, calib=calib).structure
    assert set(layers["removed"]) == {"layers"} and len(layers["removed"]["layers"]) == 1
    for s in (heads, neurons, layers):
        assert structure.normalize(s) is s  # already in the one schema
        assert not set(s) & {"kv_removed", "removed_units", "removed_heads", "removed_kv_heads"}


def test_old_structured_schema_loads_with_its_id(tiny_llama, calib, state):
    new = make_ticket(tiny_llama, "heads", 0.5, calib=calib)
    old = _as_old(new, _old_structured_heads(new.structure))
    old_id = old.id
    path = old.save()
    assert json.loads((path / "ticket.json").read_text())["structure"]["kv_removed"]  # saved as the old code did
    back = Ticket.load(path)
    assert back.id == old_id and back.id != new.id  # same id as on disk; the schema is not what made it
    assert back.structure["removed"] == new.structure["removed"] and back.structure["schema"] == structure.SCHEMA
    assert structure.removed(back.structure, "kv_heads") == structure.removed(new.structure, "kv_heads")
    # saving the loaded ticket elsewhere writes what was stored, so it verifies and keeps its id again
    again = Ticket.load(back.save(state / "copy"))
    assert again.id == old_id and again.structure == back.structure


def test_old_imp_schema_loads_with_its_id(tiny_llama, state):
    a = tiny_llama.adapter
    masks = {r.name: torch.ones(a.parameter(r.name).shape, dtype=torch.bool) for r in a.linears()}
    dense = {"spec": "x", "weights_sha256": tiny_llama.weights_sha256, "family": "llama", "model_type": "llama"}
    old_structure = {"unit": "heads", "removed_heads": {"0": [0, 1], "1": [3]}, "removed_kv_heads": {"0": [0]},
                     "rule": IMP_RULE}
    old = Ticket(masks=masks, dense=dense, method="imp", params={}, target_sparsity=0.0, structure=old_structure)
    old_id = old.id
    back = Ticket.load(old.save())
    assert back.id == old_id
    assert back.structure["removed"] == {"query_heads": {"0": [0, 1], "1": [3]}, "kv_heads": {"0": [0]}}
    assert back.structure["kind"] == "heads" and back.structure["unit"] == "query"
    assert back.structure["rule"] == IMP_RULE
    assert structure.removed(back.structure, "query_heads") == {0: [0, 1], 1: [3]}
    # what IMP writes now for the same heads is the same `removed`
    from pruning.lottery.masks import heads_to_masks

    names = list(masks)
    _, now = heads_to_masks(a, names, {0: [0, 1], 1: [3]}, {n: m.shape for n, m in masks.items()})
    assert now["removed"] == back.structure["removed"]


def test_old_neuron_and_layer_schemas_normalize():
    neurons = {"kind": "neurons", "importance": "magnitude", "unit": "neuron", "per_layer": "uniform",
               "removed": [[3, 1], []], "intermediate_size": 8, "units_per_layer": 8}
    n = structure.normalize(neurons)
    assert n["removed"] == {"neurons": {"0": [1, 3]}} and n["intermediate_size"] == 8
    assert structure.per_layer_lists(n, "neurons", 2) == [[1, 3], []]
    layers = {"kind": "layers", "importance": "activation", "unit": "layer", "removed": [1], "num_layers": 2}
    assert structure.normalize(layers)["removed"] == {"layers": [1]}
    assert structure.removed(layers, "layers") == [1]  # readers accept either schema
    combined = {"kind": "combined", "parts": [neurons, layers]}
    assert [p["removed"] for p in structure.normalize(combined)["parts"]] == [n["removed"], {"layers": [1]}]
    assert structure.normalize(None) is None and structure.removed(None, "query_heads") == {}


def test_unknown_schema_is_refused(tiny_llama, state):
    with pytest.raises(TicketLabError, match="no schema"):
        structure.normalize({"kind": "heads", "removed": {"7": "x"}})
    a = tiny_llama.adapter
    masks = {r.name: torch.ones(a.parameter(r.name).shape, dtype=torch.bool) for r in a.linears()}
    dense = {"spec": "x", "weights_sha256": tiny_llama.weights_sha256}
    path = Ticket(masks=masks, dense=dense, method="hand", params={}, target_sparsity=0.0,
                  structure={"whatever": 1}).save()
    with pytest.raises(TicketLabError, match="no schema"):
        Ticket.load(path)
