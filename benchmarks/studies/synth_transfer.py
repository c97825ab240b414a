"""Does physically motivated synthetic blur transfer to real GoPro blur better than naive blur?

Arms, identical except for how the training pairs are made from the same sharp photos
(BSDS500 train, 200 images):
- ``synth``: ``diffdeblur.data.synth`` (preset gopro-like): camera shake with curvature, rotation
  and zoom, moving foreground layers with occlusion, integration of sub-frames in linear light,
  highlight boost + clipping, shot/read noise;
- ``uniform-kernel``: one random straight-line motion kernel per crop (same length range as the
  synth camera path), convolved in sRGB, the same sensor noise model and levels;
- ``synth-srgb`` (ablation): ``synth`` with the sub-frames averaged as sRGB values instead of in
  linear light (everything else identical), to separate the integration space from the rest.
Same model (random init from the same seed), optimizer, steps, batch, crop size and seed. The
model never sees a real blurry image. Evaluation: the GoPro sample's 30 validation pairs at full
resolution (1280x720), PSNR / SSIM from :mod:`diffdeblur.metrics`, plus the blurry input's.

Usage (each arm writes runs/study_synth_transfer/<arm>.json; ``run`` then measures the generators and
writes docs/results/synth_transfer.{md,json}; ``report`` rewrites the markdown from that JSON alone):
    python -m benchmarks.studies.synth_transfer run                 # every arm, sequentially
    python -m benchmarks.studies.synth_transfer run --arm synth     # one arm (the report needs all three)
    python -m benchmarks.studies.synth_transfer report
Runs use 1 thread; set MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 (see CPU_NOTES.md).
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (BSDS, GOPRO_VAL, RESULTS, RUNS, cpu_name, load_json, portable_tree, read_results,
                               study_main, train_or_load, write_report)
from diffdeblur.evaluate import count_parameters, evaluate
from diffdeblur.io import read_image
from diffdeblur.registry import build_model

NAME = "synth_transfer"
SHARP = BSDS
VAL = GOPRO_VAL

# arm -> (data source type, extra source options, description)
ARMS: dict[str, tuple[str, dict[str, Any], str]] = {
    "synth": ("synth", {}, "dynamic-scene synthesis (linear light, shake + moving layers, highlights, noise)"),
    "uniform-kernel": ("uniform-kernel", {}, "naive: random linear kernel convolved in sRGB, same noise"),
    "synth-srgb": ("synth", {"integration": "srgb"}, "ablation: `synth` averaged as sRGB values, not linear light"),
}
MODEL = "nafnet-tiny"
PRESET = "gopro-like"
STEPS, BATCH, CROP, LR, SEED = 1500, 8, 96, 1e-3, 0
THREADS = 1
CALIBRATION_SAMPLES = 300
# --smoke: training steps, validation images and generator crops of the tiny budget of the smoke test
SMOKE = {"steps": 2, "val_images": 1, "samples": 2}


def experiment(arm: str, steps: int, runs: Path) -> dict[str, Any]:
    kind, options, _ = ARMS[arm]
    return {
        "model": {"type": MODEL},
        "data": {"train": [{"type": kind, "root": str(SHARP), "weight": 1.0,
                            "options": {"preset": PRESET, **options}}],
                 "val": "", "crop": CROP, "batch_size": BATCH, "num_workers": 0},
        "train": {"steps": steps, "lr": LR, "loss": "psnr", "scheduler": "cosine", "warmup_steps": 50,
                  "threads": THREADS, "log_every": 100, "val_every": 10 ** 9, "save_every": 500,
                  "out_dir": str(runs / arm)},
        "seed": SEED,
    }


def run_arm(arm: str, steps: int, runs: Path, val_images: int = 0) -> dict[str, Any]:
    torch.set_num_threads(THREADS)
    raw = experiment(arm, steps, runs)
    model, summary = train_or_load(raw)  # a finished run is not trained again
    with open(Path(raw["train"]["out_dir"]) / "log.csv") as f:
        train_seconds = float(list(csv.DictReader(f))[-1]["seconds"])  # training-loop time of the run
    t1 = time.perf_counter()
    means: dict[str, float] = {}
    report = evaluate(model, VAL, max_images=val_images,
                      on_image=lambda name, out: means.__setitem__(name, float(out.mean())))
    for row in report.rows:  # brightness bias the model adds: mean(restored) - mean(sharp)
        sharp, _ = read_image(VAL / "sharp" / f"{row['image']}.png")
        row["mean_shift"] = means[row["image"]] - float(sharp.mean())
    result = {"arm": arm, "description": ARMS[arm][2], "config": raw, "train_seconds": train_seconds,
              "train_summary": summary, "eval_seconds": time.perf_counter() - t1, "val": report.summary,
              "mean_shift": float(np.mean([r["mean_shift"] for r in report.rows])),
              "per_image": report.rows, "errors": report.errors}
    runs.mkdir(parents=True, exist_ok=True)
    (runs / f"{arm}.json").write_text(json.dumps(portable_tree(result), indent=1))
    s = report.summary
    print(f"{arm}: val PSNR {s['psnr']:.3f} dB SSIM {s['ssim']:.4f} (input {s['input_psnr']:.3f} / "
          f"{s['input_ssim']:.4f}); train {train_seconds:.0f} s")
    return result


def calibration(samples: int = CALIBRATION_SAMPLES) -> dict[str, dict[str, float]]:
    """Blur statistics over random CROP x CROP crops: mean PSNR (dB) of blurry vs sharp, and the
    mean brightness bias mean(blurry - sharp) (8-bit levels).

    Content matters for PSNR, so each generator is also applied to the GoPro validation *sharp*
    frames and compared with the real GoPro blur of the same frames (calibration only: no model
    is trained on these)."""
    from diffdeblur.config import DataSource
    from diffdeblur.data.datasets import PairedSource, build_source
    from diffdeblur.metrics import psnr

    sources: dict[str, Any] = {"GoPro val frames, real blur": PairedSource(str(VAL))}
    for root, label in ((VAL / "sharp", "GoPro val sharp frames"), (SHARP, "BSDS500 train (training data)")):
        for arm, (kind, options, _) in ARMS.items():
            spec = DataSource(kind, str(root), 1.0, {"preset": PRESET, **options})
            sources[f"{label}, `{arm}`"] = build_source(spec)
    out = {}
    for name, src in sources.items():
        rng = np.random.default_rng(SEED)  # the same crops for every generator
        crops = [src.sample(rng, CROP) for _ in range(samples)]
        vals = [psnr(d["blur"], d["sharp"]) for d in crops]
        out[name] = {"psnr": float(np.mean([v for v in vals if np.isfinite(v)])),
                     "mean_shift_8bit": float(np.mean([(d["blur"] - d["sharp"]).mean() for d in crops]) * 255)}
    return out


def collect(runs: Path, samples: int) -> dict[str, Any] | None:
    """The report's data from the arms' runs (None, with a message, while an arm is missing) and the
    generator statistics over ``samples`` crops."""
    arms = {}
    for arm in ARMS:
        r = load_json(runs / f"{arm}.json")
        if not r:
            print(f"no results of arm {arm} yet: `python -m benchmarks.studies.synth_transfer run --arm {arm}`")
            return None
        arms[arm] = {"psnr": r["val"]["psnr"], "ssim": r["val"]["ssim"], "mean_shift": r["mean_shift"],
                     "train_seconds": r["train_seconds"], "config": r["config"], "per_image": r["per_image"]}
    inp = load_json(runs / "synth.json")["val"]
    return {"model": MODEL, "preset": PRESET, "input": {"psnr": inp["input_psnr"], "ssim": inp["input_ssim"]},
            "generator_crops": calibration(samples), "calibration_samples": samples, "machine": cpu_name(),
            "torch": torch.__version__, "arms": arms}


def render(data: dict[str, Any]) -> list[str]:
    """The markdown report from the JSON data alone."""
    results = {arm: {**r, "description": ARMS[arm][2], "val": {"psnr": r["psnr"], "ssim": r["ssim"]}}
               for arm, r in data["arms"].items()}
    inp = {"input_psnr": data["input"]["psnr"], "input_ssim": data["input"]["ssim"]}
    cfg = results["synth"]["config"]
    n_val = len(results["synth"]["per_image"])
    samples = data.get("calibration_samples", CALIBRATION_SAMPLES)
    lines = [
        "# Synthetic-blur transfer: dynamic-scene synthesis vs naive uniform kernels",
        "",
        "Written by `python -m benchmarks.studies.synth_transfer report` from `synth_transfer.json` (rerun the "
        "study: `python -m benchmarks.studies.synth_transfer run`).",
        "",
        f"A `{MODEL}` is trained only on synthetic pairs made on the fly from the 200 sharp BSDS500 train photos, "
        f"then evaluated on real blur: the GoPro sample's {n_val} validation pairs (one scene, GOPR0372_07_00 "
        "frames 100-129) at full 1280x720 resolution, no tiling. All arms use the same model init, optimizer, "
        "crops, steps and seed; only the blur generator differs. No arm sees a real blurry image.",
        "",
        "| training data | val PSNR (dB) | val SSIM | brightness bias (8-bit levels) | train time (s) |",
        "|---|---|---|---|---|",
        f"| (blurry input, no model) | {inp['input_psnr']:.3f} | {inp['input_ssim']:.4f} | - | - |",
    ]
    for arm, r in results.items():
        lines.append(f"| `{arm}`: {r['description']} | {r['val']['psnr']:.3f} | {r['val']['ssim']:.4f} | "
                     f"{r['mean_shift'] * 255:+.2f} | {r['train_seconds']:.0f} |")

    def compare(x: str, y: str) -> str:
        a, b = results[x], results[y]
        wins = sum(p["psnr"] > q["psnr"] for p, q in zip(a["per_image"], b["per_image"]))
        return (f"`{x}` - `{y}`: {a['val']['psnr'] - b['val']['psnr']:+.3f} dB PSNR, "
                f"{a['val']['ssim'] - b['val']['ssim']:+.4f} SSIM; `{x}` is better on {wins} of {n_val} images.")

    lines += ["", "Brightness bias: mean over validation images of mean(restored) - mean(sharp), in 8-bit levels.",
              "", "- " + compare("synth", "uniform-kernel"), "- " + compare("synth-srgb", "uniform-kernel"),
              "- " + compare("synth", "synth-srgb")]
    cal = data["generator_crops"]
    lines += ["", "## What the generators produce", "",
              f"Blurry vs sharp over {samples} random {CROP}x{CROP} crops (seed {SEED}); the GoPro "
              "rows apply each generator to the validation *sharp* frames (same content as the real blur; used "
              "for this calibration only, never for training).", "",
              "| crops | mean PSNR blurry vs sharp (dB) | mean(blurry - sharp) (8-bit levels) |", "|---|---|---|"]
    lines += [f"| {name} | {v['psnr']:.2f} | {v['mean_shift_8bit']:+.2f} |" for name, v in cal.items()]
    real = cal["GoPro val frames, real blur"]
    syn, naive = cal["GoPro val sharp frames, `synth`"], cal["GoPro val sharp frames, `uniform-kernel`"]
    syn_srgb = cal["GoPro val sharp frames, `synth-srgb`"]
    best = max(results, key=lambda k: results[k]["val"]["psnr"])
    lines += [
        "",
        "## Reading",
        "",
        f"- Best transfer in this run: `{best}` ({results[best]['val']['psnr']:.3f} dB vs the blurry input's "
        f"{inp['input_psnr']:.3f} dB). Every model stays within "
        f"{max(abs(r['val']['psnr'] - inp['input_psnr']) for r in results.values()):.2f} dB of the input: at "
        "this budget none learns much that transfers to real GoPro blur.",
        f"- On the same GoPro content, the `{PRESET}` synth blur is much stronger than the real blur of this scene "
        f"({syn['psnr']:.2f} dB vs {real['psnr']:.2f} dB crop PSNR), while the naive kernels are close to it "
        f"({naive['psnr']:.2f} dB): the preset (moving layers, curved shake, boosted highlights) is not "
        "calibrated to this scene, and a model trained on stronger blur likely over-sharpens milder real blur "
        "(not isolated here).",
        f"- Linear-light averaging brightens a blurred image (the sRGB encoding is concave, so the encoded mean "
        f"of linear values is above the mean of encoded values): the synth blur is {syn['mean_shift_8bit']:+.2f} "
        f"levels brighter than its sharp frame ({syn_srgb['mean_shift_8bit']:+.2f} with sRGB averaging, where "
        "only layers and highlights contribute), but the real GoPro blur is not "
        f"({real['mean_shift_8bit']:+.2f}). The `synth`-trained model learned to darken "
        f"({results['synth']['mean_shift'] * 255:+.2f} levels on GoPro val), which costs PSNR; with sRGB "
        f"averaging the bias is gone ({results['synth-srgb']['mean_shift'] * 255:+.2f}). This suggests the GoPro "
        "frames were averaged closer to display space than to sRGB-linear light (or under a different camera "
        "response), so a physically linear generator mismatches it in mean brightness.",
        "- For GoPro-targeted training, a milder preset, `integration: srgb`, or fine-tuning on real pairs are the "
        "natural next steps; this run does not test them.",
        "",
        "## Budget and settings",
        "",
        f"- Model `{MODEL}` ({count_parameters(build_model(MODEL)) / 1e3:.1f} k parameters), PSNR loss, AdamW lr {cfg['train']['lr']} with cosine decay and "
        f"{cfg['train']['warmup_steps']} warm-up steps, {cfg['train']['steps']} steps of batch "
        f"{cfg['data']['batch_size']} random {cfg['data']['crop']}x{cfg['data']['crop']} crops "
        f"(with flips / 90-degree rotations), seed {cfg['seed']}, {THREADS} CPU thread, no EMA.",
        f"- Synthesis preset `{PRESET}` for every arm (camera path length 4-30 px; the naive arm draws its "
        "straight kernel length from the same range and uses the same shot/read noise ranges). Training "
        "time includes on-the-fly synthesis in the training process (the synth generator costs more per crop).",
        f"- Machine: {data.get('machine', 'x86_64')}, shared 2-core CPU (other jobs were running, "
        f"so seconds are indicative only); torch {data.get('torch', '2.13.0+cpu')}.",
        "- This is a very small budget: absolute PSNRs are far below published GoPro numbers, and one seed on "
        "one scene gives a noisy comparison.",
        "",
    ]
    return lines


def run(results: Path, runs: Path, smoke: bool = False, arm: str | None = None, steps: int = STEPS) -> None:
    for a in [arm] if arm else ARMS:
        run_arm(a, SMOKE["steps"] if smoke else steps, runs, SMOKE["val_images"] if smoke else 0)
    data = collect(runs, SMOKE["samples"] if smoke else CALIBRATION_SAMPLES)
    if data is not None:
        write_report(NAME, render(data), data, results, quiet=True, indent=1)
        print(f"wrote {results / NAME}.md and .json")


def report(results: Path = RESULTS, **_: Any) -> None:
    data = read_results(NAME, results)
    write_report(NAME, render(data), data, results, quiet=True, indent=1)
    print(f"rewrote {results / NAME}.md from its .json")


def main(argv: list[str] | None = None) -> int:
    def add_arguments(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--arm", choices=sorted(ARMS), help="run: only this arm")
        ap.add_argument("--steps", type=int, default=STEPS, help="run: training steps per arm")

    return study_main(__doc__, run, report, argv, add_arguments, needs=(SHARP, VAL), runs=RUNS / "study_synth_transfer")


if __name__ == "__main__":
    raise SystemExit(main())
