"""The one way a governance record gets written: checked, signed, chained, witnessed.

Before writing: the whole trail must pass the audit, and the signer must be registered with this key,
unrevoked, and hold the role the record needs, all against the registry as it stands now. The
record is appended in one transaction (refused if someone else wrote in between), then its signed
head goes to the witness log.
"""

from __future__ import annotations

from pruning.errors import TicketLabError

from . import chain, people, state, witness
from .audit import require_intact
from .keys import Signer
from .reader import snapshot

VERBS = {"register": "register people", "roles": "change roles", "policy": "pin a policy", "revoke": "revoke keys",
         "create": "sign as a ticket's creator", "decision": "decide on tickets", "promote": "promote tickets",
         "rollback": "roll deployments back"}


class ChainMoved(TicketLabError):
    """Another governance record landed between reading the trail and writing: the checks must be redone."""


def retrying(attempt, tries: int = 5):
    """Run `attempt()` (read, check, write) again when another writer got in between.

    Two dashboard tabs deciding at the same moment both succeed, each on a trail that includes the
    other's record; neither forks the chain. The checks are redone each time, so a record the other
    writer made (a new policy, a revoked key) is taken into account.
    """
    for left in range(tries - 1, -1, -1):
        try:
            return attempt()
        except ChainMoved:
            if left == 0:
                raise


def not_initialised(ledger) -> TicketLabError:
    legacy = state.legacy_history(ledger)
    old = (f" It predates signed governance: its {len(legacy['decisions'])} decisions and "
           f"{len(legacy['deployments'])} deployment moves are kept as unsigned history and count for nothing."
           if any(legacy.values()) else "")
    return TicketLabError(f"ledger {ledger.path} has no signed registry of people yet.{old} Initialise it with "
                          f"`ticketlab init --admin NAME` (NAME's key from `ticketlab keygen NAME`); nothing was recorded.")


def require_actor(st: state.GovState, signer: Signer, kind: str, body: dict | None = None) -> None:
    """A clear refusal when `signer` may not sign a `kind` record now (the audit's rules, in words for the user)."""
    person = st.registry.people.get(signer.name)
    if person is None:
        raise TicketLabError(f"{signer.name} is not registered in this ledger: an admin registers them with "
                             f"`ticketlab people register {signer.name} --key {signer.name}.pub.pem --role ROLE`.")
    if signer.key_id in person.revoked:
        raise TicketLabError(f"{signer.name}'s key {signer.key_id[:12]} was revoked: make a new one with "
                             f"`ticketlab keygen {signer.name} --replace` and have an admin register it.")
    if person.key_id != signer.key_id:
        raise TicketLabError(f"the key at {signer.path} ({signer.key_id[:12]}) is not {signer.name}'s registered key "
                             f"({(person.key_id or 'none')[:12]}); nothing was recorded.")
    need = people.NEEDS.get(kind)
    if kind == "revoke" and (body or {}).get("name") != signer.name:
        need = "admin"
    if need and need not in person.roles:
        raise TicketLabError(f"{signer.name} may not {VERBS.get(kind, kind)}: that needs the {need} role, and "
                             f"{signer.name} holds {', '.join(sorted(person.roles)) or 'no role'}. An admin grants it "
                             f"with `ticketlab people role {signer.name} --add {need}`.")


def write(ledger, signer: Signer, kind: str, body: dict, subject: str | None = None, *, doing: str) -> dict:
    with snapshot(ledger) as db:
        st = state.load(db)
        if kind != "init":
            if st.ledger_id is None:
                raise not_initialised(db)
            require_intact(db, doing)
            require_actor(st, signer, kind, body)
    ledger_id = body["ledger_id"] if kind == "init" else st.ledger_id
    with ledger.transaction() as con:
        if chain.head(con) != st.head:
            raise ChainMoved(f"another governance record was written while this one was prepared; {doing} again.")
        row = chain.append(con, signer, kind, body, subject)
    witness.append(witness.path_for(ledger), witness.signed_head(signer, ledger_id, row))
    return row
