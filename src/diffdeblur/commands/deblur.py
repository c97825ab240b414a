"""`diffdeblur deblur INPUT... -o OUT`: deblur files, folders and globs (or the built-in example)."""
from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

from tqdm.auto import tqdm

from ..inference import DEFAULT_MODEL, DEFAULT_TILE, deblur, deblur_file, load_model
from ..io import IMAGE_EXTENSIONS, ImageError, is_image_file, write_image
from ..diffusion.samplers import SAMPLERS
from ..tiling import DEFAULT_OVERLAP

DEFAULT_OUT = "deblurred"


def add_sampling_args(p: argparse.ArgumentParser, averaging: bool = True) -> None:
    """Options passed to a diffusion model's restore(); a model without them refuses them by name."""
    g = p.add_argument_group("diffusion sampling (diffusion models only)")
    g.add_argument("--steps", type=int, default=None, help="number of sampling steps (default: the model's)")
    g.add_argument("--sampler", default=None, choices=list(SAMPLERS), help="sampler (default: the model's)")
    g.add_argument("--eta", type=float, default=None, help="DDIM eta (default 0 = deterministic)")
    if averaging:
        g.add_argument("--num-samples", type=int, default=None, help="average this many samples")
    g.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")


def sampling_options(args: argparse.Namespace) -> dict:
    """The sampling options given on the command line (those left unset are not passed)."""
    opts = {k: getattr(args, k, None) for k in ("steps", "sampler", "eta", "num_samples")}
    return {k: v for k, v in opts.items() if v is not None}


def expand_inputs(items: list[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (their images, sorted) and globs -> (image paths, error lines)."""
    paths: list[Path] = []
    errors: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and is_image_file(q))
            if not found:
                errors.append(f"{item}: folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        elif p.exists():
            paths.append(p)
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True) if os.path.isfile(q))
            if not found:
                errors.append(f"{item}: no file matches")
            paths += found
        else:
            errors.append(f"{item}: file not found")
    return paths, errors


def output_path(src: Path, out: Path, single: bool) -> Path:
    if single and out.suffix.lower() in IMAGE_EXTENSIONS:
        return out
    return out / src.name


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("deblur", help="deblur images (the built-in example when no input is given)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="*", help="image files, folders or globs; none = the built-in example")
    p.add_argument("-o", "--output", default=DEFAULT_OUT, help="output folder (or a file name for one input)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="a .safetensors checkpoint or the name of shipped weights (default: the shipped default)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help="tile size in pixels (0 = whole image at once)")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="tile overlap in pixels")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_sampling_args(p)
    p.set_defaults(func=run)
    return p


def _run_example(model, args: argparse.Namespace, out: Path) -> int:
    from ..example import example_pair
    from ..metrics import psnr, ssim

    blur, sharp = example_pair()
    out.mkdir(parents=True, exist_ok=True)
    write_image(out / "example_blurry.png", blur)
    write_image(out / "example_sharp.png", sharp)
    restored = deblur(blur, model, tile=args.tile, overlap=args.overlap, seed=args.seed, **sampling_options(args))
    write_image(out / "example_deblurred.png", restored)
    print(f"built-in example: blurry {psnr(blur, sharp):.2f} dB / {ssim(blur, sharp):.4f} -> deblurred "
          f"{psnr(restored, sharp):.2f} dB / {ssim(restored, sharp):.4f} (PSNR / SSIM vs sharp); "
          f"images in {out}/")
    return 0


def run(args: argparse.Namespace) -> int:
    model = load_model(args.model, args.device)
    out = Path(args.output)
    if not args.inputs:
        return _run_example(model, args, out)
    paths, errors = expand_inputs(args.inputs)
    for e in errors:
        print(f"diffdeblur deblur: error: {e}", file=sys.stderr)
    single = len(paths) == 1 and len(args.inputs) == 1 and Path(args.inputs[0]).is_file()
    target_dir = out.parent if single and out.suffix.lower() in IMAGE_EXTENSIONS else out
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"diffdeblur deblur: error: {target_dir}: cannot create output folder ({exc.strerror})", file=sys.stderr)
        return 1
    inputs_resolved = {p.resolve() for p in paths}
    failed = len(errors)
    done = 0
    for src in tqdm(paths, desc="images", disable=args.quiet or len(paths) < 2):
        dest = output_path(src, out, single)
        try:
            if dest.resolve() in inputs_resolved:
                raise ImageError(f"{src}: output {dest} would overwrite an input; choose another -o")
            deblur_file(src, dest, model, tile=args.tile, overlap=args.overlap, show_progress=not args.quiet,
                        seed=args.seed, **sampling_options(args))
            done += 1
        except ImageError as exc:
            failed += 1
            print(f"diffdeblur deblur: error: {exc}", file=sys.stderr)
    print(f"deblurred {done} image(s) into {target_dir}/" + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0
