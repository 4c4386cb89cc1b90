"""What the lab's measurements add to a run beyond its metric rows: head attributions and a serve-check's
result. Each function returns statements for `Run.extra_sql`, so they are written in the run's own one
transaction (with its metrics and its 'succeeded'), or not at all.
"""

from __future__ import annotations

import json

ATTRIBUTION_COLUMNS = ("layer", "head", "value", "abs_value", "n_pairs")  # after (run_id, subject)


def attribution_statements(run_id: str, subject: str, rows: list[tuple]) -> list[tuple[str, list]]:
    """One `attribution_head` row per (layer, head): rows in ATTRIBUTION_COLUMNS order."""
    for row in rows:
        if len(row) != len(ATTRIBUTION_COLUMNS):
            raise ValueError(f"attribution row {row!r} does not have the columns {ATTRIBUTION_COLUMNS}")
    cols = ", ".join(("run_id", "subject", *ATTRIBUTION_COLUMNS))
    marks = ", ".join("?" * (len(ATTRIBUTION_COLUMNS) + 2))
    sql = f"INSERT INTO attribution_head ({cols}) VALUES ({marks})"
    return [(sql, [run_id, subject, *row]) for row in rows]


def serve_check_statements(run_id: str, result: dict) -> list[tuple[str, list]]:
    """The serve-check's whole result as its run's params (the run opens with only the bundle and artifact,
    so a check that dies midway still names what it checked)."""
    return [("UPDATE runs SET params = ? WHERE id = ?", [json.dumps(result, default=str), run_id])]
