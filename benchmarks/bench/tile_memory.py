"""Peak memory of tiled deblurring against the tile size: does a smaller tile use less memory?

One `diffdeblur deblur` subprocess per (image size, tile) through the real command line
(:func:`benchmarks.bench.core.run_deblur`: wall seconds of read + restore + write, and the child's peak
RSS), the shipped default model, all in one run. ``--repo DIR`` also runs the same images with another
checkout of the project on ``PYTHONPATH`` (e.g. a ``git worktree`` of an earlier commit) for a before /
after comparison side by side.

    python -m benchmarks.bench.tile_memory [--sizes 24MP] [--tiles 256 512] [--threads 2] [--repo OLD_CHECKOUT]
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench.core import make_image, run_deblur
from benchmarks.common import RESULTS, command, load_average, machine, md_table, read_results, today, write_report

NAME = "tile_memory"
SIZES = {"24MP": (4000, 6000), "12MP": (3000, 4000), "720p": (720, 1280), "512x384": (384, 512)}


def measure(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    rows = []
    load_start = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        for size in args.sizes:
            h, w = SIZES[size]
            img = tmpd / f"in_{size}.png"
            make_image(img, h, w)
            for label, repo in [("this checkout", None)] + ([("--repo", args.repo)] if args.repo else []):
                for tile in args.tiles:
                    old = os.environ.get("PYTHONPATH")
                    if repo:
                        os.environ["PYTHONPATH"] = str(Path(repo) / "src")
                    try:
                        r = run_deblur(img, tmpd / f"out_{size}_{tile}", args.model, tile, args.threads)
                    finally:
                        if repo:
                            os.environ.pop("PYTHONPATH") if old is None else os.environ.__setitem__("PYTHONPATH", old)
                    rows.append({"code": label, "size": size, "width": w, "height": h, "tile": tile, **r})
                    print(f"{label} {size} tile {tile}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB",
                          flush=True)
    return {"rows": rows, "model": args.model, "threads": args.threads, "machine": machine(), "date": today(),
            "load_average_start": load_start, "command": command(f"benchmarks.bench.{NAME}", argv),
            "repo_note": args.repo_note}


def render(result: dict[str, Any]) -> list[str]:
    lines = [f"# Peak memory of tiled deblurring ({NAME})", "",
             f"`{result['command']}` on {result['machine']}, {result['date']}, {result['threads']} threads, model "
             f"`{result['model']}` (load average at the start {result['load_average_start']:.2f}). One "
             "`diffdeblur deblur` process per row: wall seconds of read, restore and write, and its peak RSS.", ""]
    if result.get("repo_note"):
        lines += [f"`--repo`: {result['repo_note']}", ""]
    lines += md_table(["code", "image", "tile", "seconds", "peak RSS (GiB)"],
                      [[r["code"], f"{r['size']} ({r['width']}x{r['height']})", r["tile"], f"{r['seconds']:.1f}",
                        f"{r['peak_rss_gib']:.2f}"] for r in result["rows"]])
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["24MP"], choices=sorted(SIZES))
    ap.add_argument("--tiles", nargs="+", default=["256", "512"])
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repo", default="", help="another checkout to run beside this one (before / after)")
    ap.add_argument("--repo-note", default="", help="what --repo is (e.g. the commit), for the report")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--report", action="store_true", help="rewrite the markdown from the JSON only")
    args = ap.parse_args(argv)
    result = read_results(NAME, args.results) if args.report else measure(args, argv)
    write_report(NAME, render(result), result, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
