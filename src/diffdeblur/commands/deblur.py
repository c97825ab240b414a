"""`diffdeblur deblur INPUT... -o OUT`: deblur files, folders and globs (or the built-in example).

Thin: the inputs and where each output goes come from :func:`diffdeblur.io.plan_outputs`, the work
from :func:`diffdeblur.inference.deblur_file`; this module parses, prints and picks the exit code.
The parser imports no torch (``--help`` and argument errors answer at once); what runs a model is
imported when it runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError, ImageError
from ..io import IMAGE_EXTENSIONS, OutputPlan, names_image_file, output_folder, plan_outputs, write_image
from ..options import DEFAULT_MODEL
from . import HelpFormatter, add_engine_arg, add_sampling_args, add_tiling_args, check_tiling, sampling_options

DEFAULT_OUT = "deblurred"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("deblur", help="deblur images (the built-in example when no input is given)",
                       formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="*", help="image files, folders or globs; none = the built-in example")
    p.add_argument("-o", "--output", default=DEFAULT_OUT,
                   help=f"output folder, or a file name for one input ({', '.join(IMAGE_EXTENSIONS)})")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="a .safetensors checkpoint, or shipped weights: 'default' or a model name (see `diffdeblur models`)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    add_tiling_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_engine_arg(p)
    add_sampling_args(p)
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


def _deblur_all(plan: OutputPlan, model, args: argparse.Namespace, options: dict) -> tuple[int, int]:
    """Deblur the plan's jobs; returns (done, failed), each failure reported in one line."""
    from tqdm.auto import tqdm

    from ..inference import deblur_file

    done = failed = 0
    for src, dest in tqdm(plan.jobs, desc="images", disable=args.quiet or len(plan.jobs) < 2):
        try:
            deblur_file(src, dest, model, tile=args.tile, overlap=args.overlap, show_progress=not args.quiet,
                        seed=args.seed, engine=args.engine, **options)
            done += 1
        except ImageError as exc:
            failed += 1
            print(f"diffdeblur deblur: error: {exc}", file=sys.stderr)
    return done, failed


def run(args: argparse.Namespace) -> int:
    from ..inference import load_model

    if not args.inputs and names_image_file(args.output):
        raise ConfigError(f"-o {args.output}: the built-in example writes several images; give an output folder")
    plan = plan_outputs(args.inputs, args.output) if args.inputs else None  # before any work
    model = load_model(args.model, args.device)
    check_tiling(args, model)
    options = sampling_options(args, model)
    if plan is None:
        return _run_example(model, args, Path(args.output))
    for e in plan.errors:
        print(f"diffdeblur deblur: error: {e}", file=sys.stderr)
    with output_folder(plan.folder):  # removed again if every input failed (and the run created it)
        done, failed = _deblur_all(plan, model, args, options)
    failed += len(plan.errors)
    where = args.output if plan.to_file else f"{plan.folder}/"
    tail = f"; {failed} failed" if failed else ""
    print(f"deblurred {done} image(s) into {where}{tail}" if done else f"no image deblurred{tail}")
    return 1 if failed else 0
