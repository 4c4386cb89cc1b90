"""One exception type for bad input, so the front doors can print one clear line instead of a trace."""


class TicketLabError(Exception):
    """A problem the user can fix: the message names what is wrong and what to do."""
