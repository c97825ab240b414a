"""Model benchmarks: parameters, MACs, latency and peak memory at chosen sizes on the current device
and engine, PSNR/SSIM on a paired folder; written as Markdown, JSON and a PSNR-vs-latency plot.

Latency is the median of ``repeats`` :func:`~diffdeblur.inference.restore_tensor` calls on a seeded
random image, after one untimed warm-up call (which also pays any engine set-up), with the engine
resolved once before (``auto`` may measure: :func:`diffdeblur.engines.choose_engine`) and by default
the tiling of ``diffdeblur deblur`` and ``eval`` (``tile`` ``"auto"``: the whole image up to about a
megapixel, 512-pixel tiles above): the same method as eval's per-image seconds, stated in each row's
``timing`` (:func:`diffdeblur.evaluate.timing_method`). Peak memory is CUDA's peak
allocation on a GPU; on the CPU it is the process's peak resident set (``ru_maxrss``), which only
grows, so it is the peak of everything measured so far in the process (models in the order given).
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .engines import resolve_engine
from .evaluate import TIMING_WARMUP, count_macs, count_parameters, evaluate, timing_method, warmup_options
from .inference import restore_tensor
from .io import atomic_write_bytes
from .options import DEFAULT_TILE
from .perception import column


def parse_size(text: str) -> tuple[int, int]:
    """'256' -> (256, 256); '1280x720' (width x height) -> (720, 1280) as (H, W)."""
    w, _, h = text.lower().partition("x")
    return (int(h or w), int(w))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)


def bench_model(model: nn.Module, label: str, sizes: list[tuple[int, int]], *, engine: str = "auto",
                repeats: int = 3, data: str | os.PathLike | None = None, max_images: int = 0,
                tile: int | str = DEFAULT_TILE, metrics: tuple[str, ...] = ("psnr", "ssim"),
                **options: Any) -> dict[str, Any]:
    """One model's row: params, MACs and latency / peak memory per size (H, W), and the ``metrics``
    (:data:`diffdeblur.perception.PERCEPTION_METRICS`) of the restored and the blurry images on ``data``
    (``tile`` for both, by default eval's and deblur's: ``"auto"``); ``timing`` states the method."""
    device = next(model.parameters(), torch.empty(0)).device
    engine = resolve_engine(engine, model, device)  # before any timing: auto may measure the engines
    row: dict[str, Any] = {"model": label, "engine": engine, "device": str(device),
                           "params": count_parameters(model), "timing": timing_method(engine, tile, sizes=sizes),
                           "repeats": repeats, "sizes": []}
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(TIMING_WARMUP):  # engine set-up, oneDNN primitives, allocator
            restore_tensor(model, x, tile=tile, engine=engine, **warmup_options(model, options))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            restore_tensor(model, x, tile=tile, engine=engine, **options)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        macs = count_macs(model, (h, w), **options) or None  # an ONNX file: unknown (0)
        row["sizes"].append({"size": f"{w}x{h}", "gmacs": None if macs is None else macs / 1e9,
                             "latency_s": statistics.median(times), "peak_memory_mb": peak_memory_mb(device)})
    if data is not None:
        report = evaluate(model, data, max_images=max_images, tile=tile, engine=engine, metrics=metrics, **options)
        keys = [k for name in metrics for k in (column(name), f"input_{column(name)}")]
        row.update({k: report.summary[k] for k in keys if k in report.summary}, metrics=list(metrics),
                   images=report.summary["images"], eval_seconds_per_image=report.summary["seconds_per_image"])
    return row


def markdown(rows: list[dict[str, Any]], command: str = "") -> str:
    lines = ["# diffdeblur bench", ""] + ([f"`{command}`", ""] if command else [])
    measures = list(dict.fromkeys(m for r in rows for m in r.get("metrics", ()))) or ["psnr", "ssim"]
    lines += ["| model | engine | device | params (M) | size | GMACs | latency (s) | peak memory (MB) | "
              + " | ".join(m.upper() for m in measures) + " |", "|---|---|---|---|---|---|---|---|" + "---|" * len(measures)]
    for r in rows:
        for s in r["sizes"]:
            scores = [f"{r[column(m)]:.4f}" if column(m) in r else "" for m in measures]
            gmacs = "" if s["gmacs"] is None else f"{s['gmacs']:.2f}"
            lines.append(f"| {r['model']} | {r['engine']} | {r['device']} | {r['params'] / 1e6:.3f} | {s['size']} | "
                         f"{gmacs} | {s['latency_s']:.3f} | {s['peak_memory_mb']:.0f} | " + " | ".join(scores) + " |")
    timings = dict.fromkeys(f"{r['timing']}; median of {r['repeats']}" for r in rows if "timing" in r)
    if timings:
        lines += [""] + [f"Latency: {t}." for t in timings]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: str | os.PathLike) -> bool:
    """PSNR against latency (at the first size), one point per model; False without matplotlib or PSNR."""
    points = [(r["sizes"][0]["latency_s"], r["psnr"], r["model"]) for r in rows if "psnr" in r and r["sizes"]]
    if not points:
        return False
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for t, p, name in points:
        ax.scatter([t], [p])
        ax.annotate(name, (t, p), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"latency at {rows[0]['sizes'][0]['size']} (s)")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_bench(rows: list[dict[str, Any]], out: str | os.PathLike, command: str = "") -> list[Path]:
    """OUT.md, OUT.json and (with PSNR and matplotlib) OUT.png; returns the paths written."""
    base = Path(out)
    base.parent.mkdir(parents=True, exist_ok=True)
    md, js, png = base.with_suffix(".md"), base.with_suffix(".json"), base.with_suffix(".png")
    atomic_write_bytes(md, markdown(rows, command).encode())
    atomic_write_bytes(js, (json.dumps({"command": command, "rows": rows}, indent=1) + "\n").encode())
    return [md, js] + ([png] if plot(rows, png) else [])
