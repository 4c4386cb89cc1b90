"""Free text a person types (names, reasons) is shown later in terminals and pages: control characters
(escape sequences that rewrite a terminal, newlines that forge extra lines) are refused where it enters."""

from __future__ import annotations

import re

from .errors import TicketLabError

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def control_problem(value: str | None, what: str) -> str:
    """'' when `value` is printable text, else why not."""
    bad = CONTROL.search(value or "")
    return f"{what} contains a control character ({bad.group()!r})" if bad else ""


def require_plain(value: str | None, what: str) -> str | None:
    """`value` unchanged, or one clear error naming the option and the character."""
    why = control_problem(value, what)
    if why:
        raise TicketLabError(f"{why}: use plain printable text; nothing was recorded.")
    return value
