"""One module per subcommand: `add_parser(subparsers, parent) -> list[parser]` and `run(args) -> int`."""
