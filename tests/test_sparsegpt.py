"""SparseGPT: a hand-computed OBS update, reconstruction on one linear, N:M, and the full runner."""

import pytest
import torch

from pruning.calibration import CalibrationSet
from pruning.errors import TicketLabError
from pruning.masks import prune_lowest
from pruning.methods.sparsegpt import sparsegpt_prune
from pruning.prune import make_ticket
from pruning.ticket import applied


def calib_set(n=6, length=24, seed=1):
    return CalibrationSet(torch.randint(0, 49152, (n, length), generator=torch.Generator().manual_seed(seed)),
                          {"source": "test", "n": n, "length": length, "seed": seed})


def test_hand_computed_obs_update():
    # H^-1 = [[2, -1], [-1, 2]] / 3, its upper Cholesky factor U = [[sqrt(2/3), -1/sqrt(6)], [0, sqrt(1/2)]].
    # Scores w^2 / U_jj^2 over the block: row 0 [1.5, 8], row 1 [6, 2] -> prune (0,0) and (1,1).
    # Row 0 loses column 0; its error (1 / sqrt(2/3)) moves onto column 1: 2 + 1/sqrt(2/3) / sqrt(6) = 2.5,
    # the least-squares optimum w1 + w0 * H01 / H11. Row 1 keeps column 0 (no error) and drops column 1.
    W = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    H = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    new, keep = sparsegpt_prune(W, H, 0.5, percdamp=0.0)
    assert keep.tolist() == [[False, True], [True, False]]
    assert torch.allclose(new, torch.tensor([[0.0, 2.5], [2.0, 0.0]]), atol=1e-6)


def _layer_problem(seed=0, out=32, inp=64, tokens=512):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(inp, inp, generator=g) / inp ** 0.5 + torch.eye(inp)  # correlated inputs, as in LLMs
    X = torch.randn(tokens, inp, generator=g) @ mix * torch.linspace(0.2, 3, inp)
    W = torch.randn(out, inp, generator=g)
    return W, X, 2 * X.t() @ X / tokens


def test_reconstructs_better_than_magnitude_on_one_linear():
    W, X, H = _layer_problem()
    new, keep = sparsegpt_prune(W, H, 0.5)  # one block of 64 columns: mask chosen over the whole layer
    assert int((~keep).sum()) == W.numel() // 2
    assert (new[~keep] == 0).all()
    magnitude = W * prune_lowest(W.abs(), 0.5)
    err_sparsegpt = torch.linalg.norm(X @ W.t() - X @ new.t())
    err_magnitude = torch.linalg.norm(X @ W.t() - X @ magnitude.t())
    err_same_mask = torch.linalg.norm(X @ W.t() - X @ (W * keep).t())
    assert err_sparsegpt < 0.7 * err_magnitude
    assert err_sparsegpt < err_same_mask  # the OBS updates, not only the mask, do the work
    _, keep16 = sparsegpt_prune(W, H, 0.5, blocksize=16)
    assert (~keep16).reshape(32, 4, 16).sum((0, 2)).tolist() == [256] * 4  # 50% within every block


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_on_one_linear(n, m):
    W, X, H = _layer_problem(seed=1)
    new, keep = sparsegpt_prune(W, H, 0.0, nm=(n, m), blocksize=32)
    assert (keep.reshape(W.shape[0], -1, m).sum(-1) == n).all()
    assert (new[~keep] == 0).all()


def test_dead_inputs_like_the_reference():
    W, X, _ = _layer_problem(seed=2)
    X[:, 5] = 0
    H = 2 * X.t() @ X / X.shape[0]
    new, keep = sparsegpt_prune(W, H, 0.5, blocksize=16)
    assert torch.isfinite(new).all() and (new[:, 5] == 0).all()


def test_blocksize_must_hold_whole_groups():
    W, _, H = _layer_problem()
    with pytest.raises(TicketLabError, match="multiple of M"):
        sparsegpt_prune(W, H, 0.0, nm=(2, 4), blocksize=6)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_ticket_on_tiny_models(model, request):
    loaded = request.getfixturevalue(model)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    calib = calib_set()
    t = make_ticket(loaded, "sparsegpt", 0.5, calib=calib)
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # dense weights restored exactly
    assert t.params["blocksize"] == 128 and t.params["percdamp"] == 0.01
    assert set(t.weights) <= set(t.masks) and t.weights
    for name, w in t.weights.items():
        dense = loaded.adapter.parameter(name)
        assert w.shape == dense.shape  # GPT-2 Conv1D stays [in, out]
        assert (w[~t.masks[name]] == 0).all()
        assert not torch.equal(w, dense * t.masks[name])  # surviving weights really moved
    assert abs(t.achieved_sparsity - 0.5) < 1e-6
    # applying the ticket reproduces its weights, and restores afterwards
    with applied(loaded, t):
        for name, w in t.weights.items():
            assert torch.equal(loaded.adapter.parameter(name).data, w)
    assert all(torch.equal(before[k], loaded.model.state_dict()[k]) for k in before)
    assert make_ticket(loaded, "sparsegpt", 0.5, calib=calib).id == t.id


def test_nm_ticket_gpt2(tiny_gpt2):
    t = make_ticket(tiny_gpt2, "sparsegpt", None, options={"pattern": "2:4"}, calib=calib_set())
    for ref in tiny_gpt2.adapter.linears():
        view = t.masks[ref.name].t()
        assert (view.reshape(view.shape[0], -1, 4).sum(-1) == 2).all()
