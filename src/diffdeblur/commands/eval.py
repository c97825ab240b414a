"""`diffdeblur eval --model M --data DIR`: PSNR/SSIM (or the measures of --metrics; NIQE with --niqe) on a
paired folder, size, MACs and latency. Several ``--data`` (``NAME=PATH`` allowed) or a domains YAML file give one
table, domain by domain (:mod:`diffdeblur.domains`). The parser imports no torch; what runs a model is imported
when it runs."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError, OutputError
from ..io import output_dir
from ..perception import column, require
from . import (HelpFormatter, add_engine_arg, add_metrics_arg, add_sampling_args, add_tiling_args, check_tiling,
               metric_names, sampling_options)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="evaluate a model on a paired folder (PSNR/SSIM, params, MACs, latency)",
                       formatter_class=HelpFormatter)
    p.add_argument("--model", default="default", help="a .safetensors checkpoint or shipped weights' name")
    p.add_argument("--data", required=True, action="append",
                   help="paired folder: blur/+sharp/, input/+target/ or SCENE/blur+SCENE/sharp. Repeat it, name it "
                        "(NAME=PATH) or give a domains YAML file (domains: [{name, path, reference}]) for one table, "
                        "domain by domain (OUT/domains.csv, .md); a folder without sharp images is scored with "
                        "--nr-metrics")
    p.add_argument("--out", default="", help="folder for per_image.csv and summary.json (default: print only)")
    p.add_argument("--save", action="store_true", help="also write the restored images to OUT/images/")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    add_tiling_args(p)  # the same defaults as deblur: scores are those of what deblur writes
    p.add_argument("--crop", type=int, default=0, help="evaluate a centre crop of this size (0 = full image)")
    p.add_argument("--max-images", type=int, default=0, help="evaluate only the first N pairs (0 = all)")
    add_metrics_arg(p)
    p.add_argument("--niqe", action="store_true",
                   help="also score NIQE (no reference, lower is more natural) of the restored and the blurry "
                        "images: the same as adding niqe to --metrics; needs the niqe extra, about a second "
                        "per 720p image")
    p.add_argument("--nr-metrics", type=metric_names, default="niqe,blur-effect",
                   help="with several domains: the no-reference measures of a domain without sharp images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_engine_arg(p)
    add_sampling_args(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..domains import is_multi_domain
    from ..evaluate import count_macs, count_parameters, evaluate, selected_metrics, write_report
    from ..inference import load_model

    data = [args.data] if isinstance(args.data, str) else list(args.data)
    if is_multi_domain(data):
        return run_domains(args, data)
    args.data = data[0]
    if args.save and not args.out:
        raise ConfigError("--save needs --out DIR")
    if args.out:
        output_dir(args.out)  # fail before the evaluation, not after it
    metrics = selected_metrics(args.metrics, args.niqe)
    require(metrics)  # a measure's extra missing: fail before loading the model
    model = load_model(args.model, args.device)
    check_tiling(args, model)
    opts = sampling_options(args, model)
    report = evaluate(model, args.data, tile=args.tile, overlap=args.overlap, crop=args.crop,
                      max_images=args.max_images, save_dir=f"{args.out}/images" if args.save else None,
                      show_progress=not args.quiet, seed=args.seed, metrics=metrics, engine=args.engine, **opts)
    extra = {"model": args.model, "data": args.data, "params": count_parameters(model),
             "macs_256": count_macs(model, **opts)}
    for e in report.errors:
        print(f"diffdeblur eval: error: {e}", file=sys.stderr)
    if args.out:
        try:
            write_report(report, args.out, extra)
        except OSError as exc:
            raise OutputError(f"{args.out}: cannot write the report ({exc.strerror or exc})") from None
    s = report.summary
    print(f"{args.model} on {args.data}: {s['images']} images, {scores_line(s, metrics)}; "
          f"{extra['params'] / 1e6:.3f} M params, {extra['macs_256'] / 1e9:.2f} GMACs@256, "
          f"{s['seconds_per_image']:.3f} s/image (mean; {s['timing']})")
    print(json.dumps({**s, **extra}))
    return 1 if report.errors else 0


def run_domains(args: argparse.Namespace, data: list[str]) -> int:
    """Several domains: one table (OUT/domains.csv and .md, printed too); exit code 1 when a domain failed or
    an image could not be scored."""
    from ..domains import evaluate_domains, parse_domains, render_markdown, write_domains_table
    from ..evaluate import selected_metrics
    from ..inference import load_model

    if args.save and not args.out:
        raise ConfigError("--save needs --out DIR")
    domains = parse_domains(data)
    if args.out:
        output_dir(args.out)
    metrics = selected_metrics(args.metrics, args.niqe)
    model = load_model(args.model, args.device)
    check_tiling(args, model)
    opts = sampling_options(args, model)
    report = evaluate_domains(model, domains, metrics=metrics, nr_metrics=args.nr_metrics,
                              out_dir=args.out or None, save_images=args.save, show_progress=not args.quiet,
                              tile=args.tile, overlap=args.overlap, crop=args.crop, max_images=args.max_images,
                              seed=args.seed, engine=args.engine, **opts)
    for r in report.results:
        for e in ([r.reason] if r.status != "ok" else []) + (r.report.errors if r.report else []):
            print(f"diffdeblur eval: {r.domain.name}: error: {e}", file=sys.stderr)
    title = f"{args.model} on {len(domains)} domains"
    if args.out:
        try:
            write_domains_table(report, args.out, title)
        except OSError as exc:
            raise OutputError(f"{args.out}: cannot write the report ({exc.strerror or exc})") from None
    print(render_markdown(report, title), end="")
    return 1 if report.failed else 0


# how the summary line writes each measure: label, unit and digits
METRIC_FORMATS = {"psnr": ("PSNR", " dB", 3), "ssim": ("SSIM", "", 4), "niqe": ("NIQE", "", 3),
                  "ms-ssim": ("MS-SSIM", "", 4), "vif": ("VIF", "", 4), "haarpsi": ("HaarPSI", "", 4),
                  "gmsd": ("GMSD", "", 4), "blur-effect": ("blur effect", "", 4)}


def scores_line(summary: dict, metrics: tuple[str, ...]) -> str:
    """``PSNR 28.123 dB (input 25.456), SSIM 0.8765 (input 0.8012), ...``: each measure's mean with the input's."""
    parts = []
    for name in metrics:
        label, unit, digits = METRIC_FORMATS.get(name, (name, "", 4))
        key = column(name)
        parts.append(f"{label} {summary[key]:.{digits}f}{unit} (input {summary[f'input_{key}']:.{digits}f})")
    return ", ".join(parts)
