"""Object removal against OpenCV's classical inpainting, on photos the removal models never trained on.

The 20 held-out BSDS500 photos (:func:`diffdeblur.data.sr_pairs.bsds_holdout`: every 10th train photo by file name;
``recipes/remove.yaml`` trains with ``holdout: bsds20``), each with a fixed-seed hole mask
(:func:`~diffdeblur.data.masks.random_mask`: strokes, boxes and object silhouettes cut from the next photo) per
hole-area bin: 5-10 %, 10-25 % (the target bin) and 25-40 %, written once as removal pairs (``blur/`` holed,
``sharp/``, ``mask/``; :func:`~diffdeblur.data.masks.write_removal_pairs`) under ``--runs``. Methods on the holed
photo and its mask:

- pull-push interpolation (the prefill the ``remove`` network refines; no extra needed);
- OpenCV ``cv2.inpaint`` TELEA (Telea 2004) and NS (Navier-Stokes, Bertalmio et al. 2001), radius 3
  (``pip install "diffdeblur[studies]"``; without OpenCV the rows are left out and the report says so);
- each ``--model NAME=PATH`` (repeatable; a ``.safetensors`` of ``diffdeblur train remove`` / ``remove-chain``),
  a chain at each of ``--steps``, through :func:`diffdeblur.inference.restore_tensor` (whole images, eager fp32).

Measures (8-bit RGB, the protocol of :mod:`diffdeblur.metrics`): PSNR and SSIM inside the mask (PSNR over the
masked pixels; the SSIM map, 11x11 Gaussian window, averaged over the masked pixels it covers) and of the whole
image; the no-reference measures of :mod:`diffdeblur.perception` that are installed (blur effect, NIQE); per image
and mean; ours minus Telea, image by image (mean, 95 % interval, images better); and whether our models give back
every unmasked pixel of the input bit for bit. An example (holed input, Telea, NS, ours, reference) goes to
``removal_peers.png``. Writes docs/results/removal_peers.{json,md}; ``report`` renders the markdown from the JSON.

    python -m benchmarks.studies.removal_peers run --model remove=~/diffdeblur-runs/remove/best.safetensors \
        --model chain=~/diffdeblur-runs/remove-chain/best.safetensors --steps 1 4
    python -m benchmarks.studies.removal_peers report
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import (BSDS, RESULTS, RUNS, command, machine, md_table, measure_header, measure_text,
                               missing_data, portable, read_results, study_main, today, write_report)
from diffdeblur.commands import positive_int

NAME = "removal_peers"
MODULE = f"benchmarks.studies.{NAME}"
BINS = ((0.05, 0.10), (0.10, 0.25), (0.25, 0.40))
TARGET_BIN = "10-25%"
RADIUS = 3  # cv2.inpaint's inpaintRadius
NO_REFERENCE = ("blur-effect", "niqe")
PEERS = ("telea", "ns")
SMOKE = {"photos": 3, "height": 48, "width": 64, "models": (("remove", "remove-tiny"), ("chain", "remove-chain-tiny"))}
MISSING_CV2 = f"{NAME}: OpenCV (cv2) is not installed: no Telea / NS rows (pip install \"diffdeblur[studies]\")"


def bin_label(area: tuple[float, float]) -> str:
    return f"{round(100 * area[0])}-{round(100 * area[1])}%"


def model_spec(text: str) -> tuple[str, str]:
    """argparse type of ``--model``: ``NAME=PATH`` -> (NAME, PATH)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path or name in ("input", "pull-push", *PEERS):
        raise argparse.ArgumentTypeError(f"expected NAME=PATH with NAME not input/pull-push/telea/ns, got '{text}'")
    return name, path


# ---- measures --------------------------------------------------------------------------------------

def _unit8(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) in [0, 1] -> (1, 3, H, W) float64 in [0, 255], quantised to 8 bits (diffdeblur.metrics)."""
    return torch.round(torch.from_numpy(np.ascontiguousarray(img)).double().clamp(0, 1) * 255).permute(2, 0, 1)[None]


def ssim_map(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The per-pixel SSIM of :func:`diffdeblur.metrics.ssim` (11x11 Gaussian, sigma 1.5, 'valid'), averaged over
    the channels: (H - 10, W - 10); its mean is ``metrics.ssim(pred, target)``."""
    from diffdeblur.metrics import SSIM_K1, SSIM_K2, SSIM_WINDOW, _gaussian_window

    a, b = _unit8(pred), _unit8(target)
    g = _gaussian_window()[0, 0].sum(dim=0)  # the separable 1-D factor
    wy, wx = g.view(1, 1, -1, 1).repeat(3, 1, 1, 1), g.view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    filt = lambda x: F.conv2d(F.conv2d(x, wy, groups=3), wx, groups=3)  # noqa: E731
    c1, c2 = (SSIM_K1 * 255) ** 2, (SSIM_K2 * 255) ** 2
    mu_a, mu_b = filt(a), filt(b)
    s_aa, s_bb, s_ab = filt(a * a) - mu_a ** 2, filt(b * b) - mu_b ** 2, filt(a * b) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2))
    assert ssim.shape[-1] == a.shape[-1] - SSIM_WINDOW + 1
    return ssim[0].mean(dim=0).numpy()


def masked_scores(out: np.ndarray, sharp: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """PSNR over the masked pixels and the SSIM map averaged over the masked pixels (NaN when the mask misses
    the map), of 8-bit images (H, W, 3) in [0, 1]; mask (H, W) bool."""
    a, b = _unit8(out)[0].permute(1, 2, 0).numpy(), _unit8(sharp)[0].permute(1, 2, 0).numpy()
    mse = float(((a[mask] - b[mask]) ** 2).mean())
    smap = ssim_map(out, sharp)
    r = (mask.shape[0] - smap.shape[0]) // 2  # the 'valid' map's border
    inner = mask[r:mask.shape[0] - r, r:mask.shape[1] - r]
    return {"psnr_mask": math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse),
            "ssim_mask": float(smap[inner].mean()) if inner.any() else math.nan}


def available_no_reference() -> tuple[str, ...]:
    """The no-reference measures whose optional package is installed."""
    from diffdeblur.errors import ConfigError
    from diffdeblur.perception import require

    names = []
    for name in NO_REFERENCE:
        try:
            require([name])
            names.append(name)
        except ConfigError:
            pass
    return tuple(names)


def scores(out: np.ndarray, sharp: np.ndarray, mask: np.ndarray, no_reference: tuple[str, ...]) -> dict[str, float]:
    """Every measure of one restored image (see the module docstring)."""
    from diffdeblur.metrics import psnr, ssim
    from diffdeblur.perception import PERCEPTION_METRICS, column

    row = {**masked_scores(out, sharp, mask), "psnr": psnr(out, sharp), "ssim": ssim(out, sharp)}
    for name in no_reference:
        try:
            row[column(name)] = PERCEPTION_METRICS[name].function(out)
        except ValueError:  # too small / flat for the measure
            row[column(name)] = math.nan
    return row


# ---- methods ---------------------------------------------------------------------------------------

def pull_push_fill(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The classical fill the ``remove`` network starts from (:func:`diffdeblur.models.inpaint_nafnet.pull_push`):
    holed (H, W, 3) in [0, 1], mask (H, W) bool -> (H, W, 3)."""
    from diffdeblur.models.inpaint_nafnet import pull_push

    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return pull_push(x * (1 - m), m)[0].permute(1, 2, 0).numpy()


def opencv_peers() -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """{"telea": f, "ns": f} with f(holed (H, W, 3) in [0, 1], mask (H, W) bool) -> (H, W, 3); {} without cv2."""
    try:
        import cv2
    except ImportError:
        return {}

    def peer(flag: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        def run(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
            bgr = np.ascontiguousarray(np.round(img[..., ::-1] * 255).astype(np.uint8))
            out = cv2.inpaint(bgr, mask.astype(np.uint8) * 255, RADIUS, flag)
            return out[..., ::-1].astype(np.float32) / 255.0
        return run
    return {"telea": peer(cv2.INPAINT_TELEA), "ns": peer(cv2.INPAINT_NS)}


def load(path: str, smoke: bool) -> torch.nn.Module:
    """A checkpoint (or shipped weights) on the CPU; with ``smoke`` a registered name is built untrained."""
    from diffdeblur.inference import load_model
    from diffdeblur.registry import build_model, model_names

    if smoke and path in model_names():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return build_model(path).eval()
    return load_model(path, "cpu")


def our_settings(label: str, model: torch.nn.Module, steps: list[int]) -> list[tuple[str, dict[str, Any]]]:
    """(row name, restore options): one per ``steps`` value for a model that takes steps, else one."""
    from diffdeblur.models.protocol import model_options

    if "steps" in model_options(model):
        return [(f"{label} ({k} step{'s' if k > 1 else ''})", {"steps": k}) for k in steps]
    return [(label, {})]


# ---- the run ---------------------------------------------------------------------------------------

def photo_set(runs: Path, smoke: bool) -> list[Path]:
    """The held-out BSDS500 photos, or (smoke) a few generated photos written under ``runs``."""
    from diffdeblur.data.sr_pairs import bsds_holdout, photo_files
    from diffdeblur.example import example_pair
    from diffdeblur.io import write_image

    if not smoke:
        return bsds_holdout(photo_files(BSDS))
    folder = runs / "smoke_photos"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(SMOKE["photos"]):
        write_image(folder / f"{i:03d}.png", example_pair(SMOKE["height"], SMOKE["width"], seed=i)[1])
    return sorted(folder.glob("*.png"))


def removal_folder(runs: Path, photos: list[Path], area: tuple[float, float], seed: int, smoke: bool) -> Path:
    """The removal pairs of one bin (written once, then reused: fixed by the photos, the bin and the seed)."""
    from diffdeblur.data.masks import write_removal_pairs

    out = runs / f"{'smoke' if smoke else 'bsds20'}_{bin_label(area).rstrip('%')}_seed{seed}"
    return out if out.is_dir() else write_removal_pairs(photos, out, area, seed)


def run(results: Path, runs: Path, smoke: bool = False, model: list[tuple[str, str]] | None = None,
        steps: list[int] | None = None, seed: int = 0, threads: int = 1, argv: list[str] | None = None) -> None:
    """Score every method on every bin's pairs, then write the JSON, the example figure and the report."""
    from diffdeblur.data.masks import read_companion
    from diffdeblur.figures import side_by_side
    from diffdeblur.inference import restore_tensor
    from diffdeblur.io import read_image, to_numpy, to_tensor, write_image

    if not smoke and missing_data([BSDS]):
        sys.exit(missing_data([BSDS]))
    models = list(model or (SMOKE["models"] if smoke else []))
    if len({m[0] for m in models}) < len(models):
        sys.exit(f"{NAME}: --model names must differ")
    steps = sorted(set(steps or ([1, 2] if smoke else [1, 4])))
    torch.set_num_threads(threads)
    opencv = opencv_peers()
    if not opencv:
        print(MISSING_CV2)
    peers = {"pull-push": pull_push_fill, **opencv}
    no_reference = available_no_reference()
    loaded = {label: load(path, smoke) for label, path in models}
    settings = [(name, label, opts) for label, m in loaded.items() for name, opts in our_settings(label, m, steps)]
    photos = photo_set(runs, smoke)
    rows: list[dict[str, Any]] = []
    example: tuple[str, np.ndarray] | None = None  # (photo, the figure's row)
    for b, area in enumerate(BINS):
        folder = removal_folder(runs, photos, area, seed + 1000 * b, smoke)
        for blur_path in sorted((folder / "blur").glob("*.png")):
            holed, sharp = read_image(blur_path)[0], read_image(folder / "sharp" / blur_path.name)[0]
            mask = read_companion(blur_path, "mask")
            base = {"bin": bin_label(area), "image": blur_path.stem, "hole_fraction": float(mask.mean())}
            outs = {"input": holed}
            rows.append({**base, "method": "input", **scores(holed, sharp, mask, no_reference)})
            for name, fn in peers.items():
                t0 = time.perf_counter()
                outs[name] = fn(holed, mask)
                rows.append({**base, "method": name, "seconds": time.perf_counter() - t0,
                             **scores(outs[name], sharp, mask, no_reference)})
            for name, label, opts in settings:
                x, m = to_tensor(holed), torch.from_numpy(mask.astype(np.float32))[None, None]
                t0 = time.perf_counter()
                restored = restore_tensor(loaded[label], x, tile=0, engine="eager", seed=seed, mask=m, **opts)
                seconds = time.perf_counter() - t0
                keep = (m == 0).expand_as(x)
                outs[name] = to_numpy(restored)
                rows.append({**base, "method": name, "seconds": seconds,
                             "unmasked_identical": bool(torch.equal(restored[keep], x[keep])),
                             **scores(outs[name], sharp, mask, no_reference)})
            if bin_label(area) == TARGET_BIN and example is None:
                shown = ["input"] + [p for p in PEERS if p in outs] + [s[0] for s in settings[:1]]
                example = blur_path.stem, side_by_side([outs[k] for k in shown] + [sharp], [*shown, "reference"])
            print(f"{bin_label(area)} {blur_path.stem}: " + ", ".join(
                f"{r['method']} {r['psnr_mask']:.2f} dB" for r in rows if r["image"] == blur_path.stem
                and r["bin"] == bin_label(area)), flush=True)
    results = Path(results)
    figure = None
    if example is not None:
        figure = results / f"{NAME}.png"
        results.mkdir(parents=True, exist_ok=True)
        write_image(figure, example[1].astype(np.float32) / 255.0)
    out = {"command": command(MODULE, argv), "date": today(), "machine": machine(), "smoke": smoke,
           "photos": "generated photos (smoke)" if smoke else "BSDS500 train, held-out 20 (every 10th by name)",
           "bins": [bin_label(a) for a in BINS], "target_bin": TARGET_BIN, "seed": seed, "threads": threads,
           "opencv": bool(opencv), "radius": RADIUS, "no_reference": list(no_reference),
           "models": {label: portable(path) for label, path in models}, "methods": [s[0] for s in settings],
           "example": {"image": example[0], "file": figure.name} if example and figure else None, "rows": rows}
    report(results, out)


# ---- the report ------------------------------------------------------------------------------------

def paired(rows: list[dict[str, Any]], method: str, baseline: str, key: str) -> dict[str, float] | None:
    """Image-by-image ``method - baseline`` of ``key``: mean, 95 % interval (normal approximation), better/images."""
    by_image = {r["image"]: r[key] for r in rows if r["method"] == baseline}
    diffs = [r[key] - by_image[r["image"]] for r in rows if r["method"] == method and r["image"] in by_image
             and math.isfinite(r[key]) and math.isfinite(by_image[r["image"]])]
    if not diffs:
        return None
    half = 1.96 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    return {"mean": statistics.fmean(diffs), "lo": statistics.fmean(diffs) - half,
            "hi": statistics.fmean(diffs) + half, "better": sum(d > 0 for d in diffs), "images": len(diffs)}


def mean_of(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if key in r and math.isfinite(r[key])]
    return statistics.fmean(values) if values else math.nan


def report(results: Path = RESULTS, out: dict[str, Any] | None = None, **_: Any) -> None:
    """Render ``removal_peers.md`` from the results (the JSON alone with ``out`` None) and write both."""
    data = out if out is not None else read_results(NAME, results)
    nr = [n for n in NO_REFERENCE if n in data["no_reference"]]
    cols = ["psnr_mask", "ssim_mask", "psnr", "ssim"] + [n.replace("-", "_") for n in nr]
    titles = ["PSNR mask (dB) ↑", "SSIM mask ↑", "PSNR (dB) ↑", "SSIM ↑"] + [measure_header(n) for n in nr]
    fmt = lambda k, v: measure_text("psnr" if k.startswith("psnr") else "ssim" if k.startswith("ssim")  # noqa: E731
                                    else k.replace("_", "-"), v)
    classical = ["pull-push"] if any(r["method"] == "pull-push" for r in data["rows"]) else []
    methods = ["input", *classical, *([p for p in PEERS] if data["opencv"] else []), *data["methods"]]
    lines = [f"# Object removal against OpenCV inpainting ({data['photos']})", "",
             f"`{data['command']}` on {data['machine']}, {data['date']}, {data['threads']} thread(s); hole masks from "
             f"seed {data['seed']} (strokes, boxes, object silhouettes), one per photo and bin; methods get the holed "
             f"photo and its mask. OpenCV radius {data['radius']}.", ""]
    if not data["opencv"]:
        lines += ["OpenCV (cv2) was not installed: no Telea / NS rows (`pip install \"diffdeblur[studies]\"`).", ""]
    if data["models"]:
        lines += ["Models: " + ", ".join(f"`{k}` = `{v}`" for k, v in data["models"].items()) + ".", ""]
    for label in data["bins"]:
        rows = [r for r in data["rows"] if r["bin"] == label]
        n = len({r["image"] for r in rows})
        table = [[m] + [fmt(c, mean_of([r for r in rows if r["method"] == m], c)) for c in cols]
                 + [_identical([r for r in rows if r["method"] == m])] for m in methods]
        lines += [f"## Holes of {label} of the image ({n} photos, mean hole "
                  f"{100 * mean_of([r for r in rows if r['method'] == 'input'], 'hole_fraction'):.1f} %)"
                  + (" — the target bin" if label == data["target_bin"] else ""), "",
                  *md_table(["method", *titles, "unmasked pixels = input"], table), ""]
        if data["opencv"]:
            for m in classical + data["methods"]:
                for key, unit in (("psnr_mask", " dB"), ("ssim_mask", "")):
                    d = paired(rows, m, "telea", key)
                    if d is not None:
                        lines.append(f"- {m} minus Telea, {key.replace('_', ' ')}: {d['mean']:+.3f}{unit} "
                                     f"[{d['lo']:+.3f}, {d['hi']:+.3f}], better on {d['better']}/{d['images']} photos")
            lines.append("")
    target = [r for r in data["rows"] if r["bin"] == data["target_bin"]]
    images = sorted({r["image"] for r in target})
    per_image = [[img] + [fmt("psnr_mask", next((r["psnr_mask"] for r in target if r["image"] == img
                                                 and r["method"] == m), None)) for m in methods] for img in images]
    lines += [f"## Per photo, {data['target_bin']}: PSNR inside the mask (dB)", "",
              *md_table(["photo", *methods], per_image), ""]
    if data.get("example"):
        lines += [f"![holed input, Telea, NS, ours, reference]({data['example']['file']})", "",
                  f"Example: photo {data['example']['image']}, {data['target_bin']} bin.", ""]
    write_report(NAME, lines, data, Path(results))


def _identical(rows: list[dict[str, Any]]) -> str:
    flags = [r["unmasked_identical"] for r in rows if "unmasked_identical" in r]
    return ("yes" if all(flags) else f"no ({flags.count(False)} photos)") if flags else "–"


def main(argv: list[str] | None = None) -> int:
    def add_arguments(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--model", type=model_spec, action="append",
                        help="run: NAME=PATH of a removal checkpoint (repeatable; --smoke: untrained remove-tiny "
                             "and remove-chain-tiny)")
        ap.add_argument("--steps", type=positive_int, nargs="+", help="run: steps of the chains (default 1 4)")
        ap.add_argument("--seed", type=int, default=0, help="run: seed of the hole masks and of sampling noise")
        ap.add_argument("--threads", type=positive_int, default=1, help="run: torch threads")

    return study_main(__doc__, lambda **kw: run(**kw, argv=argv), report, argv, add_arguments, needs=(),
                      runs=RUNS / NAME)


if __name__ == "__main__":
    raise SystemExit(main())
