"""The one way a governance record gets written: checked, signed, chained, witnessed.

Before writing: the trail must be intact (`audit.require_intact`), the signer registered with this key,
unrevoked, holding the role the record needs, and the record must keep the rules the audit replays
(`replay.record_problem`), all against the trail as it stands now. The record is appended in one
transaction (redone from the start when someone else wrote in between), then its signed head goes to
the witness log.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from pruning.durable import crash_point
from pruning.errors import TicketLabError

from . import chain, people, replay, state, witness
from .audit import require_intact
from .keys import Signer
from .reader import Snapshot, snapshot

VERBS = {"register": "register people", "roles": "change roles", "policy": "pin a policy", "revoke": "revoke keys",
         "create": "sign as a ticket's creator", "decision": "decide on tickets", "promote": "promote tickets",
         "rollback": "roll deployments back"}


class ChainMoved(TicketLabError):
    """Another governance record landed between reading the trail and writing: the checks must be redone."""


TRIES = 12  # writers take turns on the ledger lock: each round at least one of them lands


def retrying(attempt, tries: int = TRIES):
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
            time.sleep(random.uniform(0.0, 0.05))  # de-synchronise writers that collided


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
    need = people.role_needed(kind, signer.name, body or {})
    if need and need not in person.roles:
        raise TicketLabError(f"{signer.name} may not {VERBS.get(kind, kind)}: that needs the {need} role, and "
                             f"{signer.name} holds {', '.join(sorted(person.roles)) or 'no role'}. An admin grants it "
                             f"with `ticketlab people role {signer.name} --add {need}`.")


# (body, subject) or (body, subject, the policy's review the body was made from: the rules reuse it rather
# than evaluate the policy a second time), or None when nothing is to be written
Prepare = Callable[[Snapshot, state.GovState], "tuple | None"]


def write(ledger, signer: Signer, kind: str, body: dict | Prepare, subject: str | None = None, *,
          doing: str) -> dict | None:
    """Check, sign, append and witness one record; returns the row written.

    `body` is the record's body, or `prepare(snapshot, state) -> (body, subject[, review])` that builds it from the
    trail as it stands (None: what was asked is recorded already, nothing is written). When another
    record lands first, everything is done again on the new trail: the body, the signer's standing, the
    rules (`replay.record_problem`), so concurrent writers all succeed without forking the chain.
    """
    return retrying(lambda: _write_once(ledger, signer, kind, body, subject, doing))


def _write_once(ledger, signer: Signer, kind: str, body, subject: str | None, doing: str) -> dict | None:
    with snapshot(ledger) as db:
        st = state.load(db)
        if kind != "init":
            if st.ledger_id is None:
                raise not_initialised(db)
            report = require_intact(db, doing)
            # who may sign at all comes first (a revocation's body may still name someone else: checked below)
            require_actor(st, signer, kind, {"name": signer.name} if callable(body) else body)
            # the signer's own records that a killed run committed but never witnessed: this run vouches for them
            _witness(db, st, signer, [r for r in st.rows if r["seq"] in report["unwitnessed"]
                                      and (r["actor"], r["key_id"]) == (signer.name, signer.key_id)])
        evaluated = None
        if callable(body):
            prepared = body(db, st)
            if prepared is None:
                return None
            body, subject, *rest = prepared
            evaluated = rest[0] if rest else None
        if kind != "init":
            require_actor(st, signer, kind, body)
        why = replay.record_problem(st.registry, st.trail, kind, signer.name, subject, body, evaluated=evaluated) \
            if kind != "init" else replay.body_problem(kind, body)
        if why:
            raise TicketLabError(f"{why}; nothing was recorded.")
    ledger_id = body["ledger_id"] if kind == "init" else st.ledger_id
    crash_point("governance.prepared")  # checked, not yet written: where concurrent writers collide
    with ledger.transaction() as con:
        if chain.head(con) != st.head:
            raise ChainMoved(f"another governance record was written while this one was prepared; {doing} again.")
        row = chain.append(con, signer, kind, body, subject)
    crash_point("governance.committed")  # the kill -9 matrix stops here: committed, not yet witnessed
    path = witness.configured_path(ledger) if kind == "init" else witness.path_for(ledger, st.rows[0])
    witness.append(path, witness.signed_head(signer, ledger_id, row))
    return row


def _witness(ledger, st: state.GovState, signer: Signer, rows: list[dict]) -> None:
    witness.append(witness.path_for(ledger, st.rows[0]), [witness.signed_head(signer, st.ledger_id, r) for r in rows])


def rewitness(ledger, admin: Signer) -> list[int]:
    """The signed re-witness step: an admin who has checked the records the audit lists as unwitnessed (a
    write killed between its commit and its witness) signs their heads into the witness log. Returns
    their seqs."""
    with snapshot(ledger) as db:
        st = state.load(db)
        if st.ledger_id is None:
            raise not_initialised(db)
        report = require_intact(db, "witness records again")
        require_actor(st, admin, "register")
        if "admin" not in st.registry.people[admin.name].roles:
            raise TicketLabError(f"{admin.name} may not witness others' records: that needs the admin role.")
        rows = [r for r in st.rows if r["seq"] in report["unwitnessed"]]
        _witness(db, st, admin, rows)
    return [r["seq"] for r in rows]
