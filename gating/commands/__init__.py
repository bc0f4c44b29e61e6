"""CLI subcommands; each module has `register(subparsers)` and keeps its logic in the core."""
