"""`diffdeblur deblur INPUT... -o OUT`: deblur files, folders and globs (or the built-in example).

Thin: the inputs and where each output goes come from :func:`diffdeblur.io.plan_outputs`, the work
from :func:`diffdeblur.inference.deblur_file`; this module parses, prints and picks the exit code.
The parser imports no torch (``--help`` and argument errors answer at once); what runs a model is
imported when it runs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..io import names_image_file, output_folder, plan_outputs, write_image
from ..options import DEFAULT_MODEL
from . import HelpFormatter, add_restore_args, check_tiling, file_options, restore_files, sampling_options

DEFAULT_OUT = "deblurred"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("deblur", help="deblur images (the built-in example when no input is given)",
                       formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="*", help="image files, folders or globs; none = the built-in example")
    add_restore_args(p, DEFAULT_OUT, DEFAULT_MODEL, "a .safetensors checkpoint, or shipped weights: 'default' or a "
                     "model name (see `diffdeblur models`)")
    p.set_defaults(func=run)
    return p


def _run_example(model, args: argparse.Namespace, out: Path) -> int:
    from ..example import builtin_example
    from ..figures import side_by_side
    from ..inference import deblur
    from ..metrics import psnr, ssim

    blur, sharp, source = builtin_example()
    with output_folder(out):  # checked before the work; removed again if it fails
        restored = deblur(blur, model, tile=args.tile, overlap=args.overlap, seed=args.seed, engine=args.engine,
                          **sampling_options(args, model))
        p_in, p_out = psnr(blur, sharp), psnr(restored, sharp)
        panel = side_by_side([blur, restored, sharp], [f"blurry {p_in:.2f} dB", f"deblurred {p_out:.2f} dB", "sharp"])
        write_image(out / "example_blurry.png", blur)
        write_image(out / "example_sharp.png", sharp)
        write_image(out / "example_deblurred.png", restored)
        write_image(out / "example_side_by_side.png", panel / 255.0)
    print(f"built-in example ({source['dataset']} frame {source['frame']}, a real blurry crop): blurry "
          f"{p_in:.2f} dB / {ssim(blur, sharp):.4f} -> deblurred {p_out:.2f} dB / {ssim(restored, sharp):.4f} "
          f"(PSNR / SSIM vs sharp; {p_out - p_in:+.2f} dB); side by side: {out}/example_side_by_side.png")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..inference import deblur_file, load_model

    if not args.inputs and names_image_file(args.output):
        raise ConfigError(f"-o {args.output}: the built-in example writes several images; give an output folder")
    plan = plan_outputs(args.inputs, args.output) if args.inputs else None  # before any work
    model = load_model(args.model, args.device)
    check_tiling(args, model)
    options = sampling_options(args, model)
    if plan is None:
        return _run_example(model, args, Path(args.output))
    kwargs = {**file_options(args), **options}
    return restore_files("deblur", "deblurred", plan, args, lambda src, dest: deblur_file(src, dest, model, **kwargs))
