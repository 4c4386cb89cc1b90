"""Recording engine results into the ledger: the glue the front doors call after the engine returns."""

from __future__ import annotations

from pruning.models import LoadedModel
from pruning.ticket import Ticket

from .governance.identity import creator_rows
from .ledger import Ledger
from .survival import survival_tables


def record_prune(loaded: LoadedModel, ticket: Ticket, command: str, ledger: Ledger | None = None,
                 experiment: str | None = None, kind: str = "prune", creator: str | None = None) -> str:
    """One run row plus the ticket and its survival tables, written in one transaction. Returns the run id."""
    ledger = ledger or Ledger()
    ledger.record_model(loaded)
    params = {"method": ticket.method, "params": ticket.params, "sparsity": ticket.target_sparsity,
              "seed": ticket.seed, "calibration": ticket.calibration}
    with ledger.run(kind, command, subject=ticket.id, dense_sha256=loaded.weights_sha256, params=params) as run:
        run.extra_sql += ledger.ticket_rows(ticket, survival_tables(ticket.masks, loaded.adapter), experiment)
        run.extra_sql += creator_rows(ticket.id, creator)
    return run.id
