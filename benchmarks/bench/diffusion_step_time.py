"""Seconds per sampling step of the pixel-space diffusion models on this machine's CPU.

Measures ``model.restore`` (DDIM, so one UNet call per step plus the tiling-consistent noise) at
256x256 (one tile) and at 1280x720, untiled and tiled (the ``deblur`` default path, tile 256 /
overlap 32), all in one run, fp32, ``--threads`` threads. Weights are random: step time does not
depend on them. Writes docs/results/diffusion_step_time.{md,json}.

    python benchmarks/bench_diffusion_steps.py --threads 1

It applies the CLI's allocator tuning (:func:`diffdeblur.runtime.tune_allocator`, see CPU_NOTES.md) first,
as ``diffdeblur deblur`` does; DIFFDEBLUR_MALLOC=default measures glibc's default behaviour instead.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS, cpu_name, read_results, write_report
from diffdeblur.inference import restore_tensor
from diffdeblur.registry import build_model
from diffdeblur.runtime import tune_allocator

NAME = "diffusion_step_time"


def time_restore(model, h: int, w: int, steps: int, tile: int, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds per sampling step over ``repeats`` runs of ``steps`` steps (after a warm-up).

    CPU seconds (``time.process_time``) count only this process's time, so on a shared machine they
    are a steadier figure than wall-clock; with one thread they estimate the wall time of an idle core.
    """
    blur = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    restore_tensor(model, blur, tile=tile, overlap=32, steps=1, sampler="ddim")  # warm-up
    wall, cpu = [], []
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        restore_tensor(model, blur, tile=tile, overlap=32, seed=r, steps=steps, sampler="ddim")
        wall.append((time.perf_counter() - t0) / steps)
        cpu.append((time.process_time() - c0) / steps)
    return sorted(wall)[len(wall) // 2], sorted(cpu)[len(cpu) // 2]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    allocator_tuned = tune_allocator()
    load_start = os.getloadavg()
    rows = []
    h, w = args.size
    for name in args.models:
        model = build_model(name).eval()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        cases = [(f"{args.square}x{args.square}", args.square, args.square, 0, args.repeats),
                 (f"{w}x{h} untiled", h, w, 0, 1),
                 (f"{w}x{h} tiled {args.tile}/32", h, w, args.tile, 1)]
        for label, ch, cw, tile, repeats in cases:
            wall, cpu = time_restore(model, ch, cw, args.steps, tile, repeats)
            rows.append({"model": name, "params_M": round(params, 2), "case": label, "wall_s_per_step": wall,
                         "cpu_s_per_step": cpu, "cpu_s_50_steps": 50 * cpu})
            print(f"{name:12s} {label:24s} wall {wall:8.3f} s/step  cpu {cpu:8.3f} s/step", flush=True)
    meta = {"load_average_end": os.getloadavg(), "load_average_start": load_start, "threads": args.threads,
            "allocator_tuned": allocator_tuned, "steps_per_run": args.steps, "repeats_256": args.repeats,
            "torch": torch.__version__, "cpu": cpu_name(),
            "note": "compare rows of one run; the load averages say how much other jobs competed"}
    return {"meta": meta, "rows": rows}


def render(data: dict[str, Any]) -> list[str]:
    """The markdown report from the JSON data alone."""
    meta, rows = data["meta"], data["rows"]
    lines = ["# Diffusion sampling: seconds per step on CPU", "",
             f"Written by `python -m benchmarks.bench.diffusion_step_time --threads {meta['threads']}`. fp32, "
             f"{meta['threads']} thread(s), DDIM (one UNet call per step, plus the tiling-consistent noise), "
             f"median of {meta['repeats_256']} runs of {meta['steps_per_run']} steps at 256x256 and one run at 720p, "
             "after a warm-up. Random weights (step time does not depend on them). Allocator tuning of the CLI "
             f"(`diffdeblur.runtime`): {'on' if meta['allocator_tuned'] else 'off'}.", "",
             "The machine is a 2-core CPU that other jobs may share (load average "
             f"{meta['load_average_start'][0]:.1f} at the start, {meta['load_average_end'][0]:.1f} at the end), so "
             "wall-clock figures are inflated by any contention. CPU seconds (time this process spent on a core) are "
             "the steadier number: with one thread they estimate the wall time on an idle core.", "",
             "| model | params (M) | input | CPU s / step | wall s / step | CPU s for 50 steps |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params_M']} | {r['case']} | {r['cpu_s_per_step']:.3f} | "
                     f"{r['wall_s_per_step']:.3f} | {r['cpu_s_50_steps']:.1f} |")
    lines += ["", "dvsr-small adds one pass of its NAFNet predictor per image (not per step), amortised "
              "here over the timed steps.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["sr3-small", "dvsr-small"], help="registered models to time")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--steps", type=int, default=4, help="sampling steps per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs at 256x256 (720p: 1)")
    ap.add_argument("--tile", type=int, default=256, help="tile size of the tiled case (overlap 32)")
    ap.add_argument("--square", type=int, default=256, help=argparse.SUPPRESS)  # smoke tests: smaller sizes
    ap.add_argument("--size", type=int, nargs=2, default=(720, 1280), help=argparse.SUPPRESS)
    ap.add_argument("--results", type=Path, default=RESULTS, help="where diffusion_step_time.md / .json go")
    ap.add_argument("--report", action="store_true", help="measure nothing: rewrite the .md from the .json")
    args = ap.parse_args(argv)
    data = read_results(NAME, args.results) if args.report else measure(args)
    write_report(NAME, render(data), data, args.results, quiet=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
