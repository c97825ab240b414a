"""Study 4: self-attention in the SR3 UNet -- none, lowest resolution only, or several resolutions.

Three variants of the studies' SR3 model, identical except for attention, trained with the same budget
(steps, batch, crop, seed, data) as study 5:
- ``none``: no attention anywhere (a pure convolutional UNet);
- ``lowest``: attention only in the middle block (1/8 resolution; the studies' default, shared with study 5);
- ``several``: attention in the middle block and at levels 2 and 3 (1/4 and 1/8 resolution).
Tested on centre crops (DDIM 20 steps) and, to see how global attention copes with a larger test
resolution than at training, on 256x256 crops as well.

    python -m benchmarks.studies.diffusion_attention run | report   # -> docs/results/diffusion_attention.md
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS, fill_evals, load_json, md_table, read_results, save_json, study_main, write_report
from benchmarks.studies.diffusion_vs_regression import BATCH, CROP, LR, STEPS, STUDY_MODEL, THREADS, budget, study_run

NAME = "diffusion_attention"
VARIANTS = {
    "none": {"attn_levels": [], "mid_attn": False},
    "lowest": {},
    "several": {"attn_levels": [2, 3], "mid_attn": True},
}
OPTIONS = {"steps": 20, "sampler": "ddim"}
TESTS = {"64x64 crops": dict(crop=64, images=8), "256x256 crops": dict(crop=256, images=4)}


def run(results: Path, runs: Path, smoke: bool = False) -> None:
    torch.set_num_threads(THREADS)
    b = budget(smoke)
    tests = {"64x64 crops": dict(crop=32, images=1)} if smoke else TESTS
    out = runs / f"{NAME}.json"
    res = load_json(out)
    for name, extra in VARIANTS.items():
        key = "sr3" if not extra else f"sr3-attn-{name}"
        m, info = study_run(runs, key, {**STUDY_MODEL, **extra}, steps=b["steps"], crop=CROP, batch=b["batch"],
                            lr=LR["diffusion"], loss="diffusion")
        entry = res.setdefault(name, {"train": info, "eval": {}})
        entry["train"] = info
        save_json(out, res)
        fill_evals(entry, m, {label: {**kw, **OPTIONS} for label, kw in tests.items()}, lambda: save_json(out, res), name)
    report(results, res)


def report(results: Path = RESULTS, res: dict[str, Any] | None = None) -> None:
    """Write the report from ``res`` (default: the committed ``<results>/<name>.json``)."""
    res = read_results(NAME, results) if res is None else res
    rows = [[name, round(v["train"]["params_M"], 3), round(v["train"]["cpu_seconds"] / 60, 1), label, e["input_psnr"],
             e["psnr"], e["ssim"], e["cpu_s_per_image"]] for name, v in res.items() for label, e in v["eval"].items()]
    lines = ["# Attention variants at equal budget (study 4)", "",
             f"Written by `python -m benchmarks.studies.diffusion_attention run`. The studies' SR3 model (base 16, mults 1,2,4,4, x0 "
             f"objective, T = 1000) trained {STEPS} steps x batch {BATCH} x {CROP}x{CROP} crops on one CPU thread "
             "(same data stream and seed for every variant). `none`: no attention; `lowest`: middle block only (1/8 "
             "resolution); `several`: middle block + levels 2 and 3 (1/4 and 1/8). Test: centre crops of GoPro-sample "
             f"val pairs, DDIM {OPTIONS['steps']} steps.", ""]
    lines += md_table(["attention", "params (M)", "train CPU min", "test", "input PSNR", "PSNR", "SSIM",
                       "CPU s / image"], rows)
    lines += ["", "Computed:", ""]
    for label in TESTS:
        got = {name: v["eval"][label] for name, v in res.items() if label in v["eval"]}
        if "none" not in got:
            continue
        base = got["none"]
        diffs = ", ".join(f"`{n}` {e['psnr'] - base['psnr']:+.2f} dB / {e['ssim'] - base['ssim']:+.3f} SSIM at "
                          f"{e['cpu_s_per_image'] / base['cpu_s_per_image']:.2f}x the CPU time"
                          for n, e in got.items() if n != "none")
        best = max(got, key=lambda n: got[n]["psnr"])
        lines += [f"- {label}: against no attention, {diffs}; best `{best}`, "
                  f"{got[best]['psnr'] - got[best]['input_psnr']:+.2f} dB against the blurry input."]
    flagged = [n for n, v in res.items() if "resumed_at_step" in v["train"]]
    if flagged:
        lines += [f"- Training time undercounts for {', '.join(flagged)} (resumed after an interruption)."]
    lines += [""]
    write_report(NAME, lines, res, results)


def main(argv: list[str] | None = None) -> int:
    return study_main(__doc__, run, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
