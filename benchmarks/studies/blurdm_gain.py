"""Does BlurDM's prior lift a working backbone? Equal-budget study on the product's ``train()``, with real
partial exposures (issue 27).

Arms, per backbone and seed (same data stream, crops and seed in every arm):
- ``baseline``: the plain backbone fine-tuned ``--steps`` N steps;
- ``blurdm``: the backbone with a CPU-sized BlurDM prior, trained in BlurDM's three stages: stage 1 (N/2 steps,
  prior = SE(blur, sharp)), stage 2 (``--stage2-steps``, backbone and SE frozen, the prior's chain learns to end at
  SE's code; ~10 % of a backbone step each) and stage 3 (N/2 steps, prior = BlurDM(blur)): N backbone steps in all;
- ``blurdm-partials``: the same stage 1, then stage 2 with BlurDM's blur residuals also supervised by real partial
  exposures (``partials_weight``: each residual e_t pulled to the step between SE's codes of the exposure grown
  around the sharp frame to (t-1)/T and t/T of its frames), then stage 3.
Both stage-2 variants train on the raw 240 fps frames (the ``frames`` source with ``partials: T``, the only real
data with partial exposures); the backbone stages and the baseline on every real folder of ../shared/data (the mix
of ``recipes/default-nafnet-small-allreal.yaml``). Backbones start from working weights where the project has them
(``nafnet-small``: the shipped default, so the baseline starts +3.1 dB above the input on REDS val); the fusion
layers start at zero, so a fused model starts exactly as its plain backbone.

Evaluation through :func:`diffdeblur.evaluate.evaluate` (whole frames, no tiling, 8-bit RGB PSNR / SSIM) on REDS
val (10 frames of a scene never trained on) and GoPro val (30); per-image paired differences against the baseline
of the same seed, averaged over seeds image by image, with a 95 % bootstrap interval over images
(:func:`benchmarks.studies.paired_compare.compare`). Cost beside the gain: parameters, MACs at 256x256 and 720p
latency of plain and fused models side by side in one process. The gain against budget: REDS val during training
(baseline every N/4 steps, stage 3 every N/8).

    python -m benchmarks.studies.blurdm_gain run --threads 2          # trains what is missing, then the report
    python -m benchmarks.studies.blurdm_gain report                    # docs/results/blurdm_gain.md from its JSON
Set MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 (../shared/CPU_NOTES.md); runs resume when interrupted.
"""
from __future__ import annotations

import argparse
import copy
import csv
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (DATA, DATA_SHOWN, GOPRO_VAL, REDS_VAL, ROOT, RUNS, command, load_json, machine,
                               md_table, portable, read_results, save_json, study_main, today, train_or_load,
                               write_example_pairs, write_report)
from benchmarks.studies.paired_compare import compare

NAME = "blurdm_gain"
MODULE = "benchmarks.studies.blurdm_gain"
MIX_RECIPE = ROOT / "recipes" / "default-nafnet-small-allreal.yaml"  # every real folder, by weight
FRAMES = DATA / "gopro_frames240" / "GOPR0477_11_00"
# backbone preset -> its constructor options for the study, the weights it starts from ("" = from scratch), the peak
# learning rate (a fine-tune of working weights at 3e-4, from scratch at 1e-3) and the budget: N backbone steps per
# arm, BlurDM's stage-2 steps. MIMO-UNet narrowed for the CPU (2 residual blocks per stage, 16 base channels: 0.54 M
# parameters, a training step about as costly as nafnet-small's); the transformers' CPU presets cost several times a
# nafnet-small step here (docs/results/backbones.md).
ARMS = ("baseline", "blurdm", "blurdm-partials")
BACKBONES: dict[str, dict[str, Any]] = {
    "nafnet-small": dict(kwargs={"train_size": 128}, init="default", lr=3.0e-4, steps=1200, stage2_steps=600),
    "mimo-unet": dict(kwargs={"num_res": 2, "base_channel": 16}, init="", lr=1.0e-3, steps=1600, stage2_steps=400,
                      arms=ARMS[:2]),  # the partial-exposure ablation runs on nafnet-small (CPU budget)
    **{f"{t}-small": dict(kwargs={}, init="", lr=1.0e-3, steps=1600, stage2_steps=400)
       for t in ("fftformer", "stripformer", "loformer")},
}
# a CPU-sized prior: 64-d code, encoder widths 16 / 32 (the published prior is 256-d with widths 64 / 128)
PRIOR = dict(prior_dim=64, encoder_width=16, encoder_mid_width=32, encoder_blocks=2, estimator_hidden=64,
             estimator_layers=6, timesteps=5)
PARTIALS_WEIGHT = 1.0
CROP, BATCH = 128, 8
OPT = dict(optimizer="adamw", lr=3.0e-4, min_lr=1.0e-7, weight_decay=1.0e-3, betas=[0.9, 0.9], warmup_steps=100,
           ema=0.999)
OPT_STAGE2 = dict(optimizer="adam", lr=1.0e-3, min_lr=1.0e-6, weight_decay=0.0, betas=[0.9, 0.999], warmup_steps=50,
                  ema=0.0)
SMOKE = {"backbone": "nafnet-tiny", "steps": 4, "stage2_steps": 2, "crop": 32, "batch": 2, "size": (48, 64)}
LATENCY_SIZE = (720, 1280)
EVAL_SETS = {"REDS val": REDS_VAL, "GoPro val": GOPRO_VAL}


def setup(backbone: str) -> dict[str, Any]:
    """The study's settings of a backbone (:data:`BACKBONES`; another registered preset, e.g. the smoke run's: its
    defaults, from scratch, ``OPT``'s rate, the smoke budget); ``arms``: all of :data:`ARMS` unless it says."""
    return {"arms": ARMS, **BACKBONES.get(backbone, dict(kwargs={}, init="", lr=OPT["lr"], steps=SMOKE["steps"],
                                                         stage2_steps=SMOKE["stage2_steps"]))}


def mix_sources(smoke_root: Path | None) -> list[dict[str, Any]]:
    """The training sources of every real folder (``MIX_RECIPE``'s data.train with the data root of this machine),
    or (smoke) one generated paired folder."""
    from diffdeblur.config import raw_config

    if smoke_root is not None:
        return [{"type": "paired", "root": str(smoke_root), "weight": 1.0}]
    sources = copy.deepcopy(raw_config(str(MIX_RECIPE))[0]["data"]["train"])
    for s in sources:
        s["root"] = str(s["root"]).replace(DATA_SHOWN, str(DATA), 1)
    return sources


def run_config(backbone: str, arm: str, stage: int, seed: int, out: Path, *, steps: int, stage2_steps: int,
               threads: int, smoke_root: Path | None, init_from: str = "") -> dict[str, Any]:
    """The product config of one run: ``stage`` 0 = the plain baseline, 1-3 = BlurDM's stages."""
    smoke = smoke_root is not None
    kwargs, lr = dict(setup(backbone)["kwargs"]), setup(backbone)["lr"]
    prior = {**PRIOR, "prior_dim": 8, "encoder_width": 4, "encoder_mid_width": 8, "encoder_blocks": 1,
             "estimator_hidden": 8, "estimator_layers": 2} if smoke else PRIOR
    if stage == 0:
        model: dict[str, Any] = {"type": backbone, **kwargs}
    else:
        model = {"type": f"blurdm-{backbone}", "stage": stage, **prior, **({"backbone_kwargs": kwargs} if kwargs else {})}
        if stage == 2:
            model["partials_weight"] = PARTIALS_WEIGHT if arm == "blurdm-partials" else 0.0
    val = str(smoke_root if smoke else REDS_VAL)
    if stage == 2:
        train_data = [{"type": "frames", "root": str(smoke_root / "frames") if smoke else str(FRAMES), "weight": 1.0,
                       "options": {"min_frames": 3 if smoke else 7, "max_frames": 5 if smoke else 13,
                                   "partials": prior["timesteps"], **({} if smoke else {"focus": 0.5})}}]
    else:
        train_data = mix_sources(smoke_root)
    n = {0: steps, 1: steps // 2, 2: stage2_steps, 3: steps - steps // 2}[stage]
    every = {0: max(1, steps // 4), 1: 10 ** 9, 2: 10 ** 9, 3: max(1, steps // 8)}[stage]
    return {"model": model,
            "data": {"train": train_data, "val": "" if stage in (1, 2) else val, "val_max_images": 10,
                     "crop": SMOKE["crop"] if smoke else CROP, "batch_size": SMOKE["batch"] if smoke else BATCH},
            "train": {"steps": n, **(OPT_STAGE2 if stage == 2 else dict(OPT, lr=lr)), "threads": threads, "log_every": 50,
                      "val_every": every, "save_every": 100, "sample_images": 0, "out_dir": str(out),
                      **({"init_from": init_from} if init_from else {})},
            "seed": seed}


def plan(backbone: str, seed: int, runs: Path, **kw: Any) -> dict[str, list[dict[str, Any]]]:
    """arm -> the configs of its runs in order (each BlurDM stage starts from the previous one's final weights;
    the two BlurDM arms share stage 1)."""
    init = setup(backbone)["init"]
    root = runs / f"{backbone}-s{seed}"
    s1 = run_config(backbone, "blurdm", 1, seed, root / "blurdm-stage1", init_from=init, **kw)
    out = {"baseline": [run_config(backbone, "baseline", 0, seed, root / "baseline", init_from=init, **kw)]}
    for arm in setup(backbone)["arms"][1:]:
        s2 = run_config(backbone, arm, 2, seed, root / f"{arm}-stage2",
                        init_from=str(root / "blurdm-stage1" / "final.safetensors"), **kw)
        s3 = run_config(backbone, arm, 3, seed, root / f"{arm}-stage3",
                        init_from=str(root / f"{arm}-stage2" / "final.safetensors"), **kw)
        out[arm] = [s1, s2, s3]
    return out


def read_val(out_dir: Path, offset: int) -> list[list[float]]:
    """[[backbone steps, REDS val PSNR], ...] of a run's val.csv (steps shifted by ``offset``)."""
    path = out_dir / "val.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return [[int(r["step"]) + offset, float(r["psnr"])] for r in csv.DictReader(f)]


def latency(model: torch.nn.Module, size: tuple[int, int], repeats: int = 3) -> float:
    """Median seconds of one whole-image restore of a (1, 3, *size) input."""
    from diffdeblur.inference import restore_tensor

    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        restore_tensor(model, x, tile=0, engine="eager", seed=0)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def smoke_data(runs: Path) -> Path:
    """A generated paired folder plus a folder of frames of a panning scene (the smoke run's data)."""
    from diffdeblur.io import write_image

    root = write_example_pairs(runs / "smoke_pairs", 2, *SMOKE["size"])
    rng = np.random.default_rng(0)
    base = rng.random((SMOKE["size"][0], SMOKE["size"][1] + 16, 3)).astype(np.float32)
    (root / "frames").mkdir(exist_ok=True)
    for i in range(12):
        write_image(root / "frames" / f"{i:04d}.png", np.ascontiguousarray(base[:, i:i + SMOKE["size"][1]]))
    return root


def run(results: Path, runs: Path, smoke: bool = False, backbone: list[str] | None = None,
        seeds: list[int] | None = None, steps: int = 0, stage2_steps: int = 0, threads: int = 2,
        sets: list[str] | None = None,
        argv: list[str] | None = None) -> None:
    """Train every arm missing, evaluate all of them and the starting weights, measure cost, write the report."""
    from diffdeblur.evaluate import count_macs, count_parameters, evaluate
    from diffdeblur.inference import load_model
    from diffdeblur.registry import build_model

    torch.set_num_threads(threads)
    smoke_root = smoke_data(runs) if smoke else None
    backbones = backbone or ([SMOKE["backbone"]] if smoke else ["nafnet-small"])
    seeds = seeds or ([0] if smoke else [0, 1])
    eval_sets = {name: str(smoke_root if smoke else folder) for name, folder in EVAL_SETS.items()
                 if name in (sets or EVAL_SETS)}
    out: dict[str, Any] = {"command": command(MODULE, argv), "date": today(), "machine": machine(), "smoke": smoke,
                           "crop": SMOKE["crop"] if smoke else CROP,
                           "batch": SMOKE["batch"] if smoke else BATCH, "threads": threads, "prior": PRIOR,
                           "partials_weight": PARTIALS_WEIGHT, "opt": OPT, "opt_stage2": OPT_STAGE2,
                           "mix": portable(MIX_RECIPE), "frames": portable(FRAMES), "seeds": seeds, "backbones": {}}
    files: dict[str, dict[str, dict[int, Path]]] = {}  # backbone -> arm -> seed -> its final weights
    for bb in backbones:
        st = setup(bb)
        n, n2 = (SMOKE["steps"], SMOKE["stage2_steps"]) if smoke else (steps or st["steps"], stage2_steps or st["stage2_steps"])
        kw = dict(steps=n, stage2_steps=n2, threads=threads, smoke_root=smoke_root)
        entry: dict[str, Any] = {"init": st["init"], "kwargs": st["kwargs"], "lr": st["lr"], "steps": n,
                                 "stage2_steps": n2, "seeds": seeds, "arms": {}, "curves": {}, "rows": {}}
        finals: dict[str, dict[int, Path]] = files.setdefault(bb, {arm: {} for arm in st["arms"]})
        for seed in seeds:
            for arm, cfgs in plan(bb, seed, runs, **kw).items():
                info = {}
                for cfg in cfgs:
                    print(f"[{bb} seed {seed}] {arm}: {portable(cfg['train']['out_dir'])}", flush=True)
                    _, info[Path(cfg["train"]["out_dir"]).name] = train_or_load(cfg)
                last = Path(cfgs[-1]["train"]["out_dir"])
                finals[arm][seed] = last / "final.safetensors"
                entry["arms"].setdefault(arm, {})[str(seed)] = info
                entry["curves"].setdefault(arm, {})[str(seed)] = read_val(last, n // 2 if arm != "baseline" else 0)
        # evaluation: every final model and the starting weights, whole frames
        models = {f"{arm} s{seed}": path for arm, by_seed in finals.items() for seed, path in by_seed.items()}
        if entry["init"]:
            models = {"start": entry["init"], **models}
        for label, path in models.items():
            model = load_model(str(path), "cpu")
            entry["rows"][label] = {}
            for set_name, folder in eval_sets.items():
                rep = evaluate(model, folder, tile=0, show_progress=False, seed=0, engine="eager")
                entry["rows"][label][set_name] = [{"image": r["image"], "psnr": float(r["psnr"]),
                                                   "ssim": float(r["ssim"]), "input_psnr": float(r["input_psnr"])}
                                                  for r in rep.rows]
                print(f"{bb} {label} {set_name}: {rep.summary['psnr']:.3f} dB (input {rep.summary['input_psnr']:.3f})",
                      flush=True)
        entry["paired"] = paired(entry["rows"], seeds, list(eval_sets))
        # cost of the prior: plain vs fused (stage 3) side by side, one process
        plain = build_model(bb, **st["kwargs"]).eval()
        fused = load_model(str(finals["blurdm"][seeds[0]]), "cpu").eval()
        size = (64, 96) if smoke else LATENCY_SIZE
        entry["cost"] = {name: {"params_M": count_parameters(m) / 1e6,
                                "gmacs_256": count_macs(m, 64 if smoke else 256) / 1e9,
                                "latency_s": latency(m, size, 1 if smoke else 3)}
                         for name, m in (("plain", plain), ("fused", fused))}
        entry["cost"]["latency_size"] = list(size)
        out["backbones"][bb] = entry
    results = Path(results)
    earlier = load_json(results / f"{NAME}.json")
    if earlier and not smoke and not earlier.get("smoke"):  # keep the backbones measured by earlier calls
        out["backbones"] = {**{k: v for k, v in earlier["backbones"].items() if k not in out["backbones"]},
                            **out["backbones"]}
        out["commands"] = {**earlier.get("commands", {}), **{bb: out["command"] for bb in backbones}}
    else:
        out["commands"] = {bb: out["command"] for bb in backbones}
    if "nafnet-small" in backbones or not earlier.get("example"):
        out["example"] = example_figure(out, files, results, smoke_root)
    else:
        out["example"] = earlier["example"]
    save_json(results / f"{NAME}.json", out)
    report(out, results)


def paired(rows: dict[str, dict[str, list[dict[str, Any]]]], seeds: list[int], sets: list[str]) -> dict[str, Any]:
    """{"blurdm vs baseline": {set: stats}, "blurdm-partials vs blurdm": ..., ...}: per image the mean over seeds of
    the difference between two arms of the same seed; stats of :func:`compare` (bootstrap interval over images)."""
    arms = {label.rsplit(" s", 1)[0] for label in rows}
    pairs = [(b, a) for b, a in [("blurdm", "baseline"), ("blurdm-partials", "baseline"), ("blurdm-partials", "blurdm"),
                                 ("baseline", "start")] if {a, b} <= arms]
    def mean_rows(arm: str, s: str) -> list[dict[str, Any]]:  # per image, the PSNR of ``arm`` averaged over seeds
        labels = ["start"] if arm == "start" else [f"{arm} s{seed}" for seed in seeds]
        by = [{r["image"]: r["psnr"] for r in rows[label][s]} for label in labels]
        return [{"image": k, "psnr": float(np.mean([d[k] for d in by]))} for k in by[0]]

    out: dict[str, Any] = {}
    for b, a in pairs:
        out[f"{b} vs {a}"] = {}
        for s in sets:
            res = compare(mean_rows(a, s), mean_rows(b, s))
            res["per_seed"] = {} if a == "start" else {
                str(seed): compare(rows[f"{a} s{seed}"][s], rows[f"{b} s{seed}"][s])["mean_diff"] for seed in seeds}
            out[f"{b} vs {a}"][s] = res
    return out


def example_figure(out: dict[str, Any], files: dict[str, dict[str, dict[int, Path]]], results: Path,
                   smoke_root: Path | None) -> dict[str, Any] | None:
    """Blurry, baseline, BlurDM and sharp crops of the REDS val frame where BlurDM differs most from the baseline."""
    from diffdeblur.figures import side_by_side
    from diffdeblur.inference import load_model, restore_tensor
    from diffdeblur.io import read_image, to_numpy, to_tensor, write_image
    from diffdeblur.metrics import psnr

    bb = "nafnet-small" if "nafnet-small" in files else next(iter(files))
    entry = out["backbones"][bb]
    diffs = entry["paired"]["blurdm vs baseline"]["REDS val"]["per_image"]
    name = max(diffs, key=lambda k: abs(diffs[k]))
    folder = Path(smoke_root if smoke_root is not None else REDS_VAL)
    blur_path = next(p for p in sorted((folder / "blur").iterdir()) if p.stem == name)
    blur, sharp = read_image(blur_path)[0], read_image(folder / "sharp" / blur_path.name)[0]
    side = min(256, blur.shape[0], blur.shape[1])
    y, x = (blur.shape[0] - side) // 2, (blur.shape[1] - side) // 2
    crops, psnrs = [blur[y:y + side, x:x + side]], {}
    seed = out["seeds"][0]
    for arm in ("baseline", "blurdm"):
        path = files[bb][arm][seed]
        restored = to_numpy(restore_tensor(load_model(str(path), "cpu"), to_tensor(blur), tile=0, engine="eager",
                                           seed=0))
        crops.append(restored[y:y + side, x:x + side])
        psnrs[arm] = psnr(restored, sharp)
    crops.append(sharp[y:y + side, x:x + side])
    results.mkdir(parents=True, exist_ok=True)
    figure = results / f"{NAME}_example.png"
    write_image(figure, side_by_side(crops, ["blurry", f"{bb}", f"{bb} + BlurDM", "sharp"]).astype(np.float32) / 255)
    return {"image": name, "file": figure.name, "psnr": psnrs, "diff": diffs[name]}


def plot(out: dict[str, Any], path: Path) -> None:
    """REDS val PSNR against backbone steps, every arm and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(out["backbones"]), figsize=(6 * len(out["backbones"]), 3.8), squeeze=False)
    for ax, (bb, e) in zip(axes[0], out["backbones"].items()):
        for arm, by_seed in e["curves"].items():
            for seed, pts in by_seed.items():
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, label=f"{arm} seed {seed}")
        if "start" in e["rows"]:
            ax.axhline(np.mean([r["psnr"] for r in e["rows"]["start"]["REDS val"]]), ls="--", c="grey", lw=1,
                       label="start (step 0)")
        ax.set_xlabel("backbone training steps")
        ax.set_ylabel("REDS val PSNR (dB)")
        ax.set_title(bb, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def shown_command(cmd: str) -> str:
    """A recorded command with its path arguments made :func:`portable` (also those recorded before a folder
    was portable)."""
    return " ".join(portable(t) if t.startswith("/") else t for t in cmd.split(" "))


def report(data: dict[str, Any], results: Path) -> None:
    """docs/results/blurdm_gain.md (and the curve) from the JSON alone."""
    results = Path(results)
    data = {**data, "command": shown_command(data["command"]),
            "commands": {bb: shown_command(c) for bb, c in data.get("commands", {}).items()}}
    lines = ["# BlurDM on a working backbone, equal budget, with real partial exposures", "",
             f"Written by `python -m {MODULE} report` from `{NAME}.json`; measured on {data['machine']}, "
             f"{data['date']} (the command of each backbone in its section).", "",
             "- Budget per arm and seed (N per backbone below): N backbone steps (baseline: N steps; BlurDM: stage 1 "
             "N/2 + stage 3 N/2, plus stage 2's steps of the prior alone), "
             f"crops {data['crop']}, batch {data['batch']}; seed s: the same crop stream and initialisation in every arm.",
             f"- Data: every real folder (`{data['mix']}`'s mix) for the baseline and stages 1 and 3; stage 2 on "
             f"the raw 240 fps frames of `{data['frames']}` with partial exposures (T = {data['prior']['timesteps']}).",
             f"- Optimiser: {data['opt']['optimizer']} (peak lr per backbone below) cosine, EMA {data['opt']['ema']}; "
             f"stage 2 {data['opt_stage2']['optimizer']} lr {data['opt_stage2']['lr']:g}. Prior: {data['prior']}; "
             f"partial-exposure weight {data['partials_weight']}.",
             "- Evaluation: whole frames, no tiling, 8-bit RGB PSNR; B - A per image, averaged over the seeds image "
             "by image, mean with its 95 % bootstrap interval over images.", ""]
    for bb, e in data["backbones"].items():
        lines += [f"## {bb}" + (f" (starting from `{e['init']}`)" if e["init"] else " (from scratch)"), "",
                  f"`{shown_command(data.get('commands', {}).get(bb, data['command']))}`: options {e['kwargs']}, N = {e['steps']}, "
                  f"stage 2 {e['stage2_steps']} steps, peak lr {e['lr']:g}, seeds {', '.join(map(str, e['seeds']))}.", ""]
        first = next(iter(e["rows"].values()))
        names = list(first)
        head = ["model"] + [f"{s} PSNR" for s in names] + [f"{s} SSIM" for s in names]
        rows = [["blurry input"] + [f"{np.mean([r['input_psnr'] for r in first[s]]):.3f}" for s in names]
                + [""] * len(names)]
        for label, by_set in e["rows"].items():
            rows.append([label] + [f"{np.mean([r['psnr'] for r in by_set[s]]):.3f}" for s in names]
                        + [f"{np.mean([r['ssim'] for r in by_set[s]]):.4f}" for s in names])
        lines += md_table(head, rows) + ["", "Paired differences (B - A):", ""]
        prow = []
        for pair, by_set in e["paired"].items():
            for s, p in by_set.items():
                seeds = ", ".join(f"{v:+.3f}" for v in p["per_seed"].values())
                prow.append([pair, s, p["images"], f"{p['mean_diff']:+.3f}", f"[{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]",
                             f"{p['b_better']}/{p['images']}", seeds or "-"])
        lines += md_table(["B vs A", "data", "images", "mean B - A (dB)", "95 % interval", "images B better",
                           "per seed"], prow)
        c = e["cost"]
        h, w = c["latency_size"]
        lines += ["", f"Cost of the prior: parameters {c['plain']['params_M']:.3f} M -> {c['fused']['params_M']:.3f} M; "
                  f"MACs at 256x256 {c['plain']['gmacs_256']:.2f} G -> {c['fused']['gmacs_256']:.2f} G; "
                  f"{w}x{h} restore {c['plain']['latency_s']:.2f} s -> {c['fused']['latency_s']:.2f} s "
                  f"({c['fused']['latency_s'] / c['plain']['latency_s']:.2f}x; median of 3, {data['threads']} threads, "
                  "same process).", ""]
        wall = {arm: sum(v.get("wall_seconds", 0.0) for s in by_seed.values() for v in s.values()) / len(by_seed)
                for arm, by_seed in e["arms"].items()}
        lines += ["Training wall time per seed: " + ", ".join(f"{a} {t / 60:.1f} min" for a, t in wall.items())
                  + " (0 where the run was trained by an earlier call).", ""]
    curve = results / f"{NAME}_curve.png"
    try:
        plot(data, curve)
        lines += [f"![REDS val PSNR against backbone steps]({curve.name})", "",
                  "Curve: REDS val PSNR during training (baseline every N/4 steps; BlurDM during stage 3, after "
                  "stage 1's N/2 steps).", ""]
    except ImportError:
        pass
    x = data.get("example")
    if x:
        lines += [f"![blurry, baseline, BlurDM, sharp]({x['file']})", "",
                  f"Centre crop of REDS val `{x['image']}` (the frame where BlurDM and the baseline differ most, "
                  f"seed {data['seeds'][0]}): " + ", ".join(f"{k} {v:.2f} dB" for k, v in x["psnr"].items())
                  + " (whole frame).", ""]
    lines += data.get("notes", [])
    write_report(NAME, lines, data, results)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--backbone", nargs="+", choices=sorted(BACKBONES), help="default: nafnet-small")
    ap.add_argument("--seeds", nargs="+", type=int, help="default: 0 1")
    ap.add_argument("--steps", type=int, default=0, help="backbone steps per arm (default: the backbone's, BACKBONES)")
    ap.add_argument("--stage2-steps", type=int, default=0, help="BlurDM stage-2 steps (default: the backbone's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sets", nargs="+", choices=sorted(EVAL_SETS), metavar="SET",
                    help="evaluate on these only (default: 'REDS val' 'GoPro val')")


def main(argv: list[str] | None = None) -> int:
    def report_only(results: Path, **_: Any) -> None:
        report(read_results(NAME, results), results)

    smoke = "--smoke" in (argv if argv is not None else sys.argv)  # the smoke run makes its own data
    return study_main(__doc__, lambda **kw: run(argv=argv, **kw), report_only, argv, add_arguments,
                      needs=() if smoke else (REDS_VAL, GOPRO_VAL, FRAMES), runs=RUNS / NAME)


if __name__ == "__main__":
    raise SystemExit(main())
