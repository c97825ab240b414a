"""Study 1: number of diffusion steps T at training (2000 / 1000 / 400), samplers (DDPM / DDIM / SDE), objective.

(a) T ablation: the study SR3 model trained three times, identical except T. The linear schedule is
    DDPM's rescaled by 1000/T (diffdeblur.diffusion.schedules.linear_beta_schedule), so every T spans the
    same alpha_bar curve and only the discretisation differs. (The seed report instead kept the last
    400 betas, which leaves alpha_bar_T far from 0 for T = 400.) Each model sampled with DDIM 20 and DDPM 50.
(b) Samplers on the T = 1000 model (shared with study 5): steps vs PSNR/SSIM and CPU seconds for
    ancestral DDPM, DDIM (eta 0) and Euler-Maruyama on the reverse VP-SDE.
(c) Objective: the T = 1000 model trained to predict x0 (default), eps or v, same budget.
Evaluation on centre crops of the GoPro-sample val pairs; training budget as in study 5.

    python -m benchmarks.studies.diffusion_samplers run | report   # -> docs/results/diffusion_samplers.md
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (RESULTS, eval_crops, fill_evals, load_json, md_table, read_results, save_json,
                               study_main, write_report)
from benchmarks.studies.diffusion_vs_regression import BATCH, CROP, LR, STEPS, STUDY_MODEL, THREADS, budget, study_run

NAME = "diffusion_samplers"
EVAL_CROP, EVAL_IMAGES = 128, 6
T_VALUES = (2000, 1000, 400)
T_SETTINGS = {"ddim 20": {"steps": 20, "sampler": "ddim"}, "ddpm 50": {"steps": 50, "sampler": "ddpm"}}
SAMPLER_STEPS = {"ddim": (5, 10, 20, 50), "ddpm": (10, 20, 50, 100), "sde": (20, 50, 100, 200)}
OBJECTIVES = ("x0", "eps", "v", "x0-precond")
SMOKE_SAMPLING_STEPS = 2  # --smoke: every sampler setting at this many steps, one 32x32 crop


def t_model(runs: Path, T: int, steps: int, batch: int):
    model = {**STUDY_MODEL, "num_train_steps": T}
    key = "sr3" if T == 1000 else f"sr3-T{T}"  # T = 1000 is study 5's sr3 run
    return study_run(runs, key, model if T != 1000 else STUDY_MODEL, steps=steps, crop=CROP, batch=batch,
                     lr=LR["diffusion"], loss="diffusion")


def run(results: Path, runs: Path, smoke: bool = False) -> None:
    torch.set_num_threads(THREADS)
    b = budget(smoke)
    steps, batch = b["steps"], b["batch"]
    crop, images = (32, 1) if smoke else (EVAL_CROP, EVAL_IMAGES)
    t_settings = {k: {**v, "steps": SMOKE_SAMPLING_STEPS} for k, v in T_SETTINGS.items()} if smoke else T_SETTINGS
    sampler_steps = {k: (SMOKE_SAMPLING_STEPS,) for k in SAMPLER_STEPS} if smoke else SAMPLER_STEPS
    tests = {label: {"crop": crop, "images": images, **opts} for label, opts in t_settings.items()}
    out = runs / f"{NAME}.json"
    res = load_json(out)
    res.setdefault("T", {})
    res.setdefault("samplers", {})
    for T in T_VALUES:
        m, info = t_model(runs, T, steps, batch)
        entry = res["T"].setdefault(str(T), {"train": info, "eval": {}})
        fill_evals(entry, m, tests, lambda: save_json(out, res), f"T {T}")
    m, _ = t_model(runs, 1000, steps, batch)
    for sampler, steps_list in sampler_steps.items():
        for n in steps_list:
            key = f"{sampler} {n}"
            if key not in res["samplers"]:
                res["samplers"][key] = {"sampler": sampler, "steps": n,
                                        **eval_crops(m, crop=crop, images=images, steps=n, sampler=sampler)}
                save_json(out, res)
                print(key, f"{res['samplers'][key]['psnr']:.2f}", flush=True)
    res.setdefault("objective", {})
    for obj in OBJECTIVES:
        key = "sr3" if obj == STUDY_MODEL["objective"] else f"sr3-{obj}"
        m, info = study_run(runs, key, {**STUDY_MODEL, "objective": obj}, steps=steps, crop=CROP, batch=batch,
                            lr=LR["diffusion"], loss="diffusion")
        entry = res["objective"].setdefault(obj, {"train": info, "eval": {}})
        fill_evals(entry, m, tests, lambda: save_json(out, res), f"objective {obj}")
    report(results, res)


def report(results: Path = RESULTS, res: dict[str, Any] | None = None) -> None:
    """Write the report (and its plot) from ``res`` (default: the committed ``<results>/<name>.json``)."""
    res = read_results(NAME, results) if res is None else res
    lines = ["# Diffusion steps T and samplers (study 1)", "",
             f"Written by `python -m benchmarks.studies.diffusion_samplers run`. Model: the studies' SR3 (base 16, x0 objective), "
             f"each trained {STEPS} steps x batch {BATCH} x {CROP}x{CROP} crops on one CPU thread (GoPro sample train "
             f"+ synthetic pairs, as in diffusion_vs_regression.md). Evaluation: {EVAL_CROP}x{EVAL_CROP} centre crops of "
             f"the first {EVAL_IMAGES} GoPro-sample val pairs. CPU s = CPU time of one thread per image.", ""]
    if res.get("T"):
        first = next(iter(next(iter(res["T"].values()))["eval"].values()))
        lines += ["## (a) T at training", "",
                  "Linear betas rescaled by 1000/T, so all three share one alpha_bar curve; the sampler uses the "
                  f"same number of network calls for every T. Input (blurry) crops: {first['input_psnr']:.2f} dB / "
                  f"{first['input_ssim']:.4f}.", ""]
        rows = [[T, label, e["psnr"], e["ssim"], e["cpu_s_per_image"], round(v["train"]["cpu_seconds"] / 60, 1)]
                for T, v in res["T"].items() for label, e in v["eval"].items()]
        lines += md_table(["T", "sampling", "PSNR", "SSIM", "CPU s / image", "train CPU min"], rows) + [""]
    if res.get("samplers"):
        lines += ["## (b) Samplers on the T = 1000 model", "",
                  "DDPM: ancestral, posterior variance (beta-tilde), respaced; DDIM: eta = 0; SDE: Euler-Maruyama on "
                  "the reverse VP-SDE, last step returns the denoised estimate. Timesteps: trailing spacing.", ""]
        rows = [[v["sampler"], v["steps"], v["psnr"], v["ssim"], v["cpu_s_per_image"]] for v in res["samplers"].values()]
        lines += md_table(["sampler", "steps", "PSNR", "SSIM", "CPU s / image"], rows) + [""]
        best = max(res["samplers"].values(), key=lambda v: v["psnr"])
        trend = []
        for name in SAMPLER_STEPS:
            pts = sorted((v["steps"], v["psnr"]) for v in res["samplers"].values() if v["sampler"] == name)
            if len(pts) > 1:
                trend.append(f"{name} {pts[0][1]:.2f} dB at {pts[0][0]} steps -> {pts[-1][1]:.2f} dB at {pts[-1][0]}")
        lines += [f"Computed: best setting {best['sampler']} with {best['steps']} steps ({best['psnr']:.2f} dB / "
                  f"{best['ssim']:.4f}); fewest -> most steps: {'; '.join(trend)}.", ""]
        plot = _plot(res["samplers"], results)
        if plot:
            lines += [f"![PSNR and SSIM vs steps]({plot})", ""]
    if res.get("objective"):
        lines += ["## (c) Objective (what the network predicts) on the T = 1000 model", "",
                  "x0: the clean image; eps: the noise (DDPM); v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho); "
                  "x0-precond: x0 with EDM's c_skip / c_out output preconditioning (Karras et al. 2022; see "
                  "diffdeblur.diffusion.process), so the estimate defaults to x_t at low noise. "
                  "Same network, loss (L1), data and budget.", ""]
        rows = [[obj, label, e["psnr"], e["ssim"]] for obj, v in res["objective"].items() for label, e in v["eval"].items()]
        lines += md_table(["objective", "sampling", "PSNR", "SSIM"], rows) + [""]
    write_report(NAME, lines, res, results)


def _plot(samplers: dict, results: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name in SAMPLER_STEPS:
        pts = sorted((v["steps"], v["psnr"], v["ssim"]) for v in samplers.values() if v["sampler"] == name)
        if pts:
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
            axes[1].plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=name)
    for ax, y in zip(axes, ("PSNR (dB)", "SSIM")):
        ax.set_xscale("log")
        ax.set_xlabel("sampling steps (network calls)")
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(results / f"{NAME}.png", dpi=100)
    plt.close(fig)
    return f"{NAME}.png"


def main(argv: list[str] | None = None) -> int:
    return study_main(__doc__, run, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
