"""Study 1: number of diffusion steps T at training (2000 / 1000 / 400), samplers (DDPM / DDIM / SDE), objective.

(a) T ablation: the study SR3 model trained three times, identical except T. The linear schedule is
    DDPM's rescaled by 1000/T (diffdeblur.diffusion.schedules.linear_beta_schedule), so every T spans the
    same alpha_bar curve and only the discretisation differs. (The seed report instead kept the last
    400 betas, which leaves alpha_bar_T far from 0 for T = 400.) Each model sampled with DDIM 20 and DDPM 50.
(b) Samplers on the T = 1000 model (shared with study 5): steps vs PSNR/SSIM and CPU seconds for
    ancestral DDPM, DDIM (eta 0) and Euler-Maruyama on the reverse VP-SDE.
(c) Objective: the T = 1000 model trained to predict x0 (default), eps or v, same budget.
Evaluation on centre crops of the GoPro-sample val pairs; training budget as in study 5.

    python benchmarks/study_diffusion_samplers.py run | report   # -> docs/results/diffusion_samplers.md
"""
from __future__ import annotations

import torch

from diffusion_study_common import (RESULTS, RUNS, STUDY_MODEL, THREADS, eval_crops, experiment, load_json,
                                    load_results, md_table, save_json, study_main, train_or_load, write_report)
from study_diffusion_vs_regression import BATCH, CROP, LR, STEPS, run_dir

NAME = "diffusion_samplers"
EVAL_CROP, EVAL_IMAGES = 128, 6
T_VALUES = (2000, 1000, 400)
T_SETTINGS = {"ddim 20": {"steps": 20, "sampler": "ddim"}, "ddpm 50": {"steps": 50, "sampler": "ddpm"}}
SAMPLER_STEPS = {"ddim": (5, 10, 20, 50), "ddpm": (10, 20, 50, 100), "sde": (20, 50, 100, 200)}
OBJECTIVES = ("x0", "eps", "v", "x0-precond")


def t_model(T: int):
    model = {**STUDY_MODEL, "num_train_steps": T}
    key = "sr3" if T == 1000 else f"sr3-T{T}"  # T = 1000 is study 5's sr3 run
    cfg = experiment(model if T != 1000 else STUDY_MODEL, run_dir(key), steps=STEPS, crop=CROP, batch=BATCH,
                     lr=LR["diffusion"], loss="diffusion")
    return train_or_load(cfg)


def run() -> None:
    torch.set_num_threads(THREADS)
    out = RUNS / f"{NAME}.json"
    res = load_json(out)
    res.setdefault("T", {})
    res.setdefault("samplers", {})
    for T in T_VALUES:
        m, info = t_model(T)
        entry = res["T"].setdefault(str(T), {"train": info, "eval": {}})
        for label, opts in T_SETTINGS.items():
            if label not in entry["eval"]:
                entry["eval"][label] = eval_crops(m, crop=EVAL_CROP, images=EVAL_IMAGES, **opts)
                save_json(out, res)
                print("T", T, label, f"{entry['eval'][label]['psnr']:.2f}", flush=True)
    m, _ = t_model(1000)
    for sampler, steps_list in SAMPLER_STEPS.items():
        for steps in steps_list:
            key = f"{sampler} {steps}"
            if key not in res["samplers"]:
                res["samplers"][key] = {"sampler": sampler, "steps": steps,
                                        **eval_crops(m, crop=EVAL_CROP, images=EVAL_IMAGES, steps=steps, sampler=sampler)}
                save_json(out, res)
                print(key, f"{res['samplers'][key]['psnr']:.2f}", flush=True)
    res.setdefault("objective", {})
    for obj in OBJECTIVES:
        key = "sr3" if obj == STUDY_MODEL["objective"] else f"sr3-{obj}"
        m, info = train_or_load(experiment({**STUDY_MODEL, "objective": obj}, run_dir(key), steps=STEPS, crop=CROP,
                                           batch=BATCH, lr=LR["diffusion"], loss="diffusion"))
        entry = res["objective"].setdefault(obj, {"train": info, "eval": {}})
        for label, opts in T_SETTINGS.items():
            if label not in entry["eval"]:
                entry["eval"][label] = eval_crops(m, crop=EVAL_CROP, images=EVAL_IMAGES, **opts)
                save_json(out, res)
                print("objective", obj, label, f"{entry['eval'][label]['psnr']:.2f}", flush=True)
    report()


def report() -> None:
    res = load_results(NAME)
    if res is None:
        return
    lines = ["# Diffusion steps T and samplers (study 1)", "",
             f"Written by `benchmarks/study_diffusion_samplers.py`. Model: the studies' SR3 (base 16, x0 objective), "
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
        plot = _plot(res["samplers"])
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
    write_report(NAME, lines, res)


def _plot(samplers: dict) -> str | None:
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
    fig.savefig(RESULTS / f"{NAME}.png", dpi=100)
    plt.close(fig)
    return f"{NAME}.png"


def main(argv: list[str] | None = None) -> int:
    return study_main(__doc__, run, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
