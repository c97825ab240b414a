"""Shared plumbing of the pixel-diffusion studies (benchmarks/study_diffusion_*.py).

Training goes through the project's training loop (:func:`diffdeblur.train.train`, resumable), evaluation
through :func:`diffdeblur.evaluate.evaluate` (PSNR/SSIM as in :mod:`diffdeblur.metrics`) on centre crops
of the GoPro sample's validation pairs. Every study writes ``docs/results/<name>.md`` and ``.json``.

CPU budget: these studies run on a shared 2-core machine with other jobs, one thread each, so the
models are small (``STUDY_MODEL``), crops small and runs short; each study's markdown states its budget.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from diffdeblur.config import config_from_dict
from diffdeblur.evaluate import evaluate
from diffdeblur.inference import load_model
from diffdeblur.train import train

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DIFFDEBLUR_DATA", "/work/shared/data"))
GOPRO_TRAIN, GOPRO_VAL = DATA / "gopro_sample" / "train", DATA / "gopro_sample" / "val"
BSDS = DATA / "bsds500" / "train"
RESULTS = ROOT / "docs" / "results"
RUNS = ROOT / "runs" / "diffusion_studies"
THREADS = 1

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
    """A config dict for :func:`diffdeblur.config.config_from_dict` (no validation during training)."""
    return {
        "model": dict(model),
        "data": {"train": sources or train_sources(), "val": "", "crop": crop, "batch_size": batch, "num_workers": 0},
        "train": {"steps": steps, "optimizer": optimizer, "lr": lr, "min_lr": lr * 0.01, "weight_decay": 0.0,
                  "betas": [0.9, 0.999], "warmup_steps": min(100, steps // 10), "scheduler": "cosine", "loss": loss,
                  "grad_clip": 1.0, "ema": ema, "threads": THREADS, "log_every": 25, "val_every": 10 ** 9,
                  "save_every": 100, "out_dir": str(out_dir)},
        "seed": seed,
    }


def train_or_load(cfg: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train (resuming if interrupted) unless ``final.safetensors`` exists; return (model, train info).

    The info's ``cpu_seconds`` / ``wall_seconds`` are those of the call that finished the training: the time
    of a run killed before it finished is lost, so ``resumed_at_step`` (when present) says they undercount.
    """
    out = Path(cfg["train"]["out_dir"])
    final = out / "final.safetensors"
    info_path = out / "train_info.json"
    if not final.exists():
        out.mkdir(parents=True, exist_ok=True)
        state = out / "state.pt"
        resumed = int(torch.load(state, map_location="cpu", weights_only=True)["step"]) if state.exists() else 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        train(config_from_dict(cfg, source=str(out)), resume=True, device="cpu", show_progress=False)
        info = {**({"resumed_at_step": resumed} if resumed else {}),
                "cpu_seconds": time.process_time() - cpu0, "wall_seconds": time.perf_counter() - t0,
                "steps": cfg["train"]["steps"], "batch": cfg["data"]["batch_size"], "crop": cfg["data"]["crop"]}
        info_path.write_text(json.dumps(info))
    info = json.loads(info_path.read_text())
    model = load_model(final, "cpu")
    info["params_M"] = sum(p.numel() for p in model.parameters()) / 1e6
    return model, info


def eval_crops(model: torch.nn.Module, *, crop: int, images: int, tile: int = 0, seed: int = 0,
               **options: Any) -> dict[str, Any]:
    """PSNR/SSIM on centre crops (``crop`` = 0: full frames) of the first ``images`` GoPro-sample val pairs."""
    torch.set_num_threads(THREADS)
    cpu0 = time.process_time()
    rep = evaluate(model, GOPRO_VAL, crop=crop, max_images=images, tile=tile, seed=seed, **options)
    s = rep.summary
    return {"psnr": s["psnr"], "ssim": s["ssim"], "input_psnr": s["input_psnr"], "input_ssim": s["input_ssim"],
            "images": s["images"], "crop": crop, "tile": tile, "wall_s_per_image": s["seconds_per_image"],
            "cpu_s_per_image": (time.process_time() - cpu0) / max(1, s["images"]),
            "per_image_psnr": [r["psnr"] for r in rep.rows], "options": {k: v for k, v in options.items()}}


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def save_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # several study processes may share one results file
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    tmp.replace(path)


def md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]


def have_data() -> bool:
    return GOPRO_TRAIN.is_dir() and GOPRO_VAL.is_dir() and BSDS.is_dir()


def load_results(name: str) -> dict[str, Any] | None:
    """The raw results ``runs/diffusion_studies/<name>.json`` of a study, or None (with a message) if absent."""
    res = load_json(RUNS / f"{name}.json")
    if not res:
        print("no results yet; run first", file=sys.stderr)
        return None
    return res


def write_report(name: str, lines: list[str], data: dict[str, Any]) -> None:
    """Write ``docs/results/<name>.md`` (the lines) and ``.json`` (the data), and print the markdown."""
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    save_json(RESULTS / f"{name}.json", data)
    print("\n".join(lines))


def study_main(doc: str, run: Callable[..., None], report: Callable[..., None], argv: list[str] | None = None,
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """The command line shared by the studies: ``run`` (train, evaluate, report) or ``report`` only.

    Options added by ``add_arguments`` are passed to both ``run`` and ``report`` as keyword arguments.
    Exit code 1 (with a one-line message) when ``run`` is asked for and the shared data is missing.
    """
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["run", "report"])
    if add_arguments is not None:
        add_arguments(ap)
    args = vars(ap.parse_args(argv))
    action = args.pop("action")
    if action == "run" and not have_data():
        print(f"shared data not found under {DATA} (set DIFFDEBLUR_DATA)", file=sys.stderr)
        return 1
    (run if action == "run" else report)(**args)
    return 0
