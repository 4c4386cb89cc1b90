"""Materialized structured tickets: physically smaller models whose logits equal the masked dense model's."""

from __future__ import annotations

import json

import pytest
import torch

from pruning.calibration import CalibrationSet
from pruning.errors import TicketLabError
from pruning.materialize import LOADER, SHAPES_KEY, load_materialized, materialize
from pruning.prune import make_ticket
from pruning.structure import removed
from pruning.ticket import applied

HD = 16


@pytest.fixture
def calib():
    g = torch.Generator().manual_seed(0)
    return CalibrationSet(torch.randint(0, 1000, (4, 16), generator=g), {"source": "test", "seed": 0})


@pytest.fixture
def prompts():
    return torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(1))


def _skew_layer0_neurons(lm):
    """Half of layer 0's neurons tiny: a global per-layer allocation then takes them all from layer 0."""
    p = f"{lm.adapter.layer_prefix(0)}.mlp"
    up = lm.model.get_parameter(f"{p}.up_proj.weight" if lm.family == "llama" else f"{p}.c_fc.weight")
    with torch.no_grad():
        if lm.family == "llama":
            up[: up.shape[0] // 2] *= 1e-3
        else:
            up[:, : up.shape[1] // 2] *= 1e-3


CASES = [  # fixture, method, sparsity, options, stock-loadable
    ("tiny_llama", "heads", 0.5, {}, True),  # one KV group of two per layer: 2 query heads, 1 KV head
    ("tiny_llama", "neurons", 0.5, {"importance": "taylor"}, True),
    ("tiny_llama", "layers", 0.5, {"importance": "activation"}, True),
    ("tiny_llama", "heads", 0.25, {"unit": "query"}, False),  # uneven KV groups: KV rows copied
    ("tiny_llama", "neurons", 0.25, {"per_layer": "global", "skew": True}, False),  # per-layer shapes differ
    ("tiny_gpt2", "heads", 0.5, {"importance": "activation"}, False),  # GPT-2 cannot say fewer heads in its config
    ("tiny_gpt2", "neurons", 0.5, {}, True),
    ("tiny_gpt2", "layers", 0.5, {}, True),
    ("tiny_gpt2", "neurons", 0.25, {"per_layer": "global", "skew": True}, False),
]


@pytest.mark.parametrize("fixture,method,sparsity,options,stock", CASES,
                         ids=[f"{c[0]}-{c[1]}-{'-'.join(f'{k}={v}' for k, v in c[3].items())}" for c in CASES])
def test_logits_equal_masked_dense(request, tmp_path, calib, prompts, fixture, method, sparsity, options, stock):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = request.getfixturevalue(fixture)
    options = dict(options)
    if options.pop("skew", False):
        _skew_layer0_neurons(lm)
    ticket = make_ticket(lm, method, sparsity, options=options, calib=calib)
    with applied(lm, ticket), torch.no_grad():
        expected = lm.model(prompts).logits
    out = tmp_path / "out" / "small"
    summary = materialize(lm, ticket, out)
    assert summary["stock_loadable"] is stock
    # (copying KV rows for uneven groups can cost as much as the removed query heads saved)
    assert summary["parameters"] <= summary["parameters_dense"]
    config = json.loads((out / "config.json").read_text())
    assert config["ticketlab_materialized"]["ticket"] == ticket.id
    model = load_materialized(out)
    with torch.no_grad():
        torch.testing.assert_close(model(prompts).logits, expected, rtol=1e-5, atol=1e-5)
    if stock:
        assert SHAPES_KEY not in config
        stock_model = AutoModelForCausalLM.from_pretrained(out)
        with torch.no_grad():
            torch.testing.assert_close(stock_model(prompts).logits, expected, rtol=1e-5, atol=1e-5)
    else:
        assert config["ticketlab_loader"] == LOADER and len(config[SHAPES_KEY]) == summary["num_layers"]
        with pytest.raises(Exception):  # noqa: B017  (transformers' own error: the shapes do not fit)
            AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).vocab_size == lm.tokenizer.vocab_size
    assert [p.name for p in out.parent.iterdir()] == ["small"]  # no temporary leftovers


def test_kv_group_removal_shapes(tiny_llama, tmp_path, calib):
    ticket = make_ticket(tiny_llama, "heads", 0.5, calib=calib)
    materialize(tiny_llama, ticket, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (2, 1, HD)
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "m" / "model.safetensors"))
    attn = "model.layers.0.self_attn"
    assert w[f"{attn}.q_proj.weight"].shape == (2 * HD, 64) and w[f"{attn}.k_proj.weight"].shape == (HD, 64)
    assert w[f"{attn}.o_proj.weight"].shape == (64, 2 * HD)  # the removed group's o_proj columns are gone
    kept = [g for g in range(2) if g not in removed(ticket.structure, "kv_heads")[0]][0]
    dense_k = tiny_llama.model.get_parameter(f"{attn}.k_proj.weight")
    torch.testing.assert_close(w[f"{attn}.k_proj.weight"], dense_k[kept * HD:(kept + 1) * HD])


def test_layers_drop_and_renumber(tiny_gpt2, tmp_path, calib):
    ticket = make_ticket(tiny_gpt2, "layers", 0.5, calib=calib)
    summary = materialize(tiny_gpt2, ticket, tmp_path / "m")
    kept = [i for i in range(2) if i not in removed(ticket.structure, "layers")]
    assert summary["num_layers"] == 1 and summary["removed_layers"] == removed(ticket.structure, "layers")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["n_layer"] == 1 and cfg["ticketlab_materialized"]["dense_layers"] == kept


def test_unstructured_ticket_refused(tiny_llama, tmp_path):
    ticket = make_ticket(tiny_llama, "magnitude", 0.5)
    root = tmp_path / "out"
    with pytest.raises(TicketLabError, match="not a structured ticket"):
        materialize(tiny_llama, ticket, root / "m")
    assert not root.exists() or list(root.iterdir()) == []


def test_existing_out_needs_overwrite(tiny_llama, tmp_path, calib):
    tmp_path = tmp_path / "out"  # the state directory lives in tmp_path too
    a = make_ticket(tiny_llama, "neurons", 0.5, calib=calib)
    b = make_ticket(tiny_llama, "heads", 0.5, calib=calib)
    materialize(tiny_llama, a, tmp_path / "m")
    with pytest.raises(TicketLabError, match="--overwrite"):
        materialize(tiny_llama, b, tmp_path / "m")
    materialize(tiny_llama, b, tmp_path / "m", overwrite=True)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["ticketlab_materialized"]["ticket"] == b.id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_cli_materialize(tiny_llama, state, tmp_path, calib, capsys):
    from app.cli import main

    ticket = make_ticket(tiny_llama, "heads", 0.5, calib=calib)
    ticket.save()
    out = tmp_path / "cli-out"
    assert main(["materialize", ticket.id[:8], "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ticket"] == ticket.id and result["stock_loadable"] and (out / "model.safetensors").exists()
    assert main(["materialize", ticket.id, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["materialize", str(ticket.path), "--out", str(out), "--overwrite"]) == 0
    assert main(["materialize", "nosuchticket", "--out", str(tmp_path / "x")]) == 2


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_overwrite_replaces_only_a_materialized_model(tiny_llama, tmp_path, calib):
    """--overwrite used to delete whatever folder --out named; now anything but a materialized model stays."""
    ticket = make_ticket(tiny_llama, "neurons", 0.5, calib=calib)
    work = tmp_path / "out" / "my-project"
    (work / "src").mkdir(parents=True)
    (work / "src" / "notes.txt").write_text("three weeks of work")
    (work / "config.json").write_text('{"model_type": "llama"}')  # looks like a model, was not made by us
    before = _tree(work)
    with pytest.raises(TicketLabError, match="not a materialized model.*nothing was touched"):
        materialize(tiny_llama, ticket, work, overwrite=True)
    assert _tree(work) == before
    a_file = tmp_path / "out" / "file.bin"
    a_file.write_bytes(b"keep")
    with pytest.raises(TicketLabError, match="a file, not a materialized model"):
        materialize(tiny_llama, ticket, a_file, overwrite=True)
    assert a_file.read_bytes() == b"keep"
    link = tmp_path / "out" / "link"
    link.symlink_to(work)
    with pytest.raises(TicketLabError, match="a link"):
        materialize(tiny_llama, ticket, link, overwrite=True)
    assert link.is_symlink() and _tree(work) == before
    # an empty folder holds nothing to lose; a materialized model is replaced
    empty = tmp_path / "out" / "empty"
    empty.mkdir()
    materialize(tiny_llama, ticket, empty, overwrite=True)
    materialize(tiny_llama, ticket, empty, overwrite=True)
    assert json.loads((empty / "ticketlab_materialized.json").read_text())["ticket"] == ticket.id


def test_cli_overwrite_refuses_a_foreign_folder_before_loading(state, tmp_path, tiny_llama, calib, capsys):
    from app.cli import main

    ticket = make_ticket(tiny_llama, "heads", 0.5, calib=calib)
    ticket.save()
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.csv").write_text("a,b\n1,2\n")
    assert main(["materialize", ticket.id, "--out", str(work), "--overwrite", "--model", "/nonexistent"]) == 2
    assert "not a materialized model" in capsys.readouterr().err  # refused before the (missing) model is loaded
    assert _tree(work) == {"data.csv": b"a,b\n1,2\n"}
