"""Latent vs pixel diffusion deblurring on this machine: cost per image and quality.

Speed/memory (``--part speed``): seconds and peak resident memory of one ``restore_tensor`` call at
256x256, 1280x720 and 3840x2160 for latent diffusion (latent-small: ae-tiny latents; latent-taef2-small:
the same UNet + refiner in TAEF2 latents), pixel diffusion (the SR3 model of the pixel study) at the same
number of sampling steps, and nafnet-small (one forward pass) for reference. Each (model, size) runs in
its own subprocess, so ``ru_maxrss`` (peak RSS) is that configuration's alone; a 64x64 warm-up call
precedes the timed call. 4K runs tiled (``--tile-4k``, default 512, overlap 32) for every model;
smaller sizes run whole. Weights do not change the cost.

Quality (``--part quality``): PSNR/SSIM (diffdeblur.metrics) on centre crops of a paired folder
(default: the GoPro sample's val split, 30 pairs) for models trained with one budget (600 steps, batch 8,
64x64 crops, same data stream): latent models by benchmarks/studies/latent_budget.py, SR3 and nafnet-small
by benchmarks/studies/diffusion_vs_regression.py; the latent models also without their refiner (the
plain decoded latent); the autoencoder ceilings decode(encode(sharp)) on the same crops; the blurry input.

    python -m benchmarks.bench.latent_vs_pixel                 # default checkpoint paths under runs/
    python -m benchmarks.bench.latent_vs_pixel --part report   # the markdown from the committed JSON

Writes docs/results/latent_vs_pixel.md (+ .json per part; the markdown shows every part measured so far).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import GOPRO_VAL, RESULTS, RUNS, TAEF2_DIR, command, load_json, run_worker, save_json
from benchmarks.studies.latent_budget import LATENT_RUNS, run_dir

SIZES = {"256x256": (256, 256), "1280x720": (720, 1280), "3840x2160": (2160, 3840)}
# Checkpoints of the equal-budget runs: benchmarks/studies/latent_budget.py (latent) and
# benchmarks/studies/diffusion_vs_regression.py (pixel SR3 and nafnet-small): same data, steps, batch, crop.
LATENT_RUN = run_dir(LATENT_RUNS, "latent-small") / "final.safetensors"
LATENT_TAEF2_RUN = run_dir(LATENT_RUNS, "latent-taef2-small") / "final.safetensors"
PIXEL_RUN = run_dir(RUNS / "diffusion_studies", "sr3") / "final.safetensors"
NAFNET_RUN = run_dir(RUNS / "diffusion_studies", "nafnet-small") / "final.safetensors"
ALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}  # see CPU_NOTES.md


def _default(path: Path) -> str:
    return str(path) if path.is_file() else ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["speed", "quality", "both", "report"], default="both",
                   help="what to measure (report: only rewrite the markdown from the saved JSON)")
    p.add_argument("--latent", default=_default(LATENT_RUN), help="trained latent-small .safetensors ('' = untrained preset)")
    p.add_argument("--latent-taef2", default=_default(LATENT_TAEF2_RUN),
                   help="trained latent-taef2-small .safetensors ('' = untrained preset)")
    p.add_argument("--pixel", default=_default(PIXEL_RUN), help="trained pixel diffusion .safetensors ('' = untrained sr3-small)")
    p.add_argument("--nafnet", default=_default(NAFNET_RUN), help="trained nafnet-small .safetensors ('' = untrained preset)")
    p.add_argument("--ae", default="", help="ae-tiny .safetensors for the untrained latent preset ('' = shipped)")
    p.add_argument("--taef2-dir", default=str(TAEF2_DIR),
                   help="TAEF2 weights folder ('' = skip TAEF2 rows)")
    p.add_argument("--steps", type=int, default=10, help="sampling steps of every diffusion model (DDIM, eta 0)")
    p.add_argument("--sizes", default=",".join(SIZES), help="comma-separated subset of " + ", ".join(SIZES))
    p.add_argument("--tile-4k", type=int, default=512, help="tile size used at 3840x2160 (overlap 32)")
    p.add_argument("--data", default=str(GOPRO_VAL), help="paired folder for the quality part")
    p.add_argument("--crop", type=int, default=256, help="centre crop for the quality part (0 = full images)")
    p.add_argument("--max-images", type=int, default=0, help="quality on the first N pairs only (0 = all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (every run)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds allowed per speed subprocess")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the .md and .json files go")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---- models --------------------------------------------------------------------------------------

def load(spec: dict[str, Any]) -> torch.nn.Module:
    from diffdeblur import build_model
    from diffdeblur.inference import load_model

    os.environ.update(spec.get("env", {}))  # e.g. where a TAEF2 latent checkpoint finds its autoencoder
    if spec.get("ckpt"):
        return load_model(spec["ckpt"], "cpu")
    torch.manual_seed(0)
    return build_model(spec["preset"], **spec.get("kwargs", {})).eval()


LATENT, LATENT_TAEF2 = "latent diffusion (ae-tiny latents)", "latent diffusion (TAEF2 latents)"
PIXEL, NAFNET = "pixel diffusion (SR3)", "nafnet-small (regression, 1 pass)"


def model_specs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    specs = {LATENT: {"preset": "latent-small", "ckpt": args.latent, "kwargs": {"autoencoder_weights": args.ae},
                      "diffusion": True}}
    if args.taef2_dir:
        specs[LATENT_TAEF2] = {"preset": "latent-taef2-small", "ckpt": args.latent_taef2,
                               "kwargs": {"autoencoder_weights": args.taef2_dir}, "diffusion": True,
                               "env": {"DIFFDEBLUR_TAEF2_DIR": args.taef2_dir}}
    specs[PIXEL] = {"preset": "sr3-small", "ckpt": args.pixel, "diffusion": True}
    specs[NAFNET] = {"preset": "nafnet-small", "ckpt": args.nafnet, "diffusion": False}
    return specs


def train_info(ckpt: str) -> dict[str, Any]:
    """Steps and CPU / wall seconds of a checkpoint's training run (train_info.json next to it, written
    by the budget scripts; else the checkpoint's own info, which has wall seconds only)."""
    if not ckpt:
        return {}
    path = Path(ckpt).parent / "train_info.json"
    if path.is_file():
        return json.loads(path.read_text())
    from diffdeblur.checkpoint import read_metadata

    info = read_metadata(ckpt).get("info", {})
    return {"steps": info.get("steps"), "wall_seconds": info.get("train_seconds")}


def describe(model: torch.nn.Module) -> str:
    """'1.23 M trainable (+0.94 M frozen AE)' for a loaded model."""
    ae = getattr(model, "autoencoder", None)
    frozen = sum(p.numel() for p in ae.parameters()) if ae is not None else 0
    total = sum(p.numel() for p in model.parameters())
    text = f"{(total - frozen) / 1e6:.2f} M"
    return text + (f" + {frozen / 1e6:.2f} M frozen AE" if frozen else "")


# ---- speed / memory (one subprocess per configuration) ------------------------------------------

def worker(job: dict[str, Any]) -> None:
    from diffdeblur.inference import restore_tensor

    torch.set_num_threads(job["threads"])
    model = load(job["spec"])
    options = {"steps": job["steps"]} if job["spec"]["diffusion"] else {}
    restore_tensor(model, torch.rand(1, 3, 64, 64), **options)  # warm-up
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    x = torch.rand(1, 3, job["h"], job["w"], generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    out = restore_tensor(model, x, tile=job["tile"], overlap=32, **options)
    seconds = time.perf_counter() - t0
    assert out.shape == x.shape and torch.isfinite(out).all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "rss_after_warmup_mb": rss_model}))


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), **ALLOC_ENV)
    for size in [s for s in args.sizes.split(",") if s]:
        h, w = SIZES[size]
        tile = args.tile_4k if size == "3840x2160" else 0
        for name, spec in model_specs(args).items():
            job = {"spec": spec, "h": h, "w": w, "tile": tile, "steps": args.steps, "threads": args.threads}
            result = run_worker(__spec__.name, job, env, args.timeout)
            row = {"size": size, "model": name, "weights": spec.get("ckpt") or f"untrained preset {spec['preset']}",
                   "tile": tile, "steps": args.steps if spec["diffusion"] else 1, **result}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"rows": rows, "threads": args.threads, "steps": args.steps, "tile_4k": args.tile_4k, "machine": machine_line()}


# ---- quality -------------------------------------------------------------------------------------

def run_quality(args: argparse.Namespace) -> dict[str, Any]:
    from diffdeblur.data.pairs import find_pairs
    from diffdeblur.evaluate import centre_crop, evaluate
    from diffdeblur.io import read_image, to_numpy, to_tensor
    from diffdeblur.metrics import psnr, ssim

    torch.set_num_threads(args.threads)
    rows = []

    def add(name: str, summary: dict[str, Any], info: dict[str, Any], params: str) -> None:
        row = {"method": name, "params": params, "psnr": summary["psnr"], "ssim": summary["ssim"],
               "seconds_per_image": summary.get("seconds_per_image"), "train_steps": info.get("steps"),
               "train_cpu_seconds": info.get("cpu_seconds"), "train_wall_seconds": info.get("wall_seconds")}
        rows.append(row)
        print(json.dumps(row), flush=True)

    common = dict(crop=args.crop, max_images=args.max_images, seed=0)
    specs = model_specs(args)
    missing = [name for name, spec in specs.items() if not spec.get("ckpt")]
    if missing:
        print(f"note: no checkpoint for {missing}: their quality rows use untrained presets", file=sys.stderr)
    rep = None
    for name, spec in specs.items():
        model = load(spec)
        info = train_info(spec.get("ckpt", ""))
        if spec["diffusion"]:
            rep = evaluate(model, args.data, steps=args.steps, **common)
            add(f"{name} ({args.steps} DDIM steps)", rep.summary, info, describe(model))
        else:
            add(name, evaluate(model, args.data, **common).summary, info, describe(model))
        if name in (LATENT, LATENT_TAEF2):
            add(f"{name}, decoded latent only (same model, refiner off)",
                evaluate(model, args.data, steps=args.steps, refine=False, **common).summary, info, describe(model))
    rows.append({"method": "blurry input", "psnr": rep.summary["input_psnr"], "ssim": rep.summary["input_ssim"]})

    # autoencoder ceilings on the same crops, decode(encode(sharp)), and the refiner's diagnostic: given
    # that oracle decoded latent and the blurry crop, does the pixel path get above the ceiling?
    pairs, _ = find_pairs(args.data)
    pairs = pairs[:args.max_images] if args.max_images > 0 else pairs
    for name in (LATENT, LATENT_TAEF2):
        if name not in specs:
            continue
        model = load(specs[name])
        ceiling, oracle = {"psnr": [], "ssim": []}, {"psnr": [], "ssim": []}
        for pair in pairs:
            sharp = centre_crop(read_image(pair.sharp)[0], args.crop)
            blur = centre_crop(read_image(pair.blur)[0], args.crop)
            x, y = to_tensor(sharp), to_tensor(blur)
            with torch.inference_mode():
                d = model.autoencoder.restore(x)
                refined = model.refine(d, y).clamp(0, 1)
            for out, acc in ((to_numpy(d), ceiling), (to_numpy(refined), oracle)):
                acc["psnr"].append(psnr(out, sharp))
                acc["ssim"].append(ssim(out, sharp))
        ae_name = "TAEF2" if name == LATENT_TAEF2 else "ae-tiny"
        for label, acc in ((f"ceiling: {ae_name} decode(encode(sharp))", ceiling),
                           (f"oracle: {ae_name} decode(encode(sharp)) + the trained refiner of {name}", oracle)):
            rows.append({"method": label, "psnr": float(np.mean(acc["psnr"])), "ssim": float(np.mean(acc["ssim"]))})
            print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "data": args.data, "images": rep.summary["images"], "crop": args.crop,
            "steps": args.steps, "threads": args.threads,
            "checkpoints": {name: spec.get("ckpt", "") for name, spec in specs.items()}, "machine": machine_line()}


# ---- report --------------------------------------------------------------------------------------

def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def machine_line() -> str:
    return f"{platform.machine()} CPU ({os.cpu_count()} cores, shared with other jobs), torch {torch.__version__}"


def write_markdown(results: Path) -> Path:
    """docs/results/latent_vs_pixel.md from the parts' JSON files alone (paths made portable)."""
    speed = load_json(results / "latent_vs_pixel_speed.json")
    quality = load_json(results / "latent_vs_pixel_quality.json")
    for name, part in (("speed", speed), ("quality", quality)):
        if part:  # rewrite the JSON with portable paths
            save_json(results / f"latent_vs_pixel_{name}.json", part, indent=1)
            part.update(json.loads((results / f"latent_vs_pixel_{name}.json").read_text()))
    first = speed or quality or {}
    lines = ["# Latent vs pixel diffusion deblurring", "",
             f"Machine: {first.get('machine', machine_line())}, fp32. "
             "Written by `python -m benchmarks.bench.latent_vs_pixel`.", ""]
    if speed:
        lines += [f"## Cost per image ({speed['steps']} DDIM steps for every diffusion model, "
                  f"{speed['threads']} thread(s))", "",
                  "One `restore_tensor` call, each configuration in its own subprocess (peak RSS = `ru_maxrss`, "
                  "includes the Python/torch runtime and the model). 256x256 and 1280x720 run whole; "
                  f"3840x2160 runs in {speed['tile_4k']}x{speed['tile_4k']} tiles (overlap 32) for every model. "
                  "Timings on a shared machine vary by +-20% or more between runs; compare rows of one run.", "",
                  "| size | model | steps | seconds | peak RSS (MB) | pixel / this (time) |", "|---|---|---|---|---|---|"]
        weights = {r["model"]: r.get("weights", "?") for r in speed["rows"]}
        pixel = {r["size"]: r.get("seconds") for r in speed["rows"] if r["model"] == PIXEL}
        for r in speed["rows"]:
            ratio = (f"{pixel[r['size']] / r['seconds']:.1f}x" if pixel.get(r["size"]) and r.get("seconds")
                     else "-")
            sec = _fmt(r.get("seconds"), ".2f") if "error" not in r else f"failed: {r['error'][:60]}"
            lines.append(f"| {r['size']} | {r['model']} | {r['steps']} | {sec} | {_fmt(r.get('peak_rss_mb'), '.0f')} "
                         f"| {ratio} |")
        lines += [""] + [f"- {name}: `{w}`" for name, w in weights.items()] + [""]
    if quality:
        lines += [f"## Quality on {quality['images']} GoPro-sample val pairs, centre crops "
                  f"{quality['crop']}x{quality['crop']} ({quality['steps']} DDIM steps, seed 0)", "",
                  "Trained checkpoints: " + ", ".join(f"{k}: `{v or 'untrained preset'}`"
                                                      for k, v in quality["checkpoints"].items()) + ".", "",
                  "Train CPU seconds = CPU time of the training process (one thread; wall time was several times "
                  "longer on the shared machine).", "",
                  "| method | parameters | PSNR (dB) | SSIM | s / crop | train steps | train CPU s | train wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in quality["rows"]:
            lines.append(f"| {r['method']} | {r.get('params', '-')} | {r['psnr']:.2f} | {r['ssim']:.4f} "
                         f"| {_fmt(r.get('seconds_per_image'), '.2f')} | {_fmt(r.get('train_steps'), 'd')} "
                         f"| {_fmt(r.get('train_cpu_seconds'), '.0f')} | {_fmt(r.get('train_wall_seconds'), '.0f')} |")
        lines.append("")
    for part in (speed, quality):
        if part:
            lines.append(f"Command ({'speed' if part is speed else 'quality'}): `{part['command']}`")
    lines.append("")
    out = results / "latent_vs_pixel.md"
    out.write_text("\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    results = args.results
    results.mkdir(parents=True, exist_ok=True)
    cmd = command(__spec__.name, argv)
    if args.part in ("speed", "both"):
        save_json(results / "latent_vs_pixel_speed.json", dict(run_speed(args), command=cmd), indent=1)
    if args.part in ("quality", "both"):
        save_json(results / "latent_vs_pixel_quality.json", dict(run_quality(args), command=cmd), indent=1)
    print(write_markdown(results).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
