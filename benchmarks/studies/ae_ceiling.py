"""The autoencoder ceiling of latent diffusion: PSNR/SSIM of decode(encode(sharp)).

A latent model that decodes its sampled latent with the autoencoder's decoder can at best return
decode(encode(sharp)); this measures that bound on a paired folder (default: the GoPro sample's val
split, 30 pairs at 1280x720, full images, no crop) for TAEF2 and the project autoencoder (ae-tiny),
next to the blurry input's scores. Metrics: diffdeblur.metrics (8-bit RGB, BasicSR protocol).

    python -m benchmarks.studies.ae_ceiling [--taef2-dir DIR] [--ae ae.safetensors]
    python -m benchmarks.studies.ae_ceiling --report    # the markdown from the committed JSON

Writes docs/results/ae_ceiling.md and docs/results/ae_ceiling.json.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import GOPRO_VAL, RESULTS, TAEF2_DIR, command, portable, read_results, write_report
from diffdeblur.data.pairs import find_pairs
from diffdeblur.evaluate import centre_crop
from diffdeblur.io import read_image, to_numpy, to_tensor
from diffdeblur.metrics import psnr, ssim
from diffdeblur.models.autoencoder import build_autoencoder

NAME = "ae_ceiling"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=GOPRO_VAL, help="paired folder (blur/ + sharp/)")
    p.add_argument("--taef2-dir", default=str(TAEF2_DIR),
                   help="folder with taef2_encoder.pth / taef2_decoder.pth ('' skips TAEF2)")
    p.add_argument("--ae", default="", help="ae-tiny .safetensors ('' = the weights shipped in diffdeblur/weights)")
    p.add_argument("--max-images", type=int, default=0, help="0 = all pairs")
    p.add_argument("--crop", type=int, default=0, help="centre crop of every image (0 = full images)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--results", type=Path, default=RESULTS, help="where ae_ceiling.md / .json go")
    p.add_argument("--report", action="store_true", help="measure nothing: rewrite the .md from the .json")
    return p.parse_args(argv)


def _crop8(x: torch.Tensor) -> torch.Tensor:
    """Crop (B, C, H, W) to sides that are multiples of 8 (encode's requirement)."""
    return x[..., :x.shape[-2] // 8 * 8, :x.shape[-1] // 8 * 8]


def measure(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """Reconstruction scores of every autoencoder (and the blurry input) on the paired folder."""
    torch.set_num_threads(args.threads)
    pairs, _ = find_pairs(args.data)
    if args.max_images > 0:
        pairs = pairs[:args.max_images]
    autoencoders = {}
    if args.taef2_dir:
        autoencoders["TAEF2 (pretrained, 2.68 M params)"] = build_autoencoder("taef2", args.taef2_dir)
    autoencoders["ae-tiny (project, 0.94 M params)"] = build_autoencoder("tiny", args.ae)
    keys = ("psnr", "ssim", "seconds", "latent_std", "residual_std")
    scores: dict[str, dict[str, list[float]]] = {k: {m: [] for m in keys} for k in [*autoencoders, "blurry input"]}
    size = None
    for pair in pairs:
        sharp = centre_crop(read_image(pair.sharp)[0], args.crop)
        blur = centre_crop(read_image(pair.blur)[0], args.crop)
        size = sharp.shape[:2]
        scores["blurry input"]["psnr"].append(psnr(blur, sharp))
        scores["blurry input"]["ssim"].append(ssim(blur, sharp))
        x = to_tensor(sharp)
        for name, ae in autoencoders.items():
            t0 = time.perf_counter()
            rec = to_numpy(ae.restore(x))
            scores[name]["seconds"].append(time.perf_counter() - t0)
            scores[name]["psnr"].append(psnr(rec, sharp))
            scores[name]["ssim"].append(ssim(rec, sharp))
            with torch.inference_mode():  # latent statistics that set the diffusion's residual_scale
                z_sharp, z_blur = ae.encode(_crop8(x)), ae.encode(_crop8(to_tensor(blur)))
            scores[name]["latent_std"].append(float(z_sharp.std()))
            scores[name]["residual_std"].append(float((z_sharp - z_blur).std()))
        print(pair.sharp.name, {k: round(v["psnr"][-1], 2) for k, v in scores.items()}, flush=True)
    summary = {k: {m: float(np.mean(v[m])) if v[m] else None for m in keys} for k, v in scores.items()}
    return {"data": portable(args.data), "images": len(pairs), "threads": args.threads,
            "size": f"{size[1]}x{size[0]}" if size else None, "crop": args.crop,
            "machine": f"{platform.machine()} CPU, torch {torch.__version__}",
            "command": command("benchmarks.studies.ae_ceiling", argv), "summary": summary, "per_image": scores}


def render(data: dict[str, Any]) -> list[str]:
    """The markdown report from the JSON data alone."""
    size = f"full images {data['size']} (no crop)" if not data.get("crop") else f"centre crops {data['size']}"
    lines = [
        "# Autoencoder ceiling of latent diffusion",
        "",
        "PSNR/SSIM of `decode(encode(sharp))` against `sharp`: the best a latent model can return if its",
        "output is the autoencoder's decoding of a latent (even a perfect latent). Blurry input for reference.",
        "",
        f"- data: `{data['data']}`, {data['images']} pairs, {size}",
        "- metrics: `diffdeblur.metrics` (8-bit RGB, no border crop, SSIM 11x11 Gaussian window)",
        f"- machine: {data['machine']}, {data['threads']} thread(s), fp32; seconds = encode + decode of one image",
        f"- command: `{data['command']}`",
        "",
        "- latent std: std of `encode(sharp)` (unit-scaled latents); residual std: std of"
        " `encode(sharp) - encode(blur)`, the latent residual that latent-small diffuses (its `residual_scale`"
        " is ~1 / this, so the diffused residual has ~unit std)",
        "",
        "| reconstruction | PSNR (dB) | SSIM | seconds / image | latent std | residual std |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)
    for name, s in data["summary"].items():
        lines.append(f"| {name} | {s['psnr']:.2f} | {s['ssim']:.4f} | {fmt(s['seconds'], '.2f')} "
                     f"| {fmt(s['latent_std'], '.3f')} | {fmt(s['residual_std'], '.3f')} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = read_results(NAME, args.results) if args.report else measure(args, argv)
    write_report(NAME, render(data), data, args.results, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
