"""`ticketlab app`: start the Streamlit dashboard (headless, no usage statistics) on this project's
state directory, data directory and ledger."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pruning import settings
from pruning.errors import TicketLabError
from pruning.models import DEFAULT_MODEL

MAIN = Path(__file__).resolve().parents[1] / "dashboard" / "main.py"


def add_parser(sub, parent):
    p = sub.add_parser("app", parents=[parent], help="start the dashboard in the browser")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="the model the dashboard starts on: embedded name, Hugging Face id or local directory")
    return [p]


def streamlit_command(host: str, port: int, model: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start the dashboard server."""
    path = Path(model).expanduser()
    if model.startswith((".", "/", "~")) or path.exists():
        if not (path / "config.json").is_file():
            raise TicketLabError(f"--model {model}: not a model directory (expected config.json inside).")
        model = str(path.resolve())
    env = dict(os.environ)
    # A background job does the heavy work with every thread it is given; the server itself only draws,
    # so one thread keeps it from competing with the job for the cores.
    env["TICKETLAB_JOB_THREADS"] = env.get("TICKETLAB_JOB_THREADS") or env.get("OMP_NUM_THREADS") or str(os.cpu_count() or 1)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "TICKETLAB_STATE_DIR": str(settings.state_dir()), "TICKETLAB_DATA_DIR": str(settings.data_dir()),
                "TICKETLAB_LEDGER": str(settings.ledger_path()), "TICKETLAB_APP_MODEL": model,
                "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"})
    cmd = [sys.executable, "-m", "streamlit", "run", str(MAIN),
           "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.address", host, "--server.port", str(port),
           "--server.fileWatcherType", "none", "--server.runOnSave", "false",
           "--client.toolbarMode", "minimal", "--theme.base", "light"]
    return cmd, env


def run(args) -> int:
    """Become the Streamlit server (exec): TERM, HUP and INT then reach the server itself, so stopping
    `ticketlab app` by any of them stops the server and frees the port; a wrapper process that dies alone
    would leave the server running on it."""
    cmd, env = streamlit_command(args.host, args.port, args.model)
    print(f"Ticket Lab dashboard on http://{args.host}:{args.port}  (state {env['TICKETLAB_STATE_DIR']})", flush=True)
    sys.stderr.flush()
    os.chdir(MAIN.parents[2])
    os.execve(cmd[0], cmd, env)
    return 0  # not reached: the server replaced this process
