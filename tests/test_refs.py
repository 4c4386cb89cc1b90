"""References to tickets: the id or a unique prefix of >= 6 hex digits, matched literally (never as a glob
or LIKE pattern); an ambiguous prefix lists the candidates. On real folders and a real ledger."""

from __future__ import annotations

import pytest

from analysis.ledger import Ledger
from pruning.errors import TicketLabError
from pruning.refs import resolve_ref
from pruning.ticket import find_ticket

IDS = ["abcdef0123456789", "abcdef0199999999", "abcdef9999999999", "0123456789abcdef"]


@pytest.fixture
def tickets(state):
    for tid in IDS:
        (state / "tickets" / tid).mkdir(parents=True)
        (state / "tickets" / tid / "ticket.json").write_text("{}")
    (state / "tickets" / ".abcdef0123456789.tmp-1-x").mkdir()  # a writer's temporary folder is no ticket
    ledger = Ledger()
    with ledger.transaction() as con:
        for tid in IDS:
            con.execute("INSERT INTO tickets (id, content_sha256, dense_sha256, method) VALUES (?, 'c', 'd', 'm')", [tid])
    return ledger


def test_unique_prefix_and_exact_id(tickets, state):
    assert find_ticket("012345") == state / "tickets" / "0123456789abcdef"
    assert find_ticket("ABCDEF9") == state / "tickets" / "abcdef9999999999"
    assert tickets.get_ticket("abcdef01234")["id"] == "abcdef0123456789"
    assert tickets.get_ticket(" 0123456789ABCDEF ")["id"] == "0123456789abcdef"
    assert find_ticket(str(state / "tickets" / "abcdef0199999999")) == state / "tickets" / "abcdef0199999999"


def test_ambiguous_prefix_lists_the_candidates(tickets):
    for lookup in (find_ticket, tickets.get_ticket):
        with pytest.raises(TicketLabError) as err:
            lookup("abcdef")
        msg = str(err.value)
        assert "ambiguous" in msg and all(i in msg for i in IDS[:3]) and IDS[3] not in msg, msg
        with pytest.raises(TicketLabError, match="abcdef0123456789, abcdef0199999999"):
            lookup("abcdef01")


@pytest.mark.parametrize("ref", ["%", "abcdef%", "*", "abcdef*", "abcde_", "a?cdef", "[a]bcdef", "abcde", "",
                                 "abcdef0123456789x", "' OR 1=1 --"])
def test_patterns_short_and_foreign_strings_name_nothing(tickets, ref):
    for lookup in (find_ticket, tickets.get_ticket):
        with pytest.raises(TicketLabError, match="no ticket"):
            lookup(ref)


def test_the_rule_itself():
    assert resolve_ref("abc", ["abc"]) == "abc"  # an exact id is always itself
    assert resolve_ref("ABCDEF", ["abcdef12"]) == "abcdef12"
    with pytest.raises(TicketLabError, match="at least 6"):
        resolve_ref("abcde", ["abcdef12"])
    many = [f"abcdef{i:010d}" for i in range(15)]
    with pytest.raises(TicketLabError, match="and 5 more"):
        resolve_ref("abcdef", many)
