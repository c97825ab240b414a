"""The ``diffdeblur`` command line: a thin layer over the library.

Each subcommand lives in ``diffdeblur.commands.<name>`` (``add_parser`` + ``run``). Errors the
user can fix are reported as one line on stderr with a non-zero exit code, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("deblur", "eval", "models", "synth", "trace", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffdeblur", description="Efficient dynamic-scene image deblurring with diffusion models.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"diffdeblur {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"diffdeblur.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .runtime import tune_allocator

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
    except (ValueError, KeyError, OSError) as exc:  # user-facing errors: one line, no traceback
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"diffdeblur {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
