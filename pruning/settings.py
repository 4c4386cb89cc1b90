"""Where things live: the reference data (benchmarks, corpora) and the local state directory.

One setting each, so tests, the CLI and the dashboard agree:
- reference data: `TICKETLAB_DATA_DIR` (or the CLI's `--data-dir`), default `<state>/reference`
  (which `make` links to `../shared/data`);
- local state (ledger, model cache, tickets, exports): `TICKETLAB_STATE_DIR`, default `./data`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import TicketLabError

_overrides: dict[str, Path] = {}


def set_data_dir(path: str | os.PathLike) -> None:
    _overrides["data"] = Path(path).expanduser().resolve()


def set_state_dir(path: str | os.PathLike) -> None:
    _overrides["state"] = Path(path).expanduser().resolve()


def state_dir() -> Path:
    if "state" in _overrides:
        return _overrides["state"]
    return Path(os.environ.get("TICKETLAB_STATE_DIR", "data")).expanduser().resolve()


def data_dir() -> Path:
    if "data" in _overrides:
        return _overrides["data"]
    env = os.environ.get("TICKETLAB_DATA_DIR")
    return Path(env).expanduser().resolve() if env else state_dir() / "reference"


def data_file(relative: str) -> Path:
    """A reference file under the data setting; a missing one names the exact path looked for."""
    path = data_dir() / relative
    if not path.exists():
        raise TicketLabError(
            f"reference data file not found: {path}. Set TICKETLAB_DATA_DIR (or --data-dir) to the folder "
            f"holding benchmarks/ and corpora/ (run `make install` to link ../shared/data as data/reference)."
        )
    return path


def models_dir() -> Path:
    return state_dir() / "models"


def tickets_dir() -> Path:
    return state_dir() / "tickets"


def ledger_path() -> Path:
    return Path(os.environ.get("TICKETLAB_LEDGER", state_dir() / "ledger.duckdb")).expanduser().resolve()
