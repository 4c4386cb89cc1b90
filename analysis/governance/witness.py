"""The witness log: the signed chain head after every governance write, kept outside the DuckDB file.

Deleting the newest records, or restoring an older copy of `ledger.duckdb`, leaves a ledger whose
chain is internally consistent; what gives it away is a head seen earlier that the ledger no longer
has. Every governance write appends that head here, and every export bundle carries one. Each head
is signed by whoever made the write, so the witness log cannot be extended with invented heads either.

Where it lives is chosen once, at `init` (`$TICKETLAB_WITNESS`, e.g. another disk or an append-only
mount; default next to the ledger, `<ledger>.witness.jsonl`), and signed into record #1: a process
cannot witness its writes in a private copy. Every record must have its own head here; one that has
none (a write killed after its commit, or a witness bypassed) fails the audit until it is witnessed
again by a signed step (`records.rewitness`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pruning import durable
from pruning.errors import TicketLabError

from ..ledger import governance_store
from . import keys
from .chain import body_of, canonical
from .keys import Signer

ENV = "TICKETLAB_WITNESS"
FIELDS = ("ledger_id", "seq", "head", "actor", "key_id", "signature")


def configured_path(ledger) -> Path:
    """Where `init` puts the witness log: `$TICKETLAB_WITNESS`, else next to the ledger."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser().resolve()
    p = Path(ledger.path)
    return p.with_name(p.name + ".witness.jsonl")


def pinned_value(ledger, first: dict | None = None) -> str | None:
    """The witness location the first admin signed into record #1 (None for ledgers initialised before it
    was pinned, which keep using `configured_path`)."""
    if first is None:
        first = governance_store.first_record(ledger)
    if first is None or first["kind"] != "init":
        return None
    value = body_of(first).get("witness")
    return value if isinstance(value, str) and value else None


def to_pin(ledger, path: Path) -> str:
    """What record #1 stores: relative to the ledger's folder when the log lives there (copies of the state
    folder keep their own witness), else the absolute path."""
    try:
        return str(path.relative_to(Path(ledger.path).parent))
    except ValueError:
        return str(path)


def path_for(ledger, first: dict | None = None) -> Path:
    """The witness log of this ledger: the location pinned in record #1, never one taken per process. A
    `$TICKETLAB_WITNESS` that points elsewhere is refused, not followed: a write witnessed in a private
    copy would be no witness."""
    pinned = pinned_value(ledger, first)
    if pinned is None:
        return configured_path(ledger)
    path = (Path(ledger.path).parent / pinned).resolve()
    env = os.environ.get(ENV)
    if env and Path(env).expanduser().resolve() != path:
        raise TicketLabError(f"${ENV} points at {env}, but this ledger's witness log is pinned at {path} (record #1, "
                             f"signed by its first admin): unset ${ENV}; nothing was recorded.")
    return path


def head_payload(ledger_id: str, seq: int, head: str) -> bytes:
    return canonical({"ledger_id": ledger_id, "seq": seq, "head": head})


def signed_head(signer: Signer, ledger_id: str, row: dict) -> dict:
    return {"ledger_id": ledger_id, "seq": row["seq"], "head": row["row_hash"], "kind": row["kind"],
            "actor": signer.name, "key_id": signer.key_id, "signed_at": str(row["signed_at"]),
            "signature": signer.sign(head_payload(ledger_id, row["seq"], row["row_hash"]))}


def append(path: Path, entry: dict | list[dict]) -> None:
    """One line per head, fsynced (once for several): a witness that a crash can lose is no witness. A line
    a crash left unfinished is closed first, so the new head is never glued onto it."""
    entries = entry if isinstance(entry, list) else [entry]
    if not entries:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        lead = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
        os.write(fd, lead + "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries).encode())
        os.fsync(fd)
    except OSError as e:
        durable.raise_if_full(e, path)
        raise
    finally:
        os.close(fd)


def scan(path: Path) -> tuple[list[dict], list[str]]:
    """(the witnessed heads, a note per line that is not a head). Every line counts, the last one too when
    a crash cut its newline; a line that is not a head (a torn append, something written by hand) is named
    and skipped, so one bad line neither hides the heads after it nor fails every audit from then on."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return [], []
    except OSError as e:
        raise TicketLabError(f"witness log {path} cannot be read ({e}); restore it from a backup.") from e
    heads, bad = [], []
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not all(k in entry for k in FIELDS):
                raise ValueError("missing fields")
            if not isinstance(entry["seq"], int) or not all(isinstance(entry[k], str) for k in FIELDS if k != "seq"):
                raise ValueError("fields of the wrong type")
        except ValueError as e:
            bad.append(f"witness log {path} line {i} is not a signed head ({str(e)[:80]}): skipped")
            continue
        heads.append(entry)
    return heads, bad


def read(path: Path) -> list[dict]:
    return scan(path)[0]


def key_for(registry, entry: dict) -> str | None:
    """The public key that signed a head: any key the actor ever had (a later revocation does not unsign it)."""
    person = registry.people.get(entry.get("actor"))
    return person.keys.get(entry.get("key_id")) if person else None


def witnessed(state, heads: list[dict]) -> set[int]:
    """The seqs of records that have their own genuine head (right ledger, hash and signature)."""
    by_seq = {r["seq"]: r["row_hash"] for r in state.rows}
    out = set()
    for entry in heads:
        if entry["ledger_id"] == state.ledger_id and by_seq.get(entry["seq"]) == entry["head"]:
            pem = key_for(state.registry, entry)
            if pem and keys.verify(pem, head_payload(entry["ledger_id"], entry["seq"], entry["head"]), entry["signature"]):
                out.add(entry["seq"])
    return out


def check(state, heads: list[dict], source: str, confirmed: set[int] = frozenset()) -> list[str]:
    """Problems with the ledger against heads seen elsewhere (the witness log, a bundle): each head must be
    a genuine signed head of this ledger, and the ledger must still hold that record with that hash.
    `confirmed`: seqs `witnessed` already found genuine and present (not verified twice)."""
    problems: list[str] = []
    by_seq = {r["seq"]: r for r in state.rows}
    last = state.head[0]
    for entry in heads:
        if entry["seq"] in confirmed and by_seq[entry["seq"]]["row_hash"] == entry["head"] \
                and entry["ledger_id"] == state.ledger_id:
            continue
        where = f"{source} (head #{entry['seq']}, {entry.get('kind', '?')} by {entry['actor']} at {entry.get('signed_at')})"
        if entry["ledger_id"] != state.ledger_id:
            problems.append(f"{where} belongs to ledger {entry['ledger_id']}, not this one ({state.ledger_id})")
            continue
        pem = key_for(state.registry, entry)
        if pem is None or not keys.verify(pem, head_payload(entry["ledger_id"], entry["seq"], entry["head"]),
                                          entry["signature"]):
            problems.append(f"{where} is not signed by a registered key: it was edited or invented")
            continue
        if entry["seq"] > last:
            problems.append(f"the ledger ends at record #{last}, but {where} saw record #{entry['seq']}: the newest "
                            f"records were deleted, or an older copy of the ledger was restored")
        elif by_seq.get(entry["seq"], {}).get("row_hash") != entry["head"]:
            problems.append(f"the ledger's record #{entry['seq']} is not the one {where} saw: the ledger was rewritten, "
                            f"or an older copy was restored and written to")
        else:
            continue
        break  # the first divergence says it; the later heads repeat it
    return problems
