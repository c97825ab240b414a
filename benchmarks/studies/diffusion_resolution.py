"""Study 2: train-test resolution discrepancy (seed report 003, Sec. 3.4 / Table 1).

The studies' SR3 model and nafnet-small, each trained on 64x64 crops (batch 8; shared with study 5) and on
128x128 crops (batch 2: the same pixels per step and the same number of steps), then tested
- on 64x64 centre crops (no discrepancy for the 64-trained models),
- on full 1280x720 frames in one piece (untiled), and
- on full frames tiled at the training resolution (tile = training crop, overlap 32 px), which feeds
  the network inputs of the size it was trained on (for the diffusion model, with tiling-consistent noise).
nafnet-small's test-time local statistics window is set for its training crop (NAFNet's TLC).

    python -m benchmarks.studies.diffusion_resolution run | report   # -> docs/results/diffusion_resolution.md
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS, fill_evals, load_json, md_table, read_results, save_json, study_main, write_report
from benchmarks.studies.diffusion_vs_regression import (BATCH, CROP, LR, STEPS, STUDY_MODEL, THREADS, budget,
                                                        regression_model, study_run)

NAME = "diffusion_resolution"
CROP_IMAGES, FULL_IMAGES = 8, 3
DIFFUSION_OPTIONS = {"steps": 10, "sampler": "ddim"}
TRAIN_CROPS = {64: BATCH, 128: BATCH * CROP * CROP // (128 * 128)}  # crop -> batch (equal pixels per step)


def tile_overlap(tile: int) -> int:
    """The tiles' overlap: 32 px, less where the tiler needs it (tile > 2 x overlap)."""
    return min(32, (tile - 1) // 2 // 16 * 16)


def trained(runs: Path, kind: str, crop: int, steps: int, batch: int):
    """The ``kind`` model trained on ``crop`` crops (the 64-crop runs are shared with study 5)."""
    if kind == "sr3":
        key = "sr3" if crop == CROP else f"sr3-c{crop}"
        return study_run(runs, key, STUDY_MODEL, steps=steps, crop=crop, batch=batch, lr=LR["diffusion"],
                         loss="diffusion")
    key = "nafnet-small" if crop == CROP else f"nafnet-small-c{crop}"
    return study_run(runs, key, regression_model(crop), steps=steps, crop=crop, batch=batch, lr=LR["regression"],
                     loss="psnr")


def run(results: Path, runs: Path, smoke: bool = False) -> None:
    torch.set_num_threads(THREADS)
    b = budget(smoke)
    out = runs / f"{NAME}.json"
    res = load_json(out)
    for kind in ("nafnet-small", "sr3"):
        opts = {**DIFFUSION_OPTIONS, "steps": 2} if smoke and kind == "sr3" else DIFFUSION_OPTIONS if kind == "sr3" else {}
        for crop, batch in TRAIN_CROPS.items():
            m, info = trained(runs, kind, crop, b["steps"], 1 if smoke else batch)
            entry = res.setdefault(f"{kind} @{crop}", {"kind": kind, "train_crop": crop, "train": info, "eval": {}})
            tests = {"64x64 crops": dict(crop=64, images=CROP_IMAGES),
                     "1280x720 untiled": dict(crop=0, images=FULL_IMAGES),
                     f"1280x720 tiled {crop}": dict(crop=0, images=FULL_IMAGES, tile=crop, overlap=tile_overlap(crop))}
            if smoke:  # the same tests on one 192x192 crop (tiled at the training crop)
                tests = {k: {**v, "crop": v["crop"] or 192, "images": 1} for k, v in tests.items()}
            fill_evals(entry, m, {label: {**kw, **opts} for label, kw in tests.items()}, lambda: save_json(out, res),
                       f"{kind} @{crop}")
    report(results, res)


def report(results: Path = RESULTS, res: dict[str, Any] | None = None) -> None:
    """Write the report from ``res`` (default: the committed ``<results>/<name>.json``)."""
    res = read_results(NAME, results) if res is None else res
    rows = []
    for name, v in res.items():
        for label, e in v["eval"].items():
            rows.append([v["kind"], v["train_crop"], label, e["images"], e["input_psnr"], e["psnr"], e["ssim"],
                         e["psnr"] - e["input_psnr"], e["cpu_s_per_image"]])
    lines = ["# Train-test resolution discrepancy (study 2)", "",
             f"Written by `python -m benchmarks.studies.diffusion_resolution run`. Each model trained {STEPS} steps on one CPU "
             f"thread: 64x64 crops with batch {TRAIN_CROPS[64]}, or 128x128 crops with batch {TRAIN_CROPS[128]} (equal "
             "pixels per step), on GoPro-sample train + synthetic pairs (as in diffusion_vs_regression.md). Tests: "
             f"64x64 centre crops of the first {CROP_IMAGES} GoPro-sample val pairs, and the first {FULL_IMAGES} full "
             "1280x720 val frames, untiled or tiled at the training crop size (overlap 32 px, the default of "
             f"diffdeblur.tiling). Diffusion sampling: DDIM {DIFFUSION_OPTIONS['steps']} steps, "
             "seed 0.", ""]
    overlaps = sorted({e["options"]["overlap"] for v in res.values() for e in v["eval"].values()
                       if "overlap" in e.get("options", {})})
    if overlaps and overlaps != [32]:
        lines[-2] += f" Tile overlaps used: {', '.join(f'{o} px' for o in overlaps)} (the tiler needs tile > 2 x overlap)."
    lines += md_table(["model", "train crop", "test", "images", "input PSNR", "PSNR", "SSIM", "gain (dB)",
                       "CPU s / image"], rows)
    notes = []
    for name, v in res.items():
        e = v["eval"]
        tiled = next((x for k, x in e.items() if k.startswith("1280x720 tiled")), None)
        if tiled and "1280x720 untiled" in e:
            notes.append(f"`{name}`: tiling at the training size changes full-frame PSNR by "
                         f"{tiled['psnr'] - e['1280x720 untiled']['psnr']:+.2f} dB")
    for kind in ("nafnet-small", "sr3"):
        a, b = res.get(f"{kind} @64"), res.get(f"{kind} @128")
        if a and b:
            for test in ("64x64 crops", "1280x720 untiled"):
                if test in a["eval"] and test in b["eval"]:
                    notes.append(f"`{kind}` trained on 128 vs 64 crops, tested on {test}: "
                                 f"{b['eval'][test]['psnr'] - a['eval'][test]['psnr']:+.2f} dB")
    lines += ["", "Computed:", ""] + [f"- {n}" for n in notes] + [""]
    write_report(NAME, lines, res, results)


def main(argv: list[str] | None = None) -> int:
    return study_main(__doc__, run, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
