"""Training throughput on CPU: crops per second of the real training loop for several models.

Each model trains for a few steps on procedural pairs (so no data set is needed); the first
steps are warm-up and excluded. Writes docs/results/train_throughput.md and .json.

    python benchmarks/bench_train_throughput.py [--steps 12] [--threads 2]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
MODELS = [("nafnet-tiny", 128, 8), ("nafnet-small", 128, 8), ("mimo-unet-tiny", 128, 8)]
WARMUP = 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from diffdeblur.runtime import tune_allocator

    tune_allocator()  # as the CLI does (CPU_NOTES.md: the allocator setting)

    from diffdeblur.config import config_from_dict
    from diffdeblur.example import example_pair
    from diffdeblur.io import write_image
    from diffdeblur.train import train

    load_start = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs"
        for sub in ("blur", "sharp"):
            (data / sub).mkdir(parents=True)
        for i in range(4):
            blur, sharp = example_pair(256, 320, seed=i)
            write_image(data / "blur" / f"{i}.png", blur)
            write_image(data / "sharp" / f"{i}.png", sharp)
        for name, crop, batch in MODELS:
            out = Path(tmp) / name
            cfg = config_from_dict({
                "model": {"type": name},
                "data": {"train": [{"type": "paired", "root": str(data)}], "crop": crop, "batch_size": batch},
                "train": {"steps": args.steps, "log_every": 1, "val_every": 10 ** 9, "save_every": 10 ** 9,
                          "out_dir": str(out), "threads": args.threads, "ema": 0.999},
            })
            train(cfg, device="cpu", show_progress=False)
            with open(out / "log.csv") as f:
                secs = [float(r["seconds"]) for r in csv.DictReader(f)]
            timed = secs[-1] - secs[WARMUP - 1]
            n = len(secs) - WARMUP
            rows.append({"model": name, "crop": crop, "batch": batch, "seconds_per_step": timed / n,
                         "crops_per_second": n * batch / timed})
            print(rows[-1], flush=True)
    meta = {"load_average_start": load_start, "load_average_end": os.getloadavg()[0], "threads": args.threads, "steps": args.steps, "warmup": WARMUP, "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "train_throughput.json").write_text(json.dumps({"rows": rows, **meta}, indent=2) + "\n")
    lines = ["# Training throughput on CPU", "",
             f"Written by `python benchmarks/bench_train_throughput.py --steps {args.steps} --threads {args.threads}` "
             f"on {meta['date']} ({meta['machine']}). The real training loop (AdamW, EMA, PSNR / MIMO loss, "
             f"fp32), {args.steps} steps of which the first {WARMUP} are excluded; data from the in-memory paired "
             f"source (num_workers=0). Load average {meta['load_average_start']:.1f} at the start and "
             f"{meta['load_average_end']:.1f} at the end: other processes on the machine slow these numbers down, "
             "so compare rows with each other, not with another run.", "",
             "| model | crop | batch | s / step | crops / s |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['crop']} | {r['batch']} | {r['seconds_per_step']:.3f} | {r['crops_per_second']:.1f} |")
    (OUT / "train_throughput.md").write_text("\n".join(lines) + "\n")
    print("wrote", OUT / "train_throughput.md")


if __name__ == "__main__":
    main()
