"""Do pairs made from raw 240 fps frames look like the published ones? Blur-vs-sharp PSNR of
``gopro_more`` (made by the same formula, N = 8 or 10) beside pairs that ``diffdeblur.data.frames``
makes from ``gopro_frames240`` (the same scene, other frames) with N = 8 and 10, and with the GoPro
range N = 7..13.

    python -m benchmarks.studies.frames_check run      # a few seconds
    python -m benchmarks.studies.frames_check report   # the markdown from the JSON
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import DATA, DATA_SHOWN, md_table, read_results, study_main, write_report

NAME = "frames_check"
GOPRO_MORE = DATA / "gopro_more"
FRAMES = DATA / "gopro_frames240" / "GOPR0477_11_00"


def stats(values: list[float]) -> dict[str, Any]:
    return {"pairs": len(values), "mean": float(np.mean(values)), "min": float(np.min(values)),
            "max": float(np.max(values))}


def run(results: Path, runs: Path, smoke: bool) -> None:
    from diffdeblur.data.frames import average_frames, frame_files
    from diffdeblur.data.pairs import find_pairs
    from diffdeblur.data.sources import ImageCache
    from diffdeblur.io import read_image
    from diffdeblur.metrics import psnr

    rows = []
    by_group: dict[tuple[str, int], list[float]] = {}
    for pair in find_pairs(GOPRO_MORE)[0]:
        m = re.match(r"(GOPR\d+_\d+_\d+)_st_frame-\d+_n_avg-(\d+)", pair.blur.stem)
        scene, n = (m.group(1), int(m.group(2))) if m else ("?", 0)
        by_group.setdefault((scene, n), []).append(psnr(read_image(pair.blur)[0], read_image(pair.sharp)[0]))
    for (scene, n), vals in sorted(by_group.items()):
        rows.append({"source": f"gopro_more {scene}", "n": str(n), **stats(vals)})
    frames = ImageCache(frame_files(FRAMES))
    stride = 8 if smoke else 2
    for n_label, ns in (("8", [8]), ("10", [10]), ("7..13", list(range(7, 14)))):
        vals = []
        for n in ns:
            for start in range(0, len(frames) - n + 1, stride * (3 if len(ns) > 1 else 1)):
                window = [frames.get(i) for i in range(start, start + n)]
                vals.append(psnr(average_frames(window), window[n // 2].astype(np.float32) / 255.0))
        rows.append({"source": "gopro_frames240 GOPR0477_11_00 (diffdeblur.data.frames)", "n": n_label, **stats(vals)})
    data = {"rows": rows, "gopro_more": f"{DATA_SHOWN}/gopro_more", "frames": f"{DATA_SHOWN}/gopro_frames240/GOPR0477_11_00",
            "stride": stride}
    report(results, data)


def report(results: Path, data: dict[str, Any] | None = None) -> None:
    data = data or read_results(NAME, results)
    lines = [f"# Real blur from 240 fps frames vs the published pairs ({NAME})", "",
             "Blur-vs-sharp PSNR (RGB, 8-bit) of the `gopro_more` pairs, grouped by scene and the number N of "
             "averaged frames in their names, beside pairs made by `diffdeblur.data.frames.average_frames` "
             f"(gamma 2.2, sharp = middle frame) from the raw frames of one of those scenes (exposures starting every {data['stride']} frames "
             f"for N = 8 and 10, every {3 * data['stride']} for 7..13). Made by `python -m benchmarks.studies.frames_check run`.", ""]
    lines += md_table(["source", "N", "pairs", "mean PSNR", "min", "max"],
                      [[r["source"], r["n"], r["pairs"], f"{r['mean']:.2f}", f"{r['min']:.2f}", f"{r['max']:.2f}"]
                       for r in data["rows"]])
    write_report(NAME, lines, data, results)


def main(argv: list[str] | None = None) -> int:
    return study_main(__doc__, run, report, argv, needs=(GOPRO_MORE, FRAMES))


if __name__ == "__main__":
    raise SystemExit(main())
