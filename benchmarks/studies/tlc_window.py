"""Test-time local statistics (TLC): the shipped default with other pooling windows, on whole real frames.

NAFNet's TLC replaces each channel attention's global average pool by a local one over a window of 1.5x
the feature size that a training crop has at that level (``train_size`` in the model's kwargs: the
default was trained on 128-pixel crops, so its windows are 192, 96, 48, 24, 12 pixels of the feature
maps). The window is a test-time choice: this study evaluates the unchanged weights with the windows of
other ``train_size`` values (``global``: no TLC, the global pool of training) on REDS val (a scene never
trained on; the selection set) and GoPro val (the training scene), whole 1280x720 frames, no tiling.

    python -m benchmarks.studies.tlc_window run [--sizes 96 128 192 256 global] [--max-images N] [--threads 2]
    python -m benchmarks.studies.tlc_window report       # md from tlc_window.json
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (GOPRO_VAL, REDS_VAL, RESULTS, command, machine, md_table, portable, read_results,
                               study_main, today, write_report)

NAME = "tlc_window"
MODULE = f"benchmarks.studies.{NAME}"
DATASETS = {"reds": ("REDS val (unseen scene)", REDS_VAL), "gopro": ("GoPro val (training scene)", GOPRO_VAL)}
GLOBAL = "global"


def with_windows(model: torch.nn.Module, size: str) -> torch.nn.Module:
    """``model`` (a NAFNet) with the TLC windows of crops of ``size`` pixels, or global pools (``global``)."""
    model.set_tlc_windows(None if size == GLOBAL else int(size))
    return model


def run(results: Path, runs: Path, smoke: bool, sizes: list[str], max_images: int, threads: int) -> None:
    from diffdeblur.evaluate import evaluate
    from diffdeblur.inference import load_model
    from diffdeblur.tensorfile import read_metadata, shipped_weights

    torch.set_num_threads(threads)
    trained = read_metadata(shipped_weights("default"))["kwargs"].get("train_size")
    data: dict[str, Any] = {"command": command(MODULE, None), "date": today(), "machine": machine(),
                            "threads": threads, "max_images": max_images, "trained_train_size": trained, "rows": []}
    for size in sizes:
        model = with_windows(load_model("default", "cpu"), size)
        for key, (label, folder) in DATASETS.items():
            rep = evaluate(model, folder, tile=0, max_images=max_images)
            s = rep.summary
            row = {"train_size": size, "data": key, "images": s["images"], "psnr": s["psnr"], "ssim": s["ssim"],
                   "input_psnr": s["input_psnr"], "input_ssim": s["input_ssim"],
                   "worse_than_input": sum(r["psnr"] < r["input_psnr"] for r in rep.rows)}
            data["rows"].append(row)
            print(f"{size} {key}: {row['psnr']:.3f} dB (input {row['input_psnr']:.3f}), "
                  f"{row['worse_than_input']} worse than input", flush=True)
    data["folders"] = {k: portable(v[1]) for k, v in DATASETS.items()}
    report(results, data)


def report(results: Path = RESULTS, data: dict[str, Any] | None = None, **_: Any) -> None:
    data = data or read_results(NAME, results)
    trained = str(data["trained_train_size"])
    lines = ["# TLC window of the default model", "",
             f"Written by `{data['command']}` on {data['date']} ({data['machine']}, {data['threads']} thread(s)). "
             f"The shipped default's weights unchanged; only the test-time local statistics window differs: the "
             f"windows of `train_size` crops (1.5x their feature size per level), `global` = no TLC. The weights "
             f"were trained on {trained}-pixel crops (the shipped setting). Whole 1280x720 frames, no tiling.", ""]
    rows = []
    for r in data["rows"]:
        rows.append([r["train_size"] + (" (shipped)" if r["train_size"] == trained else ""),
                     DATASETS.get(r["data"], (r["data"],))[0], r["images"], r["input_psnr"], r["psnr"],
                     r["psnr"] - r["input_psnr"], r["ssim"], r["worse_than_input"]])
    lines += md_table(["train_size (window)", "data", "frames", "input PSNR", "PSNR", "gain (dB)", "SSIM",
                       "frames worse than input"], rows)
    best = max((r for r in data["rows"] if r["data"] == "reds"), key=lambda r: r["psnr"], default=None)
    if best is not None:
        lines += ["", f"Best on REDS val (the selection set): `{best['train_size']}` at {best['psnr']:.3f} dB."]
    write_report(NAME, lines, data if "command" in data else None, results)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--sizes", nargs="+", default=["96", "128", "192", "256", GLOBAL],
                    help="train_size values whose TLC windows to try, or 'global'")
    ap.add_argument("--max-images", type=int, default=0, help="the first N frames of each set (0 = all)")
    ap.add_argument("--threads", type=int, default=2)


def main(argv: list[str] | None = None) -> int:
    def report_only(results: Path, sizes: list[str], max_images: int, threads: int) -> None:
        report(results)

    return study_main(__doc__, run, report_only, argv, add_arguments, needs=(REDS_VAL, GOPRO_VAL))


if __name__ == "__main__":
    raise SystemExit(main())
