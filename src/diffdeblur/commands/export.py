"""`diffdeblur export --model M --format onnx -o model.onnx [--verify]`: export a regression or BlurDM network."""
from __future__ import annotations

import argparse
import time

from . import HelpFormatter


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export a regression or BlurDM model to ONNX (dynamic height and width)",
                       formatter_class=HelpFormatter,
                       description="Export a deterministic network (nafnet*, mimo-unet*) to ONNX. The graph takes "
                                   "(1, 3, H, W) float32 in [0, 1] with H, W multiples of the model's stride; "
                                   "`diffdeblur deblur --model FILE.onnx` pads any image to it and tiles as usual.")
    p.add_argument("--model", default="default", help="a .safetensors checkpoint or shipped weights' name")
    p.add_argument("--untrained", action="store_true", help="export a freshly initialised registered preset")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("-o", "--output", required=True, help="output file (.onnx)")
    p.add_argument("--verify", action="store_true", help="compare ONNX Runtime with PyTorch fp32 on random images; "
                   "fail above 1e-4 max abs difference or below 60 dB PSNR")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..export import OnnxModel, check_parity, export_onnx, parity
    from ..inference import load_model
    from ..io import check_output_file, output_folder
    from ..registry import build_model

    out = check_output_file(args.output, (".onnx",))  # before the work, as deblur checks its -o
    with output_folder(out.parent):  # a folder this run creates is removed again if the export fails
        model = build_model(args.model).eval() if args.untrained else load_model(args.model, "cpu")
        t0 = time.perf_counter()
        path = export_onnx(model, out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    if args.verify:
        result = parity(model, OnnxModel(path))
        print(f"parity vs PyTorch fp32: max abs {result['max_abs']:.2e}, PSNR {result['psnr']:.1f} dB")
        check_parity(result, str(path))
    return 0
