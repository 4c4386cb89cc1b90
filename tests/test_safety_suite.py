"""The offline lm-eval safety suite: real lm-eval runs on the tiny models, no hub, lm-eval's own definitions."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

import analysis.safety.loaders as L
from analysis.safety import BBQ_CATEGORIES, TASKS, benchmark_registry, run_safety
from analysis.safety.runner import TASK_DIR, offline
from analysis.safety.scoring import make_lm
from pruning.errors import TicketLabError
from pruning.prune import make_ticket

LM_EVAL_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails loudly; the hub endpoint points nowhere."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _requests(texts):
    from lm_eval.api.instance import Instance

    return [Instance(request_type="loglikelihood", doc={}, arguments=a, idx=0) for a in texts]


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_shared_prefix_scoring_equals_lm_eval(fixture, request):
    loaded = request.getfixturevalue(fixture)
    ctxs = ["The cat sat on the", "Q: What is the capital of France?\nA:", "", "Hello", "Hello there"]
    conts = [" mat", " Paris", " the city of lights, and a few more words", " dog", " mat", "x"]
    reqs = [(c, x) for c in ctxs for x in conts] + [("word " * 300, " end of it")]  # the last is truncated
    lm = make_lm(loaded.model, loaded.tokenizer, batch_size=3, row_tokens=24)
    ours = lm.loglikelihood(_requests(reqs))
    lm.shared = False
    theirs = lm.loglikelihood(_requests(reqs))
    for (a, ga), (b, gb) in zip(ours, theirs, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
    assert lm.stats.unique < lm.stats.requests and lm.stats.tokens < lm.stats.naive_tokens


def test_suite_offline_metric_names_and_breakdowns(tiny_llama, no_network):
    r = run_safety(tiny_llama, limit=6, batch_size=4)
    assert set(r.results) == set(TASKS)
    crows = r.results["crows_pairs_english"]
    assert 0 <= crows["pct_stereotype,none"] <= 1 and crows["pct_stereotype_stderr,none"] is not None
    assert "likelihood_diff,none" in crows
    for t in ("crows_pairs_english_gender", "crows_pairs_english_race_color", "winogender_gotcha_female"):
        assert r.n_samples[t] == 6
    bbq = r.results["bbq"]
    for cat in BBQ_CATEGORIES:  # per-category rows exist, the five absent categories do not
        assert f"amb_bias_score_{cat},none" in bbq and f"accuracy_amb_{cat},none" in bbq
    assert not any("Gender_identity" in k or "Race_x_SES" in k for k in bbq)
    assert -1 <= bbq["amb_bias_score,none"] <= 1
    assert r.n_docs["bbq"]["amb_bias_score"] < 10 and bbq["amb_bias_score_stderr,none"] is None  # too few to tell
    assert 0 <= r.results["truthfulqa_mc2"]["acc,none"] <= 1
    assert set(r.samples) == {"crows_pairs_english", "bbq", "truthfulqa_mc1", "truthfulqa_mc2", "winogender_all"}
    s = r.samples["bbq"][0]
    assert {"lls", "target", "category", "instance", "acc"} <= set(s) and "context" not in s
    assert not any(k.endswith(tuple(c for c in BBQ_CATEGORIES if c != s["category"])) for k in s)
    cfg = r.config
    assert cfg["source"] == "local" and cfg["limit"] == 6 and cfg["batch_size"] == 4
    assert cfg["dtype"] == "float32" and cfg["padding"] == "shared-prefix" and cfg["bbq_per_category"] == 240
    assert os.environ.get("HF_DATASETS_OFFLINE") is None  # the guard restored the environment


def test_offline_guard_sets_and_restores(monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = hc.HF_HUB_OFFLINE
    with offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
        assert hc.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ and hc.HF_HUB_OFFLINE == before


def test_ticket_changes_scores_and_is_removed(tiny_llama):
    dense = run_safety(tiny_llama, tasks="crows_pairs_english", limit=4)
    ticket = make_ticket(tiny_llama, "magnitude", 0.9)
    pruned = run_safety(tiny_llama, ticket, tasks=["crows_pairs_english"], limit=4)
    assert pruned.results["crows_pairs_english"] != dense.results["crows_pairs_english"]
    assert getattr(tiny_llama.model, "_ticketlab_applied", None) is None
    again = run_safety(tiny_llama, tasks=["crows_pairs_english"], limit=4)  # no response cache across tickets
    assert again.results["crows_pairs_english"] == dense.results["crows_pairs_english"]


def test_unknown_task_and_bad_limit(tiny_llama):
    with pytest.raises(TicketLabError, match="unknown safety task"):
        run_safety(tiny_llama, tasks="crows_pairs")  # a tag, not a task name
    with pytest.raises(TicketLabError, match="at least 1"):
        run_safety(tiny_llama, tasks="bbq", limit=0)


def _builtin_configs() -> dict[str, Path]:
    from lm_eval.tasks._yaml_loader import load_yaml

    out = {}
    for sub in ("crows_pairs", "bbq", "truthfulqa", "winogender"):
        for f in (LM_EVAL_TASKS / sub).glob("*.yaml"):
            out[load_yaml(f, resolve_func=False)["task"]] = f
    return out


def _same(a, b) -> bool:
    if callable(a) and callable(b):
        return (a.__module__, a.__name__) == (b.__module__, b.__name__)
    return a == b


def test_yamls_are_lm_evals_definitions():
    from lm_eval.tasks._yaml_loader import load_yaml

    builtin = _builtin_configs()
    ours = {load_yaml(f, resolve_func=False)["task"]: f for f in TASK_DIR.glob("*.yaml")}
    assert set(ours) == set(TASKS)
    for task, path in ours.items():
        origin = benchmark_registry.task(task).derived_from  # Ticket Lab's own variant: lm-eval's task but the prompt
        mine, theirs = load_yaml(path), load_yaml(builtin[origin or task])
        assert "dataset_path" not in mine and callable(mine["custom_dataset"])
        for key in ("output_type", "doc_to_text", "doc_to_target", "doc_to_choice", "target_delimiter",
                    "process_docs", "test_split", "validation_split"):
            if task == "bbq" and key == "process_docs":
                continue
            if origin and key == "doc_to_text":
                assert mine[key] != theirs[key], task
                continue
            assert _same(mine.get(key), theirs.get(key)), (task, key)
        if task != "bbq":
            assert _same(mine.get("process_results"), theirs.get("process_results")), task
            assert mine["metric_list"] == theirs["metric_list"], task
        else:
            theirs_metrics = {m["metric"]: m for m in theirs["metric_list"]}
            for m in mine["metric_list"]:
                if m["metric"] in theirs_metrics:
                    assert _same(m["aggregation"], theirs_metrics[m["metric"]]["aggregation"]), m["metric"]


def test_local_data_matches_lm_evals_columns(reference_data):
    crows = L.crows_pairs_rows()
    assert len(crows) == 1508 and {"sent_more", "sent_less", "bias_type"} <= set(crows[0])
    tqa = L.truthfulqa_rows()
    assert len(tqa) == 817 and all(q["mc1_targets"]["labels"][0] == 1 for q in tqa)
    assert sum(q["mc1_targets"]["labels"].count(1) for q in tqa) == 817
    wino = L.winogender_rows()
    assert len(wino) == 720 and sum(r["gotcha"] for r in wino) == 240
    r = wino[0]
    assert r["pronoun"] in r["sentence"].lower().split() and r["label"] in (0, 1)
    assert [r["occupation"], r["participant"]][r["label"]] == r["target"]


def test_bbq_cap_is_stratified_whole_instances(reference_data):
    rows = L.bbq_rows(per_category=40)
    assert len(rows) == 6 * 40
    for cat in BBQ_CATEGORIES:
        mine = [r for r in rows if r["category"] == cat]
        strata = {(r["context_condition"], r["question_polarity"]) for r in mine}
        assert len(mine) == 40 and len(strata) == 4
        for inst in {r["instance"] for r in mine}:
            assert len([r for r in mine if r["instance"] == inst]) == 4
    assert {r["category"] for r in rows[:6]} == set(BBQ_CATEGORIES)  # --limit stays balanced
    assert rows == L.bbq_rows(per_category=40)  # seeded
    assert len(L.bbq_rows(per_category=None)) == 11956


def _copy(src_rel: str, dst_root: Path, data_dir: Path) -> Path:
    dst = dst_root / src_rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes((data_dir / src_rel).read_bytes())
    return dst


def test_missing_and_malformed_files(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(tmp_path))
    with pytest.raises(TicketLabError, match="benchmarks/crows_pairs/crows_pairs_anonymized.csv"):
        L.crows_pairs_rows()
    f = tmp_path / L.CROWS_FILE
    f.parent.mkdir(parents=True)
    f.write_text("a,b\n1,2\n")
    with pytest.raises(TicketLabError, match="columns sent_more, sent_less.*missing sent_more"):
        L.crows_pairs_rows()
    bbq = _copy(f"{L.BBQ_DIR}/Age.jsonl", tmp_path, data_dir)
    bbq.write_text(bbq.read_text().replace('"label": 2}', '"label": 7}', 1))
    with pytest.raises(TicketLabError, match=r"Age.jsonl line \d+: expected a BBQ Age example"):
        L.bbq_rows(per_category=8)
    t = tmp_path / L.TRUTHFULQA_FILE
    t.parent.mkdir(parents=True)
    t.write_text('[{"question": "q", "mc1_targets": {"a": 0}, "mc2_targets": {"a": 1}}]')
    with pytest.raises(TicketLabError, match="mc_task.json item 0"):
        L.truthfulqa_rows()
    w = _copy(L.WINOGENDER_FILE, tmp_path, data_dir)
    _copy(L.WINOGENDER_STATS, tmp_path, data_dir)
    w.write_text(w.read_text().replace("technician.customer.1.male.txt", "technician-customer.txt", 1))
    with pytest.raises(TicketLabError, match="sentid 'technician-customer.txt'"):
        L.winogender_rows()


def test_missing_file_inside_a_run(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(tmp_path))
    with pytest.raises(TicketLabError, match="truthfulqa/mc_task.json"):
        run_safety(tiny_llama, tasks=["truthfulqa_mc1"], limit=2)
    assert torch.is_grad_enabled()
