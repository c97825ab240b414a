"""`diffdeblur bench --models M... --sizes 1280x720 [--data DIR --metrics a,b]`: params, MACs, latency, memory,
and PSNR/SSIM or the perception measures of --metrics."""
from __future__ import annotations

import argparse
import shlex
import sys

from . import HelpFormatter, add_engine_arg, add_metrics_arg, add_tiling_args


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="benchmark models: params, MACs, latency, peak memory, PSNR/SSIM (table, JSON, plot)",
                       formatter_class=HelpFormatter)
    p.add_argument("--models", nargs="+", default=["default"],
                   help="checkpoints, .onnx files or shipped weights' names; a registered name without weights "
                        "is benchmarked untrained (speed only)")
    p.add_argument("--sizes", nargs="+", default=["1280x720"], help="input sizes, WIDTHxHEIGHT or SIDE")
    p.add_argument("--data", default=None, help="paired folder for PSNR/SSIM (default: none, speed only)")
    p.add_argument("--max-images", type=int, default=0, help="score only the first N pairs (0 = all)")
    add_metrics_arg(p)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per size (median), after one warm-up")
    add_tiling_args(p, overlap=False)  # the timed restores and the scores: as deblur and eval run them
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    add_engine_arg(p)
    p.add_argument("-o", "--out", default="bench", help="output path without extension: OUT.md, OUT.json, OUT.png")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..benchmark import bench_model, parse_size, write_bench
    from ..device import resolve_device
    from ..errors import ConfigError
    from ..inference import NoWeightsError, load_model
    from ..registry import build_model, model_names

    try:
        sizes = [parse_size(s) for s in args.sizes]
    except ValueError:
        raise ConfigError(f"--sizes: expected WIDTHxHEIGHT or SIDE, got {' '.join(args.sizes)}") from None
    rows = []
    for name in args.models:
        label = name
        try:
            model = load_model(name, args.device)
        except NoWeightsError:
            if name not in model_names():
                raise
            model, label = build_model(name).eval().to(resolve_device(args.device)), f"{name} (untrained)"
        rows.append(bench_model(model, label, sizes, engine=args.engine, repeats=args.repeats, data=args.data,
                                max_images=args.max_images, metrics=args.metrics, tile=args.tile))
        print(f"{label}: " + ", ".join(f"{s['size']} {s['latency_s']:.3f} s" for s in rows[-1]["sizes"])
              + f" (median of {args.repeats}; {rows[-1]['timing']})", flush=True)
    command = "diffdeblur " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else ""
    paths = write_bench(rows, args.out, command)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    if args.data and not any(p.suffix == ".png" for p in paths):
        print("no PSNR-latency plot: it needs matplotlib (pip install 'diffdeblur[plots]')")
    return 0
