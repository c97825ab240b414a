"""Does tiled super-resolution equal the whole image, and in how much memory? PSNR and peak RSS against the context.

For every low-resolution ``--sizes`` (480x270 -> 1920x1080 and 1280x720 -> 5120x2880 at x4) the model upscales a
test image whole, then in ``--tiles`` tiles (overlap 32) grown by each of ``--contexts`` input pixels and by the
model's own context (:func:`diffdeblur.inference.tile_context`: the convolutions' reach, 18 for sr-x4) and its exact
reach (``exact_tile_context``: 402 for sr-x4). Each setting runs in a fresh
process (:func:`benchmarks.common.run_worker`), so its peak RSS (``ru_maxrss``, allocator tuned as by ``diffdeblur
sr``) is its own. The whole image and the model's context go through the product
(:func:`diffdeblur.inference.restore_tensor`, engine eager, fp32: what ``diffdeblur.upscale(tile=N)`` does). The
product cannot set another context, so the other contexts call :func:`diffdeblur.tiling.tiled_apply` directly
with the same per-tile function (``model.restore``, clamped) and ``context=``. Reported: PSNR tiled vs whole
(float, peak 1), the largest difference in 8-bit levels, seconds, peak RSS. Test image: the first REDS val sharp
frame, centre-cropped (mirror-tiled if smaller) to the LR size x scale and reduced by PIL bicubic; without the data,
a seeded procedural scene. ``--tiny``: the untrained sr-tiny-x4 with seeded random weights on 64x48 (smoke test).

    python -m benchmarks.bench.sr_tiling [--model sr-x4|CHECKPOINT] [--sizes 480x270 1280x720] [--tiles 128 256]
        [--contexts 0 8 16 24 32 48] [--threads 2] [--timeout 7200]
    python -m benchmarks.bench.sr_tiling --tiny --results DIR     # the smoke test (seconds)
    python -m benchmarks.bench.sr_tiling --report                 # the markdown from the JSON only
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench.tiled_vs_whole import psnr_between
from benchmarks.common import (DATA, command, load_average, machine, md_table, measure_main, portable, run_worker,
                               save_json, today, write_report, worker_call)

NAME = "sr_tiling"
SHARP = DATA / "reds_sample" / "val" / "sharp"
TARGET_DB = 45.0
FULL = {"model": "sr-x4", "sizes": ["480x270", "1280x720"], "tiles": [128, 256], "contexts": [0, 8, 16, 24, 32, 48],
        "overlap": 32}
TINY = {"model": "sr-tiny-x4", "sizes": ["64x48"], "tiles": [16], "contexts": [0, 4], "overlap": 4}
TINY_STD = 0.5  # --tiny: random weights N(0, TINY_STD) (untrained, the network is bicubic; small ones barely reach)


def lr_image(width: int, height: int, scale: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """A (1, 3, height, width) 8-bit-valued LR image and what it is: the first REDS val sharp frame cut to
    (scale height, scale width) and reduced by PIL bicubic, else a procedural scene."""
    from PIL import Image

    from diffdeblur.example import procedural_scene
    from diffdeblur.io import is_image_file, read_image, to_tensor
    from diffdeblur.tiling import pad_reflect

    frames = sorted(p for p in SHARP.rglob("*") if is_image_file(p)) if SHARP.is_dir() else []
    if not frames:
        img = np.round(procedural_scene(height, width, seed=seed) * 255) / 255
        return to_tensor(img.astype(np.float32)), f"procedural scene (seed {seed}; no frames in {portable(SHARP)})"
    hr = to_tensor(read_image(frames[0])[0])
    fh, fw, th, tw = *hr.shape[-2:], scale * height, scale * width
    hr = pad_reflect(hr, max(fh, th), max(fw, tw))  # mirrored tiles where the frame is smaller
    y0, x0 = (hr.shape[-2] - th) // 2, (hr.shape[-1] - tw) // 2
    crop = hr[0, :, y0:y0 + th, x0:x0 + tw].permute(1, 2, 0).numpy()
    lr = Image.fromarray(np.round(crop * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    how = "mirror-tiled" if th > fh or tw > fw else "centre crop"
    return to_tensor(np.asarray(lr, dtype=np.float32) / 255), \
        f"{portable(frames[0])} ({fw}x{fh}), {how} {tw}x{th}, PIL bicubic / {scale}"


def model_file(name: str, tiny: bool, tmp: Path) -> tuple[str, str]:
    """(what the workers load, its note): a checkpoint or shipped weights as they are; with ``--tiny`` a registered
    name without weights is built with seeded random weights N(0, TINY_STD) (untrained, it would be bicubic)."""
    from diffdeblur.checkpoint import save_model
    from diffdeblur.inference import weights_for
    from diffdeblur.registry import build_model

    if name.endswith(".safetensors") or os.sep in name or Path(name).exists():
        return name, f"`{portable(name)}`"
    if weights_for(name) is not None:
        return name, f"`{name}` (shipped weights)"
    if not tiny:
        sys.exit(f"{name}: no shipped weights; pass --model CHECKPOINT (e.g. runs/{name}/final.safetensors)")
    torch.manual_seed(0)
    model = build_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, TINY_STD)
    save_model(model, tmp / f"{name}.safetensors")
    return str(tmp / f"{name}.safetensors"), f"`{name}` (untrained, random weights N(0, {TINY_STD}), seed 0)"


def worker(job: dict[str, Any]) -> None:
    """One setting: whole (tile 0), the model's context (restore_tensor) or another (tiled_apply); output to a file."""
    from diffdeblur.inference import load_model, output_scale, restore_tensor, tile_context
    from diffdeblur.runtime import tune_allocator
    from diffdeblur.tiling import tiled_apply

    tune_allocator()  # as the command line does
    torch.set_num_threads(job["threads"])
    model = load_model(job["model"], "cpu")
    x = torch.load(job["image"])
    setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    t0 = time.perf_counter()
    if job["tile"] == 0 or job["context"] == tile_context(model):
        out = restore_tensor(model, x, tile=job["tile"], overlap=job["overlap"], engine="eager")
    else:
        with torch.inference_mode():
            fn = lambda t, box: model.restore(t).float().clamp(0, 1)  # noqa: E731 (restore_tensor's, eager)
            out = tiled_apply(fn, x, job["tile"], job["overlap"], scale=output_scale(model), context=job["context"])
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    torch.save(out, job["out"])
    print(json.dumps({"seconds": seconds, "peak_rss_gib": peak, "setup_rss_gib": setup}))


def measure(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    from diffdeblur.inference import load_model, output_scale, tile_context

    preset = TINY if args.tiny else FULL
    for key in preset:
        setattr(args, key, preset[key] if getattr(args, key) is None else getattr(args, key))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = {"rows": [], "sizes": args.sizes, "tiles": args.tiles, "overlap": args.overlap, "threads": args.threads,
           "tiny": args.tiny, "machine": machine(), "date": today(), "load_average_start": load_average(),
           "command": command(f"benchmarks.bench.{NAME}", argv), "images": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        path, out["model"] = model_file(args.model, args.tiny, tmpd)
        model = load_model(path, "cpu")
        out["scale"], out["context"] = output_scale(model), tile_context(model)
        out["exact_context"] = int(getattr(model, "exact_tile_context", out["context"]))
        if out["scale"] == 1 or getattr(model, "stochastic", False):
            sys.exit(f"{args.model}: not a deterministic super-resolution model")
        del model
        own = set() if args.no_own else {out["context"], out["exact_context"]}
        contexts = sorted(set(args.contexts) | own)
        for size in args.sizes:
            w, h = map(int, size.split("x"))
            x, out["images"][size] = lr_image(w, h, out["scale"])
            torch.save(x, tmpd / "lr.pt")
            for tile, ctx in [(0, 0)] + [(t, c) for t in args.tiles for c in contexts]:
                job = {"model": path, "image": str(tmpd / "lr.pt"), "tile": tile, "context": ctx,
                       "overlap": args.overlap, "threads": args.threads,
                       "out": str(tmpd / ("whole.pt" if tile == 0 else "tiled.pt"))}
                row = {"size": size, "tile": tile, "context": ctx, **run_worker(__spec__.name, job, env, args.timeout)}
                if tile and "error" not in row and (tmpd / "whole.pt").exists():
                    whole, tiled = torch.load(tmpd / "whole.pt"), torch.load(job["out"])
                    row.update(psnr_tiled_vs_whole=psnr_between(tiled, whole),
                               max_levels=float((tiled - whole).abs().max()) * 255)
                    del whole, tiled
                out["rows"].append(row)
                print(json.dumps(row), flush=True)
                save_json(args.results / f"{NAME}.json", {**out, "complete": False})
    return {**out, "load_average_end": load_average(), "complete": True}


def reading(data: dict[str, Any], size: str, tile: int) -> str:
    """The smallest context reaching the target at this size and tile, and its peak RSS over the whole image's."""
    rows = [r for r in data["rows"] if r["size"] == size and "psnr_tiled_vs_whole" in r]
    whole = next((r for r in data["rows"] if r["size"] == size and r["tile"] == 0 and "error" not in r), None)
    here = sorted((r for r in rows if r["tile"] == tile), key=lambda r: r["context"])
    hit = next((r for r in here if r["psnr_tiled_vs_whole"] >= TARGET_DB), None)
    if hit is None:
        best = max(here, key=lambda r: r["psnr_tiled_vs_whole"], default=None)
        return f"tile {tile}: none" + (f" (best {best['psnr_tiled_vs_whole']:.2f} dB)" if best else "")
    ratio = f", memory {hit['peak_rss_gib'] / whole['peak_rss_gib']:.2f}x whole" if whole else ""
    return f"tile {tile}: context {hit['context']} ({hit['psnr_tiled_vs_whole']:.2f} dB{ratio})"


def report(data: dict[str, Any], results: Path) -> None:
    scale, own = data["scale"], data["context"]
    exact = data.get("exact_context", own)  # results before the model's context was narrowed: the same
    whole = {r["size"]: r for r in data["rows"] if r["tile"] == 0 and "error" not in r}
    table = []
    for r in data["rows"]:
        w, h = map(int, r["size"].split("x"))
        mark = ", ".join(k for k, v in (("model's", own), ("exact", exact)) if r["context"] == v)
        ctx = "-" if r["tile"] == 0 else f"{r['context']}" + (f" ({mark})" if mark else "")
        if "error" in r:
            table.append([r["size"], f"{scale * w}x{scale * h}", r["tile"] or "whole", ctx, r["error"], "", "", "", ""])
            continue
        ratio = f"{r['peak_rss_gib'] / whole[r['size']]['peak_rss_gib']:.2f}" if r["size"] in whole else ""
        table.append([r["size"], f"{scale * w}x{scale * h}", r["tile"] or "whole", ctx,
                      f"{r['psnr_tiled_vs_whole']:.2f}" if r["tile"] else "-",
                      f"{r['max_levels']:.2f}" if r["tile"] else "-", f"{r['seconds']:.2f}",
                      f"{r['peak_rss_gib']:.2f}", ratio])
    setup = min((r["setup_rss_gib"] for r in data["rows"] if "error" not in r), default=0.0)
    end = f", {data['load_average_end']:.2f} at the end" if "load_average_end" in data else " (incomplete run)"
    lines = [f"# Tiled vs whole super-resolution ({data['model']}, x{scale}, exact reach {exact} px)", "",
             f"`{data['command']}` on {data['machine']}, {data['date']}, {data['threads']} threads "
             f"(load average {data['load_average_start']:.2f} at the start{end}).", "",
             "Test images: " + "; ".join(f"{s}: {note}" for s, note in data["images"].items()) + ".", "",
             "One process per row; peak RSS is its `ru_maxrss` (runtime, model, input, output and the call; a process "
             f"that only loads the model and input: {setup:.2f} GiB). Whole and the model's context run through "
             f"`restore_tensor` (eager fp32, overlap {data['overlap']}, as `diffdeblur.upscale`), other contexts "
             "through `tiled_apply` with the same per-tile function (the product sets no other context). PSNR tiled "
             "vs whole: float, peak 1; max diff in 8-bit levels; contexts and tiles in input (LR) pixels.", "",
             *md_table(["LR size", "output", "tile", "context", "PSNR tiled vs whole (dB)", "max diff (levels)",
                        "seconds", "peak RSS (GiB)", "RSS / whole"], table), "",
             f"Smallest context reaching {TARGET_DB:.0f} dB: " + "; ".join(
                 f"{size}: " + ", ".join(reading(data, size, t) for t in data["tiles"]) for size in data["sizes"])
             + "."]
    write_report(NAME, lines, data, results)


def main(argv: list[str] | None = None) -> int:
    if worker_call(argv, worker):
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a preset with shipped weights or a .safetensors checkpoint (default sr-x4)")
    ap.add_argument("--sizes", nargs="+", help="LR input sizes WxH (default 480x270 1280x720)")
    ap.add_argument("--tiles", nargs="+", type=int, help="LR tile sizes (default 128 256)")
    ap.add_argument("--contexts", nargs="+", type=int, help="LR context pixels, besides the model's own "
                    "(default 0 8 16 24 32 48)")
    ap.add_argument("--overlap", type=int, help="LR tile overlap (default 32)")
    ap.add_argument("--no-own", action="store_true",
                    help="leave out the model's own context (an exact 402 px at 720p costs ~100 whole images)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=7200, help="seconds allowed per process (row)")
    ap.add_argument("--tiny", action="store_true",
                    help="the smoke test: sr-tiny-x4 (random weights), 64x48, tile 16, overlap 4, contexts 0 4")
    return measure_main(ap, NAME, measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
