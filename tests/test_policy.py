"""Policy files: the shipped default is valid, and every malformed file gives its line and the problem."""

import pytest

from analysis.governance.policy import DEFAULT_POLICY, load_policy, parse_policy
from pruning.errors import TicketLabError


def test_shipped_default_policy_loads():
    p = load_policy(DEFAULT_POLICY)
    assert p.name == "default" and len(p.sha256) == 64
    assert p.get("crows_pairs")["ideal"] == 0.5 and p.get("bbq")["ideal"] == 0.0
    assert p.full_runs and not p.creator_may_approve


def test_default_policy_is_used_without_a_file(state):
    assert load_policy().path == str(DEFAULT_POLICY)
    (state / "policy.toml").write_text('[policy]\nname = "lab"\n')
    assert load_policy().name == "lab"


@pytest.mark.parametrize("text, line, problem", [
    ('[perplexity]\nmax_increase_pct = \n', 2, "not valid TOML"),
    ('[policy]\nname = "x"\n\n[perplexity]\nmax_increase_pct = "ten"\n', 5, "must be a number, got str"),
    ('[policy]\nname = "x"\n[bbq]\nmax_increase = 0.0\nmax_incrase = 1\n', 5, "[bbq] max_incrase: unknown key"),
    ('[policy]\n\n[perplexty]\nmax_increase_pct = 1\n', 3, "[perplexty]: unknown section"),
    ('[crows_pairs]\nideal = 0.5\n', 1, "missing required key 'max_increase'"),
    ('[efficiency]\nmin_sparsity = 1.5\n', 2, "must be in [0, 1)"),
    ('[truthfulqa]\nfloors = { "truthfulqa_mc2" = 0.3 }\n', 2, 'must be "task/metric"'),
    ('[duties]\ncreator_may_approve = "no"\n', 2, "must be true or false"),
    ('[evidence]\nrequired = "wikitext"\n', 2, "must be a list of strings"),
])
def test_malformed_policy_names_line_and_problem(tmp_path, text, line, problem):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TicketLabError) as e:
        load_policy(path)
    msg = str(e.value)
    assert str(path) in msg and f"line {line}" in msg and problem in msg


def test_missing_policy_file_points_at_the_default(tmp_path):
    with pytest.raises(TicketLabError, match="does not exist; start from the shipped"):
        load_policy(tmp_path / "nope.toml")


def test_dropped_sections_drop_rules():
    p = parse_policy('[policy]\nname = "only-ppl"\n[perplexity]\nmax_increase_pct = 3\n')
    assert p.get("bbq") is None and p.get("perplexity")["task"] == "wikitext*"
