"""CLI subcommands: each module defines ``add_parser(subparsers)`` that registers one subcommand
with ``parser.set_defaults(func=run)``, where ``run(args) -> int`` returns the exit code."""
