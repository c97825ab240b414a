"""Equal-budget pilots for the default model's recipe (issue 13): which choices lift a small
NAFNet off the identity on real blur it was not trained on.

Every pilot trains through the product's :func:`diffdeblur.train.train` for the same CPU budget
(``--budget`` CPU seconds at one thread: the step count is set from a measured CPU time per step, so
every pilot ends its cosine schedule inside the budget), then its final weights are scored on whole
1280x720 frames of REDS ``val/`` (an unseen scene: the selection criterion) and of the GoPro sample
``val/`` (the training scene). Results go to ``docs/results/recipe_pilots.json`` (one entry per pilot,
merged across calls) and the report ``docs/results/recipe_pilots.md`` is written from that JSON alone.

    python -m benchmarks.studies.recipe_pilots run old charb-fft --budget 300 --runs DIR
    python -m benchmarks.studies.recipe_pilots report

Data: ``../shared/data`` beside the repository, or ``DIFFDEBLUR_DATA``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import DATA, RESULTS, RUNS, cpu_name
from diffdeblur.config import config_from_dict
from diffdeblur.data.datasets import build_train_dataset
from diffdeblur.evaluate import evaluate
from diffdeblur.inference import load_model
from diffdeblur.objectives import default_objective, get_objective
from diffdeblur.registry import build_model
from diffdeblur.runtime import tune_allocator
from diffdeblur.train import train

NAME = "recipe_pilots"
VAL_SETS = {"reds_val": ("reds_sample/val", 0), "gopro_val": ("gopro_sample/val", 10)}  # (folder, max images; 0 = all)


def real_sources(focus: float = 0.0) -> list[dict[str, Any]]:
    """The real training pairs: GoPro sample train (14 frames, one scene) and REDS train (20 frames, two scenes)."""
    opts = {"focus": focus} if focus > 0 else {}
    return [{"type": "paired", "root": str(DATA / "gopro_sample/train"), "weight": 0.4, "options": dict(opts)},
            {"type": "paired", "root": str(DATA / "reds_sample/train"), "weight": 0.6, "options": dict(opts)}]


def base_config(crop: int = 128) -> dict[str, Any]:
    """The shipped recipe of the old default (PSNR loss, batch 8 at 128², AdamW 1e-3), on the real pairs."""
    return {
        "model": {"type": "nafnet-small", "train_size": crop},
        "data": {"train": real_sources(), "val": "", "crop": crop, "batch_size": 8, "num_workers": 0},
        "train": {"steps": 1, "optimizer": "adamw", "lr": 1e-3, "min_lr": 1e-6, "weight_decay": 1e-3,
                  "betas": [0.9, 0.9], "warmup_steps": 50, "loss": "psnr", "ema": 0.0, "threads": 1,
                  "log_every": 25, "val_every": 10 ** 9, "save_every": 100, "out_dir": ""},
        "seed": 0,
    }


def _focused(cfg: dict[str, Any], focus: float = 0.5) -> dict[str, Any]:
    for src in cfg["data"]["train"]:
        if src["type"] == "paired":
            src.setdefault("options", {})["focus"] = focus
    return cfg


def pilot_config(name: str) -> dict[str, Any]:
    """The config of pilot ``name``: the base recipe with one or two choices changed."""
    cfg = base_config()
    m, d, t = cfg["model"], cfg["data"], cfg["train"]
    best = lambda c: (_focused(c), c["train"].update(loss="charbonnier-fft"))[0]  # noqa: E731
    if name == "old":
        pass
    elif name == "charb-fft":
        t["loss"] = "charbonnier-fft"
    elif name == "psnr-focus":
        _focused(cfg)
    elif name == "charb-fft-focus":
        best(cfg)
    elif name == "crop256":
        best(cfg)
        d.update(crop=256, batch_size=4)
        m["train_size"] = 256
    elif name == "lr3e-3":
        best(cfg)
        t["lr"] = 3e-3
    elif name == "width24":
        best(cfg)
        m["width"] = 24
    elif name == "mimo":
        best(cfg)
        cfg["model"] = {"type": "mimo-unet-tiny", "base_channel": 16, "num_res": 2}
        t["loss"] = "mimo"
    elif name == "mix-synth":
        best(cfg)
        d["train"] = [*d["train"],
                      {"type": "paired", "root": str(DATA / "reds_sample/small"), "weight": 0.3, "options": {"focus": 0.5}},
                      {"type": "blur-kernels", "root": str(DATA / "bsds500/train"), "weight": 0.3,
                       "options": {"noise": 0.01, "max_len": 15}}]
    elif name == "mix-realsynth":
        best(cfg)
        d["train"] = [*d["train"],
                      {"type": "synth", "root": str(DATA / "bsds500/train"), "weight": 0.4,
                       "options": {"preset": os.environ.get("PILOT_SYNTH_PRESET", "real-like")}}]
    else:
        raise SystemExit(f"unknown pilot '{name}'; known: {', '.join(PILOTS)}")
    return cfg


PILOTS = {
    "old": "old default recipe: PSNR loss, uniform crops, b8 @128², lr 1e-3",
    "charb-fft": "Charbonnier + 0.1 FFT-L1 loss",
    "psnr-focus": "PSNR loss, half the crops blur-focused (best of 8)",
    "charb-fft-focus": "Charbonnier + FFT-L1, half the crops blur-focused",
    "crop256": "charb-fft-focus at b4 @256²",
    "lr3e-3": "charb-fft-focus at lr 3e-3",
    "width24": "charb-fft-focus, NAFNet width 24",
    "mimo": "charb-fft-focus data, MIMO-UNet base 16 / 2 res-blocks, multi-scale L1+FFT",
    "mix-synth": "charb-fft-focus + REDS small (0.3) + uniform-kernel BSDS500 pairs (0.3)",
    "mix-realsynth": "charb-fft-focus + calibrated dynamic-scene synthetic BSDS500 pairs (0.4)",
}


def cpu_seconds_per_step(cfg: dict[str, Any], steps: int = 6, warmup: int = 2) -> float:
    """CPU seconds of one training step (data, forward, backward, AdamW) of ``cfg`` at one thread."""
    torch.set_num_threads(1)
    ec = config_from_dict(cfg, source="pilot")
    torch.manual_seed(0)
    model = build_model(ec.model_name, **ec.model_kwargs)
    objective = get_objective(ec.train.loss) if ec.train.loss else default_objective(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ds = build_train_dataset(ec.data.train, ec.data.crop, ec.seed, True)
    b = ec.data.batch_size
    for i in range(200):  # decode every cached image once so the timing sees steady-state crops
        ds[i]
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.process_time()
        items = [ds[i * b + j] for j in range(b)]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        loss, _ = objective(model, batch, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.process_time() - t0) / steps


def score(weights: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    model = load_model(weights, "cpu")
    out = {}
    for key, (folder, n) in VAL_SETS.items():
        rep = evaluate(model, DATA / folder, max_images=n)
        gains = [r["psnr"] - r["input_psnr"] for r in rep.rows]
        out[key] = {k: rep.summary[k] for k in ("psnr", "ssim", "input_psnr", "input_ssim", "images")}
        out[key]["min_gain"] = float(np.min(gains))
    return out


def load_results(results: Path) -> dict[str, Any]:
    path = results / f"{NAME}.json"
    return json.loads(path.read_text()) if path.exists() else {"pilots": {}}


def save_results(results: Path, data: dict[str, Any]) -> None:
    results.mkdir(parents=True, exist_ok=True)
    tmp = results / f".{NAME}.json.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, results / f"{NAME}.json")


def run(names: list[str], budget: float, runs: Path, results: Path) -> None:
    tune_allocator()
    for name in names:
        cfg = pilot_config(name)
        per_step = cpu_seconds_per_step(cfg)
        steps = max(20, int(budget / per_step))
        out_dir = runs / name
        cfg["train"].update(steps=steps, out_dir=str(out_dir), warmup_steps=min(50, steps // 10))
        print(f"[{name}] {per_step:.3f} CPU s/step -> {steps} steps for {budget:.0f} CPU s", flush=True)
        cpu0, t0 = time.process_time(), time.perf_counter()
        train(config_from_dict(cfg, source=name), resume=True, device="cpu", show_progress=False)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        scores = score(out_dir / "final.safetensors")
        data = load_results(results)
        data["pilots"][name] = {"what": PILOTS[name], "steps": steps, "cpu_seconds_per_step": per_step,
                                "train_cpu_seconds": cpu, "train_wall_seconds": wall,
                                "batch": cfg["data"]["batch_size"], "crop": cfg["data"]["crop"],
                                "model": cfg["model"], "loss": cfg["train"]["loss"], "lr": cfg["train"]["lr"],
                                "sources": [{k: (Path(v).relative_to(DATA).as_posix() if k == "root" else v)
                                             for k, v in s.items()} for s in cfg["data"]["train"]],
                                **scores}
        data["machine"] = {"cpu": cpu_name(), "threads": 1,
                           "torch": torch.__version__, "budget_cpu_seconds": budget}
        save_results(results, data)
        print(f"[{name}] REDS val {scores['reds_val']['psnr'] - scores['reds_val']['input_psnr']:+.3f} dB, "
              f"GoPro val {scores['gopro_val']['psnr'] - scores['gopro_val']['input_psnr']:+.3f} dB", flush=True)
    report(results)


def report(results: Path) -> None:
    data = load_results(results)
    rows = []
    for name, r in sorted(data["pilots"].items(), key=lambda kv: -(kv[1]["reds_val"]["psnr"] - kv[1]["reds_val"]["input_psnr"])):
        hours = r["train_cpu_seconds"] / 3600
        g = {k: r[k]["psnr"] - r[k]["input_psnr"] for k in VAL_SETS}
        s = {k: r[k]["ssim"] - r[k]["input_ssim"] for k in VAL_SETS}
        rows.append(f"| {name} | {r['what']} | {r['steps']} | {r['train_cpu_seconds'] / 60:.1f} | "
                    f"{g['reds_val']:+.3f} | {s['reds_val']:+.4f} | {r['reds_val']['min_gain']:+.2f} | "
                    f"{g['gopro_val']:+.3f} | {s['gopro_val']:+.4f} | "
                    f"{g['reds_val'] / hours:+.2f} | {g['gopro_val'] / hours:+.2f} |")
    m = data.get("machine", {})
    any_r = next(iter(data["pilots"].values()), None)
    lines = [
        "# Recipe pilots for the default model (equal CPU budget)",
        "",
        "Written by `python -m benchmarks.studies.recipe_pilots report` from `recipe_pilots.json`; the pilots were run with",
        f"`python -m benchmarks.studies.recipe_pilots run <names> --budget {m.get('budget_cpu_seconds', '?'):.0f}` "
        f"(one thread each, torch {m.get('torch', '?')}).",
        "",
        "Each pilot trains nafnet-small (unless stated) through `diffdeblur.train.train` for the same CPU budget: the",
        "step count comes from the measured CPU time per step, so cheaper steps get more of them. Scores are of the",
        "final weights on whole 1280x720 frames: REDS `val/` (10 frames of a scene never trained on; the selection",
        f"criterion) and the first {VAL_SETS['gopro_val'][1]} GoPro sample `val/` frames (the training scene).",
        "Training data: GoPro sample train (0.4) + REDS train (0.6) unless stated.",
        "",
        "| pilot | what | steps | CPU min | REDS ΔPSNR | REDS ΔSSIM | REDS worst image | GoPro ΔPSNR | GoPro ΔSSIM | REDS dB / CPU-h | GoPro dB / CPU-h |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    if any_r is not None:
        lines.append(f"Input PSNR: REDS val {any_r['reds_val']['input_psnr']:.2f} dB, GoPro val "
                     f"{any_r['gopro_val']['input_psnr']:.2f} dB.")
    (results / f"{NAME}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and score pilots")
    r.add_argument("names", nargs="+", choices=sorted(PILOTS))
    r.add_argument("--budget", type=float, default=300.0, help="CPU seconds of training per pilot")
    r.add_argument("--runs", type=Path, default=RUNS / NAME, help="where the pilot runs go")
    r.add_argument("--results", type=Path, default=RESULTS)
    p = sub.add_parser("report", help="write the markdown report from the JSON")
    p.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    if a.cmd == "run":
        if not (DATA / "reds_sample").is_dir():
            sys.exit(f"{DATA}: data folder not found (set DIFFDEBLUR_DATA)")
        run(a.names, a.budget, a.runs.expanduser(), a.results)
    else:
        report(a.results)


if __name__ == "__main__":
    main()
