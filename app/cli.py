"""`ticketlab` command line. Each subcommand is a module in `app/commands/` with `add_parser` and `run`.

Errors the user can fix (`TicketLabError`) print one line and exit 2; nothing else is caught.
Before each command the ledger is tidied (`Ledger.maintain`): results a locked ledger left pending
are recorded and runs of processes that died are marked failed.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from pruning import settings
from pruning.errors import TicketLabError

from . import commands


def common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--data-dir", help="reference data folder (benchmarks/, corpora/); default $TICKETLAB_DATA_DIR "
                                      "or data/reference")
    p.add_argument("--state-dir", help="local state folder (models, tickets, ledger); default $TICKETLAB_STATE_DIR or ./data")
    p.add_argument("--ledger", help="ledger DuckDB file; default <state-dir>/ledger.duckdb")
    return p


class _Refusing(argparse.ArgumentParser):
    """A parser whose usage errors are one `TicketLabError` (for requests built inside the dashboard)."""

    def error(self, message: str):
        raise TicketLabError(message)


def build_parser(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = parser_class(prog="ticketlab", description="Prune LLMs into lottery tickets, evaluate, "
                                     "review and export them.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parent = common_parser()
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        for p in module.add_parser(sub, parent) or []:
            p.set_defaults(_module=module)
    return parser


def request_of(request_type, args: argparse.Namespace, **values):
    """A use case's request from parsed flags: each request field from the flag of the same name (dest)."""
    names = [n for n in request_type.model_fields if hasattr(args, n) and n not in values]
    return request_type.build(**{n: getattr(args, n) for n in names}, **values)


def request_for(argv: list[str]):
    """The typed use-case request a command line spells, built by the command's own `request_from_args`
    (what a dashboard job stores). Usage errors are one `TicketLabError` line."""
    args = build_parser(_Refusing).parse_args(argv)
    args._argv = argv  # what the ledger records as the command (`ticketlab imp ...`)
    build = getattr(args._module, "request_from_args", None)
    request = build(args) if build is not None else None
    if request is None:
        raise TicketLabError(f"`ticketlab {args.command}` has no use case a job can run.")
    return request


def apply_common(args: argparse.Namespace) -> None:
    import os

    if getattr(args, "state_dir", None):
        settings.set_state_dir(args.state_dir)
    if getattr(args, "data_dir", None):
        settings.set_data_dir(args.data_dir)
    if getattr(args, "ledger", None):
        os.environ["TICKETLAB_LEDGER"] = args.ledger


def maintain_ledger() -> None:
    """Best effort and quick: a ledger that is locked, damaged or missing is left to the command itself,
    which reports it if it needs the ledger (and `ticketlab methods` must work without one)."""
    path = settings.ledger_path()
    if not path.exists():
        return
    from analysis.ledger import Ledger

    try:
        Ledger(path, wait_s=0.5).maintain()
    except TicketLabError:
        pass


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_common(args)
    try:
        maintain_ledger()
        return int(args._module.run(args) or 0)
    except TicketLabError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
