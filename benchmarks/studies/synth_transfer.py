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

Usage (each run writes runs/study_synth_transfer/<arm>.json; ``report`` collects them):
    python benchmarks/study_synth_transfer.py run --arm synth
    python benchmarks/study_synth_transfer.py run --arm uniform-kernel
    python benchmarks/study_synth_transfer.py run --arm synth-srgb
    python benchmarks/study_synth_transfer.py report   # -> docs/results/synth_transfer.md + .json
    python benchmarks/study_synth_transfer.py all      # everything, sequentially
Runs use 1 thread; set MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 (see CPU_NOTES.md).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffdeblur.config import config_from_dict
from diffdeblur.evaluate import count_parameters, evaluate
from diffdeblur.inference import load_model
from diffdeblur.io import read_image
from diffdeblur.registry import build_model
from diffdeblur.train import train

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DIFFDEBLUR_DATA", "/work/shared/data"))
SHARP = DATA / "bsds500" / "train"
VAL = DATA / "gopro_sample" / "val"
RUN_DIR = ROOT / "runs" / "study_synth_transfer"
OUT_MD, OUT_JSON = ROOT / "docs/results/synth_transfer.md", ROOT / "docs/results/synth_transfer.json"

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


def experiment(arm: str, steps: int) -> dict[str, Any]:
    kind, options, _ = ARMS[arm]
    return {
        "model": {"type": MODEL},
        "data": {"train": [{"type": kind, "root": str(SHARP), "weight": 1.0,
                            "options": {"preset": PRESET, **options}}],
                 "val": "", "crop": CROP, "batch_size": BATCH, "num_workers": 0},
        "train": {"steps": steps, "lr": LR, "loss": "psnr", "scheduler": "cosine", "warmup_steps": 50,
                  "threads": THREADS, "log_every": 100, "val_every": 10 ** 9, "save_every": 500,
                  "out_dir": str(RUN_DIR / arm)},
        "seed": SEED,
    }


def run_arm(arm: str, steps: int) -> dict[str, Any]:
    torch.set_num_threads(THREADS)
    raw = experiment(arm, steps)
    cfg = config_from_dict(raw, source=f"study_synth_transfer:{arm}")
    summary = train(cfg, resume=True, show_progress=False)  # a finished run is not trained again
    with open(Path(cfg.train.out_dir) / "log.csv") as f:
        train_seconds = float(list(csv.DictReader(f))[-1]["seconds"])  # training-loop time of the run
    model = load_model(str(Path(cfg.train.out_dir) / "final.safetensors"), "cpu")
    t1 = time.perf_counter()
    means: dict[str, float] = {}
    report = evaluate(model, VAL, on_image=lambda name, out: means.__setitem__(name, float(out.mean())))
    for row in report.rows:  # brightness bias the model adds: mean(restored) - mean(sharp)
        sharp, _ = read_image(VAL / "sharp" / f"{row['image']}.png")
        row["mean_shift"] = means[row["image"]] - float(sharp.mean())
    result = {"arm": arm, "description": ARMS[arm][2], "config": raw, "train_seconds": train_seconds,
              "train_summary": summary, "eval_seconds": time.perf_counter() - t1, "val": report.summary,
              "mean_shift": float(np.mean([r["mean_shift"] for r in report.rows])),
              "per_image": report.rows, "errors": report.errors}
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    (RUN_DIR / f"{arm}.json").write_text(json.dumps(result, indent=1))
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
        rng = np.random.default_rng(SEED)
        crops = [src.sample(rng, CROP) for _ in range(samples)]
        vals = [psnr(d["blur"], d["sharp"]) for d in crops]
        out[name] = {"psnr": float(np.mean([v for v in vals if np.isfinite(v)])),
                     "mean_shift_8bit": float(np.mean([(d["blur"] - d["sharp"]).mean() for d in crops]) * 255)}
    return out


def write_report() -> None:
    results = {}
    for arm in ARMS:
        path = RUN_DIR / f"{arm}.json"
        if not path.exists():
            sys.exit(f"missing {path}: run `python benchmarks/study_synth_transfer.py run --arm {arm}` first")
        results[arm] = json.loads(path.read_text())
    first = results["synth"]
    inp, cfg = first["val"], first["config"]
    n_val = len(first["per_image"])
    lines = [
        "# Synthetic-blur transfer: dynamic-scene synthesis vs naive uniform kernels",
        "",
        "Written by `benchmarks/study_synth_transfer.py` (rerun: `python benchmarks/study_synth_transfer.py all`).",
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
    cal = calibration()
    lines += ["", "## What the generators produce", "",
              f"Blurry vs sharp over {CALIBRATION_SAMPLES} random {CROP}x{CROP} crops (seed {SEED}); the GoPro "
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
        f"- Machine: {platform.processor() or platform.machine()}, shared 2-core CPU (other jobs were running, "
        "so seconds are indicative only); torch " + torch.__version__ + ".",
        "- This is a very small budget: absolute PSNRs are far below published GoPro numbers, and one seed on "
        "one scene gives a noisy comparison.",
        "",
    ]
    OUT_MD.parent.mkdir(parents=True, exist_ok=True)
    OUT_MD.write_text("\n".join(lines))
    OUT_JSON.write_text(json.dumps({
        "model": MODEL, "preset": PRESET, "input": {"psnr": inp["input_psnr"], "ssim": inp["input_ssim"]},
        "generator_crops": cal,
        "arms": {k: {"psnr": v["val"]["psnr"], "ssim": v["val"]["ssim"], "mean_shift": v["mean_shift"],
                     "train_seconds": v["train_seconds"], "config": v["config"], "per_image": v["per_image"]}
                 for k, v in results.items()}}, indent=1))
    print(f"wrote {OUT_MD} and {OUT_JSON}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["run", "report", "all"])
    ap.add_argument("--arm", choices=sorted(ARMS), help="for `run`")
    ap.add_argument("--steps", type=int, default=STEPS, help="training steps per arm")
    args = ap.parse_args(argv)
    if not SHARP.is_dir() or not VAL.is_dir():
        print(f"data not found under {DATA} (set DIFFDEBLUR_DATA); skipping")
        return 0
    if args.what == "run":
        if not args.arm:
            ap.error("run needs --arm")
        run_arm(args.arm, args.steps)
    elif args.what == "all":
        for arm in ARMS:
            run_arm(arm, args.steps)
    if args.what in ("report", "all"):
        write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
