"""Screenshots of every dashboard page with Playwright and Debian's chromium (no browser download).

    python -m app.dashboard.screenshots --out docs/screenshots [--state DIR] [--model M] [--port P]

Starts `ticketlab app` on the given state directory, opens each page headless, waits until
Streamlit has finished running the script and the Plotly figures are drawn, and saves one PNG per
page. The browser test uses the same helpers.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGES = {"models": "", "prune": "prune", "jobs": "jobs", "survival": "survival", "benchmarks": "benchmarks",
         "experiments": "experiments", "review": "review", "export": "export"}
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, model: str, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """`ticketlab app` in its own process group, waited on until its health check answers."""
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "app", "--port", str(port), "--model", model],
                                cwd=REPO, env=env or dict(os.environ), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        if log:
            out.close()  # the server holds its own copy
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited with {proc.returncode}" + (f"; see {log}" if log else ""))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError("the dashboard did not answer within 90 s")


def stop_server(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def settle(page, timeout_ms: int = 60_000) -> None:
    """Until the script run is over (no 'running' status widget) and figures have drawn."""
    page.wait_for_selector("h1", timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    quiet = 0
    while time.monotonic() < deadline and quiet < 3:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        quiet = 0 if running else quiet + 1
        page.wait_for_timeout(250)
    page.wait_for_timeout(800)  # Plotly's own first draw


def snapshot(page, out: Path, height: int | None = None) -> Path:
    """The whole page (Streamlit scrolls inside its main block, so the viewport grows to fit it), or its
    top `height` pixels."""
    size = dict(page.viewport_size)
    full = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], "
                         "[data-testid=\"stAppViewContainer\"], section')].map(e => e.scrollHeight), "
                         "document.body.scrollHeight)")
    want = min(int(full) + 40, 8000) if height is None else height
    if want != size["height"]:
        page.set_viewport_size({"width": size["width"], "height": want})
        page.wait_for_timeout(600)  # Plotly resizes to the new layout
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out))
    page.set_viewport_size(size)
    return out


def shoot(page, base: str, path: str, out: Path, height: int | None = None) -> Path:
    page.goto(f"{base}/{path}")
    settle(page)
    return snapshot(page, out, height)


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    p = argparse.ArgumentParser(prog="python -m app.dashboard.screenshots", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/screenshots")
    p.add_argument("--state", help="state directory (default $TICKETLAB_STATE_DIR or ./data)")
    p.add_argument("--model", default=os.environ.get("TICKETLAB_APP_MODEL", "smollm2-135m-instruct"))
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--query", action="append", default=[], help="PAGE:QUERY, e.g. survival:ticket=ab12&other=cd34")
    p.add_argument("--height", type=int, default=1100, help="crop each shot to this many pixels (0: full page)")
    args = p.parse_args(argv)
    env = dict(os.environ)
    if args.state:
        env["TICKETLAB_STATE_DIR"] = str(Path(args.state).resolve())
        env.pop("TICKETLAB_LEDGER", None)
    queries = dict(q.split(":", 1) for q in args.query)
    port = args.port or free_port()
    server = start_server(port, args.model, env)
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
            for name, path in PAGES.items():
                if not (REPO / "app" / "dashboard" / "views" / f"{path or 'models'}.py").exists():
                    continue
                query = queries.get(name)
                target = shoot(page, f"http://127.0.0.1:{port}", path + (f"?{query}" if query else ""),
                               Path(args.out) / f"{name}.png", height=args.height or None)
                print(target)
            browser.close()
    finally:
        stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
