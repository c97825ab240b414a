"""Training throughput on CPU: crops per second of the real training loop for several models.

Each model trains for a few steps on procedural pairs (so no data set is needed); the first
steps are warm-up and excluded. Writes docs/results/train_throughput.md and .json.

    python -m benchmarks.bench.train_throughput [--steps 12] [--threads 2]
    python -m benchmarks.bench.train_throughput --report    # the markdown from the committed JSON
"""
from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS, load_average, machine, read_results, today, write_example_pairs, write_report

NAME = "train_throughput"
MODELS = [("nafnet-tiny", 128, 8), ("nafnet-small", 128, 8), ("mimo-unet-tiny", 128, 8)]
WARMUP = 3


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from diffdeblur.config import config_from_dict
    from diffdeblur.runtime import tune_allocator
    from diffdeblur.train import train

    torch.set_num_threads(args.threads)
    tune_allocator()  # as the CLI does (CPU_NOTES.md: the allocator setting)
    load_start = load_average()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_example_pairs(Path(tmp) / "pairs", 4, 256, 320)
        for name, crop, batch in [m for m in MODELS if m[0] in args.models]:
            crop, batch = min(crop, args.crop), min(batch, args.batch)
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
    return {"rows": rows, "load_average_start": load_start, "load_average_end": load_average(),
            "threads": args.threads, "steps": args.steps, "warmup": WARMUP, "date": today(), "machine": machine()}


def render(data: dict[str, Any]) -> list[str]:
    """The markdown report from the JSON data alone."""
    lines = ["# Training throughput on CPU", "",
             f"Written by `python -m benchmarks.bench.train_throughput --steps {data['steps']} --threads "
             f"{data['threads']}` on {data['date']} ({data['machine']}). The real training loop (AdamW, EMA, PSNR / "
             f"MIMO loss, fp32), {data['steps']} steps of which the first {data['warmup']} are excluded; data from the "
             f"in-memory paired source (num_workers=0). Load average {data['load_average_start']:.1f} at the start and "
             f"{data['load_average_end']:.1f} at the end: other processes on the machine slow these numbers down, "
             "so compare rows with each other, not with another run.", "",
             "| model | crop | batch | s / step | crops / s |", "|---|---:|---:|---:|---:|"]
    for r in data["rows"]:
        lines.append(f"| {r['model']} | {r['crop']} | {r['batch']} | {r['seconds_per_step']:.3f} | "
                     f"{r['crops_per_second']:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="training steps per model (the first 3 are warm-up)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--models", nargs="+", default=[m[0] for m in MODELS], help="subset of the models")
    ap.add_argument("--crop", type=int, default=128, help=argparse.SUPPRESS)  # smoke tests: smaller crops
    ap.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--results", type=Path, default=RESULTS, help="where train_throughput.md / .json go")
    ap.add_argument("--report", action="store_true", help="measure nothing: rewrite the .md from the .json")
    args = ap.parse_args(argv)
    data = read_results(NAME, args.results) if args.report else measure(args)
    print("wrote", write_report(NAME, render(data), data, args.results, quiet=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
