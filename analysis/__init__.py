"""What a ticket does: evaluation, survival statistics, and the DuckDB ledger. Imports `pruning`, never `app`."""
