"""Recording engine results into the ledger: the glue the front doors call after the engine returns."""

from __future__ import annotations

from pruning.models import LoadedModel
from pruning.ticket import Ticket

from .governance.identity import check_can_create, sign_creation
from .ledger import Ledger
from .survival import survival_tables


def record_prune(loaded: LoadedModel, ticket: Ticket, command: str, ledger: Ledger | None = None,
                 experiment: str | None = None, kind: str = "prune", signer=None) -> str:
    """One run row plus the ticket and its survival tables, written in one transaction. Returns the run id.
    With `signer` (an unlocked key) the signer is recorded as the creator in a signed record right after;
    without, the ticket has no creator until someone signs for it (`ticketlab sign-ticket`)."""
    ledger = ledger or Ledger()
    if signer is not None:
        check_can_create(ledger, signer)  # refuse before recording anything
    ledger.record_model(loaded)
    params = {"method": ticket.method, "params": ticket.params, "sparsity": ticket.target_sparsity,
              "seed": ticket.seed, "calibration": ticket.calibration}
    with ledger.run(kind, command, subject=ticket.id, dense_sha256=loaded.weights_sha256, params=params) as run:
        run.extra_sql += ledger.ticket_rows(ticket, survival_tables(ticket.masks, loaded.adapter), experiment)
    if signer is not None:
        sign_creation(ledger, signer, ticket.id, how=kind)
    return run.id
