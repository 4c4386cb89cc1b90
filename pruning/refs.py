"""References to stored things by id: the id itself or a unique prefix, matched literally.

One rule for tickets on disk, tickets in the ledger and other hex ids: a reference is a string of
at least MIN_PREFIX hex digits. It is never used as a glob or SQL LIKE pattern, so `%`, `*` or `_`
cannot resolve to some arbitrary ticket; an ambiguous prefix lists the candidates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import TicketLabError

MIN_PREFIX = 6  # shortest prefix accepted: 16.7 million values, rarely ambiguous in one lab

_HEX = re.compile(r"[0-9a-f]+")


def resolve_ref(ref: str, ids: Iterable[str], what: str = "ticket", where: str = "") -> str:
    """The one id that a reference names: the id itself or a unique prefix of at least MIN_PREFIX hex
    digits. Matching is literal (never a glob or LIKE pattern), and an ambiguous prefix lists the
    candidates so the user can pick."""
    ids = set(ids)
    if ref in ids:  # the exact id, whatever its form
        return ref
    ref = ref.strip().lower()
    if not _HEX.fullmatch(ref) or len(ref) < MIN_PREFIX:
        alt = " or a ticket directory" if what == "ticket" else ""
        raise TicketLabError(f"no {what} {ref!r}: a reference is the id or at least {MIN_PREFIX} of its leading hex "
                             f"digits (0-9, a-f){alt}, matched literally; list them with `ticketlab tickets`.")
    matches = sorted(i for i in ids if i.startswith(ref))
    if ref in matches:
        return ref
    if len(matches) == 1:
        return matches[0]
    where = f" in {where}" if where else ""
    if not matches:
        raise TicketLabError(f"no {what} {ref!r}{where}: list them with `ticketlab tickets`.")
    shown = ", ".join(matches[:10]) + (f" and {len(matches) - 10} more" if len(matches) > 10 else "")
    raise TicketLabError(f"{what} prefix {ref!r} is ambiguous{where}: it matches {shown}. Give more digits.")
