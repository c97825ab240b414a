"""`diffdeblur sr INPUT... --scale {2,4} -o OUT`: upscale files, folders and globs.

The ``deblur`` command with a super-resolution model: the same inputs, outputs, tiling, sampling options, exit
codes and one-line errors (:func:`~diffdeblur.commands.restore_files`); the model is chosen and checked by
:func:`diffdeblur.tasks.sr_model`, each file is written by :func:`diffdeblur.tasks.upscale_file` (alpha
upscaled, EXIF kept). The parser imports no torch.
"""
from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..options import SR_SCALES
from . import HelpFormatter, add_restore_args, check_tiling, file_options, restore_files, sampling_options

DEFAULT_OUT = "upscaled"
DEFAULT_SCALE = 4  # as diffdeblur.upscale()


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("sr", help="upscale images 2 or 4 times (super-resolution)", formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files, folders or globs")
    p.add_argument("--scale", type=int, default=DEFAULT_SCALE,
                   help=f"upscaling factor: {' or '.join(map(str, SR_SCALES))}")
    add_restore_args(p, DEFAULT_OUT, None, "a super-resolution .safetensors checkpoint or a model name with shipped "
                     "weights (default: the shipped sr-x2 / sr-x4 weights for --scale); its scale must be --scale")
    p.add_argument("--mask", help=argparse.SUPPRESS)  # refused in one line: masks are for `diffdeblur remove`
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..io import plan_outputs
    from ..tasks import check_scale, sr_model, sr_weights_name, upscale_file

    if args.mask is not None:
        raise ConfigError("--mask: super-resolution takes no mask (a mask is for `diffdeblur remove`)")
    try:
        check_scale(args.scale)
    except ConfigError as exc:
        raise ConfigError(f"--scale {args.scale}: {exc}") from None
    plan = plan_outputs(args.inputs, args.output)  # before any work
    model = sr_model(args.scale, args.model, args.device)
    check_tiling(args, model)
    named = argparse.Namespace(**{**vars(args), "model": args.model or sr_weights_name(args.scale)})  # for messages
    kwargs = {**file_options(args), **sampling_options(named, model)}
    return restore_files("sr", "upscaled", plan, args,
                         lambda src, dest: upscale_file(src, dest, args.scale, model, **kwargs))
