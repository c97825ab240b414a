"""What a restore costs, latent chain against pixel chains, in one run: seconds, MACs and peak memory.

For each model and size (256x256, 1280x720, 3840x2160; 4K in ``--tile-4k`` tiles, every model alike) one
subprocess builds the model, warms up on 64x64, then times ``restore_tensor`` at each of ``--steps`` (1, 4, 16,
50; ddim where the chain has it). Peak memory is that subprocess's ``ru_maxrss`` (runtime + model + the largest
call); MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2) on one call at 1 and
at 2 steps, after the timings: fixed part + n x per-step part. Where a timed call would take longer than
``--direct-limit`` seconds it is not run: its time is fixed + n x step from the 1- and 4-step calls of the same
process, and the table marks it (~). Every call at 256x256 and 720p is run directly by default, which checks
that linear model on the sizes where it is cheap.

Weights do not change the cost, so every model is its preset as built (the latent chain and the few-step pixel
chains load the shipped default as their frozen predictor). The chains whose schedule has fewer steps than a row
asks for (ResShift T = 4, the latent chain T = 4) are built with ``num_train_steps`` = the largest step count:
one step of the same network costs the same whatever T is.

Where the latent chain's time goes: forward hooks on its parts (predictor = the default, autoencoder encoder
and decoder, latent UNet, pixel head) in the 4-step call; "other" is what is left (noise, schedule, tiling).

    python -m benchmarks.bench.latent_chain_cost [--sizes 256x256 1280x720 3840x2160] [--steps 1 4 16 50]
    python -m benchmarks.bench.latent_chain_cost --report      # the markdown from the JSON only
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (TAEF2_DIR, command, load_average, machine, md_table, measure_main, run_worker, save_json,
                               today, write_report, worker_call)

NAME = "latent_chain_cost"
SIZES = {"64x64": (64, 64), "256x256": (256, 256), "1280x720": (720, 1280), "3840x2160": (2160, 3840)}
ALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}  # see ../shared/CPU_NOTES.md
# label -> (preset, kwargs, the kwarg that sets T when a row asks for more steps than the preset has)
MODELS: dict[str, tuple[str, dict[str, Any], str]] = {
    "default (nafnet-small, regression)": ("default", {}, ""),
    "latent chain (latent-shift-small, ae-tiny)": ("latent-shift-small", {}, "num_train_steps"),
    "latent chain, TAEF2 (latent-shift-taef2-small)": ("latent-shift-taef2-small", {}, "num_train_steps"),
    "plain latent diffusion (latent-small)": ("latent-small", {}, ""),
    "pixel SR3 (sr3-small)": ("sr3-small", {}, ""),
    "pixel ResShift (resshift-nafnet-small-refine)": ("resshift-nafnet-small-refine", {}, "num_train_steps"),
    "pixel InDI (indi-nafnet-small)": ("indi-nafnet-small", {}, ""),
}
# --tiny (the smoke test): the same rows with the test presets
TINY = {"default": ("nafnet-tiny", {}), "latent-shift-small": ("latent-shift-tiny", {}),
        "latent-small": ("latent-tiny", {}), "sr3-small": ("sr3-tiny", {}),
        "resshift-nafnet-small-refine": ("resshift-nafnet-tiny", {}), "indi-nafnet-small": ("indi-nafnet-tiny", {})}
PARTS = ("predictor", "encoder (x2)", "decoder (x2)", "latent UNet (4 steps)", "pixel head")


def build(label: str, most_steps: int, tiny: bool = False) -> torch.nn.Module:
    from diffdeblur import build_model, load_model

    preset, kwargs, t_key = MODELS[label]
    if tiny:
        preset, kwargs = TINY[preset]
    elif preset == "default":
        return load_model("default", "cpu")
    torch.manual_seed(0)
    kwargs = dict(kwargs)
    if t_key:
        kwargs[t_key] = max(most_steps, 4)
    return build_model(preset, **kwargs).eval()


@torch.inference_mode()
def latent_chain_parts(model: torch.nn.Module, x: torch.Tensor, steps: int = 4) -> dict[str, float]:
    """Wall seconds of the latent chain's parts for one whole image x (1, 3, H, W), run eagerly one after the
    other as ``sampling_context`` / the chain / ``finish`` run them: the predictor, the two encodes (y and d),
    the two decodes (anchor and result), ``steps`` latent UNet calls, the pixel head."""
    clock: dict[str, float] = {}

    def timed(name: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        clock[name] = clock.get(name, 0.0) + time.perf_counter() - t0
        return out

    pad = [(-s) % model.size_multiple for s in x.shape[-2:]]
    x = torch.nn.functional.pad(x, (0, pad[1], 0, pad[0]), mode="reflect")
    d = timed("predictor", model.predictor, x).clamp(0, 1)
    z_y = timed("encoder (x2)", model.autoencoder.encode, x)
    z_d = timed("encoder (x2)", model.autoencoder.encode, d)
    anchor = timed("decoder (x2)", model.autoencoder.decode, z_d)
    cond, z = torch.cat([z_y, z_d], dim=1), z_d
    for k in range(steps):
        z = timed("latent UNet (4 steps)", model.net, z, torch.full((1,), steps - 1 - k), cond)
    delta = timed("decoder (x2)", model.autoencoder.decode, z) - anchor
    timed("pixel head", model.head, delta, d, x)
    return clock


def worker(job: dict[str, Any]) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from diffdeblur.inference import restore_tensor

    torch.set_num_threads(job["threads"])
    os.environ.update(job.get("env", {}))
    model = build(job["label"], max(job["steps"]), job.get("tiny", False))
    chain = hasattr(model, "steps_range")
    options = (lambda n: {"steps": n, "seed": 0}) if chain else (lambda n: {})
    restore_tensor(model, torch.rand(1, 3, 64, 64), **options(1))  # warm-up
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    x = torch.rand(1, 3, job["h"], job["w"], generator=torch.Generator().manual_seed(0))
    seconds: dict[str, float] = {}
    estimated: list[int] = []
    parts: dict[str, float] = {}
    for n in (job["steps"] if chain else [1]):
        fixed_step = None
        if 1 in job["steps"] and 4 in job["steps"] and "1" in seconds and "4" in seconds:
            step = (seconds["4"] - seconds["1"]) / 3
            fixed_step = (seconds["1"] - step, step)
        if fixed_step and fixed_step[0] + n * fixed_step[1] > job["direct_limit"]:
            seconds[str(n)] = fixed_step[0] + n * fixed_step[1]
            estimated.append(n)
            continue
        t0 = time.perf_counter()
        out = restore_tensor(model, x, tile=job["tile"], overlap=32, **options(n))
        seconds[str(n)] = time.perf_counter() - t0
        assert out.shape == x.shape and bool(torch.isfinite(out).all())
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if hasattr(model, "head") and hasattr(model, "autoencoder") and not job["tile"]:
        parts = latent_chain_parts(model, x)
    macs: dict[str, float] = {}
    for n in ((1, 2) if chain else (1,)) if job["count_macs"] else ():
        counter = FlopCounterMode(display=False)
        with counter:
            restore_tensor(model, x, tile=job["tile"], overlap=32, **options(n))
        macs[str(n)] = counter.get_total_flops() / 2
    print(json.dumps({"seconds": seconds, "estimated": estimated, "peak_rss_mb": peak, "rss_model_mb": rss_model,
                      "macs": macs, "parts": parts, "chain": chain}))


def measure(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """Every (size, model) in its own process; the JSON is rewritten after each, and ``--resume`` keeps the rows
    of an earlier run with the same steps, threads and 4K tile instead of measuring them again."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), **ALLOC_ENV)
    labels = [m for m in MODELS if args.taef2_dir or "TAEF2" not in m]
    if args.models:
        labels = [m for m in labels if any(k in m for k in args.models)]
    path = args.results / f"{NAME}.json"
    earlier = json.loads(path.read_text()) if args.resume and path.is_file() else {}
    same = all(earlier.get(k) == v for k, v in (("steps", args.steps), ("threads", args.threads),
                                                 ("tile_4k", args.tile_4k), ("tiny", args.tiny)))
    kept = {(r["size"], r["model"]): r for r in earlier.get("rows", []) if same and "error" not in r}
    out = {"rows": [], "steps": args.steps, "sizes": args.sizes, "threads": args.threads, "tiny": args.tiny,
           "tile_4k": args.tile_4k, "machine": machine(), "date": today(), "load_average_start": load_average(),
           "command": command(f"benchmarks.bench.{NAME}", argv), "macs_4k": args.macs_4k}
    for size in args.sizes:
        h, w = SIZES[size]
        tile = args.tile_4k if size == "3840x2160" else 0
        for label in labels:
            if (size, label) in kept:
                out["rows"].append(kept[(size, label)])
                continue
            job = {"label": label, "tiny": args.tiny, "h": h, "w": w, "tile": tile, "steps": args.steps,
                   "threads": args.threads, "count_macs": size != "3840x2160" or args.macs_4k,
                   "direct_limit": args.direct_limit if size == "3840x2160" else args.direct_limit_small,
                   "env": {"DIFFDEBLUR_TAEF2_DIR": args.taef2_dir} if args.taef2_dir else {}}
            result = run_worker(__spec__.name, job, env, args.timeout)
            row = {"size": size, "model": label, "tile": tile, **result}
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
            save_json(path, {**out, "load_average_end": load_average(), "complete": False})
    return {**out, "load_average_end": load_average(), "complete": True}


def _macs(row: dict[str, Any], n: int) -> str:
    """GMACs of a restore at ``n`` steps (fixed + n x per-step from the counts at 1 and 2), '-' if not counted."""
    m = row.get("macs") or {}
    if not m:
        return "-"
    step = m["2"] - m["1"] if "2" in m else 0.0
    return f"{(m['1'] + (n - 1) * step) / 1e9:.1f}"


def _secs(row: dict[str, Any], n: int) -> str:
    if not row.get("chain"):
        n = 1
    s = row["seconds"][str(n)]
    return ("~" if n in row.get("estimated", []) else "") + (f"{s:.2f}" if s < 100 else f"{s:.0f}")


def report(data: dict[str, Any], results: Path) -> None:
    steps = data["steps"]
    ok = [r for r in data["rows"] if "error" not in r]
    pixel = "pixel SR3 (sr3-small)"
    lines = ["# Latent chain vs pixel chains: cost per image" + (" (tiny test presets)" if data.get("tiny") else ""), "",
             f"`{data['command']}` on {data['machine']}, {data['date']}, {data['threads']} thread(s), load average "
             f"{data['load_average_start']:.2f} at start, {data['load_average_end']:.2f} at the end.", "",
             "One `restore_tensor` call per cell, each (model, size) in its own process; 4K in "
             f"{data['tile_4k']}-pixel tiles (overlap 32) for every model, the other sizes whole. Seconds marked ~ "
             "were not run: fixed + n x per-step from the same process's 1- and 4-step calls (too long to run). "
             "GMACs from `FlopCounterMode` (fixed + n x per-step from calls at 1 and 2 steps; not counted at 4K unless "
             "`--macs-4k`: counting doubles the time there). Peak RSS = the "
             "process's `ru_maxrss` over all its calls (runtime + model + largest call). The regression runs once "
             "whatever the step count. Chains with T = 4 (ResShift, the latent chain) are built with T = the "
             "largest step count for these rows: a step costs the same whatever T is.", ""]
    for size in data["sizes"]:
        here = [r for r in ok if r["size"] == size]
        if not here:
            continue
        ref = next((r for r in here if r["model"] == pixel), None)
        head = ["model"] + [f"s @ {n}" for n in steps] + [f"GMACs @ {n}" for n in steps] + ["peak RSS (MB)"] + \
            [f"SR3 / this @ {n}" for n in steps]
        table = []
        for r in here:
            ratios = []
            for n in steps:
                if ref is None:
                    ratios.append("-")
                    continue
                this = r["seconds"][str(n if r.get("chain") else 1)]
                ratios.append(f"{ref['seconds'][str(n)] / this:.1f}x")
            table.append([r["model"]] + [_secs(r, n) for n in steps] +
                         [_macs(r, n) for n in steps] + [f"{r['peak_rss_mb']:.0f}"] + ratios)
        lines += [f"## {size}", "", *md_table(head, table), ""]
        errors = [r for r in data["rows"] if r["size"] == size and "error" in r]
        lines += [f"- {r['model']}: failed: {r['error']}" for r in errors]
        if errors:
            lines.append("")
    chains = [r for r in ok if r.get("parts") and r["model"].startswith("latent chain")]
    if chains:
        lines += ["## Where the latent chain's time goes", "",
                  "Its parts timed one by one for one whole image, 4 latent steps (`latent_chain_parts`); "
                  "'total' is the sum of the parts, beside it the 4-step `restore_tensor` call.", ""]
        table = []
        for r in chains:
            parts = r["parts"]
            total = sum(parts.values())
            table.append([r["model"], r["size"], f"{total:.2f}", f"{r['seconds']['4']:.2f}"] +
                         [f"{parts.get(p, 0.0):.2f} ({100 * parts.get(p, 0.0) / total:.0f} %)" for p in PARTS])
        lines += md_table(["model", "size", "sum of parts (s)", "restore, 4 steps (s)"] + list(PARTS), table)
    write_report(NAME, lines, data, results)


def main(argv: list[str] | None = None) -> int:
    if worker_call(argv, worker):
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES)[1:])
    ap.add_argument("--steps", nargs="+", type=int, default=[1, 4, 16, 50])
    ap.add_argument("--models", nargs="*", default=[], help="substrings of the model labels to keep (default: all)")
    ap.add_argument("--taef2-dir", default=str(TAEF2_DIR) if Path(TAEF2_DIR).is_dir() else "",
                    help="TAEF2 weights folder ('' = no TAEF2 row)")
    ap.add_argument("--tile-4k", type=int, default=512)
    ap.add_argument("--direct-limit", type=float, default=60.0,
                    help="at 4K: a call predicted to take longer is computed from the 1- and 4-step calls")
    ap.add_argument("--direct-limit-small", type=float, default=1e9, help="the same below 4K (default: run all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--macs-4k", action="store_true", help="count MACs at 4K too (two more calls per model)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows of the results JSON measured with the same steps, threads and 4K tile")
    ap.add_argument("--tiny", action="store_true", help="the test presets (the smoke test; seconds)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds allowed per (model, size) process")
    return measure_main(ap, NAME, measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
