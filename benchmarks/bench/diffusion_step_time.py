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
import json
import os
import platform
import time
from pathlib import Path

import torch

from diffdeblur.inference import restore_tensor
from diffdeblur.registry import build_model
from diffdeblur.runtime import tune_allocator

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["sr3-small", "dvsr-small"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4, help="sampling steps per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs at 256x256 (720p: 1)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--out", default=str(OUT / "diffusion_step_time"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    allocator_tuned = tune_allocator()
    load_start = os.getloadavg()
    rows = []
    for name in args.models:
        model = build_model(name).eval()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        cases = [("256x256", 256, 256, 0, args.repeats),
                 ("1280x720 untiled", 720, 1280, 0, 1),
                 (f"1280x720 tiled {args.tile}/32", 720, 1280, args.tile, 1)]
        for label, h, w, tile, repeats in cases:
            wall, cpu = time_restore(model, h, w, args.steps, tile, repeats)
            rows.append({"model": name, "params_M": round(params, 2), "case": label, "wall_s_per_step": wall,
                         "cpu_s_per_step": cpu, "cpu_s_50_steps": 50 * cpu})
            print(f"{name:12s} {label:24s} wall {wall:8.3f} s/step  cpu {cpu:8.3f} s/step", flush=True)
    meta = {"load_average_end": os.getloadavg(), "load_average_start": load_start, "threads": args.threads, "allocator_tuned": allocator_tuned, "steps_per_run": args.steps, "repeats_256": args.repeats,
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "note": "compare rows of one run; the load averages say how much other jobs competed"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Diffusion sampling: seconds per step on CPU", "",
             f"Written by `benchmarks/bench_diffusion_steps.py --threads {args.threads}`. fp32, "
             f"{args.threads} thread(s), DDIM (one UNet call per step, plus the tiling-consistent noise), "
             f"median of {args.repeats} runs of {args.steps} steps at 256x256 and one run at 720p, after a "
             "warm-up. Random weights (step time does not depend on them). Allocator tuning of the CLI "
             f"(`diffdeblur.runtime`): {'on' if allocator_tuned else 'off'}.", "",
             "The machine is a 2-core CPU that other jobs may share (load average "
             f"{load_start[0]:.1f} at the start, {meta['load_average_end'][0]:.1f} at the end), so wall-clock "
             "figures are inflated by any contention. CPU seconds (time this process spent on a core) are the "
             "steadier number: with one thread they estimate the wall time on an idle core.", "",
             "| model | params (M) | input | CPU s / step | wall s / step | CPU s for 50 steps |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params_M']} | {r['case']} | {r['cpu_s_per_step']:.3f} | "
                     f"{r['wall_s_per_step']:.3f} | {r['cpu_s_50_steps']:.1f} |")
    lines += ["", "dvsr-small adds one pass of its NAFNet predictor per image (not per step), amortised "
              "here over the timed steps.", ""]
    Path(args.out + ".md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
