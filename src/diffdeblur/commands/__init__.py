"""CLI subcommands: each module defines ``add_parser(subparsers)`` that registers one subcommand
with ``parser.set_defaults(func=run)``, where ``run(args) -> int`` returns the exit code.

This module holds what several commands share: the help formatter, argument types, the option
groups (tiling, engine, sampling, metrics) and the batch of image files that ``deblur``, ``sr`` and
``remove`` write (:func:`add_restore_args`, :func:`restore_files`). It imports no torch (``--help`` and
argument errors answer at once); what a helper needs from the library is imported when it is called.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError, ImageError
from ..io import IMAGE_EXTENSIONS, OutputPlan, output_folder
from ..options import DEFAULT_OVERLAP, DEFAULT_TILE, ENGINES, SAMPLER_NAMES

if TYPE_CHECKING:
    from torch import nn


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


def add_tiling_args(p: argparse.ArgumentParser, overlap: bool = True) -> None:
    """``--tile`` (and ``--overlap``) with the library's defaults (:data:`diffdeblur.options.DEFAULT_TILE`):
    the same for every command that restores images (deblur, eval, bench)."""
    p.add_argument("--tile", type=tile_size, default=DEFAULT_TILE,
                   help="tile size in pixels; 0 = whole image at once; auto (default) = whole image up to about "
                        "1 MP (1280x720), 512-pixel tiles above")
    if overlap:
        p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="tile overlap in pixels")


def check_tiling(args: argparse.Namespace, model: nn.Module) -> None:
    """--tile / --overlap against each other and the model's size multiple (ConfigError)."""
    from ..tiling import check_tile

    try:
        check_tile(args.tile, args.overlap, int(getattr(model, "size_multiple", 1)))
    except ConfigError as exc:
        raise ConfigError(f"--tile {args.tile} / --overlap {args.overlap}: {exc}") from None


def add_engine_arg(p: argparse.ArgumentParser) -> None:
    """``--engine``: how the network runs (:mod:`diffdeblur.engines`)."""
    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="how the network runs (auto: bf16 autocast on CUDA; on the CPU the engine measured fastest "
                        "within 0.05 dB of fp32 on this machine, timed once per network and cached; a name here skips "
                        "the measuring; onnx needs the onnx extra, openvino the openvino package; see diffdeblur.engines)")


def add_sampling_args(p: argparse.ArgumentParser, averaging: bool = True) -> None:
    """Options passed to a diffusion model's restore(); a model without them refuses them by name."""
    g = p.add_argument_group("diffusion sampling (diffusion models only)")
    g.add_argument("--steps", type=positive_int, default=None, help="number of sampling steps (default: the model's)")
    g.add_argument("--sampler", default=None, choices=list(SAMPLER_NAMES), help="sampler (default: the model's)")
    g.add_argument("--eta", type=float, default=None, help="DDIM eta (default: 0 = deterministic)")
    if averaging:
        g.add_argument("--num-samples", type=positive_int, default=None, help="average this many samples (default: 1)")
    g.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")


def sampling_options(args: argparse.Namespace, model: nn.Module | None = None) -> dict:
    """The sampling options given on the command line (those left unset are not passed).

    With ``model``: a ConfigError names the first option that the model does not take (a
    regression model has no steps), instead of failing on every image."""
    opts = {k: getattr(args, k, None) for k in ("steps", "sampler", "eta", "num_samples")}
    opts = {k: v for k, v in opts.items() if v is not None}
    if model is not None:
        from ..models.protocol import model_options

        allowed = model_options(model)
        bad = [k for k in opts if k not in allowed]
        if bad:
            takes = [f"--{k.replace('_', '-')}" for k in opts if k in allowed] or ["none of the sampling options"]
            raise ConfigError(f"--{bad[0].replace('_', '-')} does not apply to model '{args.model}' "
                              f"({type(model).__name__} takes {', '.join(takes)}; drop the option)")
    return opts


def add_restore_args(p: argparse.ArgumentParser, default_out: str, model_default: str | None, model_help: str) -> None:
    """What every command that writes restored image files takes besides its inputs: ``-o``, ``--model``,
    ``--device``, tiling, ``--quiet``, ``--engine`` and the sampling options (``deblur``, ``sr``, ``remove``)."""
    p.add_argument("-o", "--output", default=default_out,
                   help=f"output folder, or a file name for one input ({', '.join(IMAGE_EXTENSIONS)})")
    p.add_argument("--model", default=model_default, help=model_help)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    add_tiling_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_engine_arg(p)
    add_sampling_args(p)


def file_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`diffdeblur.inference.deblur_file` given on the command line (those of
    :func:`add_restore_args`, without the sampling options: :func:`sampling_options`)."""
    return {"tile": args.tile, "overlap": args.overlap, "show_progress": not args.quiet, "seed": args.seed,
            "engine": args.engine}


def restore_files(command: str, verb: str, plan: OutputPlan, args: argparse.Namespace,
                  work: Callable[[Path, Path], Any]) -> int:
    """Run ``work(src, dest)`` on every job of ``plan`` and return the exit code (1 when anything failed).

    Each input that gets no output (the plan's error lines, and every ImageError of ``work``) is reported in
    one line ``diffdeblur COMMAND: error: ...``, and the batch goes on; a summary line follows (``VERB N
    image(s) into OUT``). The output folder is made for the work, and removed again when the run made it and
    nothing was written (:func:`diffdeblur.io.output_folder`)."""
    from tqdm.auto import tqdm

    for e in plan.errors:
        print(f"diffdeblur {command}: error: {e}", file=sys.stderr)
    done = failed = 0
    with output_folder(plan.folder):
        for src, dest in tqdm(plan.jobs, desc="images", disable=args.quiet or len(plan.jobs) < 2):
            try:
                work(src, dest)
                done += 1
            except ImageError as exc:
                failed += 1
                print(f"diffdeblur {command}: error: {exc}", file=sys.stderr)
    failed += len(plan.errors)
    where = args.output if plan.to_file else f"{plan.folder}/"
    tail = f"; {failed} failed" if failed else ""
    print(f"{verb} {done} image(s) into {where}{tail}" if done else f"no image {verb}{tail}")
    return 1 if failed else 0
