"""Train the latent diffusion models with the pixel-diffusion study's budget, for bench/latent_vs_pixel.py.

The budget and data stream are those of ``benchmarks/studies/diffusion_vs_regression.py`` (nafnet-small,
SR3 and DvSR trained there), through the same config builder: 600 steps, batch 8, 64x64 crops, one
thread, Adam (0.9, 0.999) at the diffusion models' lr 5e-4 (1 % floor, cosine, 60 warm-up steps),
gradient clipping 1.0, no EMA, seed 0, GoPro sample train pairs mixed 50/50 with on-the-fly
dynamic-scene synthetic pairs from BSDS500 (source ``synth``, preset gopro-like). Only the model and its
objective ("latent-diffusion") differ. The frozen autoencoders are not counted: ae-tiny was trained
beforehand (config latent-ae-tiny), TAEF2 is pretrained.

    python -m benchmarks.studies.latent_budget [--models latent-small,latent-taef2-small] [--ae AE.safetensors]

Writes runs/latent/<model>_s600_b8_c64/{final.safetensors, train_info.json} (resumable); no report of
its own (bench/latent_vs_pixel.py reports the models).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from benchmarks.common import BSDS, GOPRO_TRAIN, RUNS, TAEF2_DIR, missing_data, train_or_load
from benchmarks.studies.diffusion_vs_regression import BATCH, CROP, LR, SMOKE, STEPS, experiment

LATENT_RUNS = RUNS / "latent"


def run_dir(runs: Path, name: str, steps: int = STEPS, batch: int = BATCH) -> Path:
    return runs / f"{name}_s{steps}_b{batch}_c{CROP}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="latent-small,latent-taef2-small", help="comma-separated presets")
    p.add_argument("--ae", default="", help="ae-tiny weights for latent-small ('' = the shipped ones)")
    p.add_argument("--taef2-dir", default=str(TAEF2_DIR), help="TAEF2 weights folder for latent-taef2-small")
    p.add_argument("--runs", type=Path, default=LATENT_RUNS, help="output root")
    p.add_argument("--smoke", action="store_true", help="a tiny budget (seconds) for the smoke test")
    args = p.parse_args(argv)
    message = missing_data([GOPRO_TRAIN, BSDS])
    if message:
        print(message, file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    steps, batch = (SMOKE["steps"], SMOKE["batch"]) if args.smoke else (STEPS, BATCH)
    for name in [m for m in args.models.split(",") if m]:
        weights = args.taef2_dir if "taef2" in name else args.ae
        model = {"type": name, "train_size": CROP, "autoencoder_weights": weights}
        out = run_dir(args.runs, name, steps, batch)
        _, info = train_or_load(experiment(model, out, steps=steps, crop=CROP, batch=batch, lr=LR["diffusion"],
                                           loss="latent-diffusion"))
        print(name, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
