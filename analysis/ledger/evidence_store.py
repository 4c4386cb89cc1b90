"""The SQL behind a subject's evidence (its metric rows of succeeded runs, for `compare` and for governance)
and behind the IMP experiments' rows: each read or write is one named function, so no module above the
ledger spells SQL (tests/test_sql_containment.py).
"""

from __future__ import annotations

import pandas as pd

from .store import Ledger


def latest_dense_sha256(ledger: Ledger) -> str | None:
    """The weight hash of the dense model evaluated last, or None when no dense metric is recorded."""
    rows = ledger.query("SELECT dense_sha256 FROM metrics WHERE subject = 'dense' ORDER BY recorded_at DESC LIMIT 1")
    return rows[0]["dense_sha256"] if rows else None


def comparison_rows(ledger: Ledger, subject: str, dense_sha256: str) -> list[dict]:
    """Every metric of a subject of that dense model from succeeded runs, newest first (`compare`'s columns)."""
    return ledger.query(
        'SELECT m.suite, m.task, m.metric, m.value, m.stderr, m.direction, m.ideal, m.n_samples, m."limit", '
        "m.batch_size, m.dtype, m.padding, m.extra, m.run_id, m.recorded_at FROM metrics m "
        "JOIN runs r ON r.id = m.run_id WHERE r.status = 'succeeded' AND m.subject = ? AND m.dense_sha256 = ? "
        "ORDER BY m.recorded_at DESC, m.run_id", [subject, dense_sha256])


def decision_rows(ledger: Ledger, subject: str, dense_sha256: str) -> list[dict]:
    """Every metric row of a subject from succeeded runs with its run's start, oldest first (a ticket's rows
    whatever their dense hash; the dense model's only those of `dense_sha256`)."""
    return ledger.query(
        "SELECT m.*, r.started_at FROM metrics m JOIN runs r ON r.id = m.run_id "
        "WHERE r.status = 'succeeded' AND m.subject = ? AND (m.subject <> 'dense' OR m.dense_sha256 = ?) "
        "ORDER BY m.recorded_at, m.run_id", [subject, dense_sha256])


def imp_unit_recorded(ledger: Ledger, task: str, ticket_id: str, experiment: str, arm: str, seed: int,
                      round_: int, rewind_step: int | None = None) -> bool:
    """Whether an IMP unit's `task` metrics are already in the ledger (resuming skips it)."""
    sql = ("SELECT count(*) AS n FROM metrics WHERE suite = 'imp' AND task = ? AND subject = ? "
           "AND extra->>'experiment' = ? AND extra->>'arm' = ? AND CAST(extra->>'seed' AS INTEGER) = ? "
           "AND CAST(extra->>'round' AS INTEGER) = ?")
    params = [task, ticket_id, experiment, arm, seed, round_]
    if rewind_step is not None:
        sql += " AND CAST(extra->>'rewind_step' AS INTEGER) = ?"
        params.append(rewind_step)
    return ledger.query(sql, params)[0]["n"] > 0


def upsert_experiment(ledger: Ledger, experiment: str, params_json: str, status: str, created_at,
                      summary_json: str | None) -> None:
    """Insert or update an `experiments` row in one transaction (params, status and summary replaced)."""
    with ledger.transaction() as con:
        con.execute("INSERT INTO experiments (id, kind, params, status, created_at, summary) VALUES (?, 'imp', ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET params = excluded.params, status = excluded.status, "
                    "summary = excluded.summary",
                    [experiment, params_json, status, created_at, summary_json])


def experiments(ledger: Ledger) -> list[dict]:
    """Every `experiments` row (a handful: one query)."""
    return ledger.query("SELECT * FROM experiments")


def imp_metric_frame(ledger: Ledger, experiment: str, task: str, metric: str) -> pd.DataFrame:
    """An IMP experiment's values of one metric with the unit each came from (arm, seed, round, ...)."""
    return ledger.frame(
        "SELECT extra->>'arm' AS arm, CAST(extra->>'seed' AS INTEGER) AS seed, "
        "CAST(extra->>'round' AS INTEGER) AS round, CAST(extra->>'sparsity' AS DOUBLE) AS sparsity, "
        "extra->>'rewind' AS rewind, CAST(extra->>'rewind_step' AS INTEGER) AS rewind_step, "
        "extra->>'curve' AS curve, subject, value FROM metrics "
        "WHERE suite = 'imp' AND task = ? AND metric = ? AND extra->>'experiment' = ?",
        [task, metric, experiment])
