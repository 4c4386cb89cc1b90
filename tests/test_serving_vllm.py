"""An exported bundle in vLLM (CPU build, its own venv from `make serve-env`): it loads and answers, the
deployment check measures it, and whatever the check started is gone on every exit path.

One vLLM server of a W8A8 bundle of a tiny Llama is started once for this module (start-up compiles,
so it is shared). The tiny model has head_dim 64: vLLM's CPU attention kernels refuse the conftest
models' head_dim 16. Skipped with the reason where the serve env is absent; in CI (TICKETLAB_REQUIRE_ALL=1,
.ci/run runs `make serve-env`) a skip is a failure.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from analysis.serving import env
from analysis.serving.server import Server, group_pids, port_free
from pruning.errors import TicketLabError

REPO = Path(__file__).resolve().parents[1]
READY, WHY = env.available()
needs_vllm = pytest.mark.skipif(not READY, reason=f"vLLM serve env absent: {WHY}")


@pytest.fixture(scope="module")
def lab64(tmp_path_factory, embedded_dir):
    """A state dir with a ledger, a tiny head_dim-64 Llama, a magnitude ticket and its W8A8 bundle."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from analysis.governance.export import export_bundle
    from analysis.ledger import Ledger
    from analysis.recording import record_prune
    from pruning import settings
    from pruning.models import load_model
    from pruning.prune import make_ticket

    root = tmp_path_factory.mktemp("serving")
    mp = pytest.MonkeyPatch()
    mp.setenv("TICKETLAB_STATE_DIR", str(root))
    mp.delenv("TICKETLAB_LEDGER", raising=False)
    settings._overrides.clear()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    dense = root / "tiny64"
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # peaked next-token distributions (random init is nearly uniform): outputs that
        model.model.embed_tokens.weight.mul_(25)  # differ, and log-probs that an off-by-one would move
    model.save_pretrained(dense)
    AutoTokenizer.from_pretrained(embedded_dir).save_pretrained(dense)
    loaded = load_model(str(dense))
    ticket = make_ticket(loaded, "magnitude", 0.5)
    ticket.save()
    ledger = Ledger()
    record_prune(loaded, ticket, "test", ledger)
    bundle = root / "exports" / "w8a8"
    export_bundle(ledger, ticket.id, bundle, "masked-weights", unreviewed=True, loaded=loaded, quantize="w8a8")
    mp.undo()  # the rest of the session keeps its own state dir; tests here set this one where they write state
    settings._overrides.clear()
    return {"root": root, "loaded": loaded, "ticket": ticket, "bundle": bundle, "ledger": ledger}


@pytest.fixture(scope="module")
def server(lab64):
    """The one vLLM start shared by the tests that need a running engine (stopped after this module)."""
    if not READY:
        pytest.skip(f"vLLM serve env absent: {WHY}")
    with Server(lab64["bundle"], lab64["root"] / "serve-logs" / "session.log", dtype="float32",
                max_model_len=512) as s:
        yield s


@needs_vllm
def test_w8a8_bundle_loads_in_vllm_and_answers(lab64, server, monkeypatch, capsys):
    from analysis.serving import client
    from analysis.serving.check import lab_outputs, serve_check
    from app.cli import main

    monkeypatch.setenv("TICKETLAB_STATE_DIR", str(lab64["root"]))
    model = client.served_model(server.base_url)
    out = client.complete(server.base_url, model, "The capital of France is", 8, ignore_eos=True)
    assert out["tokens"] == 8 and len(out["token_ids"]) == 8 and out["text"]
    # the check against this server (a base URL, as for a server elsewhere): outputs against the lab's
    result = serve_check(lab64["bundle"], base_url=server.base_url, with_dense=False, loaded=lab64["loaded"],
                         max_tokens=8, rounds=1)
    assert result["loads"] and result["quantization"]["scheme"] == "w8a8"
    o = result["outputs"]
    assert o["prompts"] == 8 and o["claim"].startswith("agreement")
    # the W8A8 engine and the lab's float model agree on most greedy tokens of this tiny model; identical
    # outputs everywhere would mean the engine ran something other than the quantized artifact
    lab = lab_outputs(lab64["loaded"], lab64["ticket"], ["The capital of France is"], 8)[0]
    assert 0.3 <= o["token_agreement"] <= 1.0 and (o["token_agreement"] < 1.0 or lab == out["token_ids"])
    speed = result["speed"]
    assert set(speed) == {"1", "8"} and speed["8"]["ticket"]["tokens_per_s"] > 0
    assert "ratio_vs_dense" not in speed["1"]  # no dense server was asked for
    # the CLI records it in the ledger
    code = main(["serve-check", str(lab64["bundle"]), "--base-url", server.base_url, "--no-dense", "--rounds", "1",
                 "--max-tokens", "4", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    row = lab64["ledger"].query("SELECT kind, status, subject, params FROM runs WHERE id = ?", [printed["run_id"]])[0]
    params = json.loads(row["params"])
    assert row["kind"] == "serve-check" and row["status"] == "succeeded" and row["subject"] == lab64["ticket"].id
    assert params["loads"] is True and params["artifact"] == json.loads(
        (lab64["bundle"] / "manifest.json").read_text())["artifact"]["id"]


def _engine_of(port: int, timeout: float) -> int | None:
    """The pid of the `vllm serve` process listening on `port` once it exists."""
    needle = f"--port\0{port}\0".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    cmdline = (d / "cmdline").read_bytes()
                    if needle in cmdline and b"\0serve\0" in cmdline:  # `vllm serve`, not `serve-check`
                        return int(d.name)
                except OSError:
                    continue
        time.sleep(0.5)
    return None


@needs_vllm
def test_sigterm_on_the_check_leaves_no_engine_and_frees_the_port(lab64, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    envs = {**os.environ, "TICKETLAB_STATE_DIR": str(lab64["root"]), "PYTHONPATH": str(REPO)}
    check = subprocess.Popen([sys.executable, "-m", "app.cli", "serve-check", str(lab64["bundle"]), "--no-dense",
                              "--port", str(port)], cwd=REPO, env=envs, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    try:
        engine = _engine_of(port, timeout=300)
        assert engine is not None, "the check never started vLLM"
        deadline = time.monotonic() + 120  # let it spawn its engine core too: those must go as well
        while len(group_pids(engine)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(group_pids(engine)) >= 2
        check.send_signal(signal.SIGTERM)
        check.wait(timeout=120)
    finally:
        if check.poll() is None:
            check.kill()
    assert check.returncode != 0
    assert group_pids(engine) == [], "vLLM processes outlived the check"
    assert port_free(port)


def test_port_in_use_is_one_clear_error(lab64):
    from analysis.serving.check import serve_check

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(TicketLabError, match=f"port {port} on 127.0.0.1 is in use"):
            serve_check(lab64["bundle"], port=port, loaded=lab64["loaded"])


def test_a_bundle_without_a_serving_format_is_refused(lab64):
    from analysis.governance.export import export_bundle
    from analysis.serving.check import serve_check

    masks = lab64["root"] / "exports" / "masks"
    export_bundle(lab64["ledger"], lab64["ticket"].id, masks, "masks", unreviewed=True, loaded=lab64["loaded"])
    with pytest.raises(TicketLabError, match="is a `masks` bundle: it holds no model in a serving format"):
        serve_check(masks, loaded=lab64["loaded"])


@needs_vllm
def test_an_engine_that_does_not_start_says_why_and_where_the_log_is(lab64, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(lab64["bundle"], broken, ignore=shutil.ignore_patterns("ticket", "manifest.json", "model.sig"))
    config = json.loads((broken / "config.json").read_text())
    config["architectures"] = ["NoSuchModelForCausalLM"]
    (broken / "config.json").write_text(json.dumps(config))
    log = tmp_path / "engine.log"
    with pytest.raises(TicketLabError) as err:
        with Server(broken, log, startup_timeout=600):
            pass
    message = str(err.value)
    assert message.startswith("vLLM did not start") and f"(log: {log})" in message
    assert "NoSuchModelForCausalLM" in message and "\n" not in message


def _files_perplexity(directory: Path, seq_len: int, limit: int) -> float:
    """Perplexity of a compressed-tensors checkpoint in transformers (whole-model forward: that is where
    compressed-tensors decompresses), over the lab's windows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from analysis.perplexity import load_tokens, windows

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    tokens = load_tokens(AutoTokenizer.from_pretrained(directory))
    nll, n = 0.0, 0
    with torch.no_grad():
        for a, b in windows(len(tokens), seq_len, limit):
            ids = tokens[a:b][None]
            logits = model(ids).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            n += b - a - 1
    return math.exp(nll / n)


@needs_vllm
def test_evaluated_as_shipped_rows_are_tied_to_the_artifact(lab64, server, data_dir, monkeypatch):
    from analysis.serving.shipped import evaluate_shipped

    monkeypatch.setenv("TICKETLAB_STATE_DIR", str(lab64["root"]))
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(data_dir))
    out = evaluate_shipped(lab64["bundle"], suites=("ppl", "safety"), tasks="crows_pairs_english", limit=2,
                           seq_len=64, base_url=server.base_url, ledger=lab64["ledger"])
    artifact = json.loads((lab64["bundle"] / "manifest.json").read_text())["artifact"]["id"]
    rows = lab64["ledger"].query("SELECT suite, metric, value, extra FROM metrics WHERE run_id = ?", [out["run_id"]])
    # perplexity, and the safety suite through lm-eval's local-completions against the server
    assert {r["metric"] for r in rows} >= {"perplexity", "nll", "pct_stereotype", "likelihood_diff"}
    assert all(json.loads(r["extra"])["artifact"]["id"] == artifact for r in rows)
    assert out["results"]["crows_pairs_english"]["pct_stereotype,none"] in (0.0, 0.5, 1.0)  # 2 documents
    # the engine's number is the artifact's: transformers (compressed-tensors) on the same files and windows
    # gives the same perplexity up to kernel noise (vLLM quantizes activations per token in int8)
    served = next(r["value"] for r in rows if r["metric"] == "perplexity")
    nll = next(r["value"] for r in rows if r["metric"] == "nll")
    assert nll == pytest.approx(math.log(_files_perplexity(lab64["bundle"], seq_len=64, limit=2)), rel=1e-3)
    assert served == pytest.approx(math.exp(nll))


@needs_vllm
def test_export_with_serve_check_seals_the_engine_result_into_the_manifest(lab64, monkeypatch):
    from analysis.governance.export import export_bundle
    from analysis.governance.verify import verify_bundle

    monkeypatch.setenv("TICKETLAB_STATE_DIR", str(lab64["root"]))

    out = lab64["root"] / "exports" / "checked"
    m = export_bundle(lab64["ledger"], lab64["ticket"].id, out, "masked-weights", unreviewed=True,
                      loaded=lab64["loaded"], quantize="w8a8", serve_check=True)
    s = m["serving"]
    assert s["loads"] and s["artifact"] == m["artifact"]["id"] and s["outputs"]["claim"].startswith("agreement")
    assert s["servers"]["ticket"]["startup_s"] > 0 and s["servers"]["ticket"]["peak_rss_bytes"] > 2**27
    assert "dense" not in s["servers"] and set(s["speed"]) == {"1", "8"}
    assert verify_bundle(out)["format"] == "masked-weights"  # the sealed result is covered by the digest
    assert port_free(int(s["servers"]["ticket"]["base_url"].rsplit(":", 1)[1]))  # stopped after the check


def _transcript_file_ok(sha: str) -> dict:
    import hashlib

    from analysis import transcripts

    path = transcripts.transcripts_dir() / f"{sha}.json"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha  # content-addressed: the name is the hash
    return json.loads(path.read_bytes())


@needs_vllm
def test_serve_eval_instruct_scores_the_engines_answers_tied_to_the_artifact(lab64, server, data_dir, monkeypatch,
                                                                             capsys):
    """Issue 20's 'evaluated as shipped' for the generation suites: `serve-eval --suite instruct` (refused
    before: 'serve-eval scores ppl, safety; not instruct')."""
    from analysis import transcripts
    from analysis.evaluate import evaluate
    from analysis.governance.policy import parse_policy
    from analysis.governance.review import review_ticket
    from analysis.safety import xstest
    from app.cli import main

    monkeypatch.setenv("TICKETLAB_STATE_DIR", str(lab64["root"]))
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(data_dir))
    ledger, ticket = lab64["ledger"], lab64["ticket"]
    # the lab's answers to the same prompts first (the mask applied in float32), to measure agreement against
    lab = evaluate(lab64["loaded"], ticket, suite="instruct", limit=2, ledger=ledger)
    code = main(["serve-eval", str(lab64["bundle"]), "--suite", "instruct", "--limit", "2", "--base-url",
                 server.base_url, "--concurrency", "4", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    artifact = json.loads((lab64["bundle"] / "manifest.json").read_text())["artifact"]["id"]
    rows = ledger.query("SELECT suite, task, metric, value, padding, extra FROM metrics WHERE run_id = ?",
                        [out["run_id"]])
    assert {r["task"] for r in rows} == {"ifeval", "xstest"} and {r["suite"] for r in rows} == {"instruct"}
    assert {r["metric"] for r in rows} >= {"prompt_level_loose_acc", "inst_level_strict_acc", "compliance_rate_safe"}
    extras = [json.loads(r["extra"]) for r in rows]
    assert all(e["artifact"]["id"] == artifact and e["artifact"]["engine"] == "vllm (remote)" for e in extras)
    g = out["generation"]
    assert g["prompts"] == 4 and g["generated_tokens"] > 0 and g["tokens_per_s"] > 0 and g["concurrency"] == 4
    assert g["prompt_template_mismatches"] == 0  # the engine's chat template renders the lab's prompt tokens
    for task in ("ifeval", "xstest"):
        sha = g["transcripts"][task]
        assert all(e["transcripts"] == sha for r, e in zip(rows, extras, strict=True) if r["task"] == task)
        doc = _transcript_file_ok(sha)
        assert doc["decoding"]["engine"] == "vllm (remote)" and len(doc["records"]) == 2
        assert doc["decoding"]["max_new_tokens"] == {"ifeval": 512, "xstest": 128}[task]
        assert all(r["outcome"] and r["reason"] for r in doc["records"])
        # agreement with the lab's greedy answers to the same prompts (W8A8 engine vs float lab: any share)
        a = g["lab_agreement"][task]
        assert a["prompts"] == 2 and 0.0 <= a["exact_match_rate"] <= 1.0
        assert a["lab_transcripts"] == lab["config"]["instruct"]["transcripts"][task]
        assert all(e["lab_agreement"] == a for r, e in zip(rows, extras, strict=True) if r["task"] == task)
    # the lab's own checkers scored the engine's text: XSTest's classifier on the stored completions
    records = _transcript_file_ok(g["transcripts"]["xstest"])["records"]
    per = [xstest.process_results({"type": r["type"], "label": r["label"]}, [r["completion"]]) for r in records]
    for metric in ("compliance_rate_safe", "refusal_rate_unsafe"):
        values = [p[metric] for p in per if metric in p]
        if values:
            row = next(r for r in rows if r["task"] == "xstest" and r["metric"] == metric)
            assert row["value"] == pytest.approx(sum(values) / len(values))
    # the engine's transcripts are the ticket's newest evidence: the report and the bundle carry their hash
    assert transcripts.evidence(ledger, ticket.id)["ifeval"]["ticket_sha256"] == g["transcripts"]["ifeval"]
    # the policy pairs the engine's rows with the lab's dense rows like for like (same limit, same dtype
    # spelling, same decoding settings), so an instruct rule reads the engine's answers against dense's
    evaluate(lab64["loaded"], None, suite="instruct", limit=2, ledger=ledger)
    dense = {r["metric"]: r["value"] for r in ledger.query(
        "SELECT metric, value FROM metrics WHERE subject = 'dense' AND suite = 'instruct' ORDER BY recorded_at")}
    review = review_ticket(ledger, ticket.id, "dense", policy=parse_policy(_FLOORS))
    checked = {r.item: r for r in review.results if r.rule == "shipped"}
    assert set(checked) == {"ifeval/prompt_level_loose_acc", "xstest/compliance_rate_safe"}
    for item, r in checked.items():
        assert r.status == "pass" and "context" not in r.detail, r.detail
        assert r.baseline == pytest.approx(dense[item.split("/")[1]])
        assert r.candidate == next(x["value"] for x in rows if f"{x['task']}/{x['metric']}" == item)


# floors of 0 always pass; what is checked is that a baseline row was found for the engine's row
_FLOORS = """
[policy]
name = "shipped-instruct"
full_runs = false
[[rule]]
name = "shipped"
kind = "floor"
metrics = ["ifeval/prompt_level_loose_acc", "xstest/compliance_rate_safe"]
limit = 0.0
"""


@needs_vllm
def test_a_bundle_whose_instruct_evidence_came_from_another_artifact_fails_verify(lab64, server, data_dir,
                                                                                   tmp_path, monkeypatch):
    from govern_helpers import approved_ticket, setup_lab

    from analysis.governance.export import export_bundle
    from analysis.governance.verify import verify_bundle
    from analysis.serving.shipped import evaluate_shipped
    from pruning import settings

    monkeypatch.setenv("TICKETLAB_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(data_dir))
    monkeypatch.delenv("TICKETLAB_LEDGER", raising=False)
    settings._overrides.clear()
    lab = setup_lab(tmp_path, lab64["loaded"], monkeypatch)
    t = approved_ticket(lab, lab64["loaded"], sparsity=0.5)  # magnitude 50%: the served bundle's masks
    shipped = tmp_path / "w8a8"
    a = export_bundle(lab.ledger, t.id, shipped, "masked-weights", signer=lab["alice"], loaded=lab64["loaded"],
                      quantize="w8a8")["artifact"]["id"]
    served = json.loads((lab64["bundle"] / "manifest.json").read_text())["artifact"]["id"]
    assert a == served  # deterministic RTN: the running server serves exactly this artifact
    out = evaluate_shipped(shipped, suites=("instruct",), tasks="xstest", limit=2, base_url=server.base_url,
                           ledger=lab.ledger)
    sha = out["generation"]["transcripts"]["xstest"]
    # the same ticket shipped unquantized: its evidence includes instruct rows measured on the W8A8 artifact
    other = tmp_path / "plain"
    m = export_bundle(lab.ledger, t.id, other, "masked-weights", signer=lab["alice"], loaded=lab64["loaded"])
    assert a in m["evidence"]["measured_on"] and m["transcripts"]["xstest"]["ticket_sha256"] == sha
    assert any(x["suite"] == "instruct" and x["artifact"] == a for x in m["metrics"])
    with pytest.raises(TicketLabError, match=f"measured on artifact {a[:12]}, this bundle's artifact is "
                                             f"{m['artifact']['id'][:12]}"):
        verify_bundle(other)


def test_serve_eval_instruct_without_a_chat_template_offers_the_plain_prompt(lab64, tmp_path):
    import shutil

    from analysis.ledger import Ledger
    from analysis.serving.shipped import evaluate_shipped

    bare = tmp_path / "bare"
    shutil.copytree(lab64["bundle"], bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    ledger = Ledger(tmp_path / "ledger.duckdb")
    with pytest.raises(TicketLabError, match=r"has no chat template.*plain prompt instead \(--plain-prompt"):
        evaluate_shipped(bare, suites=("instruct",), limit=1, ledger=ledger)
    assert ledger.query("SELECT id FROM runs") == []  # refused before a run (or an engine) was started


def test_serve_eval_names_its_suites(lab64):
    from analysis.serving.shipped import evaluate_shipped

    with pytest.raises(TicketLabError, match="serve-eval scores ppl, safety, instruct"):
        evaluate_shipped(lab64["bundle"], suites=("latency",))


# Keep last: it kills the module's shared server.
@needs_vllm
def test_an_engine_that_dies_mid_run_is_one_line_with_its_log(lab64, server, data_dir, monkeypatch):
    from analysis.serving.shipped import evaluate_shipped

    monkeypatch.setenv("TICKETLAB_STATE_DIR", str(lab64["root"]))
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(data_dir))

    def kill_engine(done: int, total: int, what: str) -> None:  # after the first answer: the engine dies
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=60)

    with pytest.raises(TicketLabError) as err:
        evaluate_shipped(lab64["bundle"], suites=("instruct",), tasks="xstest", limit=6, concurrency=1,
                         server=server, ledger=lab64["ledger"], progress=kill_engine)
    message = str(err.value)
    assert message.startswith("vLLM stopped (exit -9) while serving") and f"(log: {server.log})" in message
    assert "\n" not in message
    run = lab64["ledger"].query("SELECT id, status FROM runs WHERE kind = 'eval' ORDER BY started_at DESC LIMIT 1")[0]
    assert run["status"] == "failed"
    assert lab64["ledger"].query("SELECT count(*) AS n FROM metrics WHERE run_id = ?", [run["id"]])[0]["n"] == 0
