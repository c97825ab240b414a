"""Package the trained default model: evaluate it, write its model card, ship its weights.

Reads a finished run of `recipes/default-nafnet-small.yaml`, evaluates the EMA weights on the
30 GoPro-sample val pairs (full 1280x720 frames, whole-image inference) and on procedural pairs
the model never saw (the built-in example generator with other seeds), times 1280x720 deblurring,
and writes:
- src/diffdeblur/weights/default.safetensors (weights + config + card metadata),
- src/diffdeblur/weights/default.md (model card) and docs/results/default_model.{md,json}.

    python benchmarks/default_model_card.py [--run runs/default-nafnet-small] [--threads 2]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GOPRO_VAL = ROOT.parent / "shared" / "data" / "gopro_sample" / "val"
WEIGHTS = ROOT / "src" / "diffdeblur" / "weights"
OUT = ROOT / "docs" / "results"
SELECT_IMAGES = 6


def time_720p(model, repeats: int = 3) -> float:
    x = torch.rand(1, 3, 720, 1280, generator=torch.Generator().manual_seed(0))
    from diffdeblur.inference import restore_tensor

    restore_tensor(model, x)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        restore_tensor(model, x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def logged_seconds(log: list[dict]) -> float:
    """Training wall time summed over the process segments of log.csv (each resume restarts the clock)."""
    total, last = 0.0, 0.0
    for row in log:
        sec = float(row["seconds"])
        if sec < last:
            total += last
        last = sec
    return total + last


def procedural_set(root: Path, n: int = 8) -> Path:
    from diffdeblur.example import example_pair
    from diffdeblur.io import write_image

    for sub in ("blur", "sharp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        blur, sharp = example_pair(384, 512, seed=1000 + i)
        write_image(root / "blur" / f"{i:03d}.png", blur)
        write_image(root / "sharp" / f"{i:03d}.png", sharp)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(ROOT / "runs" / "default-nafnet-small"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                    help="storage type of the shipped weights; the card evaluates exactly what is stored")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from diffdeblur.runtime import tune_allocator

    tune_allocator()  # as the CLI does (CPU_NOTES.md: the allocator setting)
    from diffdeblur import build_model
    from diffdeblur.checkpoint import load_model_file, load_training_state, read_metadata, save_model
    from diffdeblur.evaluate import count_macs, count_parameters, evaluate

    run = Path(args.run)
    final = run / "final.safetensors"
    meta = read_metadata(final)
    info = meta.get("info", {})
    candidates = {"EMA": load_model_file(final, "cpu")}
    state = load_training_state(run / "state.pt")
    raw = build_model(meta["model"], **meta["kwargs"])
    raw.load_state_dict(state["model"])
    candidates["raw (no EMA)"] = raw.eval()
    # choose on the first SELECT_IMAGES val pairs (the subset validated during training), report all 30
    selection = {name: evaluate(m, GOPRO_VAL, max_images=SELECT_IMAGES).summary["psnr"] for name, m in candidates.items()}
    chosen = max(selection, key=selection.get)
    print("selection PSNR on the first", SELECT_IMAGES, "val pairs:", selection, "->", chosen)
    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:  # evaluate the weights as stored (rounded to dtype)
        save_model(candidates[chosen], Path(tmp) / "w.safetensors", dtype=dtype)
        model = load_model_file(Path(tmp) / "w.safetensors", "cpu")
    with open(run / "log.csv") as f:
        log = list(csv.DictReader(f))
    val_log = []
    if (run / "val.csv").exists():
        with open(run / "val.csv") as f:
            val_log = list(csv.DictReader(f))
    gopro = evaluate(model, GOPRO_VAL, show_progress=True).summary
    with tempfile.TemporaryDirectory() as tmp:
        unseen = evaluate(model, procedural_set(Path(tmp) / "proc")).summary
    latency = time_720p(model)
    cfg = info.get("config", {})
    sources = [f"{s['type']}:{s['root']} (weight {s['weight']})" for s in cfg.get("data", {}).get("train", [])]
    card = {
        "model": meta["model"], "kwargs": meta["kwargs"], "params": count_parameters(model),
        "gmacs_256": count_macs(model) / 1e9, "steps": info.get("steps"), "weights": chosen,
        "storage_dtype": args.dtype,
        "selection_psnr_first_val_pairs": selection,
        "train_seconds": logged_seconds(log), "train_sources": sources,
        "crop": cfg.get("data", {}).get("crop"), "batch_size": cfg.get("data", {}).get("batch_size"),
        "train_hardware": "2-core CPU (AMD EPYC), 1 training thread, shared with other jobs",
        "gopro_val": gopro, "procedural_unseen": unseen, "latency_720p_s": latency,
        "latency_threads": args.threads, "final_train_loss": float(log[-1]["loss"]) if log else None,
        "val_during_training": val_log, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    save_model(model, WEIGHTS / "default.safetensors", info={k: v for k, v in card.items() if k != "val_during_training"},
               dtype=dtype)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "default_model.json").write_text(json.dumps(card, indent=2) + "\n")
    g, u = gopro, unseen
    hours = (card["train_seconds"] or 0) / 3600
    text = f"""# Model card: diffdeblur default (`{card['model']}`)

The weights `diffdeblur deblur` uses when no `--model` is given. Written by
`python benchmarks/default_model_card.py` on {card['date']}; rerun it after retraining with
`diffdeblur train recipes/default-nafnet-small.yaml --resume`.

- **Architecture**: NAFNet (Chen et al. 2022), CPU-friendly preset `{card['model']}`: width 16, encoder blocks
  1,1,1,2, 2 middle blocks, decoder 1,1,1,1, test-time local statistics (TLC). {card['params'] / 1e6:.3f} M
  parameters, {card['gmacs_256']:.2f} GMACs at 256x256.
- **Data**: {'; '.join(card['train_sources'])}. Random {card['crop']}x{card['crop']} crops, batch {card['batch_size']},
  flips and 90-degree rotations.
- **Training**: {card['steps']} steps, AdamW (lr 1e-3, wd 1e-3, betas 0.9/0.9), cosine to 1e-7 after 200 warm-up
  steps, PSNR loss, EMA 0.999. Shipped weights: **{chosen}**, chosen by PSNR on the first {SELECT_IMAGES} val pairs
  ({', '.join(f'{k}: {v:.2f} dB' for k, v in selection.items())}), stored as {args.dtype} (the numbers below
  are measured with the stored weights). Wall time {hours:.2f} h on {card['train_hardware']}.
- **Validation, GoPro sample val** (30 pairs, 1280x720, frames 000100-000129 of the same scene as the training
  frames, so this is in-domain; whole-image inference): PSNR **{g['psnr']:.2f} dB**, SSIM **{g['ssim']:.4f}**;
  the blurry input scores {g['input_psnr']:.2f} dB / {g['input_ssim']:.4f}.
- **Unseen procedural pairs** (8 built-in example scenes, 512x384, shake kernels, seeds 1000-1007, never
  trained on): PSNR {u['psnr']:.2f} dB, SSIM {u['ssim']:.4f} (input {u['input_psnr']:.2f} / {u['input_ssim']:.4f}).
- **Speed**: 1280x720 in {latency:.2f} s (median of 3, {args.threads} threads, whole image, this machine).
- **Metrics**: PSNR/SSIM on 8-bit RGB, no border crop (see `diffdeblur.metrics`).
- **Limits**: trained for minutes-to-hours on a 2-core CPU on one GoPro scene plus uniform synthetic
  blur; far below the paper's NAFNet (32.87 dB on the GoPro test set after 200k iterations on 8 GPUs). Use it
  as a working default and a starting point for `diffdeblur train`.
"""
    (WEIGHTS / "default.md").write_text(text)
    (OUT / "default_model.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
