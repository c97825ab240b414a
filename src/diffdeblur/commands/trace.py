"""`diffdeblur trace INPUT --model CKPT [--reference SHARP]`: visualise a diffusion model's reverse process."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..options import DEFAULT_THUMB
from . import HelpFormatter, add_sampling_args, sampling_options


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("trace", help="run a diffusion model's reverse process on one image and save per-step "
                       "images (grid, GIF), per-step PSNR/SSIM (CSV) and curves",
                       formatter_class=HelpFormatter)
    p.add_argument("input", help="blurry image")
    p.add_argument("--reference", default=None, help="sharp reference image (enables per-step PSNR/SSIM)")
    p.add_argument("--model", required=True, help="a diffusion model: .safetensors checkpoint or shipped weights' name "
                   "(the shipped default is a regression model, which has no steps to trace)")
    p.add_argument("-o", "--output", default="trace", help="output folder")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    add_sampling_args(p, averaging=False)
    p.add_argument("--crop", type=int, default=0,
                   help="centre-crop input and reference to this size first (0 = whole image, untiled)")
    p.add_argument("--frames", type=int, default=8, help="steps shown in grid.png")
    p.add_argument("--gif-frames", type=int, default=60, help="at most this many steps in trace.gif")
    p.add_argument("--thumb", type=int, default=DEFAULT_THUMB, help="longest side of grid/GIF frames")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..evaluate import centre_crop
    from ..inference import load_model
    from ..io import read_image
    from ..trace import record_trace, write_trace

    model = load_model(args.model, args.device)
    blur, _ = read_image(args.input)
    sharp = read_image(args.reference)[0] if args.reference else None
    blur = centre_crop(blur, args.crop)
    sharp = centre_crop(sharp, args.crop) if sharp is not None else None
    tr = record_trace(model, blur, sharp, seed=args.seed, thumb=args.thumb, **sampling_options(args, model))
    paths = write_trace(tr, args.output, frames=args.frames, gif_frames=args.gif_frames,
                        title=f"{Path(args.input).name}: {len(tr.rows)} steps")
    last = tr.rows[-1]
    if sharp is not None:
        print(f"{len(tr.rows)} steps: final x0 {last['psnr_x0']:.2f} dB / {last['ssim_x0']:.4f} "
              f"(input {tr.input_psnr:.2f} dB / {tr.input_ssim:.4f})")
    print(f"wrote {', '.join(p.name for p in paths.values())} into {Path(args.output)}/")
    return 0
