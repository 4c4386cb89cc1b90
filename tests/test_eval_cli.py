"""`ticketlab eval / compare / tickets / ledger export` through app.cli.main on the tiny model."""

from __future__ import annotations

import json

import duckdb
import pytest

from app.cli import main


def _json(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def ticket_id(state, tiny_llama_dir, capsys):
    assert main(["prune", "--model", str(tiny_llama_dir), "--method", "magnitude", "--sparsity", "0.5", "--json"]) == 0
    return _json(capsys)["id"]


def test_eval_json_as_lm_eval_names_them(state, tiny_llama_dir, ticket_id, capsys):
    rc = main(["eval", ticket_id[:8], "--suite", "ppl,safety", "--tasks", "crows_pairs_english,bbq",
               "--limit", "3", "--seq-len", "64", "--batch-size", "2", "--json"])
    assert rc == 0
    out = _json(capsys)
    assert out["subject"] == ticket_id and out["run_id"]
    res = out["results"]
    assert 0 <= res["crows_pairs_english"]["pct_stereotype,none"] <= 1
    assert "pct_stereotype_stderr,none" in res["crows_pairs_english"]
    assert "amb_bias_score_Age,none" in res["bbq"] and res["wikitext2"]["perplexity,none"] > 1
    assert out["config"]["safety"]["batch_size"] == 2 and out["config"]["safety"]["limit"] == 3
    with duckdb.connect(str(state / "ledger.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT task, metric, direction, ideal, \"limit\", batch_size, dtype, padding FROM metrics "
                           "WHERE subject = ? AND metric = 'pct_stereotype'", [ticket_id]).fetchall()
        assert rows == [("crows_pairs_english", "pct_stereotype", "target", 0.5, 3, "2", "float32", "shared-prefix")]
        assert con.execute("SELECT count(*) FROM eval_samples WHERE subject = ?", [ticket_id]).fetchone()[0] == 6
        assert con.execute("SELECT status FROM runs WHERE id = ?", [out["run_id"]]).fetchone()[0] == "succeeded"


def test_compare_tickets_and_export(state, tiny_llama_dir, ticket_id, capsys, tmp_path):
    common = ["--suite", "ppl", "--limit", "2", "--seq-len", "64"]
    assert main(["eval", "dense", "--model", str(tiny_llama_dir), *common]) == 0
    text = capsys.readouterr().out
    assert "perplexity" in text and "lower" in text
    assert main(["eval", ticket_id, *common]) == 0
    capsys.readouterr()
    assert main(["compare", ticket_id, "dense", "--json"]) == 0
    out = _json(capsys)
    assert {r["metric"] for r in out["rows"]} == {"perplexity", "nll"}
    assert all(r["delta"] is not None for r in out["rows"])
    assert main(["compare", ticket_id, "dense"]) == 0
    assert "within" in capsys.readouterr().out
    assert main(["tickets", "--json"]) == 0
    listing = _json(capsys)
    assert listing[0]["id"] == ticket_id and listing[0]["method"] == "magnitude"
    assert listing[0]["metrics"]["wikitext2.perplexity"]["limit"] == 2
    assert listing[0]["review"] == "unreviewed"  # the signed log's state, in the verdict line's words
    assert main(["tickets"]) == 0
    assert ticket_id in capsys.readouterr().out
    assert main(["ledger", "export", "--out", str(tmp_path / "export")]) == 0
    files = {p.name for p in (tmp_path / "export").iterdir()}
    assert {"metrics.parquet", "runs.parquet", "tickets.parquet", "eval_samples.parquet"} <= files
    assert duckdb.sql(f"SELECT count(*) FROM '{tmp_path / 'export' / 'metrics.parquet'}'").fetchall() == [(4,)]


def test_clear_errors(state, tiny_llama_dir, ticket_id, capsys, tmp_path):
    assert main(["eval", "nosuchticket", "--suite", "ppl"]) == 2
    assert "no ticket 'nosuchticket'" in capsys.readouterr().err
    assert main(["eval", ticket_id, "--suite", "bogus"]) == 2
    assert "unknown suite" in capsys.readouterr().err
    # a data file missing mid-run: one line naming it, and the run is recorded as failed with no metrics
    assert main(["eval", ticket_id, "--suite", "ppl", "--limit", "1", "--seq-len", "64",
                 "--data-dir", str(tmp_path)]) == 2
    assert "corpora/wikitext-2/test.txt" in capsys.readouterr().err
    with duckdb.connect(str(state / "ledger.duckdb"), read_only=True) as con:
        assert con.execute("SELECT status FROM runs WHERE kind = 'eval'").fetchall() == [("failed",)]
        assert con.execute("SELECT count(*) FROM metrics").fetchone()[0] == 0
    assert main(["compare", "dense", "dense"]) == 2


def test_attribution_and_latency_suites_in_one_run(state, ticket_id, capsys):
    assert main(["eval", ticket_id, "--suite", "attribution,latency", "--limit", "1", "--json"]) == 0
    out = _json(capsys)
    assert "objective_mean,none" in out["results"]["attribution"]
    assert out["results"]["latency"]["prefill_tokens_per_s,none"] > 0
    assert out["results"]["latency"]["prefill_ratio,none"] > 0  # the ticket against dense, same prompts
    with duckdb.connect(str(state / "ledger.duckdb"), read_only=True) as con:
        heads = con.execute("SELECT count(*) FROM attribution_head WHERE run_id = ?", [out["run_id"]]).fetchall()
        assert heads == [(2 * 4,)]
        metrics = dict(con.execute("SELECT metric, direction FROM metrics WHERE run_id = ?", [out["run_id"]]).fetchall())
        assert metrics["decode_tokens_per_s"] == "higher" and metrics["time_to_first_token_s"] == "lower"


# --- issue 12: values and paths refused or handled at the edge ----------------------------------------
@pytest.mark.parametrize("option,value", [("--limit", "0"), ("--limit", "nan"), ("--limit", "-3"),
                                          ("--batch-size", "0"), ("--batch-size", "inf"), ("--seq-len", "1"),
                                          ("--bbq-per-category", "-1"), ("--limit", "1e9999")])
def test_eval_options_out_of_range_are_refused_with_the_option_named(state, option, value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "dense", "--suite", "ppl", option, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and value in err, err


def test_ledger_export_takes_the_path_as_a_value_not_sql(state, ticket_id, capsys, tmp_path):
    out = tmp_path / "it's (quoted); DROP TABLE runs; --"
    assert main(["ledger", "export", "--out", str(out)]) == 0
    assert duckdb.sql("SELECT count(*) FROM read_parquet(?)", params=[str(out / "tickets.parquet")]).fetchall() == [(1,)]
    with duckdb.connect(str(state / "ledger.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    # a re-export replaces the previous one whole; a folder with anything else in it is refused, untouched
    assert main(["ledger", "export", "--out", str(out)]) == 0
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main(["ledger", "export", "--out", str(precious)]) == 2
    assert "holds other files (notes.txt)" in capsys.readouterr().err
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
