"""Use cases: what a person asks Ticket Lab to do, as a function from a typed request to a typed outcome.

The floor between `analysis/` (which it imports, with `pruning/`) and `app/` (which calls it): the CLI
builds a request from its flags, the dashboard's background job stores the request as JSON and its
runner calls the same function in its own process, the benchmarks call it directly. A request is
validated once, when it is built (a bad one is one `TicketLabError`); the outcome is data with named
fields, never text to be parsed.

`USECASES` maps a use case's name (also the job kind) to its request type and function; `execute`
runs one from its stored JSON.
"""

from __future__ import annotations

from .base import USECASES, Outcome, Progress, Request, execute, request_from_json

__all__ = ["USECASES", "Outcome", "Progress", "Request", "execute", "request_from_json"]
