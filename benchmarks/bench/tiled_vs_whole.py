"""Does tiled inference equal the whole image? PSNR between tiled and whole-image output on real frames.

For every frame of the ``--data`` folders (``blur/`` of a paired folder; the first ``--frames`` of each) and
every ``--tiles`` size, the model restores the frame whole and tiled (overlap 32) through the product
(:func:`diffdeblur.inference.restore_tensor`, engine eager, fp32), once with the model's own tile context
(:func:`diffdeblur.inference.tile_context`: the input pixels a tile grows by) and once with none (the behaviour
before the context existed). The table gives the PSNR between tiled and whole (float, peak 1) and the largest
absolute difference in 8-bit levels; the issue's target is >= 50 dB at tile 256 with the shipped default.

    python -m benchmarks.bench.tiled_vs_whole [--model default] [--tiles 256 512] [--frames 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (measure_main, DATA, command, load_average, machine, md_table, portable,
                               today, write_report)

NAME = "tiled_vs_whole"
DEFAULT_DATA = [DATA / "reds_sample" / "val", DATA / "gopro_sample" / "val"]


def psnr_between(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def frames(folder: Path, n: int) -> list[Path]:
    from diffdeblur.io import is_image_file

    root = folder / "blur" if (folder / "blur").is_dir() else folder
    return sorted(p for p in root.rglob("*") if is_image_file(p))[:n]


def measure(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    from diffdeblur.inference import load_model, restore_tensor, tile_context
    from diffdeblur.io import read_image, to_tensor

    torch.set_num_threads(args.threads)
    model = load_model(args.model, "cpu")
    context = tile_context(model)
    rows, load_start = [], load_average()
    for folder in args.data:
        for path in frames(folder, args.frames):
            x = to_tensor(read_image(path)[0])
            t0 = time.perf_counter()
            whole = restore_tensor(model, x, tile=0, engine="eager")
            whole_s = time.perf_counter() - t0
            for tile in args.tiles:
                for ctx in (context, 0):
                    t0 = time.perf_counter()
                    tiled = restore_tensor(model, x, tile=tile, engine="eager") if ctx else _no_context(model, x, tile)
                    seconds = time.perf_counter() - t0
                    rows.append({"frame": portable(path), "height": x.shape[-2], "width": x.shape[-1], "tile": tile,
                                 "context": ctx, "psnr_tiled_vs_whole": psnr_between(tiled, whole),
                                 "max_levels": float((tiled - whole).abs().max()) * 255, "seconds": seconds,
                                 "whole_seconds": whole_s})
                    r = rows[-1]
                    print(f"{path.name} tile {tile} context {ctx}: {r['psnr_tiled_vs_whole']:.2f} dB, "
                          f"max {r['max_levels']:.1f} levels, {seconds:.1f} s (whole {whole_s:.1f} s)", flush=True)
    return {"rows": rows, "model": args.model, "context": context, "threads": args.threads, "machine": machine(),
            "date": today(), "load_average_start": load_start, "command": command(f"benchmarks.bench.{NAME}", argv)}


def _no_context(model: torch.nn.Module, x: torch.Tensor, tile: int) -> torch.Tensor:
    """Tiled with no context (each tile sees only itself): the library's tiling with ``context=0``."""
    from diffdeblur.tiling import DEFAULT_OVERLAP, tiled_apply

    with torch.inference_mode():
        return tiled_apply(lambda t, box: model.restore(t).float().clamp(0, 1), x, tile, DEFAULT_OVERLAP, context=0)


def report(data: dict[str, Any], results: Path) -> None:
    rows = data["rows"]
    table = [[r["frame"].split("/")[-3] + "/" + Path(r["frame"]).name, f"{r['width']}x{r['height']}", r["tile"],
              r["context"], f"{r['psnr_tiled_vs_whole']:.2f}", f"{r['max_levels']:.1f}", f"{r['seconds']:.1f}",
              f"{r['whole_seconds']:.1f}"] for r in rows]
    worst = {t: min(r["psnr_tiled_vs_whole"] for r in rows if r["tile"] == t and r["context"] == data["context"])
             for t in sorted({r["tile"] for r in rows})}
    lines = [f"# Tiled vs whole image ({data['model']}, tile context {data['context']} px)", "",
             f"`{data['command']}` on {data['machine']}, {data['date']}, {data['threads']} threads "
             f"(load average at start {data['load_average_start']:.2f}).", "",
             "PSNR between the tiled and the whole-image output of the same frame (float, peak 1), the largest "
             "difference in 8-bit levels, and the seconds of each run (eager fp32, overlap 32). Context 'none' is "
             "tiling before tiles grew by the model's context.", "",
             *md_table(["frame", "size", "tile", "context", "PSNR tiled vs whole (dB)", "max diff (levels)",
                        "tiled s", "whole s"], table), "",
             "Worst frame with the model's context: " + ", ".join(f"tile {t}: {v:.2f} dB" for t, v in worst.items())
             + " (target: >= 50 dB at tile 256)."]
    write_report(NAME, lines, data, results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", nargs="+", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--frames", type=int, default=2, help="frames per folder")
    ap.add_argument("--tiles", nargs="+", type=int, default=[256, 512])
    ap.add_argument("--threads", type=int, default=2)
    return measure_main(ap, NAME, measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
