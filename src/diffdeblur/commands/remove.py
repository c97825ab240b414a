"""`diffdeblur remove INPUT... (--mask MASK | --box x,y,w,h ...) -o OUT`: remove objects and fill the hole.

The ``deblur`` command with an object-removal model: the same inputs, outputs, tiling, sampling options, exit
codes and one-line errors (:func:`~diffdeblur.commands.restore_files`). The region to remove is a mask image
(any mode; white = remove, thresholded at 50 %), boxes, or both (their union); one mask serves several inputs of
its size. The mask is read and checked before any work (:func:`diffdeblur.tasks.load_mask`); each file is
written by :func:`diffdeblur.tasks.remove_file` (pixels outside the region as they were read). The parser
imports no torch.
"""
from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..options import REMOVE_WEIGHTS
from . import HelpFormatter, add_restore_args, check_tiling, file_options, restore_files, sampling_options

DEFAULT_OUT = "removed"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("remove", help="remove objects marked by a mask or boxes and fill the hole (inpainting)",
                       formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files, folders or globs (one --mask serves inputs of its size)")
    p.add_argument("--mask", help="mask image of the input's size, any mode: white (above 50 %%) = remove, "
                                  "transparent = keep")
    p.add_argument("--box", action="append", default=[], metavar="X,Y,W,H",
                   help="a rectangle to remove: left, top, width, height in pixels (repeatable; with --mask: both)")
    add_restore_args(p, DEFAULT_OUT, None, "an object-removal .safetensors checkpoint or a model name with shipped "
                     f"weights (default: the shipped '{REMOVE_WEIGHTS}' weights)")
    p.set_defaults(func=run)
    return p


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x,y,w,h"`` -> (x, y, w, h): four integers, x, y >= 0, w, h >= 1; else a one-line ConfigError."""
    parts = [t.strip() for t in text.split(",")]
    try:
        x, y, w, h = (int(t) for t in parts)
    except ValueError:
        raise ConfigError(f"--box {text}: expected X,Y,W,H (four integers: left, top, width, height)") from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise ConfigError(f"--box {text}: X and Y must be >= 0, W and H >= 1")
    return x, y, w, h


def run(args: argparse.Namespace) -> int:
    from ..io import plan_outputs
    from ..tasks import load_mask, removal_model, remove_file

    if args.mask is None and not args.box:
        raise ConfigError("give what to remove: --mask MASK.png (white = remove) or --box X,Y,W,H")
    boxes = [parse_box(b) for b in args.box]
    plan = plan_outputs(args.inputs, args.output)  # before any work
    if args.mask is not None:
        load_mask(args.mask)  # unreadable, empty or full: one line before any work
    model = removal_model(args.model, args.device)
    check_tiling(args, model)
    named = argparse.Namespace(**{**vars(args), "model": args.model or REMOVE_WEIGHTS})  # for messages
    kwargs = {**file_options(args), **sampling_options(named, model)}
    return restore_files("remove", "inpainted", plan, args,
                         lambda src, dest: remove_file(src, dest, args.mask, boxes, model, **kwargs))
