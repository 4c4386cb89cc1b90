"""IMP end to end on a micro model: unbiased rewinding, data orders, controls, stability from K, resume
after a crash and after kill -9, ledger, report and CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pruning.errors import TicketLabError
from pruning.lottery.masks import random_like
from pruning.lottery.protocol import Protocol
from pruning.lottery.runner import ImpExperiment, data_seed, derive_seed
from pruning.lottery.tiny import TinyConfig, build_model
from pruning.lottery.training import batch_order, heldout_loss
from pruning.models import load_model
from pruning.ticket import Ticket, applied

REPO = Path(__file__).resolve().parents[1]
MICRO = TinyConfig(vocab_size=400, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                   intermediate_size=64, max_positions=32)
BASE = dict(tiny=MICRO, seq_len=32, batch_size=2, lr=5e-3, steps=8, warmup_steps=3, eval_every=2, rewind="step:3",
            rounds=1, seeds=(0, 1), val_windows=4, heldout_windows=4, stability="none", sanity=False,
            target_density=None, pilot_seeds=0)


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models run faster on one thread than on two contended ones (conftest asks for two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def state(state, data_dir, tmp_path, monkeypatch):
    """The shared `state` fixture with a small corpus: the first 30 articles of WikiText-2 valid as
    "valid.txt" and the next 10 as "test.txt" (real text), so tokenizer training takes a fraction of a second."""
    text = (data_dir / "corpora/wikitext-2/valid.txt").read_text(encoding="utf-8").split("\n")
    heads = [i for i, line in enumerate(text) if line.startswith(" = ") and not line.startswith(" = = ")]
    small = tmp_path / "reference"
    (small / "corpora/wikitext-2").mkdir(parents=True)
    (small / "corpora/wikitext-2/valid.txt").write_text("\n".join(text[: heads[30]]), encoding="utf-8")
    (small / "corpora/wikitext-2/test.txt").write_text("\n".join(text[heads[30]: heads[40]]), encoding="utf-8")
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(small))
    return state


def micro(**kw) -> Protocol:
    return Protocol(**{**BASE, **kw})


def ids(results):
    return [(r.arm, r.seed, r.round, r.ticket.id) for r in results]


def by(results, arm, seed=0, rnd=1):
    return next(r for r in results if (r.arm, r.seed, r.round) == (arm, seed, rnd))


def test_every_arm_takes_the_dense_runs_steps_and_learning_rates_from_k(state):
    """Finding 1: a network rewound to step K trains steps K..T-1 with the dense run's learning rates,
    not K + T steps with a second warm-up."""
    res = ImpExperiment(micro(rounds=2)).run()
    cont = by(res, "dense_continuous", 0, 0)
    assert cont.steps == list(range(8)) and cont.record["optimizer_steps"] == 8
    for r in res:
        if r.arm == "dense_continuous":
            continue
        assert r.record["start_step"] == 3 and r.steps == list(range(3, 8)), (r.arm, r.round)
        assert r.lrs == cont.lrs[3:], (r.arm, r.round)  # the same learning rate at every step
        assert r.record["optimizer_steps"] == 8 - 3
    assert cont.lrs[0] < cont.lrs[2] and cont.lrs[3] >= cont.lrs[4]  # warm-up only once, in the continuous run


def test_dense_level_0_is_trained_like_its_arms_and_resumes_with_the_saved_optimizer_state(state):
    """Issue 18 finding 3: level 0 (the dense baseline) resumes from the step-K checkpoint by the same procedure
    as every pruned level; the rewind point carries AdamW's state, which is the continuous run's state at K, and
    every weight-rewound arm resumes with it (reinit's fresh weights have no history)."""
    from safetensors.torch import load_file

    from pruning.lottery.runner import pretrain_seed, retrain_seed
    from pruning.lottery.training import cpu_state, load_state, train

    exp = ImpExperiment(micro(rounds=2, arms=("ticket", "random", "reinit")))
    res = exp.run()
    level0, cont = by(res, "ticket", 0, 0), by(res, "dense_continuous", 0, 0)
    flags = {(r.arm, r.round): r.record["resumed_optimizer"] for r in res if r.seed == 0}
    assert flags == {("dense_continuous", 0): False, ("ticket", 0): True, ("ticket", 1): True, ("random", 1): True,
                     ("reinit", 1): False, ("ticket", 2): True, ("random", 2): True, ("reinit", 2): False}
    assert level0.steps == by(res, "random", 0, 1).steps == by(res, "reinit", 0, 2).steps == list(range(3, 8))
    assert level0.lrs == by(res, "random", 0, 1).lrs == cont.lrs[3:]
    # the stored optimizer state is the continuous run's at K: replaying steps 0..K with its order gives it back
    s = exp._seed(0)
    saved = load_file(str(s.dir / "step-3.adamw.safetensors"))
    load_state(s.loaded.model, s.dense_state)
    replay = train(s.loaded.model, exp.train_data, exp.train_config, data_seed=pretrain_seed(0), checkpoint_steps=[3])
    assert saved.keys() == replay.optimizer_states[3].keys()
    assert all(torch.equal(saved[k], replay.optimizer_states[3][k]) for k in saved)
    # level 0 is exactly "resume the step-K weights with that state": redone, it reproduces the recorded network
    weights, opt = exp._checkpoint(s, 3)
    load_state(s.loaded.model, weights)
    again = train(s.loaded.model, exp.train_data, exp.train_config, data_seed=retrain_seed(0, 0), start_step=3,
                  optimizer_state=opt, evaluate=exp._val, eval_every=2, checkpoint_steps=[3])
    assert all(torch.equal(again.optimizer_states[3][k], saved[k]) for k in saved)  # resumed state == saved
    assert again.curve == [tuple(x) for x in level0.record["curve"]]
    trained = cpu_state(s.loaded.model)
    assert all(torch.equal(trained[n], level0.ticket.weights.get(n, s.dense_state[n])) for n in trained)


def test_all_arms_of_a_round_share_one_order_that_differs_from_the_mask_finding_order(state):
    """Paired retraining: every arm of (seed, round) sees the same batches; the round's mask came from round
    r - 1's run, whose order differs; the stability copies get their own orders."""
    exp = ImpExperiment(micro(rounds=2, stability="all", stability_ks=(3,), arms=("ticket", "random", "reinit")))
    res = exp.run()
    seeds = {(r.arm, r.round): r.record["data_seed"] for r in res if r.seed == 0}
    for rnd in (1, 2):
        assert seeds[("ticket", rnd)] == seeds[("random", rnd)] == seeds[("reinit", rnd)]
        assert seeds[("ticket", rnd)] != seeds[("ticket", rnd - 1)]  # not the order its mask was found with
    assert len({seeds[("dense_continuous", 0)], seeds[("ticket", 0)], seeds[("ticket", 1)], seeds[("ticket", 2)]}) == 4
    n = exp.train_data.shape[0]
    assert not torch.equal(batch_order(n, 2, 8, seeds[("ticket", 1)])[3:], batch_order(n, 2, 8, seeds[("ticket", 0)])[3:])
    stab = by(res, "ticket", 0, 1).stability["3"]["data_seeds"]
    assert len(set(stab) | set(seeds.values())) == len(set(seeds.values())) + 2
    assert seeds[("random", 1)] != data_seed(0, "random", 1)  # the old per-arm orders are gone


def test_random_control_has_the_tickets_per_layer_counts_and_nothing_else(state):
    res = ImpExperiment(micro(arms=("ticket", "random", "reinit"))).run()
    t, rand, reinit = by(res, "ticket").ticket, by(res, "random").ticket, by(res, "reinit").ticket
    for name, mask in t.masks.items():
        assert int(rand.masks[name].sum()) == int(mask.sum())
        assert torch.equal(reinit.masks[name], mask)
    assert any(not torch.equal(rand.masks[n], t.masks[n]) for n in t.masks)
    # independent of where the ticket's survivors are: another mask with the same counts gives the same control
    shuffled = {n: m.flatten()[torch.randperm(m.numel(), generator=torch.Generator().manual_seed(5))].view(m.shape)
                for n, m in t.masks.items()}
    seed = derive_seed("random", 0, 1)
    assert all(torch.equal(random_like(shuffled, seed)[n], rand.masks[n]) for n in t.masks)
    assert rand.parent == reinit.parent == t.id


def test_reinit_is_a_fresh_network_and_random_starts_at_k(state):
    exp = ImpExperiment(micro(arms=("ticket", "random", "reinit")))
    res = exp.run()
    s = exp._seed(0)
    k, _ = exp._checkpoint(s, 3)
    for arm, same in (("random", True), ("reinit", False)):
        ticket = by(res, arm).ticket
        emb = "model.embed_tokens.weight"
        ctx = exp._context(s, 1, ticket.masks, None, arm)
        from pruning.lottery.arms import ARMS

        plan = ARMS[arm].fn(ctx)
        assert torch.equal(plan.start[emb], k[emb]) == same  # reinit redraws every tensor, embeddings included
        assert (plan.optimizer is not None) == same  # a fresh network has no optimizer history


def test_stability_at_round_0_starts_from_k(state):
    """Finding 4: the dense network's stability is measured from K (and, for the comparison, from 0)."""
    exp = ImpExperiment(micro(stability="dense", stability_ks=(0, 3)))
    res = exp.run()
    st = by(res, "ticket", 0, 0).stability
    assert set(st) == {"0", "3"} and len(st["3"]["alphas"]) == 11
    assert st["3"]["start_step"] == 3 and st["3"]["optimizer_steps"] == 5
    assert st["0"]["start_step"] == 0 and st["0"]["optimizer_steps"] == 8
    assert st["3"]["barrier"] != st["0"]["barrier"]


def test_ticket_reproduces_its_evaluated_model(state):
    exp = ImpExperiment(micro())
    r = by(exp.run(), "ticket")
    loaded = load_model(r.ticket.dense["spec"])  # the seed's step-0 checkpoint in the experiment folder
    with applied(loaded, Ticket.load(r.ticket.path)):
        assert heldout_loss(loaded.model, exp.heldout, 16)[0] == r.heldout_loss


def test_runs_are_early_stopped_on_validation(state):
    res = ImpExperiment(micro()).run()
    assert [s for s, _ in by(res, "dense_continuous", 0, 0).record["curve"]] == [2, 4, 6, 8]
    r = by(res, "ticket", 0, 0)
    steps = [s for s, _ in r.record["curve"]]
    assert steps == [4, 6, 8]  # resumed at K = 3: scored on the same absolute grid
    best = min(r.record["curve"], key=lambda sv: sv[1])
    assert r.record["best_step"] == best[0]


def test_lr_rewinding_keeps_every_control_in_its_own_lineage(state):
    """Finding 3: under lr rewinding the random control continues its own previous round (nested masks),
    reinit trains its own dense round 0, and a compute-matched dense run is reported."""
    exp = ImpExperiment(micro(rewind="lr", rounds=2, arms=("ticket", "random", "reinit", "dense_matched")))
    res = exp.run()
    assert by(res, "reinit", 0, 0).sparsity == 0  # its own dense network, from its own initialisation
    assert by(res, "reinit", 0, 0).ticket.id != by(res, "ticket", 0, 0).ticket.id
    r1, r2 = by(res, "random", 0, 1).ticket, by(res, "random", 0, 2).ticket
    t2 = by(res, "ticket", 0, 2).ticket
    for n in r2.masks:
        assert not (r2.masks[n] & ~r1.masks[n]).any()  # nested in its own previous mask
        assert int(r2.masks[n].sum()) == int(t2.masks[n].sum())
    s = exp._seed(0)
    s.lineage = {"ticket": by(res, "ticket", 0, 1).ticket, "random": r1}
    ctx = exp._context(s, 2, t2.masks, None, "random")
    name = next(iter(r1.masks))
    assert torch.equal(ctx.own_prev_state[name], r1.weights[name])  # not the ticket's trained weights
    dm = [r for r in res if r.arm == "dense_matched" and r.seed == 0]
    assert [r.sparsity for r in dm] == [0, 0] and all(r.steps == list(range(8)) for r in dm)


def test_resume_after_a_crash_gives_the_same_ticket_ids(state, tmp_path, monkeypatch):
    class Boom(Exception):
        pass

    def crash(r):
        if r.round == 1 and r.arm == "reinit":
            raise Boom

    p = micro(arms=("ticket", "reinit"), seeds=(0, 1))
    with pytest.raises(Boom):
        ImpExperiment(p).run(on_round=crash)
    resumed = ImpExperiment(p).run()
    # seed 0: continuous, level 0, ticket 1, reinit 1 (the crash came after its save); seed 1 from scratch
    assert [r.resumed for r in resumed] == [True] * 4 + [False] * 4
    other = tmp_path / "other"
    (other / "models").mkdir(parents=True)
    monkeypatch.setenv("TICKETLAB_STATE_DIR", str(other))
    fresh = ImpExperiment(p).run()
    assert ids(fresh) == ids(resumed)


def test_kill_minus_9_then_rerun_gives_the_same_ids(state):
    script = (
        "import torch\n"
        "from pruning.lottery.runner import ImpExperiment\nfrom pruning.lottery.protocol import Protocol\n"
        "from pruning.lottery.tiny import TinyConfig\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        f"base = {({k: v for k, v in BASE.items() if k != 'tiny'})!r}\n"
        f"tiny = {MICRO!r}\n"
        "ImpExperiment(Protocol(tiny=tiny, **{**base, 'rounds': 3, 'pilot_steps': 8})).run()\n")
    p = micro(rounds=3, pilot_steps=8)
    exp = ImpExperiment(p)
    marker = exp.dir / "seed-0" / "ticket-1.json"
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert marker.exists(), proc.stderr.read().decode()[-2000:]
    after = ImpExperiment(p).run()
    assert any(r.resumed for r in after) and not all(r.resumed for r in after)
    shutil.rmtree(exp.dir)
    shutil.rmtree(state / "tickets")
    reference = ImpExperiment(p).run()
    assert not any(r.resumed for r in reference) and ids(reference) == ids(after)


def test_pilot_runs_a_schedule_per_candidate_t_and_picks_the_lowest_validation_loss(state):
    """Finding 2: every (lr, T) is its own run whose schedule has length T, scored at T; the best pair wins."""
    p = micro(lr=None, steps=None, pilot_lrs=(1e-3, 1e-2), pilot_ts=(6, 8), pilot_extend=0, seeds=(0, 1))
    exp = ImpExperiment(p)
    exp.run()
    pilot = json.loads((exp.dir / "pilot.json").read_text())
    points = {(c["lr"], t): v for c in pilot["curves"] for t, v in c["curve"]}
    assert set(points) == {(1e-3, 6), (1e-3, 8), (1e-2, 6), (1e-2, 8)}
    assert (pilot["lr"], pilot["steps"]) == min(points, key=points.get)
    assert exp.resolved.lr == pilot["lr"] and exp.resolved.steps == pilot["steps"]
    # the T = 6 point is a run of its own, not step 6 of the T = 8 run: redo it and compare
    from pruning.lottery.training import load_state, train

    s = exp._seed(0)
    load_state(s.loaded.model, s.dense_state)
    r = train(s.loaded.model, exp.train_data, p.train_config(lr=1e-3, steps=6), data_seed=exp.derive_seed("pilot", 1e-3, 6),
              evaluate=exp._val, eval_every=0)
    assert r.curve == [(6, points[(1e-3, 6)])]
    assert r.lrs[-1] < p.train_config(lr=1e-3, steps=8).lr_at(5)  # its cosine decays over 6 steps, not 8
    stored = json.loads((exp.dir / "protocol.json").read_text())
    assert stored["protocol"] == p.to_dict() and stored["resolved"] == {"lr": pilot["lr"], "steps": pilot["steps"],
                                                                         "seeds": [0, 1]}
    assert stored["budget"]["epochs"] == pytest.approx(pilot["steps"] * 2 * 32 / exp.train_data.numel())


def test_the_pilot_extends_a_grid_whose_best_value_is_at_an_edge_and_says_so(state):
    from pruning.lottery.pilot import grid_extension

    assert grid_extension([1e-3, 2e-3, 4e-3], 4e-3) == 8e-3 and grid_extension([1e-3, 2e-3, 4e-3], 1e-3) == 5e-4
    assert grid_extension([1e-3, 2e-3, 4e-3], 2e-3) is None  # bracketed
    assert grid_extension([4, 8], 4, lowest=4, integer=True) is None  # cannot go below K + 1
    # learning rates far too small: the best is the largest tried, so the grid grows upwards, and says so
    p = micro(lr=None, steps=None, pilot_lrs=(1e-6, 2e-6), pilot_ts=(8,), pilot_extend=1, seeds=(0, 1))
    exp = ImpExperiment(p)
    pilot = exp.pilot()
    assert pilot["grid"]["lrs"] == [1e-6, 2e-6, 4e-6] and pilot["lr"] == 4e-6
    assert any("was at the edge" in n and "added 4e-06" in n for n in pilot["extensions"])
    assert pilot["edge"] and "largest learning rate" in pilot["edge"][0]  # still at the edge after 1 extension


def test_a_changed_protocol_is_a_different_experiment(state):
    a, b = ImpExperiment(micro()), ImpExperiment(micro(delta=0.05))
    assert a.id != b.id and a.dir != b.dir


@pytest.mark.parametrize("kwargs, setting", [
    ({"rewind": "step:8"}, "rewind"),
    ({"rate": 1.0}, "rate"),
    ({"rate": 0.0}, "rate"),
    ({"seeds": (0,)}, "seeds"),
    ({"split_every": 10, "validation_index": 9, "heldout_index": 9}, "split"),
    ({"tiny": replace(MICRO, num_layers=0)}, "tiny.num_layers"),
    ({"rounds": 2, "rate": 0.5, "target_density": 0.05}, "rounds"),  # ends at 25% density, above the 5% target
    ({"unit": "heads", "rounds": 20, "rate": 0.5, "target_density": 0.05}, "target_density"),  # >= 1 head per layer
    ({"stability": "all", "stability_points": 5}, "stability_points"),
    ({"stability": "all", "stability_ks": (8,)}, "stability_ks"),
    ({"sanity": True, "arms": ("ticket", "reinit")}, "sanity"),
    ({"pilot_seeds": 1}, "pilot_extend/pilot_seeds"),
])
def test_bad_protocols_are_refused_before_training_and_nothing_is_overwritten(state, kwargs, setting):
    good = ImpExperiment(micro())
    good.run()
    before = {p: p.read_bytes() for p in good.dir.rglob("*") if p.is_file()}
    tickets = sorted(p.name for p in (state / "tickets").iterdir())
    with pytest.raises(TicketLabError, match=f"protocol setting {setting}"):
        ImpExperiment(micro(**kwargs))
    assert {p: p.read_bytes() for p in good.dir.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (state / "tickets").iterdir()) == tickets
    assert sorted(p.name for p in (state / "experiments").iterdir()) == sorted([good.id, "tokenizers"])


def test_a_split_that_leaves_an_empty_set_is_refused(state, monkeypatch, tmp_path):
    tiny = tmp_path / "tiny-corpus"
    (tiny / "corpora/wikitext-2").mkdir(parents=True)
    for f in ("valid.txt", "test.txt"):
        (tiny / "corpora/wikitext-2" / f).write_text(" = Only = \n\n text .\n", encoding="utf-8")
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(tiny))
    with pytest.raises(TicketLabError, match="split: the validation set is empty"):
        ImpExperiment(micro())
    assert not (state / "experiments").exists()


def test_missing_rewind_checkpoint_is_a_clear_error(state):
    exp = ImpExperiment(micro(rounds=1))
    exp.run()
    (exp.dir / "seed-0" / "step-3.safetensors").unlink()
    with pytest.raises(TicketLabError, match="rewind checkpoint .* is missing"):
        ImpExperiment(micro(rounds=1)).run()


def test_head_pruning_removes_whole_heads(state):
    res = ImpExperiment(micro(unit="heads", rate=0.5, arms=("ticket", "random"))).run()
    from pruning.structure import removed as removed_of

    t, rand = by(res, "ticket").ticket, by(res, "random").ticket
    removed = removed_of(t.structure, "query_heads")
    assert sum(len(v) for v in removed.values()) == 4  # half of 2 x 4 heads
    assert {k: len(v) for k, v in removed_of(rand.structure, "query_heads").items()} == \
        {k: len(v) for k, v in removed.items()}


@pytest.mark.parametrize("recovery", ["full", "lora"])
def test_pretrained_model_rewinds_to_its_weights_with_its_controls(state, tiny_llama_dir, recovery):
    arms = ("ticket", "random", "magnitude", "wanda", "dense_matched") if recovery == "full" else ("ticket",)
    p = Protocol(model=str(tiny_llama_dir), rewind="pretrained", lr=1e-3, steps=2, batch_size=2, seq_len=32,
                 warmup_steps=1, eval_every=2, val_windows=2, heldout_windows=2, eval_batch=2, seeds=(0, 1),
                 arms=arms, recovery=recovery, lora_rank=2, stability="none", sanity=False, rounds=1, rate=0.5,
                 target_density=None)
    exp = ImpExperiment(p)
    res = exp.run()
    dense = load_model(str(tiny_llama_dir))
    t = by(res, "ticket").ticket
    assert t.dense["weights_sha256"] == dense.weights_sha256
    assert set(t.weights) <= set(t.masks)  # only the prunable linears train; embeddings stay pretrained
    for name, mask in t.masks.items():
        assert torch.all(t.weights.get(name, dense.model.get_parameter(name).detach())[~mask] == 0), name
    for arm in arms[1:]:
        r = by(res, arm)
        assert r.steps == by(res, "ticket").steps  # the same retraining
        if arm != "dense_matched":
            assert r.sparsity == pytest.approx(by(res, "ticket").sparsity, abs=0.01), arm
    with pytest.raises(TicketLabError, match="protocol setting rewind"):
        Protocol(model=str(tiny_llama_dir), rewind="init").validate()


def test_bf16_weights_are_refused(state, tiny_llama_dir):
    with pytest.raises(TicketLabError, match="protocol setting dtype"):
        Protocol(model=str(tiny_llama_dir), rewind="pretrained", dtype="bfloat16").validate()


def test_ledger_report_verdict_and_figures(state):
    from analysis.ledger import Ledger
    from analysis.lottery.experiments import (
        experiment_verdict,
        format_report,
        imp_figure,
        imp_report,
        learning_curves,
        record_experiment,
        record_round,
    )

    ledger = Ledger()
    p = micro(stability="dense", stability_ks=(0, 3), sanity=True, arms=("ticket", "random"))
    exp = ImpExperiment(p)
    record_experiment(exp.id, {**p.to_dict(), "rewind_step": 3, "folder": str(exp.dir)}, "running", ledger=ledger)
    res = exp.run(on_round=lambda r: record_round(r, ledger))
    assert not any(record_round(r, ledger) for r in res)  # replaying is a no-op
    from analysis import metric_meta
    from analysis.ledger import evidence_store
    rows = [r for t in {r.ticket.id for r in res} for r in evidence_store.comparison_rows(ledger, t, res[0].dense.weights_sha256)]
    # a metric's direction has one owner: what the ledger holds is what the comparisons read
    assert {r["task"] for r in rows} == {"heldout", "stability"}
    assert all(r["direction"] == metric_meta.direction(r["task"], r["metric"])[0] == "lower" for r in rows)
    table = imp_report(exp.id[:10], ledger)
    assert list(table["round"]) == [0, 1] and list(table["n_seeds"]) == [2, 2]
    v = experiment_verdict(exp.id, ledger)
    assert v["n_seeds"] == 2 and v["sanity"] is not None and set(v["barrier"]["by_rewind_step"]) == {"0", "3"}
    text = format_report(table)
    assert "delta = 0.02 nats" in text and "VERDICT" in text and "95%" in text
    curves = learning_curves(exp.id, ledger)
    assert set(curves["step"]) == {2, 4, 6, 8} and (curves["n"] == 2).all()
    out = state / "fig.html"
    imp_figure(table, out)
    assert out.exists() and "weights remaining" in out.read_text()


def test_cli_json_and_report(state, capsys):
    from app.cli import main

    argv = ["imp", "--rounds", "1", "--train-steps", "4", "--lr", "5e-3", "--warmup-steps", "1", "--batch-size", "2",
            "--seq-len", "16", "--eval-every", "2", "--rewind", "step:1", "--val-windows", "2", "--heldout-windows", "2",
            "--seeds", "0,1", "--arms", "ticket,random", "--stability", "none", "--no-sanity", "--target-density",
            "none", "--pilot-seeds", "0", "--json", "--quiet"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["experiment"].startswith("imp-") and "delta = 0.02 nats" in out["verdict"]["sentence"]
    assert [(r["arm"], r["round"]) for r in out["rounds"]] == \
        [("dense_continuous", 0), ("ticket", 0), ("ticket", 1), ("random", 1)] * 2
    assert main(["imp-report", out["experiment"], "--out", str(state / "r.html")]) == 0
    assert "VERDICT" in capsys.readouterr().out and (state / "r.html").exists()
    assert main(argv[:-2] + ["--rate", "1.5"]) == 2
    assert main(argv[:-2] + ["--seeds", "0"]) == 2
    assert main(argv[:-2] + ["--target-density", "0.05"]) == 2  # 1 round at 20% cannot reach 5% density


def test_the_tokenizer_is_stored_with_the_experiment_and_part_of_its_id(state, tmp_path, monkeypatch):
    """Issue 18: the tokenizer is trained on the train split, checked to cover every split, stored with the
    experiment, and its hash is part of the id: the same protocol on a changed corpus is another experiment."""
    import os as _os

    from pruning.calibration import sha256_file

    exp = ImpExperiment(micro())
    stored = exp.dir / "tokenizer" / "tokenizer.json"
    assert stored.exists() and sha256_file(stored) == exp.tokenizer_sha256
    assert ImpExperiment(micro()).id == exp.id  # deterministic
    src = Path(_os.environ["TICKETLAB_DATA_DIR"])
    other = tmp_path / "other-corpus" / "corpora/wikitext-2"
    other.mkdir(parents=True)
    for f in ("valid.txt", "test.txt"):
        text = (src / "corpora/wikitext-2" / f).read_text(encoding="utf-8")
        (other / f).write_text(text.replace(" the ", " a "), encoding="utf-8")
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(tmp_path / "other-corpus"))
    changed = ImpExperiment(micro())
    assert changed.tokenizer_sha256 != exp.tokenizer_sha256 and changed.id != exp.id


def test_a_tokenizer_that_does_not_cover_the_corpus_is_refused(state):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from pruning.lottery.tiny import check_coverage, split_corpus, train_tokenizer

    split = split_corpus()
    check_coverage(train_tokenizer(split.train, 400), {"heldout": split.heldout})  # byte-level BPE covers it
    words = Tokenizer(models.WordLevel({"[UNK]": 0, "the": 1}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    narrow = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]")
    with pytest.raises(TicketLabError, match="protocol setting tokenizer: it does not cover the heldout split"):
        check_coverage(narrow, {"heldout": split.heldout})


def test_the_budget_beside_the_verdict_states_parameters_tokens_per_parameter_and_epochs(state):
    exp = ImpExperiment(micro())
    exp.pilot()
    b = exp.budget()
    model = exp._seed(0).loaded.model
    assert b["parameters"] == sum(p.numel() for p in model.parameters())
    assert b["tokens_per_run"] == 8 * 2 * 32 and b["train_tokens"] == exp.train_data.numel()
    assert b["epochs"] == pytest.approx(b["tokens_per_run"] / b["train_tokens"])
    assert b["tokens_per_parameter"] == pytest.approx(b["tokens_per_run"] / b["parameters"])
    assert 0 < b["prunable_parameters"] < b["parameters"]


# --- the default from-scratch regime (issue 18) and its two settings ------------------------------------------
# the default protocol of format 3 as recorded before `train_windows` / `stability_seeds` existed, with a fixed
# tokenizer hash: its experiment id must not move
OLD_DEFAULT = dict(tiny=TinyConfig(vocab_size=2048, hidden_size=128, intermediate_size=384), seq_len=128,
                   pilot_lrs=(1.25e-3, 2.5e-3, 5e-3), pilot_steps=2400, pilot_extend=2, eval_every=40)
OLD_DIGEST = "6c5cfe22463c5bc76447591338714f8cfc64befa5dbbd054669b7ed0d9193a13"  # computed by the code at 401b011


def test_protocols_recorded_before_the_new_settings_keep_their_ids_and_meaning():
    old = Protocol(**OLD_DEFAULT, train_windows=0, stability_seeds=0)
    assert old.digest(None, "ab" * 32) == OLD_DIGEST
    stored = old.to_dict()
    assert "train_windows" not in stored and "stability_seeds" not in stored
    back = Protocol.from_dict(stored)  # a protocol.json without the keys: every window, every seed swept
    assert back.train_windows == 0 and back.stability_seeds == 0 and back == old
    assert Protocol().digest(None, "ab" * 32) != OLD_DIGEST


def test_the_default_regime_has_its_capacity_in_the_blocks_and_a_t_grid_of_several_epochs():
    p = Protocol()
    model = build_model(p.tiny, 0)
    total = sum(q.numel() for q in model.parameters())
    blocks = sum(q.numel() for n, q in model.named_parameters() if q.dim() == 2 and ".layers." in n)
    assert blocks / total > 0.65  # the 49k-vocabulary model had most weights in the embedding
    epochs = [t * p.batch_size / p.train_windows for t in p.candidate_ts]
    assert epochs[0] >= 2 and epochs[-1] >= 8  # the grid brackets the dense model's validation minimum
    assert p.final_density <= 0.05 and p.rate == 0.2 and len(p.seeds) >= 5 and p.stability_points >= 11


def test_train_windows_are_evenly_spaced_over_the_split_and_part_of_the_id(state):
    few, every = ImpExperiment(micro(train_windows=8)), ImpExperiment(micro(train_windows=0))
    assert few.train_data.shape[0] == 8 < every.train_data.shape[0]
    assert few.data_record["train_windows"] == 8 and few.id != every.id
    rows = {tuple(r.tolist()) for r in every.train_data}
    assert all(tuple(r.tolist()) in rows for r in few.train_data)
    first, last = (next(i for i, r in enumerate(every.train_data) if torch.equal(r, few.train_data[j])) for j in (0, -1))
    assert first == 0 and last == every.train_data.shape[0] - 1  # spread over the whole split, not its start


def test_the_sparse_stability_sweep_runs_on_the_first_seeds_and_the_dense_one_on_every_seed(state):
    res = ImpExperiment(micro(rounds=1, stability="all", stability_ks=(3,), stability_seeds=1)).run()
    swept = {(r.seed, r.round) for r in res if r.arm == "ticket" and r.stability}
    assert swept == {(0, 0), (1, 0), (0, 1)}  # not seed 1's sparse level
    assert all(len(r.stability["3"]["losses"]) == 11 for r in res if r.stability)


@pytest.mark.parametrize("kwargs, setting", [
    ({"train_windows": 1}, "train_windows"),  # fewer windows than one batch of 2
    ({"train_windows": -1}, "train_windows"),
    ({"stability_seeds": 3}, "stability_seeds"),  # 2 seeds
    ({"stability_seeds": -1}, "stability_seeds"),
])
def test_bad_new_settings_are_refused_before_anything_is_written(state, kwargs, setting):
    with pytest.raises(TicketLabError, match=f"protocol setting {setting}"):
        ImpExperiment(micro(**kwargs))
    assert not (state / "experiments").exists()


def test_a_changed_regime_is_a_different_experiment():
    assert micro().digest(None, "c" * 64) != replace(micro(), train_windows=16).digest(None, "c" * 64)


def test_the_behaviour_suite_runs_on_level_0_and_the_last_level_of_every_arm_and_pairs_them_by_seed(state, data_dir,
                                                                                                   monkeypatch, capsys):
    """Chen et al. 2020 evaluate pretrained tickets downstream: `imp-eval` runs a suite through the ordinary
    eval path on level 0 and the last level of every arm per seed, and pairs each arm with its seed's level 0;
    a second call evaluates nothing (resume)."""
    from analysis.ledger import Ledger
    from analysis.lottery.downstream import downstream_units
    from usecases.experiment import ImpEvalRequest, ImpRequest, evaluate_experiment, run_experiment

    long = replace(MICRO, max_positions=1024)  # the benchmarks' documents are longer than the micro context
    out = run_experiment(ImpRequest.build(protocol=micro(tiny=long, rounds=2, arms=("ticket", "random")).to_dict(),
                                          quiet=True))
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(data_dir))  # the benchmarks (the micro corpus has none)
    units = downstream_units(out.experiment, Ledger())
    assert [(u.arm, u.seed, u.round) for u in units] == [("ticket", 0, 0), ("ticket", 1, 0), ("random", 0, 2),
                                                        ("random", 1, 2), ("ticket", 0, 2), ("ticket", 1, 2)]
    request = ImpEvalRequest.build(experiment=out.experiment[:10], suite="safety", limit=2)
    first = evaluate_experiment(request)
    assert sorted(first.evaluated) == sorted(u.ticket for u in units) and not first.already
    rows = [r for r in first.table if r["task"] == "crows_pairs_english"]
    assert {(r["arm"], r["round"]) for r in rows} == {("ticket", 0), ("ticket", 2), ("random", 2)}
    ledger = Ledger()
    from analysis.lottery.downstream import unit_metrics

    values = {(u.arm, u.round, u.seed): unit_metrics(u, ledger, 2) for u in units}
    for r in rows:
        key = ("crows_pairs_english", r["metric"])
        mine = [values[(r["arm"], r["round"], s)][key] for s in (0, 1)]
        assert r["mean"] == pytest.approx(sum(mine) / 2) and r["n"] == 2
        if r["round"] == 2:  # paired by seed against the same seed's level 0
            base = [values[("ticket", 0, s)][key] for s in (0, 1)]
            assert r["minus_level0"] == pytest.approx(sum(m - b for m, b in zip(mine, base, strict=True)) / 2)
    again = evaluate_experiment(request)
    assert not again.evaluated and sorted(again.already) == sorted(first.evaluated) and again.table == first.table
    assert "downstream (6 of 6 tickets evaluated, 2 documents per task" in again.text
    from app.cli import main

    capsys.readouterr()
    assert main(["imp-report", out.experiment, "--out", str(state / "r.html")]) == 0
    assert again.text in capsys.readouterr().out  # imp-report shows the same table
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app" / "dashboard" / "main.py"), default_timeout=90)
    at.run()
    at.switch_page("views/experiments.py")
    at.run()
    assert not at.exception and any(h.value == "Downstream behaviour" for h in at.subheader)
    shown = next(d.value for d in at.dataframe if "minus level 0" in d.value.columns)
    assert len(shown) == len(first.table) and set(shown["arm"]) == {"ticket", "random"}
    assert main(["imp-eval", "imp-nosuchthing", "--suite", "safety", "--limit", "2"]) == 2  # one line, no traceback
    assert "no experiment 'nosuchthing'" in capsys.readouterr().err


def test_seeds_auto_runs_as_many_seeds_as_the_pilots_power_analysis_needs(state):
    """`--seeds auto`: the seed count comes from the pilot's seed noise (seeds_for_power), is stored with the
    experiment and every seed runs; without the pilot's seed noise it is refused naming the setting."""
    from pruning.lottery.stats import seeds_for_power

    p = micro(seeds=(), pilot_seeds=2, min_seeds=3, delta=5.0)  # a wide margin: the minimum suffices
    exp = ImpExperiment(p)
    res = exp.run()
    sd = json.loads((exp.dir / "pilot.json").read_text())["seed_sd"]
    needed = seeds_for_power(sd, 5.0, 0.05, 0.8, 3).needed
    assert needed == 3 and exp.resolved.seeds == (0, 1, 2)
    assert sorted({r.seed for r in res}) == [0, 1, 2]
    assert json.loads((exp.dir / "protocol.json").read_text())["resolved"]["seeds"] == [0, 1, 2]
    assert exp.power.given == 3 and exp.id != ImpExperiment(micro(seeds=(0, 1, 2), pilot_seeds=2, min_seeds=3,
                                                                    delta=5.0)).id
    tight = ImpExperiment(micro(seeds=(), pilot_seeds=2, min_seeds=3, delta=sd))  # needs more than the minimum
    tight.pilot()
    assert 3 < len(tight.resolved.seeds) == seeds_for_power(sd, sd, 0.05, 0.8, 3).needed <= 30
    capped = ImpExperiment(micro(seeds=(), pilot_seeds=2, min_seeds=3, delta=sd / 4))
    capped.pilot()
    assert seeds_for_power(sd, sd / 4, 0.05, 0.8, 3).needed > 30 == len(capped.resolved.seeds)
    assert any("running the cap of 30" in w for w in capped.warnings)
    with pytest.raises(TicketLabError, match="protocol setting seeds: auto chooses the seed count"):
        ImpExperiment(micro(seeds=(), pilot_seeds=0))


def test_seeds_auto_from_the_command_line_and_back(state):
    import argparse

    from app.commands import imp as imp_cmd
    from usecases.experiment import ImpRequest

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    imp_cmd.add_parser(sub, argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(["imp", "--seeds", "auto", "--quiet"])
    request = imp_cmd.request_from_args(args)
    assert request.protocol["seeds"] == [] and ["--seeds", "auto"] == request.argv()[
        request.argv().index("--seeds"):request.argv().index("--seeds") + 2]
    assert ImpRequest.build(protocol=request.protocol).protocol == request.protocol
