"""The autoencoder ceiling of latent diffusion: PSNR/SSIM of decode(encode(sharp)).

A latent model that decodes its sampled latent with the autoencoder's decoder can at best return
decode(encode(sharp)); this measures that bound on a paired folder (default: the GoPro sample's val
split, 30 pairs at 1280x720, full images, no crop) for TAEF2 and the project autoencoder (ae-tiny),
next to the blurry input's scores. Metrics: diffdeblur.metrics (8-bit RGB, BasicSR protocol).

    python benchmarks/ae_ceiling.py --taef2-dir /path/to/taef2 [--ae ae.safetensors]

Writes docs/results/ae_ceiling.md and docs/results/ae_ceiling.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from diffdeblur.data.pairs import find_pairs
from diffdeblur.io import atomic_write_bytes, read_image, to_numpy, to_tensor
from diffdeblur.metrics import psnr, ssim
from diffdeblur.models.autoencoder import TAEF2_ENV, build_autoencoder

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "/work/shared/data/gopro_sample/val"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="paired folder (blur/ + sharp/)")
    p.add_argument("--taef2-dir", default=os.environ.get(TAEF2_ENV, "/work/shared/data/weights/taef2"),
                   help="folder with taef2_encoder.pth / taef2_decoder.pth ('' skips TAEF2)")
    p.add_argument("--ae", default="", help="ae-tiny .safetensors ('' = the weights shipped in diffdeblur/weights)")
    p.add_argument("--max-images", type=int, default=0, help="0 = all pairs")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=str(ROOT / "docs/results/ae_ceiling.md"), help="markdown report")
    return p.parse_args(argv)


def _crop8(x: torch.Tensor) -> torch.Tensor:
    """Crop (B, C, H, W) to sides that are multiples of 8 (encode's requirement)."""
    return x[..., :x.shape[-2] // 8 * 8, :x.shape[-1] // 8 * 8]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs, _ = find_pairs(args.data)
    if args.max_images > 0:
        pairs = pairs[:args.max_images]
    autoencoders = {}
    if args.taef2_dir:
        autoencoders["TAEF2 (pretrained, 2.68 M params)"] = build_autoencoder("taef2", args.taef2_dir)
    autoencoders["ae-tiny (project, 0.94 M params)"] = build_autoencoder("tiny", args.ae)
    scores: dict[str, dict[str, list[float]]] = {
        k: {"psnr": [], "ssim": [], "seconds": [], "latent_std": [], "residual_std": []} for k in autoencoders}
    scores["blurry input"] = {"psnr": [], "ssim": [], "seconds": [], "latent_std": [], "residual_std": []}
    size = None
    for pair in pairs:
        sharp, _ = read_image(pair.sharp)
        blur, _ = read_image(pair.blur)
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

    summary = {k: {m: float(np.mean(v[m])) if v[m] else None
                   for m in ("psnr", "ssim", "seconds", "latent_std", "residual_std")} for k, v in scores.items()}
    lines = [
        "# Autoencoder ceiling of latent diffusion",
        "",
        "PSNR/SSIM of `decode(encode(sharp))` against `sharp`: the best a latent model can return if its",
        "output is the autoencoder's decoding of a latent (even a perfect latent). Blurry input for reference.",
        "",
        f"- data: `{args.data}`, {len(pairs)} pairs, full images {size[1]}x{size[0]} (no crop)" if size else "",
        "- metrics: `diffdeblur.metrics` (8-bit RGB, no border crop, SSIM 11x11 Gaussian window)",
        f"- machine: {platform.machine()} CPU, torch {torch.__version__}, {args.threads} thread(s), fp32;"
        " seconds = encode + decode of one image",
        f"- command: `{' '.join(['python benchmarks/ae_ceiling.py', *(argv if argv is not None else sys.argv[1:])])}`",
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
    for name, s in summary.items():
        lines.append(f"| {name} | {s['psnr']:.2f} | {s['ssim']:.4f} | {fmt(s['seconds'], '.2f')} "
                     f"| {fmt(s['latent_std'], '.3f')} | {fmt(s['residual_std'], '.3f')} |")
    lines.append("")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, "\n".join(lines).encode())
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(
        {"data": args.data, "images": len(pairs), "threads": args.threads, "summary": summary,
         "per_image": {k: v for k, v in scores.items()}}, indent=1) + "\n").encode())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
