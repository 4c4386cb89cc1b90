"""Tickets: storage layout, content-hash ids, verification, apply/restore, bad input."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pruning.errors import TicketLabError
from pruning.models import load_model
from pruning.prune import make_ticket
from pruning.ticket import Ticket, applied, find_ticket


def test_ticket_roundtrip_and_documented_layout(tiny_llama, state):
    t = make_ticket(tiny_llama, "magnitude", 0.5)
    path = t.save()
    assert path == state / "tickets" / t.id
    meta = json.loads((path / "ticket.json").read_text())
    packed = load_file(str(path / "masks.safetensors"))
    name = "model.layers.0.self_attn.q_proj.weight"
    # The README's layout: read a mask without our code.
    bits = np.unpackbits(packed[name].numpy(), count=int(np.prod(meta["tensors"][name]["shape"])), bitorder="little")
    assert torch.equal(torch.from_numpy(bits.astype(bool)).view(*meta["tensors"][name]["shape"]), t.masks[name])
    loaded = Ticket.load(path)
    assert loaded.id == t.id and abs(loaded.achieved_sparsity - 0.5) < 1e-6
    assert find_ticket(t.id[:6]) == path


def test_same_inputs_same_id_and_seed_matters_for_random(tiny_llama):
    a = make_ticket(tiny_llama, "magnitude", 0.3).id
    b = make_ticket(tiny_llama, "magnitude", 0.3).id
    assert a == b
    r0 = make_ticket(tiny_llama, "random", 0.3, seed=0)
    r1 = make_ticket(tiny_llama, "random", 0.3, seed=1)
    assert r0.id != r1.id and r0.id == make_ticket(tiny_llama, "random", 0.3, seed=0).id


def test_tampered_ticket_is_refused(tiny_llama):
    t = make_ticket(tiny_llama, "magnitude", 0.5)
    path = t.save()
    meta = json.loads((path / "ticket.json").read_text())
    meta["target_sparsity"] = 0.1
    (path / "ticket.json").write_text(json.dumps(meta))
    with pytest.raises(TicketLabError, match="does not match its id"):
        Ticket.load(path)


def test_truncated_mask_file_is_refused(tiny_llama):
    path = make_ticket(tiny_llama, "magnitude", 0.5).save()
    data = (path / "masks.safetensors").read_bytes()
    (path / "masks.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(TicketLabError, match="truncated or corrupt"):
        Ticket.load(path)


def test_apply_zeroes_then_restores_exactly(tiny_llama):
    t = make_ticket(tiny_llama, "magnitude", 0.5)
    before = {n: p.detach().clone() for n, p in tiny_llama.model.named_parameters()}
    x = torch.randint(0, 1000, (1, 16))
    with applied(tiny_llama, t):
        for name, mask in t.masks.items():
            w = tiny_llama.model.get_parameter(name)
            assert torch.all(w[~mask] == 0)
        sparse_logits = tiny_llama.model(x).logits
    dense_logits = tiny_llama.model(x).logits
    assert not torch.allclose(sparse_logits, dense_logits)
    for n, p in tiny_llama.model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_ticket_on_wrong_dense_model_is_refused(tiny_llama, tiny_gpt2_dir, tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    t = make_ticket(tiny_llama, "magnitude", 0.5)
    other = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        other.model.layers[0].mlp.up_proj.weight.add_(1.0)
    other.save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "tokenizer.json").write_bytes((tiny_llama_dir / "tokenizer.json").read_bytes())
    (tmp_path / "other" / "tokenizer_config.json").write_bytes((tiny_llama_dir / "tokenizer_config.json").read_bytes())
    m2 = load_model(str(tmp_path / "other"))
    with pytest.raises(TicketLabError, match="dense weights"):
        with applied(m2, t):
            pass


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_bad_sparsity(tiny_llama, sparsity):
    with pytest.raises(TicketLabError, match="outside"):
        make_ticket(tiny_llama, "magnitude", sparsity)


def test_unknown_method(tiny_llama):
    with pytest.raises(TicketLabError, match="unknown pruning method"):
        make_ticket(tiny_llama, "nonsense", 0.5)
