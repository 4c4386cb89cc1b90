"""The ledger package: the one place that holds the DuckDB ledger's SQL (issue 22).

`store` is the ledger itself (runs, tickets, metric rows, decisions; one transaction per operation),
`access` opens the file and explains every refusal (locks, versions, corruption), `schema` holds the
append-only migrations. Everything above reads and writes the ledger through named functions here;
`tests/test_sql_containment.py` keeps SQL from growing anywhere else.
"""

from .access import LedgerLocked
from .store import Ledger, MetricRow, Run, machine_description, pid_alive

__all__ = ["Ledger", "LedgerLocked", "MetricRow", "Run", "machine_description", "pid_alive"]
