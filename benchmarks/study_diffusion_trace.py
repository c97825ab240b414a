"""Study 3: per-step PSNR/SSIM along the reverse process -- when does the image become recognisable?

Runs ``diffdeblur.trace`` (the same code as ``diffdeblur trace``) with the studies' SR3 models
(T = 1000 from study 5, and T = 2000 / 400 from study 1 when trained) on centre crops of GoPro-sample
val pairs: ancestral DDPM through all T steps (as in the seed report's Fig. 3) and DDIM with 50 steps.
For each trace it reports the first step (as a fraction of the chain) at which
- the predicted clean image x0 gets within 1 dB of its final PSNR,
- the noisy state x_t reaches SSIM 0.5 against the sharp reference, and 90% of its final SSIM.
Writes docs/results/diffusion_trace.md (+ .json, curves plot) and, per trace, a folder
docs/results/diffusion_trace/<name>/ with grid.png, trace.gif, curves.png and steps.csv.

    python benchmarks/study_diffusion_trace.py run | report
"""
from __future__ import annotations

import argparse
import sys

import torch

from diffdeblur.evaluate import centre_crop
from diffdeblur.io import read_image
from diffdeblur.trace import plot_curves, record_trace, write_trace
from diffusion_study_common import GOPRO_VAL, RESULTS, RUNS, THREADS, have_data, load_json, md_table, save_json
from study_diffusion_vs_regression import run_dir

NAME = "diffusion_trace"
CROP = 128
IMAGES = ("000100", "000110", "000120")
MODELS = {"T1000": "sr3", "T2000": "sr3-T2000", "T400": "sr3-T400"}
THUMB, GIF_FRAMES = 128, 40


def first_fraction(values: list[float], ok) -> float:
    for i, v in enumerate(values):
        if ok(v):
            return (i + 1) / len(values)
    return float("nan")


def summarise(rows: list[dict]) -> dict:
    p0 = [r["psnr_x0"] for r in rows]
    st = [r["ssim_xt"] for r in rows]
    return {"steps": len(rows), "final_psnr": p0[-1], "final_ssim": rows[-1]["ssim_x0"],
            "x0_within_1db": first_fraction(p0, lambda v: v >= p0[-1] - 1.0),
            "xt_ssim_0.5": first_fraction(st, lambda v: v >= 0.5),
            "xt_ssim_90pct": first_fraction(st, lambda v: v >= 0.9 * st[-1])}


def run() -> None:
    from diffdeblur.inference import load_model

    torch.set_num_threads(THREADS)
    out = RUNS / f"{NAME}.json"
    res = load_json(out)
    for tag, key in MODELS.items():
        ckpt = run_dir(key) / "final.safetensors"
        if not ckpt.exists():
            print(f"{ckpt}: not trained yet (run studies 5 / 1 first); skipped", flush=True)
            continue
        model = load_model(ckpt, "cpu")
        T = model.num_train_steps
        for sampler, steps in (("ddpm", T), ("ddim", 50)):
            for img in IMAGES:
                name = f"{tag}_{sampler}{steps}_{img}"
                if name in res:
                    continue
                blur = centre_crop(read_image(GOPRO_VAL / "blur" / f"{img}.png")[0], CROP)
                sharp = centre_crop(read_image(GOPRO_VAL / "sharp" / f"{img}.png")[0], CROP)
                tr = record_trace(model, blur, sharp, steps=steps, sampler=sampler, seed=0, thumb=THUMB)
                if img == IMAGES[0]:  # keep the pictures of one image per setting (docs stay small)
                    write_trace(tr, RESULTS / NAME / f"{tag}_{sampler}{steps}", frames=8, gif_frames=GIF_FRAMES,
                                title=f"{tag} {sampler} {steps} steps, val {img} ({CROP}x{CROP} centre)")
                res[name] = {"model": tag, "sampler": sampler, "image": img, "input_psnr": tr.input_psnr,
                             "input_ssim": tr.input_ssim, **summarise(tr.rows),
                             "curve_psnr_x0": [r["psnr_x0"] for r in tr.rows],
                             "curve_ssim_xt": [r["ssim_xt"] for r in tr.rows]}
                save_json(out, res)
                print(name, {k: v for k, v in res[name].items() if not k.startswith("curve")}, flush=True)
    report()


def report() -> None:
    res = load_json(RUNS / f"{NAME}.json")
    if not res:
        print("no results yet; run first", file=sys.stderr)
        return
    lines = ["# When does the image appear along the reverse process? (study 3)", "",
             f"Written by `benchmarks/study_diffusion_trace.py`, using `diffdeblur.trace`. Models: the studies' SR3 "
             f"(base 16, x0 objective; trained as in diffusion_vs_regression.md / diffusion_samplers.md). Images: "
             f"{CROP}x{CROP} centre crops of GoPro-sample val {', '.join(IMAGES)}. Fractions are of the chain's steps "
             "(1.0 = the last step); x0 = the model's clean-image estimate at that step, x_t = the noisy state.", ""]
    rows = [[v["model"], f"{v['sampler']} {v['steps']}", v["image"], v["input_psnr"], v["final_psnr"], v["final_ssim"],
             v["x0_within_1db"], v["xt_ssim_0.5"], v["xt_ssim_90pct"]] for v in res.values()]
    lines += md_table(["model", "sampler", "image", "input PSNR", "final PSNR", "final SSIM",
                       "x0 within 1 dB of final", "x_t SSIM >= 0.5", "x_t SSIM >= 90% of final"], rows)
    series = {}
    for v in res.values():
        if v["image"] == IMAGES[0]:
            series[f"{v['model']} {v['sampler']} psnr x0"] = v["curve_psnr_x0"]
            series[f"{v['model']} {v['sampler']} ssim x_t"] = v["curve_ssim_xt"]
    if series:
        # resample every curve to 100 points so chains of different length share the x axis
        def resample(ys: list[float]) -> list[float]:
            n = len(ys)
            return [ys[min(n - 1, round(i * (n - 1) / 99))] for i in range(100)]
        plot_curves({k: resample(v) for k, v in series.items()}, RESULTS / f"{NAME}.png",
                    title=f"val {IMAGES[0]}: per-step PSNR of x0 and SSIM of x_t", xlabel="% of the chain")
        lines += ["", f"![curves]({NAME}.png)", ""]
    lines += ["Per-trace pictures (grid of x_t over x0, GIF, curves, CSV) are in `diffusion_trace/<model>_<sampler>/`.", ""]
    (RESULTS / f"{NAME}.md").write_text("\n".join(lines))
    save_json(RESULTS / f"{NAME}.json", {k: {kk: vv for kk, vv in v.items() if not kk.startswith("curve")}
                                         for k, v in res.items()})
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["run", "report"])
    args = ap.parse_args(argv)
    if args.action == "run" and not have_data():
        print("shared data not found (set DIFFDEBLUR_DATA)", file=sys.stderr)
        return 1
    run() if args.action == "run" else report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
