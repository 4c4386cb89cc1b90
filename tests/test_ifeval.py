"""IFEval through lm-eval's own `ifeval` definition and checkers: the project's scores equal lm-eval's
`process_results` on the same completions, a planted broken instruction fails exactly that instruction,
the punkt data comes from an installed package, and a malformed prompt file is one clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gen_helpers import INSTRUCT_DIR, short_generation  # noqa: F401  (fixture)

from analysis.safety import ifeval as hook
from analysis.safety.loaders import ifeval_rows
from pruning.errors import TicketLabError

MAIN = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


@pytest.fixture
def lm_eval_utils(state):
    return hook._utils()


def _doc(rows, key):
    return next(r for r in rows if r["key"] == key)


def test_punkt_comes_from_the_installed_package_and_lm_eval_finds_it(state, lm_eval_utils):
    import nltk
    from lm_eval.tasks.ifeval import instructions_util as iu

    assert hook.ensure_punkt().is_dir()
    assert nltk.data.find("tokenizers/punkt_tab/english/")  # what lm-eval's import-time check looks for
    # punkt's abbreviations: "Dr." and "p.m." do not end sentences; a regex split would count 6
    text = "Dr. Smith went to Washington. He arrived at 3 p.m. on Monday! Did he stay? Yes."
    assert iu.count_sentences(text) == 4
    assert nltk.word_tokenize("Don't stop, Mr. Smith.") == ["Do", "n't", "stop", ",", "Mr.", "Smith", "."]


def test_planted_break_fails_exactly_that_instruction(reference_data, state, lm_eval_utils):
    doc = _doc(ifeval_rows(), 1000)  # no_comma, number_highlighted_sections (3), number_words (>= 300)
    assert doc["instruction_id_list"] == ["punctuation:no_comma", "detectable_format:number_highlighted_sections",
                                          "length_constraints:number_words"]
    body = " ".join(["Raymond ruled Tripoli and fought in many wars across the region for decades"] * 30)
    good = f"*Early life*\n{body}\n\n*Rule of Tripoli*\n{body}\n\n*Legacy*\nHe is remembered."
    ok = hook.process_results(doc, [good])
    assert ok["inst_level_strict_acc"] == [True, True, True] and ok["prompt_level_strict_acc"]
    bad = good.replace("Raymond ruled", "Raymond, ruled", 1)
    out = hook.process_results(doc, [bad])
    assert out["inst_level_strict_acc"] == [False, True, True]
    assert out["inst_level_loose_acc"] == [False, True, True] and not out["prompt_level_loose_acc"]
    assert out["inst_level_strict_acc_punctuation:no_comma"] == [False]
    assert out["inst_level_strict_acc_length_constraints:number_words"] == [True]
    outcome, reason = hook.verdict({"instruction_id_list": doc["instruction_id_list"], "completion": bad,
                                    **{k: out[k] for k in MAIN}})
    assert outcome == "not followed" and "punctuation:no_comma" in reason and "number_words" not in reason
    short = hook.process_results(doc, [good[:200]])  # too few words: only the length instruction fails
    assert short["inst_level_strict_acc"] == [True, False, False] or short["inst_level_strict_acc"][2] is False


def test_project_scores_equal_lm_evals_process_results(reference_data, state, lm_eval_utils):
    """Every IFEval document, with a completion that is its own prompt, a lowercase copy, and an empty
    one: the hook returns lm-eval's own four results unchanged, and its per-kind lists partition them."""
    rows = ifeval_rows()
    for n, doc in enumerate(rows[:120]):  # both sides seeded: langdetect is random otherwise (see the hook)
        for completion in (doc["prompt"], doc["prompt"].lower(), ""):
            ours = hook.process_results(doc, [completion])
            with hook.seeded(doc):  # lm-eval draws a random letter for prompt 19's "#" (see the hook)
                theirs = lm_eval_utils.process_results(doc, [completion])
            assert {k: ours[k] for k in MAIN} == theirs, (n, completion[:40])
            for metric in ("inst_level_strict_acc", "inst_level_loose_acc"):
                per_kind = sum((ours[k] for k in ours if k.startswith(metric + "_")), [])
                assert sorted(per_kind) == sorted(theirs[metric])


@pytest.mark.usefixtures("short_generation")
def test_run_scores_equal_lm_eval_on_the_recorded_completions(tiny_llama, reference_data):
    """A real run (tiny model, the YAML with 16 new tokens): recomputing lm-eval's process_results and
    its aggregations on the run's own transcripts gives the recorded metrics."""
    from analysis import transcripts
    from analysis.evaluate import evaluate

    out = evaluate(tiny_llama, None, suite="instruct", tasks="ifeval", limit=6)
    recorded = out["results"]["ifeval"]
    doc = transcripts.load(out["config"]["instruct"]["transcripts"]["ifeval"])
    utils = hook._utils()
    rows = {r["key"]: r for r in ifeval_rows()}
    per = []
    for r in doc["records"]:
        with hook.seeded(rows[r["key"]]):
            per.append(utils.process_results(rows[r["key"]], [r["completion"]]))
    assert len(per) == 6
    assert recorded["prompt_level_strict_acc,none"] == pytest.approx(np.mean([p["prompt_level_strict_acc"] for p in per]))
    assert recorded["prompt_level_loose_acc,none"] == pytest.approx(np.mean([p["prompt_level_loose_acc"] for p in per]))
    assert recorded["inst_level_loose_acc,none"] == pytest.approx(
        utils.agg_inst_level_acc([p["inst_level_loose_acc"] for p in per]))
    assert recorded["prompt_level_loose_acc_stderr,none"] is not None
    se = recorded["inst_level_loose_acc_stderr,none"]  # the cluster (by prompt) standard error
    assert se == pytest.approx(hook._cluster_se([p["inst_level_loose_acc"] for p in per]))
    kinds = [k for k in recorded if k.startswith("inst_level_loose_acc_") and "_stderr" not in k]
    assert kinds and all(0.0 <= recorded[k] <= 1.0 for k in kinds)


def test_cluster_standard_error():
    # two prompts: 2/2 and 0/2 followed -> ratio 0.5; residuals +1, -1 -> sqrt(2 * 2/1) / 4
    assert hook._cluster_se([[True, True], [False, False]]) == pytest.approx(0.5)
    assert hook._cluster_se([[True]]) is None


def test_yaml_is_lm_evals_ifeval_definition():
    from pathlib import Path

    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    theirs = load_yaml(Path(lm_eval.__file__).parent / "tasks" / "ifeval" / "ifeval.yaml", resolve_func=False)
    mine = load_yaml(INSTRUCT_DIR / "ifeval.yaml", resolve_func=False)
    for key in ("task", "output_type", "test_split", "num_fewshot", "doc_to_text", "doc_to_target"):
        assert mine[key] == theirs[key], key
    assert {k: v for k, v in mine["generation_kwargs"].items() if k != "max_gen_toks"} == \
        {k: v for k, v in theirs["generation_kwargs"].items() if k != "max_gen_toks"}
    assert [m["metric"] for m in mine["metric_list"][:4]] == [m["metric"] for m in theirs["metric_list"]]
    assert "dataset_path" not in mine and mine["tag"] == "ticketlab_instruct"


def test_malformed_prompt_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "input_data.jsonl"
    good = json.dumps({"key": 1, "prompt": "Say hi.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]})
    bad.write_text(good + "\n{not json\n")
    with pytest.raises(TicketLabError, match=r"line 2 is not JSON.*one IFEval prompt per line"):
        ifeval_rows(bad)
    bad.write_text(json.dumps({"key": 2, "prompt": "x", "instruction_id_list": ["a", "b"], "kwargs": [{}]}) + "\n")
    with pytest.raises(TicketLabError, match="line 1: expected one IFEval prompt"):
        ifeval_rows(bad)
    bad.write_text("")
    with pytest.raises(TicketLabError, match="has no prompts"):
        ifeval_rows(bad)
