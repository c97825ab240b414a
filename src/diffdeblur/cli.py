"""The ``diffdeblur`` command line: a thin layer over the library.

Each subcommand lives in ``diffdeblur.commands.<name>`` (``add_parser`` + ``run``), imported below.
Errors the user can fix (:class:`~diffdeblur.errors.DiffdeblurError`) are reported as one line on
stderr with a non-zero exit code; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

from .commands import deblur, eval, models, synth, trace, train
from .errors import DiffdeblurError
from .runtime import tune_allocator
from .version import __version__

COMMANDS = (deblur, eval, models, synth, trace, train)  # each: add_parser(sub) + run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffdeblur", description="Efficient dynamic-scene image deblurring with diffusion models.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"diffdeblur {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    tune_allocator()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("diffdeblur: interrupted", file=sys.stderr)
        return 130
    except DiffdeblurError as exc:  # errors the user can fix: one line; anything else is a bug (traceback)
        print(f"diffdeblur {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
