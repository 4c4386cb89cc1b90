"""The witness log: the signed chain head after every governance write, kept outside the DuckDB file.

Deleting the newest records, or restoring an older copy of `ledger.duckdb`, leaves a ledger whose
chain is internally consistent; what gives it away is a head seen earlier that the ledger no longer
has. Every governance write appends that head here (default: next to the ledger,
`<ledger>.witness.jsonl`; `$TICKETLAB_WITNESS` moves it, e.g. to another disk or an append-only
mount), and every export bundle carries one. Each head is signed by whoever made the write, so the
witness log cannot be extended with invented heads either.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pruning.errors import TicketLabError

from . import keys
from .chain import canonical
from .keys import Signer


def path_for(ledger) -> Path:
    env = os.environ.get("TICKETLAB_WITNESS")
    if env:
        return Path(env).expanduser()
    p = Path(ledger.path)
    return p.with_name(p.name + ".witness.jsonl")


def head_payload(ledger_id: str, seq: int, head: str) -> bytes:
    return canonical({"ledger_id": ledger_id, "seq": seq, "head": head})


def signed_head(signer: Signer, ledger_id: str, row: dict) -> dict:
    return {"ledger_id": ledger_id, "seq": row["seq"], "head": row["row_hash"], "kind": row["kind"],
            "actor": signer.name, "key_id": signer.key_id, "signed_at": str(row["signed_at"]),
            "signature": signer.sign(head_payload(ledger_id, row["seq"], row["row_hash"]))}


def append(path: Path, entry: dict) -> None:
    """One line per head, fsynced: a witness that a crash can lose is no witness."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path) -> list[dict]:
    """The witnessed heads; a line that is not a head is a corrupt witness log (one clear error)."""
    out = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise TicketLabError(f"witness log {path} cannot be read ({e}); restore it from a backup.") from e
    lines = text.split("\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if i == len(lines):
            break  # no newline after it: a write interrupted by a crash; the next write's head covers it
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not all(k in entry for k in ("ledger_id", "seq", "head", "actor",
                                                                             "key_id", "signature")):
                raise ValueError("missing fields")
        except ValueError as e:
            raise TicketLabError(f"witness log {path} line {i} is corrupt ({e}): restore the file from a backup (or "
                                 f"point $TICKETLAB_WITNESS at the right one); nothing was recorded.") from e
        out.append(entry)
    return out


def key_for(registry, entry: dict) -> str | None:
    """The public key that signed a head: any key the actor ever had (a later revocation does not unsign it)."""
    person = registry.people.get(entry.get("actor"))
    return person.keys.get(entry.get("key_id")) if person else None


def check(state, heads: list[dict], source: str) -> list[str]:
    """Problems with the ledger against heads seen elsewhere (the witness log, a bundle): each head must be
    a genuine signed head of this ledger, and the ledger must still hold that record with that hash."""
    problems: list[str] = []
    by_seq = {r["seq"]: r for r in state.rows}
    last = state.head[0]
    for entry in heads:
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
