"""Train the latent diffusion models with the pixel-diffusion study's budget, for bench_latent_vs_pixel.py.

The budget and data stream are those of ``benchmarks/study_diffusion_vs_regression.py`` (nafnet-small,
SR3 and DvSR trained there): 600 steps, batch 8, 64x64 crops, one thread, Adam (0.9, 0.999) at the
diffusion models' lr 5e-4 (1 % floor, cosine, 60 warm-up steps), gradient clipping 1.0, no EMA, seed 0,
GoPro sample train pairs mixed 50/50 with on-the-fly dynamic-scene synthetic pairs from BSDS500
(source ``synth``, preset gopro-like). Only the model and its objective ("latent-diffusion") differ.
The frozen autoencoders are not counted: ae-tiny was trained beforehand (config latent-ae-tiny),
TAEF2 is pretrained.

    python benchmarks/train_latent_budget.py [--models latent-small,latent-taef2-small] [--ae AE.safetensors]

Writes runs/latent/<model>_s600_b8_c64/{final.safetensors, train_info.json} (resumable).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from diffdeblur.config import config_from_dict
from diffdeblur.train import train

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DIFFDEBLUR_DATA", "/work/shared/data"))
STEPS, BATCH, CROP, LR = 600, 8, 64, 5e-4


def config(model: dict, out_dir: Path) -> dict:
    sources = [{"type": "paired", "root": str(DATA / "gopro_sample" / "train"), "weight": 0.5},
               {"type": "synth", "root": str(DATA / "bsds500" / "train"), "weight": 0.5,
                "options": {"preset": "gopro-like"}}]
    return {
        "model": model,
        "data": {"train": sources, "val": "", "crop": CROP, "batch_size": BATCH, "num_workers": 0},
        "train": {"steps": STEPS, "optimizer": "adam", "lr": LR, "min_lr": LR * 0.01, "weight_decay": 0.0,
                  "betas": [0.9, 0.999], "warmup_steps": min(100, STEPS // 10), "scheduler": "cosine",
                  "loss": "latent-diffusion", "grad_clip": 1.0, "ema": 0.0, "threads": 1, "log_every": 25,
                  "val_every": 10 ** 9, "save_every": 100, "out_dir": str(out_dir)},
        "seed": 0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="latent-small,latent-taef2-small", help="comma-separated presets")
    p.add_argument("--ae", default="", help="ae-tiny weights for latent-small ('' = the shipped ones)")
    p.add_argument("--taef2-dir", default=os.environ.get("DIFFDEBLUR_TAEF2_DIR", str(DATA / "weights" / "taef2")),
                   help="TAEF2 weights folder for latent-taef2-small")
    p.add_argument("--runs", default=str(ROOT / "runs" / "latent"), help="output root")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for name in [m for m in args.models.split(",") if m]:
        weights = args.taef2_dir if "taef2" in name else args.ae
        model = {"type": name, "train_size": CROP, "autoencoder_weights": weights}
        out = Path(args.runs) / f"{name}_s{STEPS}_b{BATCH}_c{CROP}"
        if (out / "final.safetensors").exists():
            print(f"{out}/final.safetensors exists: skipping")
            continue
        out.mkdir(parents=True, exist_ok=True)
        info_path = out / "train_info.json"
        before = json.loads(info_path.read_text()) if info_path.exists() else {"cpu_seconds": 0.0, "wall_seconds": 0.0}
        cpu0, t0 = time.process_time(), time.perf_counter()
        train(config_from_dict(config(model, out), source=str(out)), resume=True, device="cpu", show_progress=False)
        info = {"cpu_seconds": before["cpu_seconds"] + time.process_time() - cpu0,
                "wall_seconds": before["wall_seconds"] + time.perf_counter() - t0,
                "steps": STEPS, "batch": BATCH, "crop": CROP, "lr": LR}
        info_path.write_text(json.dumps(info))
        print(name, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
