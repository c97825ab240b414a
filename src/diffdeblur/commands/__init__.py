"""CLI subcommands: each module defines ``add_parser(subparsers)`` that registers one subcommand
with ``parser.set_defaults(func=run)``, where ``run(args) -> int`` returns the exit code."""

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default once: not when the help text already says it, and not for
    options whose default is "unset" (None, an empty list) or a switch that is off."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default in (None, False, argparse.SUPPRESS) or action.default == []
        if "(default" in text or unset:
            return text
        return super()._get_help_string(action)


def tile_size(text: str) -> int | str:
    """argparse type of ``--tile``: ``auto`` or an integer (its range is checked with the model's size multiple)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer, got '{text}'") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
