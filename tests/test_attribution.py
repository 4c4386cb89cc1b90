"""Head attribution with captum on tiny Llama (GQA) and GPT-2: shape, completeness, tickets, determinism, SQL."""

import pytest
import torch

from analysis.attribution import (
    _encode,
    attribution_rows,
    head_attributions,
    load_pairs,
)
from analysis.ledger import Ledger
from analysis.ledger.lab_records import ATTRIBUTION_COLUMNS as COLUMNS
from analysis.ledger.lab_records import attribution_statements
from pruning.errors import TicketLabError
from pruning.ticket import Ticket

FAST = {"n_pairs": 2, "steps": 4}


@pytest.fixture(params=["tiny_llama", "tiny_gpt2"])
def tiny(request):
    return request.getfixturevalue(request.param)


def _plain_ll(loaded, text: str) -> float:
    ids = torch.tensor([_encode(loaded.tokenizer, text)])
    with torch.no_grad():
        logp = loaded.model(ids).logits[0, :-1].float().log_softmax(-1)
    return float(logp.gather(-1, ids[0, 1:, None]).sum())


def _head_ticket(loaded, layer: int, head: int) -> Ticket:
    """A hand-made ticket removing one query head (its q rows and o_proj input columns)."""
    params = dict(loaded.model.named_parameters())
    masks = {}
    for s in loaded.adapter.query_head_slices(layer, head):
        m = masks.setdefault(s.param, torch.ones_like(params[s.param], dtype=torch.bool))
        m.narrow(s.axis, s.start, s.stop - s.start).fill_(False)
    dense = {"spec": loaded.spec, "weights_sha256": loaded.weights_sha256, "family": loaded.family,
             "model_type": loaded.model.config.model_type}
    return Ticket(masks=masks, dense=dense, method="hand", params={"head": [layer, head]}, target_sparsity=0.0)


def test_rows_cover_every_head_of_every_layer(tiny):
    a = tiny.adapter
    r = head_attributions(tiny, **FAST)
    assert r.per_pair.shape == (2, a.num_layers, a.num_heads) and r.n_pairs == 2
    assert r.mean.shape == r.mean_abs.shape == (a.num_layers, a.num_heads)
    assert torch.allclose(r.layer_totals, r.per_pair.sum(2).mean(0))
    rows = attribution_rows(r)
    assert len(rows) == a.num_layers * a.num_heads and all(len(row) == len(COLUMNS) for row in rows)
    assert [(row[0], row[1]) for row in rows] == [(i, h) for i in range(a.num_layers) for h in range(a.num_heads)]
    assert all(row[3] >= abs(row[2]) - 1e-7 and row[4] == 2 for row in rows)
    assert torch.isfinite(r.per_pair).all() and r.per_pair.abs().sum() > 0
    d = r.to_dict()
    assert d["n_pairs"] == 2 and len(d["layer_totals"]) == a.num_layers and d["completeness"]["max_abs_delta"] >= 0


def test_completeness_and_objective_match_lm_eval_scoring(tiny):
    r = head_attributions(tiny, n_pairs=2, steps=8)
    pairs = load_pairs(2, 0)
    for k, pair in enumerate(pairs):
        # alpha = 1 is the untouched model: the objective is lm-eval's ll(sent_more) - ll(sent_less)
        plain = _plain_ll(tiny, pair["sent_more"]) - _plain_ll(tiny, pair["sent_less"])
        assert r.objective[k] == pytest.approx(plain, abs=1e-3)
        total = float(r.per_pair[k].sum())
        target = r.objective[k] - r.objective_baseline[k]
        # captum's delta is exactly the completeness gap, and that gap is small
        assert total - target == pytest.approx(r.convergence_delta[k], abs=1e-3)
        assert abs(r.convergence_delta[k]) <= 0.05 * abs(target) + 1e-3
    assert r.completeness["relative_max_abs_delta"] < 0.05


def test_zero_baseline_also_meets_completeness_on_tiny_model(tiny_llama):
    r = head_attributions(tiny_llama, baseline="zero", **FAST)
    assert r.baseline == "zero" and r.completeness["relative_max_abs_delta"] < 0.05


def test_ticket_removing_a_head_gives_it_zero_attribution_and_restores_model(tiny):
    model = tiny.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dense = head_attributions(tiny, **FAST)
    ticket = _head_ticket(tiny, layer=1, head=2)
    pruned = head_attributions(tiny, ticket=ticket, **FAST)
    assert dense.per_pair[:, 1, 2].abs().min() > 0
    assert torch.equal(pruned.per_pair[:, 1, 2], torch.zeros(2))  # the removed head carries nothing
    assert not torch.allclose(pruned.per_pair, dense.per_pair)
    assert pruned.ticket_id == ticket.id and dense.ticket_id is None
    # the dense model comes back exactly: weights, gradient flags, no hooks left behind
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and p.requires_grad
    o_proj = [tiny.adapter.module(r.module_name) for r in tiny.adapter.linears() if r.kind == "o"]
    assert all(not m._forward_pre_hooks for m in o_proj)


def test_deterministic_with_seed(tiny_llama):
    a = head_attributions(tiny_llama, seed=3, **FAST)
    b = head_attributions(tiny_llama, seed=3, **FAST)
    c = head_attributions(tiny_llama, seed=4, **FAST)
    assert torch.equal(a.per_pair, b.per_pair) and a.pairs == b.pairs
    assert a.pairs != c.pairs and [p["index"] for p in load_pairs(2, 3)] == [p["index"] for p in a.pairs]


def test_sql_writes_into_the_run_transaction(tiny_llama, state):
    r = head_attributions(tiny_llama, **FAST)
    rows = attribution_rows(r)
    ledger = Ledger()  # its schema holds attribution_head
    with ledger.run("eval", "ticketlab eval dense --suite attribution", "dense", tiny_llama.weights_sha256) as run:
        run.extra_sql += attribution_statements(run.id, run.subject, rows)
    got = ledger.query("SELECT layer, head, value, abs_value, n_pairs FROM attribution_head WHERE run_id = ? "
                       "ORDER BY layer, head", [run.id])
    assert [tuple(g.values()) for g in got] == rows
    total = ledger.query("SELECT layer, sum(value) AS v FROM attribution_head GROUP BY layer ORDER BY layer")
    assert [t["v"] for t in total] == pytest.approx(r.mean.sum(1).tolist(), abs=1e-5)


def test_bad_input(tiny_llama, tmp_path, monkeypatch):
    with pytest.raises(TicketLabError, match="n_pairs"):
        head_attributions(tiny_llama, n_pairs=0)
    with pytest.raises(TicketLabError, match="baseline"):
        head_attributions(tiny_llama, baseline="resample")
    bad = tmp_path / "data" / "benchmarks" / "crows_pairs"
    bad.mkdir(parents=True)
    (bad / "crows_pairs_anonymized.csv").write_text("sent_more,sent_less\na,b\n")
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(TicketLabError, match="stereo_antistereo"):
        head_attributions(tiny_llama, **FAST)
