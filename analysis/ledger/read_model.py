"""The ledger's read model: what the dashboard and the CLI read, as named queries with typed rows.

Each read is a `Read`: its SQL, its parameters and the frozen dataclass one result row fills (the
SELECT's columns are the dataclass's fields, by name and in order). `rows(ledger)` gives typed rows (the
CLI, the analysis code); `frame(ledger)` the same result as a DataFrame whose columns are those fields
(the dashboard's tables, which it caches per read and ledger-file stamp). The SQL text lives only here;
callers name the read they want.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import pandas as pd

    from .store import Ledger

R = TypeVar("R")


def columns(row: type) -> list[str]:
    """A row type's fields: the columns its query returns, in order."""
    return [f.name for f in fields(row)]


@dataclass(frozen=True)
class Read(Generic[R]):
    """One named query: `sql` with `params`, each result row one `row`. Hashable (a cache key)."""

    row: type[R]
    sql: str
    params: tuple = ()

    def rows(self, ledger: Ledger) -> list[R]:
        return [self.row(**r) for r in ledger.query(self.sql, list(self.params))]

    def frame(self, ledger: Ledger) -> pd.DataFrame:
        df = ledger.frame(self.sql, list(self.params))
        if list(df.columns) != columns(self.row):  # a SELECT edited without its row type
            raise TypeError(f"{self.row.__name__}: the query returns {list(df.columns)}, the row declares "
                            f"{columns(self.row)}")
        return df


# --- models and tickets ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ModelRow:
    weights_sha256: str
    spec: str
    family: str | None
    model_type: str | None
    n_params: int | None
    added_at: dt.datetime | None
    tickets: int  # how many tickets of this model the ledger holds


def models() -> Read[ModelRow]:
    """Every recorded dense model with its ticket count, oldest first."""
    return Read(ModelRow, "SELECT m.weights_sha256, m.spec, m.family, m.model_type, m.n_params, m.added_at, "
                          "(SELECT count(*) FROM tickets t WHERE t.dense_sha256 = m.weights_sha256) AS tickets "
                          "FROM models m ORDER BY m.added_at")


@dataclass(frozen=True, slots=True)
class ModelFacts:
    config: str | None  # the model's config.json, as JSON text
    n_params: int | None


def model_facts(dense_sha256: str) -> Read[ModelFacts]:
    """One dense model's config and size (no row when the model is not recorded)."""
    return Read(ModelFacts, "SELECT config, n_params FROM models WHERE weights_sha256 = ?", (dense_sha256,))


@dataclass(frozen=True, slots=True)
class TicketRow:
    id: str
    name: str | None
    method: str
    params: str | None  # JSON
    target_sparsity: float | None
    achieved_sparsity: float | None
    seed: int | None
    parent: str | None
    experiment: str | None
    dense_sha256: str
    path: str | None
    created_at: dt.datetime | None
    structure: str | None  # JSON
    model: str | None  # the dense model's spec


def tickets() -> Read[TicketRow]:
    """Every ticket with its model's spec: one-shot tickets first, then those of IMP experiments; newest
    first within each."""
    return Read(TicketRow, "SELECT t.id, t.name, t.method, t.params, t.target_sparsity, t.achieved_sparsity, "
                           "t.seed, t.parent, t.experiment, t.dense_sha256, t.path, t.created_at, t.structure, "
                           "m.spec AS model FROM tickets t LEFT JOIN models m ON m.weights_sha256 = t.dense_sha256 "
                           "ORDER BY t.experiment IS NOT NULL, t.created_at DESC, t.id")


@dataclass(frozen=True, slots=True)
class TicketPath:
    id: str
    path: str | None  # the ticket's folder when it was recorded


def ticket_paths() -> Read[TicketPath]:
    """Every ticket id with its folder, by id."""
    return Read(TicketPath, "SELECT id, path FROM tickets ORDER BY id")


def ticket(ticket_id: str) -> Read[TicketPath]:
    """The ticket with exactly this id (no row when the ledger does not hold it)."""
    return Read(TicketPath, "SELECT id, path FROM tickets WHERE id = ?", (ticket_id,))


def ticket_recorded(ledger: Ledger, ticket_id: str) -> bool:
    return bool(ticket(ticket_id).rows(ledger))


@dataclass(frozen=True, slots=True)
class ListedTicket:
    id: str
    name: str | None
    method: str
    target_sparsity: float | None
    achieved_sparsity: float | None
    dense_sha256: str
    parent: str | None
    experiment: str | None
    created_at: dt.datetime | None


def ticket_list() -> Read[ListedTicket]:
    """Every ticket, oldest first (`ticketlab tickets`)."""
    return Read(ListedTicket, "SELECT id, name, method, target_sparsity, achieved_sparsity, dense_sha256, parent, "
                              "experiment, created_at FROM tickets ORDER BY created_at, id")


# --- survival ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LayerSurvival:
    layer: int
    matrix: str
    kept: int | None
    total: int | None


@dataclass(frozen=True, slots=True)
class HeadSurvival:
    layer: int
    head: int
    kind: str
    kept: int | None
    total: int | None


@dataclass(frozen=True, slots=True)
class NeuronSurvival:
    layer: int
    band: int
    band_start: int | None
    band_stop: int | None
    kept: int | None
    total: int | None


def layer_survival(ticket_id: str) -> Read[LayerSurvival]:
    return Read(LayerSurvival, "SELECT layer, matrix, kept, total FROM survival_layer WHERE ticket_id = ? "
                               "ORDER BY layer", (ticket_id,))


def head_survival(ticket_id: str) -> Read[HeadSurvival]:
    return Read(HeadSurvival, "SELECT layer, head, kind, kept, total FROM survival_head WHERE ticket_id = ? "
                              "ORDER BY layer, head", (ticket_id,))


def neuron_survival(ticket_id: str) -> Read[NeuronSurvival]:
    return Read(NeuronSurvival, "SELECT layer, band, band_start, band_stop, kept, total FROM survival_neuron "
                                "WHERE ticket_id = ? ORDER BY layer, band", (ticket_id,))


# --- attribution ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunRef:
    id: str


@dataclass(frozen=True, slots=True)
class HeadAttribution:
    layer: int
    head: int
    value: float | None
    abs_value: float | None
    n_pairs: int | None


def latest_attribution_run(subject: str, dense_sha256: str | None = None) -> Read[RunRef]:
    """The newest succeeded run that recorded head attributions of `subject` (for 'dense' with a model
    hash: of that model's dense weights)."""
    if subject == "dense" and dense_sha256:
        return Read(RunRef, "SELECT id FROM runs WHERE subject = 'dense' AND dense_sha256 = ? AND status = "
                            "'succeeded' AND id IN (SELECT run_id FROM attribution_head) ORDER BY ended_at DESC "
                            "LIMIT 1", (dense_sha256,))
    return Read(RunRef, "SELECT run_id AS id FROM attribution_head a JOIN runs r ON r.id = a.run_id "
                        "WHERE a.subject = ? AND r.status = 'succeeded' ORDER BY r.ended_at DESC LIMIT 1", (subject,))


def head_attributions(run_id: str) -> Read[HeadAttribution]:
    return Read(HeadAttribution, "SELECT layer, head, value, abs_value, n_pairs FROM attribution_head "
                                 "WHERE run_id = ? ORDER BY layer, head", (run_id,))


# --- metrics -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LatestMetric:
    subject: str
    suite: str
    task: str
    metric: str
    value: float | None
    stderr: float | None
    direction: str | None
    ideal: float | None
    n_samples: int | None
    limit: int | None
    recorded_at: dt.datetime | None
    run_id: str


def latest_metrics(dense_sha256: str, full_only: bool = False) -> Read[LatestMetric]:
    """The newest value per (subject, suite, task, metric) for a dense model and its tickets, from succeeded
    runs, IMP rounds left out (they have their own view); `full_only`: runs without a limit only."""
    where = ' AND m."limit" IS NULL' if full_only else ""
    return Read(LatestMetric,
                "SELECT subject, suite, task, metric, value, stderr, direction, ideal, n_samples, \"limit\", "
                "recorded_at, run_id FROM (SELECT m.subject, m.suite, m.task, m.metric, m.value, m.stderr, "
                'm.direction, m.ideal, m.n_samples, m."limit", m.recorded_at, m.run_id, row_number() OVER '
                "(PARTITION BY m.subject, m.suite, m.task, m.metric ORDER BY m.recorded_at DESC) AS rn FROM metrics m "
                "JOIN runs r ON r.id = m.run_id WHERE r.status = 'succeeded' AND m.suite <> 'imp' "
                "AND (m.dense_sha256 = ? OR m.subject IN (SELECT id FROM tickets WHERE dense_sha256 = ?))" + where +
                ") WHERE rn = 1 ORDER BY suite, task, metric, subject", (dense_sha256, dense_sha256))


@dataclass(frozen=True, slots=True)
class HeadlineValue:
    subject: str
    task: str
    metric: str  # the metric's name without its filter (`acc`, not `acc,none`)
    value: float | None
    limit: int | None


def headline_values(keys: list[tuple[str, str]]) -> Read[HeadlineValue]:
    """The newest value of each (task, metric) in `keys` for every ticket (any run, any limit)."""
    cond = " OR ".join("(task = ? AND split_part(metric, ',', 1) = ?)" for _ in keys) or "false"
    return Read(HeadlineValue,
                "SELECT subject, task, split_part(metric, ',', 1) AS metric, value, \"limit\" FROM (SELECT *, "
                "row_number() OVER (PARTITION BY subject, task, metric ORDER BY recorded_at DESC) AS rn FROM metrics "
                f"WHERE subject <> 'dense' AND ({cond})) WHERE rn = 1", tuple(x for k in keys for x in k))


@dataclass(frozen=True, slots=True)
class MetricValue:
    subject: str
    task: str
    metric: str
    value: float | None
    stderr: float | None
    limit: int | None


def metric_values() -> Read[MetricValue]:
    """Every metric row of a succeeded run: full runs first, newest first within each (so the first row of
    a (subject, task, metric) is the one to show)."""
    return Read(MetricValue, 'SELECT m.subject, m.task, m.metric, m.value, m.stderr, m."limit" FROM metrics m '
                             "JOIN runs r ON r.id = m.run_id WHERE r.status = 'succeeded' "
                             'ORDER BY (m."limit" IS NULL) DESC, m.recorded_at DESC')


@dataclass(frozen=True, slots=True)
class InstructMetric:
    run_id: str
    task: str
    limit: int | None
    batch_size: str | None
    dtype: str | None
    padding: str | None
    extra: str | None  # JSON: the transcript set's hash and the decoding setup
    started_at: dt.datetime | None


def instruct_metrics(subject: str, dense_sha256: str | None = None) -> Read[InstructMetric]:
    """The generated-answer (instruct suite) metric rows of `subject`'s succeeded runs (of one dense model
    when given), unordered."""
    sql = ('SELECT m.run_id, m.task, m."limit", m.batch_size, m.dtype, m.padding, m.extra, r.started_at FROM metrics m '
           "JOIN runs r ON r.id = m.run_id "
           "WHERE m.subject = ? AND r.status = 'succeeded' AND m.suite = 'instruct'")
    if dense_sha256:
        return Read(InstructMetric, sql + " AND m.dense_sha256 = ?", (subject, dense_sha256))
    return Read(InstructMetric, sql, (subject,))


# --- runs and experiments ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EvalDuration:
    params: str | None  # JSON: the eval's suites, tasks and limit
    seconds: float
    host: str | None


def eval_durations() -> Read[EvalDuration]:
    """How long each finished, succeeded eval run took, with its settings and host."""
    return Read(EvalDuration, "SELECT params, epoch(ended_at) - epoch(started_at) AS seconds, host FROM runs "
                              "WHERE kind = 'eval' AND status = 'succeeded' AND ended_at IS NOT NULL")


@dataclass(frozen=True, slots=True)
class ServeCheckRun:
    id: str
    status: str
    ended_at: dt.datetime | None
    params: str | None  # JSON: the check's whole result


def serve_checks() -> Read[ServeCheckRun]:
    """Every `ticketlab serve-check` run, newest first."""
    return Read(ServeCheckRun, "SELECT id, status, ended_at, params FROM runs WHERE kind = 'serve-check' "
                               "ORDER BY started_at DESC")


@dataclass(frozen=True, slots=True)
class ExperimentRow:
    id: str
    kind: str
    status: str | None
    created_at: dt.datetime | None
    params: str | None  # JSON: the protocol
    summary: str | None  # JSON


def experiments(kind: str | None = None) -> Read[ExperimentRow]:
    """Every experiment (of one kind when given), newest first."""
    sql = "SELECT id, kind, status, created_at, params, summary FROM experiments"
    if kind is not None:
        return Read(ExperimentRow, sql + " WHERE kind = ? ORDER BY created_at DESC", (kind,))
    return Read(ExperimentRow, sql + " ORDER BY created_at DESC")


# --- sizes ---------------------------------------------------------------------------------------------
def row_count(ledger: Ledger, table: str) -> int:
    """How many rows one of the ledger's tables holds."""
    have = {r["table_name"] for r in ledger.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")}
    if table not in have:  # the name goes into the SQL text: only a table the ledger has
        raise ValueError(f"the ledger has no table {table!r} (it has {', '.join(sorted(have))})")
    return int(ledger.query(f'SELECT count(*) AS n FROM "{table}"')[0]["n"])
