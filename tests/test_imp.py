"""IMP end to end on a micro model: rounds, rewinding, controls, resume after a crash, ledger and CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pruning.errors import TicketLabError
from pruning.imp import ImpExperiment, ImpSettings
from pruning.models import load_model
from pruning.ticket import Ticket, applied
from pruning.tiny import TinyConfig
from pruning.training import MaskSet, TrainConfig, heldout_loss, load_state, train

REPO = Path(__file__).resolve().parents[1]
MICRO = TinyConfig(vocab_size=400, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                   intermediate_size=64, max_positions=32)
TRAIN = TrainConfig(steps=4, batch_size=2, seq_len=32, lr=5e-3)


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models run faster on one thread than on two contended ones (conftest asks for two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def state(state, data_dir, tmp_path, monkeypatch):
    """The shared `state` fixture, with a corpus of WikiText-2 valid's first 20 articles (the real text,
    a third of it) so that tokenizer training and tokenisation take a fraction of a second."""
    text = (data_dir / "corpora/wikitext-2/valid.txt").read_text(encoding="utf-8").split("\n")
    heads = [i for i, line in enumerate(text) if line.startswith(" = ") and not line.startswith(" = = ")]
    small = tmp_path / "reference"
    (small / "corpora/wikitext-2").mkdir(parents=True)
    (small / "corpora/wikitext-2/valid.txt").write_text("\n".join(text[: heads[20]]), encoding="utf-8")
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(small))
    return state


def micro(**kw) -> ImpSettings:
    return ImpSettings(**{"train": TRAIN, "tiny": MICRO, "eval_windows": 4, **kw})


def ids(results):
    return [(r.arm, r.seed, r.round, r.ticket.id) for r in results]


def test_rounds_prune_the_remaining_weights_with_a_ticket_chain(state):
    exp = ImpExperiment(micro(rate=0.3, scope="layer"))
    res = exp.run(2, [0], ("reinit", "random"))
    tickets = [r for r in res if r.arm == "ticket"]
    assert [r.round for r in tickets] == [0, 1, 2]
    assert [r.arm for r in res] == ["ticket", "ticket", "reinit", "random", "ticket", "reinit", "random"]
    for r in tickets[1:]:  # per tensor: floor(30% of the survivors) go each round
        for name, mask in r.ticket.masks.items():
            prev = tickets[r.round - 1].ticket.masks[name]
            assert not (mask & ~prev).any()  # masks only shrink
            assert int(prev.sum()) - int(mask.sum()) == int(int(prev.sum()) * 0.3)
    assert tickets[0].sparsity == 0 and tickets[1].ticket.parent == tickets[0].ticket.id
    assert tickets[2].ticket.parent == tickets[1].ticket.id
    lin = tickets[2].ticket.lineage
    assert lin == {"experiment": exp.id, "arm": "ticket", "seed": 0, "round": 2, "rewind": "init"}
    names = {ref.name for ref in tickets[0].dense.adapter.linears()}
    assert set(tickets[2].ticket.masks) == names  # embeddings and norms are not pruned by default
    assert tickets[2].ticket.calibration["rule"].startswith("article index")


def test_ticket_reproduces_its_evaluated_model(state):
    exp = ImpExperiment(micro())
    res = exp.run(1, [0], ())
    r = res[-1]
    loaded = load_model(r.ticket.dense["spec"])  # the seed's step-0 checkpoint in the experiment folder
    with applied(loaded, Ticket.load(r.ticket.path)):
        assert heldout_loss(loaded.model, exp.heldout, 16)[0] == r.heldout_loss


def test_step_rewind_restores_exactly_the_saved_values(state):
    exp = ImpExperiment(micro(rewind="step:2"))
    res = exp.run(1, [0], ())
    s = exp._seed(0)
    saved = exp._step_k(s)
    # the checkpoint is step 2 of the dense run: replaying two steps from the init gives the same bits
    load_state(s.loaded.model, s.dense_state)
    replay = train(s.loaded.model, exp.train_data, TRAIN, data_seed=__import__("pruning.imp").imp.derive_seed("data", 0),
                   checkpoint_steps=[2])
    assert all(torch.equal(replay.checkpoints[2][n], saved[n]) for n in saved)
    ticket = res[-1].ticket
    start = exp._start(s, "ticket", 1, res[0].ticket)
    load_state(s.loaded.model, start)
    MaskSet(s.loaded.model, ticket.masks).apply_()
    for name, mask in ticket.masks.items():
        w = s.loaded.model.get_parameter(name).detach()
        assert torch.equal(w[mask], saved[name][mask]) and torch.all(w[~mask] == 0)


def test_controls_differ_from_the_ticket_at_equal_sparsity(state):
    res = ImpExperiment(micro()).run(1, [0])
    by_arm = {r.arm: r.ticket for r in res if r.round == 1}
    t, reinit, rand = by_arm["ticket"], by_arm["reinit"], by_arm["random"]
    for name in t.masks:
        assert torch.equal(reinit.masks[name], t.masks[name])  # same mask ...
        assert int(rand.masks[name].sum()) == int(t.masks[name].sum())  # ... same per-tensor counts
    assert any(not torch.equal(rand.masks[n], t.masks[n]) for n in t.masks)  # a different mask
    n = next(iter(t.masks))
    assert not torch.equal(reinit.weights[n], t.weights[n])  # a different initialisation
    assert reinit.parent == rand.parent == t.id
    assert abs(reinit.achieved_sparsity - t.achieved_sparsity) < 1e-12 and rand.achieved_sparsity == t.achieved_sparsity


def test_resume_after_a_crash_gives_the_same_ticket_ids(state, tmp_path, monkeypatch):
    class Boom(Exception):
        pass

    def crash(r):
        if r.round == 1 and r.arm == "reinit":
            raise Boom

    settings = micro()
    with pytest.raises(Boom):
        ImpExperiment(settings).run(2, [0], ("reinit",), on_round=crash)
    resumed = ImpExperiment(settings).run(2, [0], ("reinit",))
    assert [r.resumed for r in resumed] == [True, True, True, False, False]
    # an uninterrupted run in a fresh state directory ends with the same ids
    other = tmp_path / "other"
    other.mkdir()
    (other / "models").mkdir()
    monkeypatch.setenv("TICKETLAB_STATE_DIR", str(other))
    fresh = ImpExperiment(settings).run(2, [0], ("reinit",))
    assert ids(fresh) == ids(resumed)


def test_kill_minus_9_then_rerun_gives_the_same_ids(state):
    script = (
        "import torch\n"
        "from pruning.imp import ImpExperiment, ImpSettings\n"
        "from pruning.tiny import TinyConfig\nfrom pruning.training import TrainConfig\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        f"s = ImpSettings(train=TrainConfig(steps=4, batch_size=2, seq_len=32, lr=5e-3), tiny=TinyConfig("
        f"vocab_size=400, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64, "
        f"max_positions=32), eval_windows=4)\n"
        "ImpExperiment(s).run(3, [0], ('random',))\n")
    exp = ImpExperiment(micro())
    marker = exp.dir / "seed-0" / "ticket-1.json"
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert marker.exists()
    after = ImpExperiment(micro()).run(3, [0], ("random",))
    assert any(r.resumed for r in after) and not all(r.resumed for r in after)
    # reference: same experiment, state wiped
    import shutil

    shutil.rmtree(exp.dir)
    shutil.rmtree(state / "tickets")
    reference = ImpExperiment(micro()).run(3, [0], ("random",))
    assert not any(r.resumed for r in reference) and ids(reference) == ids(after)


def test_lr_and_finetune_rewinding_continue_from_the_trained_weights(state):
    for rewind in ("lr", "finetune"):
        exp = ImpExperiment(micro(rewind=rewind))
        res = exp.run(1, [0], ())
        s = exp._seed(0)
        start = exp._start(s, "ticket", 1, res[0].ticket)
        n = next(iter(res[0].ticket.masks))
        assert torch.equal(start[n], res[0].ticket.weights[n])
    assert exp._train_config(1).schedule == "constant" and exp._train_config(0).schedule == "cosine"


def test_head_pruning_removes_whole_heads(state):
    exp = ImpExperiment(micro(unit="heads", rate=0.5))
    res = exp.run(1, [0], ("random",))
    t = next(r.ticket for r in res if r.arm == "ticket" and r.round == 1)
    rand = next(r.ticket for r in res if r.arm == "random")
    removed = t.structure["removed_heads"]
    assert sum(len(v) for v in removed.values()) == 4  # half of 2 x 4 heads
    adapter = res[0].dense.adapter
    for layer, heads in removed.items():
        assert len(heads) < adapter.num_heads
        for h in heads:
            q = t.masks[f"model.layers.{layer}.self_attn.q_proj.weight"]
            assert not q[h * adapter.head_dim:(h + 1) * adapter.head_dim].any()
    assert {k: len(v) for k, v in rand.structure["removed_heads"].items()} == {k: len(v) for k, v in removed.items()}


@pytest.mark.parametrize("kwargs, match", [
    ({"rate": 0.0}, "outside \\(0, 1\\)"),
    ({"rate": 1.0}, "outside \\(0, 1\\)"),
    ({"rewind": "step:4"}, "beyond the training length"),
    ({"rewind": "step:x"}, "integer K"),
    ({"rewind": "pretrained"}, "needs a pretrained model"),
    ({"rewind": "later"}, "choose init"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(TicketLabError, match=match):
        micro(**kwargs).validate()


def test_missing_rewind_checkpoint_is_a_clear_error(state):
    exp = ImpExperiment(micro(rewind="step:1"))
    exp.run(1, [0], ())
    (exp.dir / "seed-0" / "step-1.safetensors").unlink()
    with pytest.raises(TicketLabError, match="rewind checkpoint .* is missing"):
        ImpExperiment(micro(rewind="step:1")).run(2, [0], ())


@pytest.mark.parametrize("recovery", ["full", "lora"])
def test_pretrained_model_rewinds_to_its_weights_and_keeps_the_mask(state, tiny_llama_dir, recovery):
    cfg = ImpSettings(model=str(tiny_llama_dir), rewind="pretrained", train=TrainConfig(steps=2, batch_size=2,
                      seq_len=32, lr=1e-3), eval_windows=2, eval_batch=2, recovery=recovery, lora_rank=2)
    exp = ImpExperiment(cfg)
    res = exp.run(1, [0], ())
    t = res[-1].ticket
    dense = load_model(str(tiny_llama_dir))
    assert t.dense["weights_sha256"] == dense.weights_sha256
    assert set(t.weights) == set(t.masks)  # only the prunable linears are trained; embeddings stay pretrained
    for name, mask in t.masks.items():
        assert torch.all(t.weights[name][~mask] == 0), name
    start = exp._start(exp._seed(0), "ticket", 1, res[0].ticket)
    assert all(torch.equal(start[n], p.detach()) for n, p in dense.model.named_parameters())
    with pytest.raises(TicketLabError, match="use --rewind pretrained"):
        ImpSettings(model=str(tiny_llama_dir), rewind="init").validate()


def test_ledger_recording_report_and_figure(state):
    from analysis.experiments import (
        imp_figure,
        imp_report,
        record_experiment,
        record_round,
        stability_by_rewind,
    )
    from analysis.ledger import Ledger

    ledger = Ledger()
    exp = ImpExperiment(micro())
    record_experiment(exp.id, exp.record, "running", ledger=ledger)
    res = exp.run(1, [0, 1], ("random",), stability=True, on_round=lambda r: record_round(r, ledger))
    assert not any(record_round(r, ledger) for r in res)  # replaying is a no-op
    n = ledger.query("SELECT count(*) n FROM metrics WHERE task = 'heldout'")[0]["n"]
    assert n == 2 * len(res)
    row = ledger.get_ticket(res[1].ticket.id)
    assert row["method"] == "imp" and row["experiment"] == exp.id and row["parent"] == res[0].ticket.id
    table = imp_report(exp.id[:8], ledger)
    assert list(table["round"]) == [0, 1] and list(table["n_seeds"]) == [2, 2]
    assert table.loc[1, "sparsity"] == pytest.approx(res[1].sparsity)
    assert table["barrier_mean"].notna().all()
    by_rewind = stability_by_rewind([exp.id], ledger)
    assert list(by_rewind["rewind"]) == ["init", "init"] and list(by_rewind["n"]) == [2, 2]
    out = state / "fig.html"
    imp_figure(table, out)
    assert out.exists() and "weights remaining" in out.read_text()


def test_cli_json(state, capsys):
    from app.cli import main

    argv = ["imp", "--rounds", "1", "--train-steps", "2", "--batch-size", "2", "--seq-len", "16",
            "--eval-windows", "2", "--seeds", "0", "--controls", "random", "--json", "--quiet"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["experiment"].startswith("imp-")
    assert [(r["arm"], r["round"]) for r in out["rounds"]] == [("ticket", 0), ("ticket", 1), ("random", 1)]
    assert main(["imp-report", out["experiment"], "--out", str(state / "r.html")]) == 0
    assert "random" in capsys.readouterr().out and (state / "r.html").exists()
    assert main(argv[:-2] + ["--rate", "1.5"]) == 2
