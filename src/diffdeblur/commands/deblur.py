"""`diffdeblur deblur INPUT... -o OUT`: deblur files, folders and globs (or the built-in example).

The parser and the option helpers the other commands share import no torch (``--help`` and argument
errors answer at once); what runs a model is imported when it runs.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, ImageError
from ..io import IMAGE_EXTENSIONS, is_image_file, names_image_file, output_folder, write_image
from ..options import DEFAULT_MODEL, DEFAULT_OVERLAP, DEFAULT_TILE, ENGINES, SAMPLER_NAMES
from . import HelpFormatter, positive_int, tile_size

if TYPE_CHECKING:
    from torch import nn

DEFAULT_OUT = "deblurred"


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


def check_tiling(args: argparse.Namespace, model: nn.Module) -> None:
    """--tile / --overlap against each other and the model's size multiple (ConfigError)."""
    from ..tiling import check_tile

    try:
        check_tile(args.tile, args.overlap, int(getattr(model, "size_multiple", 1)))
    except ConfigError as exc:
        raise ConfigError(f"--tile {args.tile} / --overlap {args.overlap}: {exc}") from None


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


def output_path(src: Path, out: Path, to_file: bool) -> Path:
    """Where ``src`` is written: ``out`` itself when it names the one output file, else ``out/NAME``."""
    return out if to_file else out / src.name


def add_engine_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="how the network runs (auto: bf16 autocast on CUDA; on the CPU the engine measured fastest "
                        "within 0.05 dB of fp32 on this machine, timed once per network and cached; a name here skips "
                        "the measuring; onnx needs the onnx extra, openvino the openvino package; see diffdeblur.engines)")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("deblur", help="deblur images (the built-in example when no input is given)",
                       formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="*", help="image files, folders or globs; none = the built-in example")
    p.add_argument("-o", "--output", default=DEFAULT_OUT,
                   help=f"output folder, or a file name for one input ({', '.join(IMAGE_EXTENSIONS)})")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="a .safetensors checkpoint, or shipped weights: 'default' or a model name (see `diffdeblur models`)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    p.add_argument("--tile", type=tile_size, default=DEFAULT_TILE,
                   help="tile size in pixels; 0 = whole image at once; auto (default) = whole image up to about "
                        "1 MP (1280x720), 512-pixel tiles above")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="tile overlap in pixels")
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


def _deblur_all(paths: list[Path], out: Path, to_file: bool, model, args: argparse.Namespace,
                options: dict) -> tuple[int, int]:
    """Deblur ``paths`` into ``out``; returns (done, failed), each failure reported in one line."""
    from tqdm.auto import tqdm

    from ..inference import deblur_file

    inputs_resolved = {p.resolve() for p in paths}
    done = failed = 0
    for src in tqdm(paths, desc="images", disable=args.quiet or len(paths) < 2):
        dest = output_path(src, out, to_file)
        try:
            if dest.resolve() in inputs_resolved:
                raise ImageError(f"{src}: output {dest} would overwrite an input; choose another -o")
            deblur_file(src, dest, model, tile=args.tile, overlap=args.overlap, show_progress=not args.quiet,
                        seed=args.seed, engine=args.engine, **options)
            done += 1
        except ImageError as exc:
            failed += 1
            print(f"diffdeblur deblur: error: {exc}", file=sys.stderr)
    return done, failed


def run(args: argparse.Namespace) -> int:
    from ..inference import load_model

    out = Path(args.output)
    to_file = names_image_file(args.output)  # before any work: out.gif is an error, not a folder
    paths, errors = expand_inputs(args.inputs)
    single = len(paths) == 1 and len(args.inputs) == 1 and Path(args.inputs[0]).is_file()
    if args.inputs and to_file and not single:
        raise ConfigError(f"-o {out}: an image file name, but the inputs are {len(paths)} images or a folder/glob; "
                          f"give an output folder")
    if not args.inputs and to_file:
        raise ConfigError(f"-o {out}: the built-in example writes several images; give an output folder")
    model = load_model(args.model, args.device)
    check_tiling(args, model)
    options = sampling_options(args, model)
    if not args.inputs:
        return _run_example(model, args, out)
    for e in errors:
        print(f"diffdeblur deblur: error: {e}", file=sys.stderr)
    target_dir = out.parent if to_file else out
    with output_folder(target_dir):  # removed again if every input failed (and the run created it)
        done, failed = _deblur_all(paths, out, to_file, model, args, options)
    failed += len(errors)
    where = out if to_file else f"{target_dir}/"
    tail = f"; {failed} failed" if failed else ""
    print(f"deblurred {done} image(s) into {where}{tail}" if done else f"no image deblurred{tail}")
    return 1 if failed else 0
