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


def metric_names(text: str) -> tuple[str, ...]:
    """argparse type of ``--metrics``: comma-separated names of :data:`diffdeblur.perception.PERCEPTION_METRICS`."""
    from ..errors import ConfigError
    from ..perception import parse_metrics

    try:
        return parse_metrics(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_metrics_arg(p: argparse.ArgumentParser) -> None:
    """``--metrics a,b,c`` as ``eval`` and ``bench`` take it."""
    from ..perception import DEFAULT_METRICS, PERCEPTION_METRICS

    p.add_argument("--metrics", type=metric_names, default=",".join(DEFAULT_METRICS),
                   help="comma-separated measures of the restored and the blurry images, from: "
                        f"{', '.join(PERCEPTION_METRICS)}. Lower is better for "
                        f"{', '.join(n for n, m in PERCEPTION_METRICS.items() if not m.higher_is_better)}; "
                        "ms-ssim, vif and blur-effect need the metrics extra, niqe the niqe extra "
                        "(docs/methods/perception.md)")
