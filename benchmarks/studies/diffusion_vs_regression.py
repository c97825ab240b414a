"""Study 5: pixel diffusion (SR3-style, DvSR predict-and-refine) vs a regression baseline at equal budget.

Models, each trained with the project's training loop for the same number of steps on the same
data stream (same seed, batch, crop): GoPro sample train pairs (14 real pairs) mixed 50/50 with
on-the-fly dynamic-scene synthetic pairs from BSDS500 (``synth`` source, preset gopro-like):
- ``nafnet-small`` (regression, PSNR loss, 1.7 M parameters);
- ``sr3``: the studies' SR3 model (``STUDY_MODEL`` below: base 16, x0 objective, T = 1000);
- ``sr3-residual``: the same denoiser diffusing the residual sharp - blur (identity predictor: the blurry
  image is the starting estimate, no extra parameters);
- ``dvsr``: the same denoiser predicting the residual over a jointly trained nafnet-small predictor;
- ``resshift`` and ``indi``: the few-step chains that start from the blurry image (ResShift residual shifting,
  InDI direct iteration) on a time-conditioned nafnet-small, from scratch, sampled with 1, 2 and 4 steps.
Evaluation: centre crops of the first val images of the GoPro sample (PSNR/SSIM of diffdeblur.metrics),
several sampler settings, CPU seconds per image; nafnet-small also on full 1280x720 frames.

    python -m benchmarks.studies.diffusion_vs_regression run      # train (resumable) + evaluate
    python -m benchmarks.studies.diffusion_vs_regression report   # -> docs/results/diffusion_vs_regression.md
    python -m benchmarks.studies.diffusion_vs_regression run --models resshift indi   # add the chains' rows
    python -m benchmarks.studies.diffusion_vs_regression run --steps 6000 --models nafnet-small sr3-residual
        # the same recipe at another budget -> docs/results/diffusion_vs_regression_s6000.md
Runs with one thread; set MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 (CPU_NOTES.md).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (BSDS, GOPRO_TRAIN, RESULTS, fill_evals, load_json, md_table, read_results, save_json,
                               study_main, train_or_load, write_report)

NAME = "diffusion_vs_regression"
STEPS, BATCH, CROP = 600, 8, 64
LR = {"regression": 1e-3, "diffusion": 5e-4}
EVAL_CROP, EVAL_IMAGES = 256, 8
THREADS = 1
# --smoke: training steps, batch, evaluation crop and images of the tiny budget of the smoke test
SMOKE = {"steps": 2, "batch": 2, "eval_crop": 32, "eval_images": 1}

# The diffusion model of the CPU studies: sr3-small's layout at half width (base 16, one residual
# block per level), x0 objective (eps sampled garbage after a few thousand CPU steps in our trials).
STUDY_MODEL = {"type": "sr3-small", "base_channels": 16, "num_res_blocks": 1, "norm_groups": 8, "objective": "x0"}


def regression_model(crop: int) -> dict[str, Any]:
    """nafnet-small with its test-time local statistics (TLC) window set for ``crop``-sized training crops."""
    return {"type": "nafnet-small", "train_size": crop}


def train_sources(synth_weight: float = 0.5) -> list[dict[str, Any]]:
    """GoPro sample train pairs plus on-the-fly dynamic-scene synthetic pairs from BSDS500."""
    sources = [{"type": "paired", "root": str(GOPRO_TRAIN), "weight": 1.0 - synth_weight}]
    if synth_weight > 0:
        sources.append({"type": "synth", "root": str(BSDS), "weight": synth_weight, "options": {"preset": "gopro-like"}})
    return sources


def experiment(model: dict[str, Any], out_dir: Path, *, steps: int, crop: int, batch: int, lr: float,
               loss: str = "", sources: list[dict[str, Any]] | None = None, seed: int = 0,
               optimizer: str = "adam", ema: float = 0.0) -> dict[str, Any]:
    """The config dict of one study run for :func:`diffdeblur.config.config_from_dict` (no validation)."""
    return {
        "model": dict(model),
        "data": {"train": sources or train_sources(), "val": "", "crop": crop, "batch_size": batch, "num_workers": 0},
        "train": {"steps": steps, "optimizer": optimizer, "lr": lr, "min_lr": lr * 0.01, "weight_decay": 0.0,
                  "betas": [0.9, 0.999], "warmup_steps": min(100, steps // 10), "scheduler": "cosine", "loss": loss,
                  "grad_clip": 1.0, "ema": ema, "threads": THREADS, "log_every": 25, "val_every": 10 ** 9,
                  "save_every": 100, "out_dir": str(out_dir)},
        "seed": seed,
    }


def study_run(runs: Path, key: str, model: dict[str, Any], *, crop: int, steps: int, batch: int, lr: float,
              loss: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train (or load) one study model in ``runs/<key>_s<steps>_b<batch>_c<crop>``: runs of the same key and
    budget are shared between the studies."""
    out = runs / f"{key}_s{steps}_b{batch}_c{crop}"
    return train_or_load(experiment(model, out, steps=steps, crop=crop, batch=batch, lr=lr, loss=loss))


def budget(smoke: bool) -> dict[str, int]:
    """The study budget: training steps, batch, evaluation crop and images (``smoke``: the tiny one)."""
    return dict(SMOKE) if smoke else {"steps": STEPS, "batch": BATCH, "eval_crop": EVAL_CROP, "eval_images": EVAL_IMAGES}

MODELS = {
    "nafnet-small": (regression_model(CROP), "psnr", LR["regression"]),
    "sr3": (STUDY_MODEL, "diffusion", LR["diffusion"]),
    "sr3-residual": ({**STUDY_MODEL, "mode": "residual", "predictor": "identity"}, "diffusion", LR["diffusion"]),
    "dvsr": ({**STUDY_MODEL, "type": "dvsr-small", "predictor_kwargs": {"train_size": CROP}}, "diffusion",
             LR["diffusion"]),
    # the few-step chains that start from the blurry image (diffdeblur.methods.indi / .resshift), from scratch here
    # (the shipped chain starts from the default's weights, which would not be an equal budget)
    "resshift": ({"type": "resshift-nafnet-small", "train_size": CROP}, "resshift", LR["diffusion"]),
    "indi": ({"type": "indi-nafnet-small", "train_size": CROP}, "indi", LR["diffusion"]),
}
CHAINS = ("resshift", "indi")
SETTINGS = {  # label -> restore options (diffusion models only)
    "ddim 10": {"steps": 10, "sampler": "ddim"},
    "ddim 20": {"steps": 20, "sampler": "ddim"},
    "ddpm 20": {"steps": 20, "sampler": "ddpm"},
    "ddim 20, eta 1, mean of 4": {"steps": 20, "sampler": "ddim", "eta": 1.0, "num_samples": 4},
}
CHAIN_SETTINGS = {  # label -> restore options of the few-step chains (T = 4: fewer steps respace the chain)
    "1 step": {"steps": 1},
    "2 steps": {"steps": 2},
    "4 steps": {"steps": 4},
    "4 steps, mean of 4": {"steps": 4, "num_samples": 4},
}


def settings_of(key: str) -> dict[str, dict[str, Any]]:
    """The sampling settings a study model is evaluated with (label -> restore options)."""
    return {"regression": {}} if key == "nafnet-small" else CHAIN_SETTINGS if key in CHAINS else SETTINGS


def result_name(steps: int) -> str:
    """The results' file stem: the default budget keeps the plain name."""
    return NAME if steps == STEPS else f"{NAME}_s{steps}"


def run(results: Path, runs: Path, smoke: bool = False, steps: int = STEPS, models: list[str] | None = None) -> None:
    torch.set_num_threads(THREADS)
    b = budget(smoke)
    steps = b["steps"] if smoke else steps
    out = runs / f"{result_name(steps)}.json"
    for key in models or list(MODELS):
        model, loss, lr = MODELS[key]
        m, info = study_run(runs, key, model, crop=CROP, steps=steps, batch=b["batch"], lr=lr, loss=loss)
        res = load_json(out)  # reread: other processes may be running other models of the same budget
        entry = res.setdefault(key, {"train": info, "eval": {}})
        entry["train"] = info
        tests = {label: {"crop": b["eval_crop"], "images": b["eval_images"], **opts}
                 for label, opts in settings_of(key).items()}
        if key == "nafnet-small":
            tests["full frame"] = {"crop": b["eval_crop"] if smoke else 0, "images": b["eval_images"]}
        fill_evals(entry, m, tests, lambda: save_json(out, {**load_json(out), key: entry}), key)
    report(results, steps, res=load_json(out))


def report(results: Path = RESULTS, steps: int = STEPS, res: dict[str, Any] | None = None, **_: Any) -> None:
    """Write the report from ``res`` (default: the committed ``<results>/<name>.json``)."""
    name = result_name(steps)
    res = read_results(name, results) if res is None else res
    rows = []
    for key, entry in res.items():
        t = entry["train"]
        for label, e in entry["eval"].items():
            rows.append([key, label, f"{e['crop'] or 'full'} x {e['images']}", e["psnr"], e["ssim"],
                         e["psnr"] - e["input_psnr"], e["cpu_s_per_image"], round(t["params_M"], 2),
                         round(t["cpu_seconds"] / 60, 1)])
    any_e = next(iter(next(iter(res.values()))["eval"].values()))
    lines = [
        "# Pixel diffusion vs regression at equal training budget (study 5)", "",
        f"Written by `python -m benchmarks.studies.diffusion_vs_regression run{'' if steps == STEPS else f' --steps {steps}'}`. "
        f"Every model trained for {steps} steps, batch "
        f"{BATCH}, {CROP}x{CROP} crops (= the same {steps * BATCH} training crops, same seed), one CPU thread, on "
        "GoPro-sample train pairs (14 real pairs, one scene) mixed 50/50 with on-the-fly synthetic dynamic-scene pairs "
        "from 200 BSDS500 photos. Adam, cosine LR with warm-up, grad clip 1, no EMA. Regression LR "
        f"{LR['regression']}, diffusion LR {LR['diffusion']}. Evaluation on {EVAL_CROP}x{EVAL_CROP} centre crops of the "
        f"first {EVAL_IMAGES} GoPro-sample val pairs (frames 000100-000107), PSNR/SSIM as in diffdeblur.metrics; "
        f"input (blurry) scores on those crops: {any_e['input_psnr']:.2f} dB / {any_e['input_ssim']:.4f}. "
        "CPU s / image = CPU time of one thread (wall time on the shared, contended machine was several times longer).",
        "",
        f"This budget is tiny: {steps * BATCH} crops of {CROP}x{CROP} (NAFNet's GoPro recipe sees 200k iterations x 32 "
        "crops of 256x256). The numbers compare methods at this budget; they say nothing about converged quality.", "",
    ]
    lines += md_table(["model", "sampling", "eval crops", "PSNR", "SSIM", "gain over input (dB)", "CPU s / image",
                       "params (M)", "train CPU min"], rows)
    crops = [r for r in rows if r[2] == f"{EVAL_CROP} x {EVAL_IMAGES}"]
    best = max((r for r in crops if r[0] != "nafnet-small"), key=lambda r: r[3], default=None)
    reg = next((r for r in crops if r[0] == "nafnet-small"), None)
    if best and reg:
        lines += ["", f"Summary (computed): best diffusion setting here is `{best[0]}` with `{best[1]}` at {best[3]:.2f} dB / "
                  f"{best[4]:.4f}, vs nafnet-small {reg[3]:.2f} dB / {reg[4]:.4f} and the blurry input "
                  f"{reg[3] - reg[5]:.2f} dB."]
        improved = [f"`{r[0]}` ({r[1]}, {r[5]:+.2f} dB)" for r in crops if r[5] > 0.3]
        lines += [f"Models more than 0.3 dB above the input: {', '.join(improved) if improved else 'none'}."]
        sa = {r[0]: r[3] for r in crops if "mean of 4" in r[1]}
        single = {r[0]: r[3] for r in crops if r[1] == "ddim 20"}
        gains = [f"`{k}` {sa[k] - single[k]:+.2f} dB" for k in sa if k in single]
        if gains:
            lines += [f"Averaging 4 samples (eta 1) vs one deterministic DDIM-20 sample: {', '.join(gains)}."]
        chains = [f"`{k}` " + " / ".join(f"{r[3]:.2f}" for r in crops if r[0] == k) for k in CHAINS
                  if any(r[0] == k for r in crops)]
        if chains:
            lines += [f"Few-step chains from the blurry image, PSNR at {' / '.join(CHAIN_SETTINGS)}: "
                      f"{'; '.join(chains)} dB."]
    base = load_json(results / f"{NAME}.json") if steps != STEPS else {}
    changes = [f"`{key}` {label}: {e['psnr'] - base[key]['eval'][label]['psnr']:+.2f} dB / "
               f"{e['ssim'] - base[key]['eval'][label]['ssim']:+.3f} SSIM"
               for key, entry in res.items() for label, e in entry["eval"].items()
               if label in base.get(key, {}).get("eval", {})]
    if changes:
        lines += ["", f"Against the same models trained {STEPS} steps ({NAME}.md), same evaluation: "
                  + "; ".join(changes) + "."]
    lines += ["", "Models: `nafnet-small` (regression, test-time local statistics window for 64 crops); `sr3` = sr3-small layout at base 16, 1 residual block per "
              "level, attention in the middle block, x0 objective, linear betas, T = 1000; `sr3-residual` = the same "
              "network diffusing sharp - blur (the blurry image as the starting estimate); `dvsr` = the same denoiser "
              "generating the residual over a jointly trained nafnet-small predictor (single diffusion loss); "
              "`resshift` = ResShift residual shifting from the blurry image (T = 4, kappa 2, x0 objective) and `indi` = "
              "InDI direct iteration from the blurry image, both on a time-conditioned nafnet-small trained from scratch "
              "with the diffusion LR (`diffdeblur.methods.indi`, `diffdeblur.methods.resshift`).", ""]
    write_report(name, lines, res, results)


def main(argv: list[str] | None = None) -> int:
    def add_arguments(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--steps", type=int, default=STEPS, help="training steps of every model (default %(default)s)")
        ap.add_argument("--models", nargs="+", choices=list(MODELS), help="run: train/evaluate only these")

    return study_main(__doc__, run, report, argv, add_arguments)


if __name__ == "__main__":
    raise SystemExit(main())
