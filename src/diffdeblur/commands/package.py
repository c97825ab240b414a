"""`diffdeblur package RUN_DIR -o NAME.safetensors`: ship a training run's weights (float16, config and provenance)."""
from __future__ import annotations

import argparse

from . import HelpFormatter


# the choices of diffdeblur.packaging (WEIGHT_CHOICES, STORAGE_DTYPES, SELECTION_RULE), spelled here so that
# `package --help` answers without importing torch; tests/test_package.py checks that they agree
WEIGHT_CHOICES = ("auto", "best", "final")
STORAGE_DTYPES = ("float16", "float32")
SELECTION_RULE = ("auto = best.safetensors when the run validated (the checkpoint with the highest validation "
                  "PSNR), else final.safetensors")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("package", help="ship a training run's weights as one .safetensors file (float16)",
                       formatter_class=HelpFormatter,
                       description="Write the weights file of a training run (the train.out_dir of diffdeblur train) "
                                   "that `diffdeblur deblur --model FILE` and diffdeblur.load_model read: the chosen "
                                   "checkpoint stored as float16 by default, with its model config and provenance "
                                   "(run folder name, steps, chosen checkpoint and its validation scores, training "
                                   "config, package version, date).")
    p.add_argument("run", metavar="RUN_DIR", help="a training run folder (holds best.safetensors / final.safetensors)")
    p.add_argument("-o", "--output", required=True, help="the weights file to write (.safetensors)")
    p.add_argument("--weights", default="auto", choices=list(WEIGHT_CHOICES),
                   help=f"which checkpoint of the run: {SELECTION_RULE}")
    p.add_argument("--dtype", default="float16", choices=list(STORAGE_DTYPES),
                   help="storage type of the weights (loading casts back to float32)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..packaging import package_run

    done = package_run(args.run, args.output, weights=args.weights, dtype=args.dtype, overwrite=args.overwrite)
    val = f", validation PSNR {done.val['psnr']:.3f} dB" if done.val and "psnr" in done.val else ""
    print(f"weights: {done.weights} (step {done.step}{val}); rule: {done.reason}")
    print(f"wrote {done.path} ({args.dtype}, {done.path.stat().st_size / 1e6:.2f} MB)")
    return 0
