"""Super-resolution against its peers on the 20 held-out BSDS500 photos, x2 and x4.

Each photo (``diffdeblur.data.sr_pairs.bsds_holdout``: the 10th, 20th, ... training photo by name, never trained on)
is cropped to a multiple of the scale (HR, MATLAB's modcrop) and reduced by PIL's bicubic (LR), as the ``sr``
training source makes its inputs. Methods: PIL bicubic and PIL Lanczos upsampling, and the given checkpoints
(``--model NAME=PATH``, repeatable; each is run at its own ``scale``, a chain at each of ``--steps``, start noise
from seed 0) through ``diffdeblur.inference.restore_tensor`` on the whole image. Measures: Y-PSNR and Y-SSIM with
a ``scale``-pixel border cropped (``diffdeblur.metrics.psnr_y`` / ``ssim_y``, the SR protocol), RGB PSNR
(``diffdeblur.metrics.psnr``) and the perception measures of ``--metrics`` (``diffdeblur.perception``; by default
those that need no extra package). Per image and mean; every method minus bicubic, image by image (Y-PSNR:
mean, 95 % bootstrap interval, images better); a figure per scale of one crop (input upsampled nearest,
bicubic, Lanczos, each model, reference): ``sr_peers_x<scale>.png``.

    python -m benchmarks.studies.sr_peers --model sr-x4=runs/sr-x4/best.safetensors \
        --model sr-x2=runs/sr-x2/best.safetensors --model sr-chain-x4=runs/sr-chain-x4/best.safetensors --steps 1 4
    python -m benchmarks.studies.sr_peers --report
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (BSDS, command, load_average, machine, md_table, measure_main, portable, today,
                               write_report)
from benchmarks.studies.paired_compare import bootstrap_ci

NAME = "sr_peers"
PEERS = ("bicubic", "lanczos")  # PIL upsampling (diffdeblur.data.sr_pairs.resize)
CORE_METRICS = "haarpsi,gmsd"  # perception measures that need no extra package
FIGURE_CROP = 128  # side of the figure's crop, in high-resolution pixels


def parse_models(items: list[str]) -> dict[str, str]:
    """``["sr-x4=path", ...]`` -> {label: path}; SystemExit naming a malformed item."""
    out = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"sr_peers: --model takes NAME=PATH, got '{item}'")
        out[label] = path
    return out


def methods_of(models: dict[str, torch.nn.Module], steps: list[int]) -> dict[int, list[tuple[str, Any, dict]]]:
    """scale -> [(label, model or peer name, restore options)]: the peers at every scale of a model (and 2, 4),
    each model at its scale, a chain (a restore taking ``steps``) once per number of steps."""
    from diffdeblur.models.protocol import model_options, output_scale

    scales = sorted({2, 4} | {output_scale(m) for m in models.values()})
    table: dict[int, list[tuple[str, Any, dict]]] = {s: [(p, p, {}) for p in PEERS] for s in scales}
    for label, model in models.items():
        if "steps" in model_options(model):
            table[output_scale(model)] += [(f"{label} ({k} step{'s' * (k > 1)})", model, {"steps": k}) for k in steps]
        else:
            table[output_scale(model)].append((label, model, {}))
    return table


def upscale(method: Any, options: dict[str, Any], lr: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] -> (scale H, scale W, 3): a PIL peer by name, or a model through the product."""
    from diffdeblur.data.sr_pairs import resize
    from diffdeblur.inference import restore_tensor
    from diffdeblur.io import to_numpy, to_tensor

    if isinstance(method, str):
        return resize(lr, lr.shape[0] * scale, lr.shape[1] * scale, method)
    return to_numpy(restore_tensor(method, to_tensor(lr), tile=0, seed=0, engine="eager", **options))


def scores(out: np.ndarray, hr: np.ndarray, scale: int, metrics: tuple[str, ...]) -> dict[str, float]:
    """Y-PSNR / Y-SSIM (``scale``-pixel border), RGB PSNR and the perception measures of ``out`` against ``hr``."""
    from diffdeblur.metrics import psnr, psnr_y, ssim_y
    from diffdeblur.perception import PERCEPTION_METRICS, column

    row = {"psnr_y": psnr_y(out, hr, scale), "ssim_y": ssim_y(out, hr, scale), "psnr": psnr(out, hr)}
    for name in metrics:
        m = PERCEPTION_METRICS[name]
        row[column(name)] = float(m.function(out, hr) if m.needs_reference else m.function(out))
    return row


def figure(panels: list[tuple[str, np.ndarray]], lr: np.ndarray, hr: np.ndarray, scale: int, path: Path) -> None:
    """One row of centre crops (FIGURE_CROP HR pixels, aligned with the LR grid): nearest, each method, reference."""
    from diffdeblur.data.sr_pairs import resize
    from diffdeblur.figures import side_by_side
    from diffdeblur.io import write_image

    c = min(FIGURE_CROP, *hr.shape[:2]) // scale * scale
    y = (hr.shape[0] - c) // 2 // scale * scale
    x = (hr.shape[1] - c) // 2 // scale * scale
    crop = lambda img: img[y:y + c, x:x + c]  # noqa: E731
    nearest = resize(lr, lr.shape[0] * scale, lr.shape[1] * scale, "nearest")
    images = [crop(nearest)] + [crop(img) for _, img in panels] + [crop(hr)]
    labels = ["input (nearest)"] + [label for label, _ in panels] + ["reference"]
    write_image(path, side_by_side(images, labels).astype(np.float32) / 255.0)


def measure(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    from diffdeblur.data.sr_pairs import bsds_holdout, downscale, modcrop, photo_files
    from diffdeblur.evaluate import count_parameters
    from diffdeblur.figures import to_uint8
    from diffdeblur.inference import load_model
    from diffdeblur.io import read_image
    from diffdeblur.perception import parse_metrics, require

    torch.set_num_threads(args.threads)
    metrics = parse_metrics(args.metrics) if args.metrics else ()
    require(metrics)
    paths = parse_models(args.model)
    models = {label: load_model(path, "cpu") for label, path in paths.items()}
    photos = bsds_holdout(photo_files(args.photos))
    photos = photos[:args.max_images] if args.max_images > 0 else photos
    load_start = load_average()
    args.results.mkdir(parents=True, exist_ok=True)  # the figures go there while measuring
    out: dict[str, Any] = {}
    for scale, methods in methods_of(models, args.steps).items():
        rows = []
        for i, photo in enumerate(photos):
            hr = modcrop(to_uint8(read_image(photo)[0]), scale)
            lr = downscale(hr, scale)
            hr = hr.astype(np.float32) / 255.0
            row: dict[str, Any] = {"image": photo.name, "scores": {}, "seconds": {}}
            panels = []
            for label, method, options in methods:
                t0 = time.process_time()
                img = upscale(method, options, lr, scale)
                row["seconds"][label] = time.process_time() - t0
                row["scores"][label] = scores(img, hr, scale, metrics)
                panels.append((label, img))
            if i == args.figure_image:
                figure(panels, lr, hr, scale, args.results / f"{NAME}_x{scale}.png")
            rows.append(row)
            print(f"x{scale}", photo.name, {k: round(v["psnr_y"], 2) for k, v in row["scores"].items()}, flush=True)
        out[str(scale)] = {"methods": [m[0] for m in methods], "rows": rows,
                           "figure": f"{NAME}_x{scale}.png" if args.figure_image < len(photos) else ""}
    return {"scales": out, "measures": ["psnr_y", "ssim_y", "psnr", *[m.replace("-", "_") for m in metrics]],
            "models": {label: {"path": portable(p), "params_M": count_parameters(models[label]) / 1e6,
                               "scale": int(getattr(models[label], "scale", 1))} for label, p in paths.items()},
            "steps": args.steps, "photos": portable(args.photos), "images": len(photos), "threads": args.threads,
            "machine": machine(), "date": today(), "load_average_start": load_start,
            "command": command(f"benchmarks.studies.{NAME}", argv)}


TITLES = {"psnr_y": "Y-PSNR (dB)", "ssim_y": "Y-SSIM", "psnr": "RGB PSNR (dB)", "haarpsi": "HaarPSI ↑",
          "gmsd": "GMSD ↓", "ms_ssim": "MS-SSIM ↑", "vif": "VIF ↑", "blur_effect": "blur effect ↓", "niqe": "NIQE ↓"}


def fmt(measure: str, value: float) -> str:
    return f"{value:.2f}" if measure in ("psnr_y", "psnr", "niqe") else f"{value:.4f}"


def report(data: dict[str, Any], results: Path) -> None:
    measures = data["measures"]
    lines = ["# Super-resolution against its peers (held-out BSDS500 photos)", "",
             f"`{data['command']}` on {data['machine']}, {data['date']}, {data['threads']} threads (load average at "
             f"start {data['load_average_start']:.2f}).", "",
             f"{data['images']} photos of `{data['photos']}` held out of training (`bsds_holdout`: every 10th by "
             "name); HR = the photo cropped to a multiple of the scale, LR = its PIL bicubic reduction. Y-PSNR / "
             "Y-SSIM: BT.601 luma (MATLAB `rgb2ycbcr`), a `scale`-pixel border cropped; RGB PSNR on the whole "
             "image. Models run on the whole image (CPU seconds per image in the last column); a chain starts "
             "from seed 0's noise."]
    if data["models"]:
        lines += ["", "Models: " + ", ".join(f"`{k}` = `{v['path']}` (x{v['scale']}, {v['params_M']:.3f} M parameters)"
                                              for k, v in data["models"].items()) + "."]
    for scale, part in data["scales"].items():
        rows, methods = part["rows"], part["methods"]
        if not rows:
            continue
        mean = {m: {k: statistics.fmean(r["scores"][m][k] for r in rows) for k in measures} for m in methods}
        secs = {m: statistics.fmean(r["seconds"][m] for r in rows) for m in methods}
        lines += ["", f"## x{scale}", "",
                  *md_table(["method", *[TITLES.get(k, k) for k in measures], "CPU s / image"],
                            [[m, *[fmt(k, mean[m][k]) for k in measures], f"{secs[m]:.2f}"] for m in methods]),
                  "", "Every method minus bicubic, image by image (Y-PSNR, dB): mean, 95 % bootstrap interval, "
                  "images better.", ""]
        paired = []
        for m in methods[1:]:
            d = np.array([r["scores"][m]["psnr_y"] - r["scores"]["bicubic"]["psnr_y"] for r in rows])
            lo, hi = bootstrap_ci(d)
            paired.append([m, f"{d.mean():+.2f}", f"[{lo:+.2f}, {hi:+.2f}]", f"{int((d > 0).sum())}/{len(d)}"])
        lines += md_table(["method", "mean", "95 % interval", "better"], paired)
        lines += ["", "Y-PSNR (dB) per image:", "",
                  *md_table(["image", *methods], [[r["image"], *[fmt("psnr_y", r["scores"][m]["psnr_y"]) for m in methods]]
                                                  for r in rows])]
        if part["figure"]:
            lines += ["", f"![x{scale} crops: input (nearest), {', '.join(methods)}, reference]({part['figure']})"]
    write_report(NAME, lines, data, results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], help="NAME=PATH of a checkpoint (repeatable)")
    ap.add_argument("--photos", type=Path, default=BSDS, help="folder of the photos; its bsds_holdout is scored")
    ap.add_argument("--steps", nargs="+", type=int, default=[1, 4], help="sampling steps of a chain")
    ap.add_argument("--metrics", default=CORE_METRICS, help="perception measures, comma-separated ('' for none)")
    ap.add_argument("--max-images", type=int, default=0, help="score the first N held-out photos (0 = all)")
    ap.add_argument("--figure-image", type=int, default=0, help="index of the held-out photo the figure crops")
    ap.add_argument("--threads", type=int, default=1)
    return measure_main(ap, NAME, measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
