"""Core benchmark: parameters / MACs of every registered model, and CPU latency + peak memory of
tiled deblurring at 720p and 24 MP through the real command line.

Writes docs/results/core.md and docs/results/core.json. Each deblur run is a fresh subprocess
(`diffdeblur deblur ...`), so its peak RSS (ru_maxrss of the child) is that of one user command.

    python -m benchmarks.bench.core [--model CKPT] [--skip-24mp] [--threads N]
    python -m benchmarks.bench.core --report      # the markdown from the committed JSON
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, command, load_average, machine, read_results, today, write_report

NAME = "core"
SIZES = {"720p": (720, 1280), "24MP": (4000, 6000), "256x256": (256, 256)}  # the last one: smoke tests


def make_image(path: Path, height: int, width: int) -> None:
    """A procedural blurry photo of the given size (built in bands to keep memory low)."""
    from diffdeblur.example import example_pair
    from diffdeblur.io import write_image

    band = 1000
    rows = []
    for i, y in enumerate(range(0, height, band)):
        rows.append(np.round(example_pair(min(band, height - y), width, seed=i)[0] * 255).astype(np.uint8))
    img = np.concatenate(rows, axis=0)
    write_image(path, img.astype(np.float32) / 255.0)


def run_deblur(image: Path, out: Path, model: str, tile: int | str, threads: int) -> dict:
    """Time one `diffdeblur deblur` subprocess; returns seconds (wall) and the child's peak RSS."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    code = ("import resource, sys, time, torch; torch.set_num_threads(%d); from diffdeblur.cli import main; "
            "t=time.perf_counter(); rc=main(sys.argv[1:]); "
            "print('BENCH', time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc)" % threads)
    cmd = [sys.executable, "-c", code, "deblur", str(image), "-o", str(out), "--model", model,
           "--tile", str(tile), "--quiet", "--device", "cpu"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCH")]
    if done.returncode != 0 or not line:
        raise RuntimeError(f"deblur failed: {done.stderr[-500:]}")
    _, secs, rss_kb, rc = line[0].split()
    return {"seconds": float(secs), "peak_rss_gib": int(rss_kb) / 1024 ** 2}


def measure(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    from diffdeblur import build_model, save_model
    from diffdeblur.checkpoint import read_metadata
    from diffdeblur.catalog import model_table
    from diffdeblur.inference import shipped_weights

    load_start = load_average()
    table = model_table(with_macs=not args.no_macs)
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        model = args.model
        if not model:
            default = shipped_weights("default")
            if default is not None:
                model = str(default)
            else:  # latency does not depend on the weights' values
                model = str(tmpd / "nafnet-small.safetensors")
                save_model(build_model("nafnet-small"), model)
        model_name = read_metadata(model)["model"]
        sizes = [s for s in args.sizes.split(",") if s and not (args.skip_24mp and s == "24MP")]
        warm = tmpd / "warm.png"  # untimed: the first `engine auto` process on a machine measures the engines (cached)
        make_image(warm, 64, 64)
        run_deblur(warm, tmpd / "out_warm.png", model, 0, args.threads)
        timings = []
        for label in sizes:
            h, w = SIZES[label]
            img = tmpd / f"{label}.png"
            make_image(img, h, w)
            r = run_deblur(img, tmpd / f"out_{label}", model, args.tile, args.threads)
            timings.append({"size": label, "width": w, "height": h, "tile": args.tile, **r})
            print(label, r, flush=True)
    return {"models": table, "deblur": timings, "deblur_model": model_name, "threads": args.threads,
            "tile": args.tile, "machine": machine(), "date": today(), "load_average_start": load_start,
            "load_average_end": load_average(), "command": command("benchmarks.bench.core", argv)}


def render(result: dict[str, Any]) -> list[str]:
    """The markdown report from the JSON data alone."""
    tile = result.get("tile", result["deblur"][0]["tile"] if result["deblur"] else 512)
    lines = ["# Core benchmark", "", f"Written by `{result.get('command', 'python -m benchmarks.bench.core')}` on "
             f"{result['date']} ({result['machine']}).", "",
             "## Registered models", "",
             "MACs from PyTorch's flop counter (`torch.utils.flop_counter`, MACs = FLOPs / 2) for one "
             "`restore` of a 1x3x256x256 input; for diffusion models, one sampling step.", "",
             "| model | kind | params (M) | GMACs @256 |", "|---|---|---:|---:|"]
    for r in result["models"]:
        g = "" if r["gmacs_256"] is None else f"{r['gmacs_256']:.2f}" + (" / step" if r["per_step"] else "")
        lines.append(f"| {r['name']} | {r['kind']} | {r['params'] / 1e6:.3f} | {g} |")
    load = (f" Load average {result['load_average_start']:.1f} at the start and {result['load_average_end']:.1f} at "
            "the end (other jobs inflate the seconds, not the memory)." if "load_average_start" in result else "")
    lines += ["", "Published sizes for comparison (papers / design notes): NAFNet width 32: 17.1 M, 16 GMACs; "
              "width 64: 67.9 M, 63 GMACs (paper ~65 G); MIMO-UNet 6.8 M; MIMO-UNet+ 16.1 M.", "",
              f"## Deblurring on CPU (`diffdeblur deblur --tile {tile}`, model `{result['deblur_model']}`, "
              f"{result['threads']} threads)", "",
              "Each row is one fresh `diffdeblur deblur` process: wall time of the command's work "
              f"(read, restore, write) and its peak resident memory.{load}", "",
              "| image | seconds | peak RSS (GiB) |", "|---|---:|---:|"]
    for t in result["deblur"]:
        lines.append(f"| {t['size']} ({t['width']}x{t['height']}) | {t['seconds']:.1f} | {t['peak_rss_gib']:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="checkpoint to time (default: shipped default, else nafnet-small untrained)")
    ap.add_argument("--tile", default="auto", help="--tile of the deblur command (auto: whole image up to ~1 MP, "
                    "512 tiles above, as the command's default)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each deblur process")
    ap.add_argument("--sizes", default="720p,24MP", help="comma-separated subset of " + ", ".join(SIZES))
    ap.add_argument("--skip-24mp", action="store_true", help="leave out the 24 MP image")
    ap.add_argument("--no-macs", action="store_true", help="leave out the MACs column (faster)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where core.md / core.json go")
    ap.add_argument("--report", action="store_true", help="measure nothing: rewrite the .md from the .json")
    args = ap.parse_args(argv)
    result = read_results(NAME, args.results) if args.report else measure(args, argv)
    print("wrote", write_report(NAME, render(result), result, args.results, quiet=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
