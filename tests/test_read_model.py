"""The ledger's read model (issue 22): what the dashboard and the CLI read comes back as typed rows.

On a real DuckDB ledger filled by the real writers (a pruned ticket, an eval run with metrics and head
attributions, an instruct run with a transcript reference, a serve-check, an IMP experiment), every read
returns instances of its row type whose values have the declared Python types, and its DataFrame has
exactly the row's fields as columns. A query edited without its row type fails loudly.
"""

import dataclasses
import datetime as dt
import types
import typing

import pytest

from analysis.ledger import Ledger, MetricRow, read_model
from analysis.ledger.lab_records import attribution_statements
from analysis.ledger.read_model import Read
from analysis.lottery.experiments import record_experiment
from analysis.recording import record_prune
from analysis.serving.check import record as record_serve_check
from app.commands.eval import ticket_listing
from app.dashboard import data
from pruning.prune import make_ticket

SHA = "ab" * 32
HEADLINE = [("wikitext", "word_perplexity")]


def _conforms(value, hint) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _assert_typed(read: Read, rows: list) -> None:
    hints = typing.get_type_hints(read.row)
    for row in rows:
        assert type(row) is read.row
        for f in dataclasses.fields(row):
            value = getattr(row, f.name)
            assert _conforms(value, hints[f.name]), f"{read.row.__name__}.{f.name} = {value!r} is not {hints[f.name]}"


@pytest.fixture
def filled(tiny_llama, state):
    ledger = Ledger()  # the configured path (under `state`): the dashboard reads the same file
    ticket = make_ticket(tiny_llama, "magnitude", 0.5)
    ticket.save()
    record_prune(tiny_llama, ticket, "test prune", ledger)
    dense = tiny_llama.weights_sha256
    with ledger.run("eval", "test eval", subject="dense", dense_sha256=dense, params={"suites": ["ppl"]}) as run:
        run.add_metric(MetricRow("ppl", "wikitext", "word_perplexity,none", 30.0, 0.5, "lower", n_samples=4))
        run.extra_sql += attribution_statements(run.id, "dense", [(0, 0, 0.25, 0.25, 2), (0, 1, -0.5, 0.5, 2)])
    with ledger.run("eval", "test eval", subject=ticket.id, dense_sha256=dense, params={"suites": ["ppl"]}) as run:
        run.add_metric(MetricRow("ppl", "wikitext", "word_perplexity,none", 31.0, 0.5, "lower", limit=2))
        run.add_metric(MetricRow("instruct", "xstest", "refusal_rate,none", 0.5, extra={
            "transcripts": SHA, "setup": {"max_new_tokens": 16}}))
        run.extra_sql += attribution_statements(run.id, ticket.id, [(0, 0, 0.1, 0.1, 2), (0, 1, 0.0, 0.0, 2)])
    record_serve_check(ledger, {"bundle": "/tmp/b", "artifact": "c" * 64, "ticket": ticket.id, "loads": False,
                                "error": "no engine"}, "test serve-check")
    record_experiment("exp-1", {"rounds": 1}, "complete", {"n": 1}, ledger=ledger)
    return ledger, ticket, dense


def test_every_read_gives_typed_rows_and_frames_with_its_fields(filled):
    ledger, ticket, dense = filled
    reads = [read_model.models(), read_model.model_facts(dense), read_model.tickets(), read_model.ticket_paths(),
             read_model.ticket(ticket.id), read_model.ticket_list(), read_model.layer_survival(ticket.id),
             read_model.head_survival(ticket.id), read_model.neuron_survival(ticket.id),
             read_model.latest_attribution_run(ticket.id), read_model.latest_attribution_run("dense", dense),
             read_model.latest_metrics(dense), read_model.latest_metrics(dense, full_only=True),
             read_model.headline_values(HEADLINE), read_model.metric_values(),
             read_model.instruct_metrics(ticket.id), read_model.instruct_metrics(ticket.id, dense),
             read_model.eval_durations(), read_model.serve_checks(), read_model.experiments(),
             read_model.experiments(kind="imp")]
    [attributed] = read_model.latest_attribution_run(ticket.id).rows(ledger)
    reads.append(read_model.head_attributions(attributed.id))
    declared = {v for v in vars(read_model).values() if dataclasses.is_dataclass(v) and v.__module__ == read_model.__name__
                and v is not Read}
    assert {r.row for r in reads} == declared, "every row type of the read model is checked here"
    for read in reads:
        rows = read.rows(ledger)
        assert rows, f"{read.row.__name__}: no rows from the filled ledger"
        _assert_typed(read, rows)
        df = read.frame(ledger)
        assert list(df.columns) == read_model.columns(read.row) and len(df) == len(rows)
        assert data.frame(read).equals(df)  # the dashboard's cached read is the same table


def test_reads_answer_what_was_written(filled, tiny_llama):
    ledger, ticket, dense = filled
    [model] = read_model.models().rows(ledger)
    assert model.weights_sha256 == dense and model.tickets == 1 and isinstance(model.added_at, dt.datetime)
    [t] = read_model.tickets().rows(ledger)
    assert (t.id, t.method, t.model) == (ticket.id, "magnitude", tiny_llama.spec)
    assert read_model.ticket_recorded(ledger, ticket.id) and not read_model.ticket_recorded(ledger, "0" * 64)
    [run] = read_model.latest_attribution_run("dense", dense).rows(ledger)
    heads = read_model.head_attributions(run.id).rows(ledger)
    assert [(h.layer, h.head, h.value) for h in heads] == [(0, 0, 0.25), (0, 1, -0.5)]
    latest = read_model.latest_metrics(dense).rows(ledger)
    assert {(m.subject, m.task, m.value, m.limit) for m in latest if m.suite == "ppl"} == {
        ("dense", "wikitext", 30.0, None), (ticket.id, "wikitext", 31.0, 2)}
    assert [m.subject for m in read_model.latest_metrics(dense, full_only=True).rows(ledger) if m.suite == "ppl"] == [
        "dense"]
    [head] = read_model.headline_values(HEADLINE).rows(ledger)  # tickets only, the metric's name unfiltered
    assert (head.subject, head.metric, head.value) == (ticket.id, "word_perplexity", 31.0)
    [check] = read_model.serve_checks().rows(ledger)
    assert '"loads": false' in check.params and check.status == "succeeded"
    assert [e.id for e in read_model.experiments(kind="imp").rows(ledger)] == ["exp-1"]
    assert read_model.experiments(kind="lora").rows(ledger) == []
    assert read_model.row_count(ledger, "tickets") == 1 and read_model.row_count(ledger, "attribution_head") == 4


def test_cli_ticket_listing_is_built_from_typed_rows(filled):
    ledger, ticket, _ = filled
    [row] = ticket_listing(ledger)
    assert list(row) == [f.name for f in dataclasses.fields(read_model.ListedTicket)] + ["review", "metrics"]
    assert row["id"] == ticket.id and row["review"] == "unreviewed" and isinstance(row["created_at"], str)


def test_a_query_edited_without_its_row_type_fails_loudly(filled):
    ledger, _, _ = filled
    drifted = Read(read_model.RunRef, "SELECT id, kind FROM runs")
    with pytest.raises(TypeError, match=r"RunRef: the query returns \['id', 'kind'\]"):
        drifted.frame(ledger)
    with pytest.raises(TypeError):
        drifted.rows(ledger)
    with pytest.raises(ValueError, match="no table 'tickets; DROP TABLE runs'"):
        read_model.row_count(ledger, "tickets; DROP TABLE runs")
