"""The ledger on real DuckDB files: schema, migration, transactions, survival, Parquet export."""

import duckdb
import pytest

from analysis.ledger import Ledger, MetricRow
from analysis.ledger.schema import CURRENT_VERSION
from analysis.recording import record_prune
from pruning.errors import TicketLabError
from pruning.prune import make_ticket


def test_fresh_ledger_has_current_schema(state):
    ledger = Ledger(state / "l.duckdb")
    assert ledger.schema_version() == CURRENT_VERSION


def test_newer_ledger_is_refused_and_left_unchanged(state):
    path = state / "l.duckdb"
    Ledger(path)
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (?, current_timestamp)", [CURRENT_VERSION + 5])
    con.close()
    before = path.read_bytes()
    with pytest.raises(TicketLabError, match="newer than this Ticket Lab"):
        Ledger(path)
    assert path.read_bytes() == before


def test_prune_is_recorded_with_survival(tiny_llama, state):
    ledger = Ledger(state / "l.duckdb")
    t = make_ticket(tiny_llama, "magnitude", 0.5)
    t.save()
    record_prune(tiny_llama, t, "test", ledger)
    row = ledger.get_ticket(t.id[:8])
    assert row["method"] == "magnitude" and abs(row["achieved_sparsity"] - 0.5) < 1e-6
    heads = ledger.query("SELECT * FROM survival_head WHERE ticket_id = ? AND kind = 'q'", [t.id])
    assert len(heads) == 2 * 4
    layer = ledger.query("SELECT sum(kept) k, sum(total) n FROM survival_layer WHERE ticket_id = ?", [t.id])[0]
    assert layer["k"] / layer["n"] == pytest.approx(0.5, abs=1e-6)
    runs = ledger.query("SELECT status FROM runs")
    assert [r["status"] for r in runs] == ["succeeded"]


def test_crash_mid_run_leaves_failed_run_and_no_partial_rows(state):
    ledger = Ledger(state / "l.duckdb")
    with pytest.raises(RuntimeError):
        with ledger.run("eval", "test", subject="dense") as run:
            run.add_metric(MetricRow("ppl", "wikitext", "perplexity", 12.0))
            raise RuntimeError("boom")
    assert ledger.query("SELECT count(*) n FROM metrics")[0]["n"] == 0
    r = ledger.query("SELECT status, error FROM runs")[0]
    assert r["status"] == "failed" and "boom" in r["error"]


def test_parquet_export(state):
    ledger = Ledger(state / "l.duckdb")
    with ledger.run("eval", "test") as run:
        run.add_metric(MetricRow("ppl", "wikitext", "perplexity", 12.0, 0.1, "lower"))
    files = ledger.export_parquet(state / "pq")
    import pyarrow.parquet as pq

    assert pq.read_table(state / "pq" / "metrics.parquet").num_rows == 1
    assert any(f.name == "tickets.parquet" for f in files)
