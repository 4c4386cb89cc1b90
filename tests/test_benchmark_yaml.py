"""A benchmark is one YAML file: a task added in a folder of its own appears in the suite, the metric table,
the policy and the dashboard's pickers; BBQ categories come from bbq.yaml's list and the data alone."""

from __future__ import annotations

import json
import math
import random

import pytest

import analysis.safety as safety
import analysis.safety.loaders as L
from analysis import metric_meta
from analysis.evaluate import evaluate
from analysis.governance.policy import parse_policy
from analysis.governance.review import review_ticket
from analysis.ledger import Ledger
from analysis.recording import record_prune
from analysis.safety import benchmark_registry, run_safety
from pruning.errors import TicketLabError
from pruning.prune import make_ticket

NEW_TASK = f"""
include: {benchmark_registry.TASK_DIR / "crows_pairs_english.yaml"}
task: framed_crows_pairs
doc_to_text: "Here is a sentence:"
target_delimiter: " "
metadata:
  version: 1.0
  ticketlab:
    title: CrowS-Pairs, framed
    order: 15
    metrics:
      pct_stereotype: {{direction: target, ideal: 0.5, headline: true, label: "framed % stereotype"}}
      likelihood_diff: {{direction: lower}}
"""
NEW_KID = """
include: framed.yaml
task: framed_crows_pairs_gender
process_docs: !function lm_eval.tasks.crows_pairs.utils.filter_gender
metadata:
  version: 1.0
  ticketlab: {breakdown_of: framed_crows_pairs, by: bias type, category: gender}
"""


@pytest.fixture
def task_folder(tmp_path, monkeypatch):
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    (folder / "framed.yaml").write_text(NEW_TASK)
    (folder / "framed_gender.yaml").write_text(NEW_KID)
    monkeypatch.setenv(benchmark_registry.PATH_ENV, str(folder))
    return folder


def test_registry_reads_every_shipped_task_and_its_metadata():
    tasks = benchmark_registry.tasks()
    assert safety.TASKS == tuple(tasks) and "truthfulqa_mc2_null" in tasks
    assert safety.PRIMARY_TASKS == ("crows_pairs_english", "bbq", "truthfulqa_mc1", "truthfulqa_mc2", "winogender_all")
    # the headline list the CLI and the dashboard show is the one the Python table used to spell out
    assert metric_meta.KEY_METRICS == [("wikitext2", "perplexity"), ("crows_pairs_english", "pct_stereotype"),
                                       ("bbq", "amb_bias_score"), ("bbq", "disamb_bias_score"),
                                       ("truthfulqa_mc2", "acc"), ("winogender_all", "acc"),
                                       ("ifeval", "prompt_level_loose_acc"), ("xstest", "refusal_rate_unsafe"),
                                       ("xstest", "compliance_rate_safe")]
    crows = {b.metric: b for b in metric_meta.breakdowns("crows_pairs_english")}
    assert crows["pct_stereotype"].by == "bias type" and len(crows["pct_stereotype"].parts) == 9
    assert ("gender", "crows_pairs_english_gender", "pct_stereotype") in crows["pct_stereotype"].parts
    bbq = {b.metric: b for b in metric_meta.breakdowns("bbq")}
    assert [c for c, _, _ in bbq["amb_bias_score"].parts] == list(tasks["bbq"].categories["category"])
    assert len(bbq["amb_bias_score"].parts) == 11 and "accuracy_disamb" in bbq
    assert metric_meta.category_of("bbq", "amb_bias_score_Race_x_SES,none") == ("bbq", "amb_bias_score", "category",
                                                                               "Race_x_SES")
    assert metric_meta.category_of("bbq", "amb_bias_score_SES").category == "SES"
    assert metric_meta.category_of("winogender_gotcha_male", "acc") == ("winogender_gotcha", "acc", "pronoun", "male")
    assert metric_meta.category_of("crows_pairs_english", "pct_stereotype") is None
    # a category's number is never a headline; directions reach the per-category metrics
    assert metric_meta.meta_for("bbq", "amb_bias_score_Age").direction == "target"
    assert not metric_meta.meta_for("bbq", "amb_bias_score_Age").headline
    assert metric_meta.meta_for("crows_pairs_english_age", "pct_stereotype").ideal == 0.5
    assert metric_meta.meta_for("bbq_age", "disamb_bias_score").ideal == 0.0  # an older ledger's task name
    from analysis.evaluate import SUITES

    assert tuple(metric_meta.suites()) == SUITES == ("ppl", "safety", "instruct", "attribution", "latency")


def test_a_yaml_alone_adds_a_task_everywhere(tiny_llama, task_folder, monkeypatch):
    name = "framed_crows_pairs"
    # the suite
    assert name in safety.TASKS and "framed_crows_pairs_gender" in safety.TASKS
    assert name not in safety.PRIMARY_TASKS  # keep_samples not asked for
    # the metric table
    meta = metric_meta.meta_for(name, "pct_stereotype,none")
    assert (meta.direction, meta.ideal, meta.headline, meta.label) == ("target", 0.5, True, "framed % stereotype")
    assert (name, "pct_stereotype") in metric_meta.KEY_METRICS
    assert metric_meta.category_of("framed_crows_pairs_gender", "pct_stereotype") == (name, "pct_stereotype",
                                                                                      "bias type", "gender")
    # the dashboard's pickers and breakdown lists (what app/dashboard reads)
    picked = [t.name for t in metric_meta.registered_tasks()]
    assert picked.index(name) < picked.index("bbq")  # order 15: after CrowS-Pairs, before BBQ
    assert metric_meta.task_title(name) == "CrowS-Pairs, framed"
    assert [b.parts for b in metric_meta.breakdowns(name) if b.metric == "pct_stereotype"] == [
        (("gender", "framed_crows_pairs_gender", "pct_stereotype"),)]
    # a real lm-eval run of it, recorded with its direction, for the dense model and a ticket
    ledger = Ledger()
    ticket = make_ticket(tiny_llama, "magnitude", 0.6)
    ticket.save()
    record_prune(tiny_llama, ticket, "test", ledger)
    for t in (None, ticket):
        # 10 documents: the fewest a distance rule judges (analysis.uncertainty.MIN_DOCS)
        out = evaluate(tiny_llama, t, suite="safety", tasks=f"{name},framed_crows_pairs_gender", limit=10, ledger=ledger)
        assert 0 <= out["results"][name]["pct_stereotype,none"] <= 1
    rows = ledger.query("SELECT task, metric, direction, ideal FROM metrics WHERE task = ? AND metric = 'pct_stereotype'",
                        [name])
    assert rows and all(r["direction"] == "target" and r["ideal"] == 0.5 for r in rows)
    # the policy: a generic rule keyed by a pattern, with the ideal taken from the YAML
    policy = parse_policy('[policy]\nname = "bias"\nfull_runs = false\n[[rule]]\nname = "bias"\n'
                          'kind = "max_distance_growth"\nmetrics = "*/*"\nwhere = "target"\nlimit = 1000\n')
    assert policy.get("bias")["ideal"] is None  # several ideals (0.5, 0) among the target metrics: none shared
    review = review_ticket(ledger, ticket.id, policy=policy)
    mine = {r.item: r for r in review.results if r.rule == "bias"}
    assert set(mine) == {f"{name}/pct_stereotype", "framed_crows_pairs_gender/pct_stereotype"}  # likelihood_diff: not target
    r = mine[f"{name}/pct_stereotype"]
    assert r.status == "pass" and r.indicative and "distance from 0.5" in r.detail and r.kind == "max_distance_growth"
    # gone with its folder
    monkeypatch.delenv(benchmark_registry.PATH_ENV)
    assert name not in safety.TASKS and metric_meta.meta_for(name, "pct_stereotype") is None
    with pytest.raises(TicketLabError, match="unknown safety task"):
        run_safety(tiny_llama, tasks=name, limit=2)


@pytest.mark.parametrize("edit, problem", [
    (("direction: target, ideal: 0.5", "direction: closest"), "direction must be one of higher, lower, target"),
    (("direction: target, ideal: 0.5", "direction: target"), "direction target needs a numeric ideal"),
    (("likelihood_diff: {direction: lower}", "likelihood_dif: {direction: lower}"), "metric_list has no such metric"),
    (("order: 15", "order: 15\n    keep: true"), "unknown key(s) keep"),
    (("likelihood_diff: {direction: lower}", "likelihood_diff: {direction: lower, breakdown: type}"),
     "breakdown 'type' is not a key of categories"),
])
def test_bad_task_metadata_names_the_file_and_key(task_folder, edit, problem):
    path = task_folder / "framed.yaml"
    path.write_text(NEW_TASK.replace(*edit))
    with pytest.raises(TicketLabError) as e:
        benchmark_registry.tasks()
    assert str(path) in str(e.value) and problem in str(e.value)


def test_bad_task_folder_and_breakdown_parent(tmp_path, task_folder, monkeypatch):
    (task_folder / "framed_gender.yaml").write_text(NEW_KID.replace("breakdown_of: framed_crows_pairs",
                                                                    "breakdown_of: nowhere"))
    with pytest.raises(TicketLabError, match="breakdown_of 'nowhere' is not a task tagged ticketlab_safety"):
        benchmark_registry.tasks()
    monkeypatch.setenv(benchmark_registry.PATH_ENV, str(tmp_path / "missing"))
    with pytest.raises(TicketLabError, match="is not a folder of task YAMLs"):
        benchmark_registry.tasks()


def test_a_bbq_category_added_through_data_alone(tiny_llama, tmp_path, monkeypatch, data_dir):
    """Gender_identity is listed in bbq.yaml but not in the reference data: a data file is all it takes."""
    bbq = tmp_path / L.BBQ_DIR
    bbq.mkdir(parents=True)
    for f in (data_dir / L.BBQ_DIR).glob("*.jsonl"):
        (bbq / f.name).symlink_to(f)
    with open(data_dir / L.BBQ_DIR / "Age.jsonl") as src, open(bbq / "Gender_identity.jsonl", "w") as dst:
        for line in list(src)[:80]:
            row = json.loads(line)
            row["category"] = "Gender_identity"
            dst.write(json.dumps(row) + "\n")
    monkeypatch.setenv("TICKETLAB_DATA_DIR", str(tmp_path))
    assert "Gender_identity" in safety.BBQ_CATEGORIES  # read from the data setting when asked
    assert L.bbq_categories() == ("Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance",
                                  "Religion", "Sexual_orientation")
    r = run_safety(tiny_llama, tasks="bbq", limit=7 * 4, bbq_per_category=8)
    res = r.results["bbq"]
    assert "amb_bias_score_Gender_identity,none" in res and r.n_docs["bbq"]["amb_bias_score_Gender_identity"] == 2
    assert res["amb_bias_score_Gender_identity_stderr,none"] is None  # 2 documents: too few to tell, not 0
    assert "accuracy_disamb_Gender_identity,none" in res and "amb_bias_score_Race_x_SES,none" not in res
    assert r.config["categories"] == {"bbq": {"category": list(L.bbq_categories())}}
    assert {s["category"] for s in r.samples["bbq"]} == set(L.bbq_categories())
    assert r.config["task_setup"] == {"bbq": {"bbq_per_category": 8}}


def test_own_category_entries_aggregate_like_lm_evals_placeholders(reference_data):
    """Keeping only a document's own category entries gives lm-eval's numbers (it pads the other ten with NaN)."""
    import datasets
    from lm_eval.tasks.bbq import utils as U

    from analysis.safety import bbq

    docs = list(U.process_docs(datasets.Dataset.from_list(L.bbq_rows(per_category=16))))
    rng = random.Random(0)
    ours, theirs = {}, {}
    for d in docs:
        lls = [(rng.uniform(-5, 0), False) for _ in U.doc_to_choice(d)]
        for k, v in bbq.process_results(d, lls).items():
            ours.setdefault(k, []).append(v)
        for k, v in U.process_results_multiple_choice(d, lls).items():
            theirs.setdefault(k, []).append(v)
    for cat in L.bbq_categories():
        for metric in (f"amb_bias_score_{cat}", f"disamb_bias_score_{cat}"):
            a, b = bbq.aggregation(metric)(ours[metric]), bbq.aggregation(metric)(theirs[metric])
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b), metric
        assert len(ours[f"accuracy_amb_{cat}"]) == 16
    assert not any(k.endswith("_Race_x_SES") for k in ours)


def test_every_metric_direction_has_one_owner():
    """Issue 22: a metric's direction is declared once. lm-eval tasks declare theirs in their YAML; the suites
    that are not lm-eval tasks (perplexity, attribution, latency, the IMP experiment) in metric_meta.TABLE; no
    registered task may also match a TABLE entry (it would have two owners that can disagree)."""
    from fnmatch import fnmatchcase

    from analysis import metric_meta
    from analysis.safety import benchmark_registry

    tasks = benchmark_registry.tasks(suite=None)
    for task_pattern, _, _ in metric_meta.TABLE:
        both = [t for t in tasks if fnmatchcase(t, task_pattern)]
        assert not both, f"{task_pattern} in metric_meta.TABLE also matches the YAML task(s) {both}"
    for info in tasks.values():
        for name, m in info.metrics.items():
            if m.direction is not None:
                assert metric_meta.direction(info.name, name)[0] == m.direction  # read from the YAML, nowhere else
