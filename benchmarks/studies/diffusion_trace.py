"""Study 3: per-step PSNR/SSIM along the reverse process -- when does the image become recognisable?

Runs ``diffdeblur.trace`` (the same code as ``diffdeblur trace``) with the studies' SR3 models
(T = 1000 from study 5, and T = 2000 / 400 from study 1 when trained) on centre crops of GoPro-sample
val pairs: ancestral DDPM through all T steps (as in the seed report's Fig. 3) and DDIM with 50 steps.
For each trace it reports, as fractions of the chain (1.0 = the last step):
- where the predicted clean image x0 is best (highest PSNR against the sharp reference), with its
  PSNR at the first step, at its best and of the final output;
- when the noisy state x_t becomes recognisable: the first step whose x_t reaches half the SSIM of the
  final output, and the first whose PSNR is within 3 dB of the final output's.
Writes docs/results/diffusion_trace.md (+ .json, curves plot) and, per trace, a folder
docs/results/diffusion_trace/<name>/ with grid.png, trace.gif, curves.png and steps.csv.

    python -m benchmarks.studies.diffusion_trace run | report
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.common import GOPRO_VAL, RESULTS, load_json, md_table, read_results, save_json, study_main, write_report
from benchmarks.studies.diffusion_samplers import t_model
from benchmarks.studies.diffusion_vs_regression import THREADS, budget
from diffdeblur.evaluate import centre_crop
from diffdeblur.io import read_image
from diffdeblur.metrics import psnr, ssim
from diffdeblur.trace import plot_curves, record_trace, write_trace

NAME = "diffusion_trace"
CROP = 128
IMAGES = ("000100", "000110", "000120")
MODELS = {"T1000": 1000, "T2000": 2000, "T400": 400}  # tag -> T of the samplers study's model (trained if missing)
SMOKE_STEPS = 3  # --smoke: the T1000 model only, 3 sampling steps, one image
THUMB, GIF_FRAMES = 128, 24
GIF_MODEL = "T1000"  # GIFs for this model only (docs stay small); grids and curves for all


def first_fraction(values: list[float], ok) -> float:
    for i, v in enumerate(values):
        if ok(v):
            return (i + 1) / len(values)
    return float("nan")


def summarise(rows: list[dict], final_psnr: float, final_ssim: float) -> dict:
    p0 = [r["psnr_x0"] for r in rows]
    best = max(range(len(p0)), key=lambda i: p0[i])
    return {"steps": len(rows), "final_psnr": final_psnr, "final_ssim": final_ssim,
            "x0_first_psnr": p0[0], "x0_best_psnr": p0[best], "x0_best_at": (best + 1) / len(p0),
            "xt_half_ssim_at": first_fraction([r["ssim_xt"] for r in rows], lambda v: v >= 0.5 * final_ssim),
            "xt_psnr_3db_at": first_fraction([r["psnr_xt"] for r in rows], lambda v: v >= final_psnr - 3.0)}


def run(results: Path, runs: Path, smoke: bool = False) -> None:
    torch.set_num_threads(THREADS)
    b = budget(smoke)
    out = runs / f"{NAME}.json"
    res = load_json(out)
    for tag, T in (list(MODELS.items())[:1] if smoke else MODELS.items()):
        model, _ = t_model(runs, T, b["steps"], b["batch"])
        chains = (("ddpm", SMOKE_STEPS), ("ddim", SMOKE_STEPS)) if smoke else (("ddpm", T), ("ddim", 50))
        for sampler, steps in chains:
            for img in IMAGES[:1] if smoke else IMAGES:
                name = f"{tag}_{sampler}{steps}_{img}"
                if name in res:
                    continue
                blur = centre_crop(read_image(GOPRO_VAL / "blur" / f"{img}.png")[0], CROP)
                sharp = centre_crop(read_image(GOPRO_VAL / "sharp" / f"{img}.png")[0], CROP)
                tr = record_trace(model, blur, sharp, steps=steps, sampler=sampler, seed=0, thumb=THUMB)
                if img == IMAGES[0]:  # keep the pictures of one image per setting (docs stay small)
                    write_trace(tr, results / NAME / f"{tag}_{sampler}{steps}", frames=8,
                                gif_frames=GIF_FRAMES if tag == GIF_MODEL else 0,
                                title=f"{tag} {sampler} {steps} steps, val {img} ({CROP}x{CROP} centre)")
                res[name] = {"model": tag, "sampler": sampler, "image": img, "input_psnr": tr.input_psnr,
                             "input_ssim": tr.input_ssim,
                             **summarise(tr.rows, psnr(tr.output, sharp), ssim(tr.output, sharp)),
                             **{f"curve_{k}": [r[k] for r in tr.rows] for k in ("psnr_x0", "ssim_x0", "psnr_xt", "ssim_xt")}}
                save_json(out, res)
                print(name, {k: v for k, v in res[name].items() if not k.startswith("curve")}, flush=True)
    report(results, res)


def _mean(items: list[dict], key: str) -> float:
    vals = [v[key] for v in items if v[key] == v[key]]  # drop NaN
    return sum(vals) / len(vals) if vals else float("nan")


def report(results: Path = RESULTS, res: dict[str, Any] | None = None) -> None:
    """Write the report from ``res`` (default: the committed ``<results>/<name>.json``, which has no
    per-step curves: the plot is then kept as it is)."""
    res = read_results(NAME, results) if res is None else res
    lines = ["# When does the image appear along the reverse process? (study 3)", "",
             f"Written by `python -m benchmarks.studies.diffusion_trace run`, using `diffdeblur.trace`. Models: the studies' SR3 "
             f"(base 16, x0 objective; trained as in diffusion_vs_regression.md / diffusion_samplers.md). Images: "
             f"{CROP}x{CROP} centre crops of GoPro-sample val {', '.join(IMAGES)}. Fractions are of the chain's steps "
             "(1.0 = the last step); x0 = the model's clean-image estimate at that step, x_t = the noisy state entering "
             "that step; nan = no x_t of the chain gets there (only the final output does).", ""]
    rows = [[v["model"], f"{v['sampler']} {v['steps']}", v["image"], v["input_psnr"], v["final_psnr"], v["final_ssim"],
             v["x0_first_psnr"], v["x0_best_psnr"], v["x0_best_at"], v["xt_half_ssim_at"], v["xt_psnr_3db_at"]]
            for v in res.values()]
    lines += md_table(["model", "sampler", "image", "input PSNR", "output PSNR", "output SSIM", "x0 PSNR at step 1",
                       "best x0 PSNR", "best x0 at", "x_t reaches half the output SSIM at",
                       "x_t within 3 dB of output PSNR at"], rows)
    groups: dict[str, list[dict]] = {}
    for v in res.values():
        groups.setdefault(f"{v['model']} {v['sampler']} {v['steps']}", []).append(v)
    lines += ["", "Means over the images (computed):", ""]
    lines += md_table(["setting", "images", "output PSNR", "best x0 at", "x_t half SSIM at", "x_t within 3 dB at"],
                      [[k, len(vs), _mean(vs, "final_psnr"), _mean(vs, "x0_best_at"), _mean(vs, "xt_half_ssim_at"),
                        _mean(vs, "xt_psnr_3db_at")] for k, vs in groups.items()])
    series = {}
    for v in res.values():
        if v["image"] == IMAGES[0] and "curve_psnr_x0" in v:
            series[f"{v['model']} {v['sampler']} psnr x0"] = v["curve_psnr_x0"]
            series[f"{v['model']} {v['sampler']} psnr x_t"] = v["curve_psnr_xt"]
            series[f"{v['model']} {v['sampler']} ssim x_t"] = v["curve_ssim_xt"]
    if series:
        # resample every curve to 100 points so chains of different length share the x axis
        def resample(ys: list[float]) -> list[float]:
            n = len(ys)
            return [ys[min(n - 1, round(i * (n - 1) / 99))] for i in range(100)]
        plot_curves({k: resample(v) for k, v in series.items()}, results / f"{NAME}.png",
                    title=f"val {IMAGES[0]}: per-step PSNR of x0 and x_t, SSIM of x_t", xlabel="% of the chain")
    if series or (results / f"{NAME}.png").exists():
        lines += ["", f"![curves]({NAME}.png)", ""]
    lines += ["Per-trace pictures (grid of x_t over x0, curves, CSV; a GIF for the T1000 model) are in "
              "`diffusion_trace/<model>_<sampler>/`.", ""]
    write_report(NAME, lines, {k: {kk: vv for kk, vv in v.items() if not kk.startswith("curve")}
                               for k, v in res.items()}, results)


def main(argv: list[str] | None = None) -> int:
    return study_main(__doc__, run, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
