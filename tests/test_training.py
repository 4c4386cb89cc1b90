"""The training loop: masked weights stay exactly zero, determinism, schedule, checkpoints, LoRA merge."""

import math

import pytest
import torch

from pruning.errors import TicketLabError
from pruning.lottery.lora import lora_train
from pruning.lottery.tiny import TinyConfig, build_model, save_checkpoint, train_tokenizer
from pruning.lottery.training import (
    MaskSet,
    TrainConfig,
    batch_order,
    cpu_state,
    heldout_loss,
    load_state,
    train,
)

MICRO = TinyConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                   intermediate_size=64, max_positions=32)
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def _data(n=24, length=16, seed=0):
    return torch.randint(0, MICRO.vocab_size, (n, length), generator=torch.Generator().manual_seed(seed))


def _masks(model, fraction=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {f"model.layers.{i}.{m}.weight": torch.rand(model.get_parameter(f"model.layers.{i}.{m}.weight").shape,
                                                        generator=g) >= fraction
            for i in range(MICRO.num_layers) for m in LINEARS}


CFG = TrainConfig(steps=6, batch_size=4, seq_len=16, lr=1e-2, weight_decay=0.1)


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models run faster on one thread than on two contended ones (conftest asks for two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_masked_weights_stay_exactly_zero_and_survivors_train():
    model = build_model(MICRO, seed=0)
    masks = _masks(model)
    before = cpu_state(model)
    train(model, _data(), CFG, masks=masks, data_seed=0)
    for name, mask in masks.items():
        w = model.get_parameter(name).detach()
        assert torch.all(w[~mask] == 0), name
        assert not torch.equal(w[mask], before[name][mask]), name  # the survivors did learn
    assert all(p.requires_grad for p in model.parameters())


def test_same_seed_same_weights_other_data_order_differs():
    a, b, c = (build_model(MICRO, seed=0) for _ in range(3))
    masks = _masks(a)
    for m, seed in ((a, 0), (b, 0), (c, 1)):
        train(m, _data(), CFG, masks=masks, data_seed=seed)
    sa, sb, sc = cpu_state(a), cpu_state(b), cpu_state(c)
    assert all(torch.equal(sa[n], sb[n]) for n in sa)
    assert not all(torch.equal(sa[n], sc[n]) for n in sa)


def test_schedule_warms_up_then_decays_to_floor():
    cfg = TrainConfig(steps=100, lr=1.0, min_lr_ratio=0.1, warmup_steps=10)
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(9) == pytest.approx(1.0)
    lrs = [cfg.lr_at(s) for s in range(10, 100)]
    assert all(x >= y for x, y in zip(lrs, lrs[1:], strict=False))
    assert cfg.lr_at(99) == pytest.approx(0.1, abs=1e-3)
    ft = cfg.finetune()
    assert ft.schedule == "constant" and ft.lr_at(0) == ft.lr_at(99) == pytest.approx(0.1)


def test_checkpoints_are_exact_and_rewinding_restores_them():
    model = build_model(MICRO, seed=0)
    masks = _masks(model)
    result = train(model, _data(), CFG, masks=masks, data_seed=0, checkpoint_steps=[0, 3])
    assert set(result.checkpoints) == {0, 3}
    # step 0 is the masked initial network; training 3 steps from scratch reproduces step 3 bit for bit
    fresh = build_model(MICRO, seed=0)
    init = cpu_state(fresh)
    for name, mask in masks.items():
        assert torch.equal(result.checkpoints[0][name], init[name] * mask)
    again = train(fresh, _data(), TrainConfig(**{**CFG.to_dict(), "steps": 6}), masks=masks, data_seed=0,
                  checkpoint_steps=[3])
    assert all(torch.equal(again.checkpoints[3][n], result.checkpoints[3][n]) for n in init)
    # rewind the trained model to step 3: survivors get exactly the saved values, pruned weights stay 0
    load_state(model, result.checkpoints[3])
    MaskSet(model, masks).apply_()
    for name, mask in masks.items():
        w = model.get_parameter(name).detach()
        assert torch.equal(w[mask], result.checkpoints[3][name][mask]) and torch.all(w[~mask] == 0)


def test_frozen_parameters_do_not_move():
    model = build_model(MICRO, seed=0)
    before = cpu_state(model)
    names = [n for n in before if "mlp" in n]
    train(model, _data(), CFG, trainable=names)
    after = cpu_state(model)
    assert all(torch.equal(before[n], after[n]) for n in before if n not in names)
    assert any(not torch.equal(before[n], after[n]) for n in names)


def test_heldout_loss_matches_the_model_loss():
    model = build_model(MICRO, seed=0)
    x = _data(4)
    loss, count = heldout_loss(model, x, batch_size=3)
    assert count == 4 * 15
    with torch.no_grad():
        assert loss == pytest.approx(float(model(input_ids=x, labels=x).loss), rel=1e-5)


def test_batch_order_covers_every_window_once_per_epoch():
    order = batch_order(10, 4, 5, seed=3)
    assert order.shape == (5, 4)
    assert sorted(order.reshape(-1)[:10].tolist()) == list(range(10))


def test_bad_training_input_is_refused():
    model = build_model(MICRO, seed=0)
    with pytest.raises(TicketLabError, match="outside the training run"):
        train(model, _data(), CFG, checkpoint_steps=[7])
    with pytest.raises(TicketLabError, match="at least 1 step"):
        TrainConfig(steps=0)
    with pytest.raises(TicketLabError, match="does not have"):
        train(model, _data(), CFG, masks={"nope.weight": torch.ones(2, dtype=torch.bool)})


def test_lora_merge_respects_the_mask():
    model = build_model(MICRO, seed=0)
    masks = _masks(model, 0.6)
    before = cpu_state(model)
    modules = [f"model.layers.{i}.{m}" for i in range(MICRO.num_layers) for m in LINEARS]
    merged, result = lora_train(model, modules, masks, _data(), CFG, rank=4, seed=0)
    assert merged is model and len(result.losses) == CFG.steps
    assert not any("lora" in n for n, _ in model.named_parameters())
    for name, mask in masks.items():
        w = model.get_parameter(name).detach()
        assert torch.all(w[~mask] == 0), name
        assert not torch.equal(w[mask], before[name][mask]), name  # the merged delta reached the survivors
    for n, t in before.items():  # the embedding and norms were frozen
        if n not in masks:
            assert torch.equal(model.get_parameter(n).detach(), t), n


def test_tiny_checkpoint_loads_with_its_tokenizer(state, tmp_path):
    from pruning.models import load_model

    tok = train_tokenizer(["the cat sat on the mat . " * 50, "a dog ran . " * 50], vocab_size=300)
    tok.save_pretrained(tmp_path / "tok")
    save_checkpoint(build_model(MICRO, seed=0), tmp_path / "tok", tmp_path / "model")
    loaded = load_model(str(tmp_path / "model"))
    assert loaded.family == "llama" and loaded.adapter.num_kv_heads == 2
    ids = loaded.tokenizer("the cat sat", add_special_tokens=False)["input_ids"]
    assert loaded.tokenizer.decode(ids) == "the cat sat" and max(ids) < MICRO.vocab_size
    assert math.isfinite(heldout_loss(loaded.model, torch.tensor([ids * 2]))[0])


def test_resuming_at_k_runs_the_full_schedules_steps_and_learning_rates_from_k():
    """A network rewound to step K trains steps K..T-1 at the learning rates the full run used there."""
    cfg = TrainConfig(steps=8, batch_size=4, seq_len=16, lr=1e-2, warmup_steps=3)
    model = build_model(MICRO, seed=0)
    full = train(model, _data(), cfg, data_seed=0, checkpoint_steps=[3])
    assert full.steps == list(range(8)) and full.lrs == [cfg.lr_at(s) for s in range(8)]
    load_state(model, full.checkpoints[3])
    resumed = train(model, _data(), cfg, data_seed=1, start_step=3, checkpoint_steps=[3])
    assert resumed.steps == list(range(3, 8)) and resumed.lrs == full.lrs[3:]
    assert len(resumed.losses) == 5 and resumed.lrs[0] > cfg.lr_at(0)  # no second warm-up
    assert all(torch.equal(resumed.checkpoints[3][n], full.checkpoints[3][n]) for n in full.checkpoints[3])
    with pytest.raises(TicketLabError, match="start step 8 is outside"):
        train(model, _data(), cfg, start_step=8)


def test_early_stopping_leaves_the_model_at_the_best_validation_step():
    cfg = CFG
    model = build_model(MICRO, seed=0)
    planted = iter([3.0, 1.0, 2.0])  # the second evaluation (step 4) is the best
    result = train(model, _data(), cfg, data_seed=0, evaluate=lambda m: next(planted), eval_every=2,
                   checkpoint_steps=[4])
    assert result.curve == [(2, 3.0), (4, 1.0), (6, 2.0)] and result.best_step == 4
    after = cpu_state(model)
    assert all(torch.equal(after[n], result.checkpoints[4][n]) for n in after)


def test_half_precision_weights_are_refused_and_cpu_autocast_too():
    """bf16 weights updated in place round small updates away: refused, with the fix in the message."""
    model = build_model(MICRO, seed=0).to(torch.bfloat16)
    with pytest.raises(TicketLabError, match="rounds small updates away.*float32"):
        train(model, _data(), CFG)
    model = build_model(MICRO, seed=0)
    with pytest.raises(TicketLabError, match="bf16 autocast training is for CUDA"):
        train(model, _data(), TrainConfig(**{**CFG.to_dict(), "amp": "bf16"}))
    with pytest.raises(TicketLabError, match="amp 'fp8'"):
        TrainConfig(steps=2, amp="fp8")


def test_resuming_at_k_with_the_optimizer_state_is_not_a_perturbation():
    """Issue 18 finding 3: the rewind point carries AdamW's state, so a run resumed at K with the same data
    order ends bit-identical to the uninterrupted run, and the resumed optimizer state equals the saved one.
    Without the state (the old rewind point) the same resume lands elsewhere."""
    full = build_model(MICRO, seed=0)
    init = cpu_state(full)
    r = train(full, _data(), CFG, data_seed=3, checkpoint_steps=[2])
    assert set(r.optimizer_states[2]) >= {f"{n}/{k}" for n in init for k in ("exp_avg", "exp_avg_sq", "step")}
    assert float(r.optimizer_states[2]["model.norm.weight/step"]) == 2.0

    resumed = build_model(MICRO, seed=0)
    load_state(resumed, r.checkpoints[2])
    back = train(resumed, _data(), CFG, data_seed=3, start_step=2, optimizer_state=r.optimizer_states[2],
                 checkpoint_steps=[2])
    loaded = back.optimizer_states[2]  # taken from the live optimizer right after loading
    assert loaded.keys() == r.optimizer_states[2].keys()
    assert all(torch.equal(loaded[k], r.optimizer_states[2][k]) for k in loaded)
    assert all(torch.equal(p, full.get_parameter(n).detach()) for n, p in cpu_state(resumed).items())
    assert back.lrs == r.lrs[2:] and back.steps == r.steps[2:]

    fresh = build_model(MICRO, seed=0)
    load_state(fresh, r.checkpoints[2])
    train(fresh, _data(), CFG, data_seed=3, start_step=2)
    assert not all(torch.equal(p, full.get_parameter(n).detach()) for n, p in cpu_state(fresh).items())
    load_state(fresh, init)


def test_a_resumed_optimizer_forgets_the_pruned_weights_history():
    model = build_model(MICRO, seed=0)
    r = train(model, _data(), CFG, data_seed=3, checkpoint_steps=[2])
    masks = _masks(model)
    load_state(model, r.checkpoints[2])
    back = train(model, _data(), CFG, masks=masks, data_seed=4, start_step=2, optimizer_state=r.optimizer_states[2],
                 checkpoint_steps=[2])
    for name, mask in masks.items():
        saved, now = r.optimizer_states[2][f"{name}/exp_avg"], back.optimizer_states[2][f"{name}/exp_avg"]
        assert torch.all(now[~mask] == 0) and torch.equal(now[mask], saved[mask])
        assert torch.all(model.get_parameter(name).detach()[~mask] == 0)
