"""Two models side by side on the same frames: per-image paired PSNR differences with a bootstrap 95 % interval.

Both models are evaluated through the product (:func:`diffdeblur.evaluate.evaluate`, whole frames, PSNR/SSIM
on 8-bit RGB) in one run on every ``--data`` folder; for each folder the table gives both means, the mean
of the per-image differences (B - A), its 95 % percentile-bootstrap interval (10,000 resamples of the
images, seed 0), how many images B improves, and the worst per-image difference.

    python -m benchmarks.studies.paired_compare --a default --b runs/new/best.safetensors \
        --data ../shared/data/reds_sample/val ../shared/data/gopro_sample/val --name default_vs_new
    python -m benchmarks.studies.paired_compare --name default_vs_new --report
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, command, machine, md_table, portable, read_results, today, write_report

RESAMPLES = 10_000


def bootstrap_ci(diffs: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of ``diffs`` (resampling the images)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def compare(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired statistics of PSNR(B) - PSNR(A) over the images both scored (matched by name)."""
    a = {r["image"]: float(r["psnr"]) for r in rows_a}
    b = {r["image"]: float(r["psnr"]) for r in rows_b}
    names = sorted(set(a) & set(b))
    d = np.array([b[n] - a[n] for n in names])
    lo, hi = bootstrap_ci(d)
    return {"images": len(names), "psnr_a": float(np.mean([a[n] for n in names])),
            "psnr_b": float(np.mean([b[n] for n in names])), "mean_diff": float(d.mean()), "ci95": [lo, hi],
            "b_better": int((d > 0).sum()), "worst_diff": float(d.min()), "best_diff": float(d.max()),
            "per_image": {n: float(v) for n, v in zip(names, d)}}


def measure(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    import torch

    from diffdeblur.evaluate import evaluate
    from diffdeblur.inference import load_model

    torch.set_num_threads(args.threads)
    models = {"a": load_model(args.a, "cpu"), "b": load_model(args.b, "cpu")}
    sets = []
    for folder in args.data:
        reports = {k: evaluate(m, folder, tile=0, show_progress=False) for k, m in models.items()}
        res = compare(reports["a"].rows, reports["b"].rows)
        res.update(data=portable(folder), input_psnr=reports["a"].summary["input_psnr"])
        sets.append(res)
        print(f"{folder}: A {res['psnr_a']:.3f} dB, B {res['psnr_b']:.3f} dB, B - A {res['mean_diff']:+.3f} "
              f"[{res['ci95'][0]:+.3f}, {res['ci95'][1]:+.3f}]", flush=True)
    return {"a": portable(args.a), "b": portable(args.b), "sets": sets, "threads": args.threads,
            "machine": machine(), "date": today(), "command": command("benchmarks.studies.paired_compare", argv)}


def render(result: dict[str, Any]) -> list[str]:
    lines = [f"# `{result['b']}` (B) against `{result['a']}` (A), image by image", "",
             f"`{result['command']}` on {result['machine']}, {result['date']}. Whole frames, PSNR on 8-bit RGB "
             f"through `diffdeblur.evaluate`; B - A per image, mean with its 95 % bootstrap interval "
             f"({RESAMPLES} resamples of the images).", ""]
    lines += md_table(["data", "images", "input PSNR", "A PSNR", "B PSNR", "B - A (mean)", "95 % interval",
                       "images B better", "worst B - A"],
                      [[s["data"], s["images"], f"{s['input_psnr']:.3f}", f"{s['psnr_a']:.3f}", f"{s['psnr_b']:.3f}",
                        f"{s['mean_diff']:+.3f}", f"[{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}]",
                        f"{s['b_better']}/{s['images']}", f"{s['worst_diff']:+.3f}"] for s in result["sets"]])
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", default="default", help="model A: shipped weights' name or a .safetensors")
    ap.add_argument("--b", default="", help="model B")
    ap.add_argument("--data", nargs="+", default=[], help="paired folders")
    ap.add_argument("--name", default="paired_compare", help="report name under --results")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--report", action="store_true", help="rewrite the markdown from the JSON only")
    args = ap.parse_args(argv)
    if not args.report and (not args.b or not args.data):
        ap.error("--b and --data are needed unless --report")
    result = read_results(args.name, args.results) if args.report else measure(args, argv)
    write_report(args.name, render(result), result, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
