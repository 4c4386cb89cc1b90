"""Tickets: storage layout, content-hash ids, verification, apply/restore, bad input."""

import json
import shutil
import subprocess
import sys

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


# --- saving is idempotent and repairing (issue 12) ------------------------------------------------------
def _prune_cli(model_dir) -> str:
    import contextlib
    import io

    from app.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["prune", "--model", str(model_dir), "--method", "magnitude", "--sparsity", "0.5", "--json"]) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])["id"]


@pytest.mark.parametrize("damage", ["truncated masks", "no ticket.json", "edited ticket.json", "empty folder"])
def test_a_damaged_ticket_is_repaired_by_pruning_again(state, tiny_llama_dir, damage):
    tid = _prune_cli(tiny_llama_dir)
    path = state / "tickets" / tid
    if damage == "truncated masks":  # what a crash without fsync can leave
        data = (path / "masks.safetensors").read_bytes()
        (path / "masks.safetensors").write_bytes(data[: len(data) // 3])
    elif damage == "no ticket.json":
        (path / "ticket.json").unlink()
    elif damage == "edited ticket.json":
        meta = json.loads((path / "ticket.json").read_text())
        meta["target_sparsity"] = 0.9
        (path / "ticket.json").write_text(json.dumps(meta))
    else:
        for f in path.iterdir():
            f.unlink()
    with pytest.raises(TicketLabError):
        Ticket.load(path)
    assert _prune_cli(tiny_llama_dir) == tid  # same content, same id: and now whole again
    assert Ticket.load(path).id == tid
    assert sorted(p.name for p in (state / "tickets").iterdir()) == [tid]  # no leftovers


def test_saving_a_complete_ticket_again_keeps_the_stored_copy(tiny_llama, state):
    t = make_ticket(tiny_llama, "magnitude", 0.5)
    path = t.save()
    before = {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in path.iterdir()}
    assert make_ticket(tiny_llama, "magnitude", 0.5).save() == path
    assert {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in path.iterdir()} == before


SAVER = """
import sys, time
from pathlib import Path
from pruning.models import load_model
from pruning.prune import make_ticket
t = make_ticket(load_model(sys.argv[1]), "magnitude", 0.5)
for go in sys.argv[2:]:
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.001)
    print(t.id, t.save(), flush=True)
"""


def test_two_processes_saving_the_same_ticket_both_succeed_with_one_result(state, tiny_llama_dir, tmp_path):
    rounds = [tmp_path / f"go{i}" for i in range(6)]  # a few rounds: the interleaving differs each time
    tid_seen: list[str] = []
    procs = [subprocess.Popen([sys.executable, "-c", SAVER, str(tiny_llama_dir), *map(str, rounds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for i, go in enumerate(rounds):
            for p in procs:  # both at the start line, then released together
                assert p.stdout.readline().strip() == "ready", p.stderr.read()[-2000:]
            if i % 2 and tid_seen:  # every other round: both find a half-written leftover to repair
                leftover = state / "tickets" / tid_seen[0]
                leftover.mkdir(parents=True)
                for j in range(300):
                    (leftover / f"part{j}").write_bytes(b"x")
            go.touch()
            lines = {p.stdout.readline().strip() for p in procs}
            assert len(lines) == 1, lines  # both succeeded, with the same ticket
            tid, where = lines.pop().split()
            tid_seen[:] = [tid]
            assert Ticket.load(where).id == tid
            assert sorted(p.name for p in (state / "tickets").iterdir()) == [tid]  # one copy, no leftovers
            shutil.rmtree(state / "tickets")
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_the_id_is_cached_yet_follows_edits(tiny_llama):
    t = make_ticket(tiny_llama, "magnitude", 0.5)
    first = t.id
    assert t.id == first and t.content_sha256.startswith(first)
    name = next(iter(t.masks))
    t.masks[name][0, 0] = ~t.masks[name][0, 0]  # an in-place edit of a mask
    assert t.id != first
    t.masks[name][0, 0] = ~t.masks[name][0, 0]
    assert t.id == first
    t.params = {**t.params, "note": 1}
    assert t.id != first


# --- references match literally ------------------------------------------------------------------------
def test_patterns_and_short_prefixes_are_not_references(tiny_llama, state):
    from analysis.ledger import Ledger
    from analysis.recording import record_prune

    t = make_ticket(tiny_llama, "magnitude", 0.5)
    t.save()
    record_prune(tiny_llama, t, "test")
    ledger = Ledger()
    for ref in ["%", "*", "_", "?", "[0-9a-f]*", "_" * 16, "%" * 6, "*" * 6, t.id[:5], t.id[:6] + "%"]:
        with pytest.raises(TicketLabError, match="no ticket"):
            find_ticket(ref)
        with pytest.raises(TicketLabError, match="no ticket"):
            ledger.get_ticket(ref)
    assert find_ticket(t.id[:6]) == t.path and ledger.get_ticket(t.id[:6].upper())["id"] == t.id


def test_percent_as_a_ticket_reference_is_refused_by_the_cli(state, tiny_llama_dir, capsys):
    from app.cli import main

    _prune_cli(tiny_llama_dir)
    capsys.readouterr()
    assert main(["eval", "%", "--suite", "ppl", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "no ticket '%'" in err and "at least 6" in err and err.count("\n") == 1
    assert main(["compare", "%", "dense"]) == 2
    assert "no ticket '%'" in capsys.readouterr().err
