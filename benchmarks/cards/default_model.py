"""Package the trained default model: evaluate it, write its model card, ship its weights.

Reads a run of `recipes/default-nafnet-small.yaml` (its `best.safetensors`, chosen during training by
PSNR on REDS `val/`, and `final.safetensors`), keeps the better of the two on REDS val, stores it as
float16 and evaluates exactly the stored weights on whole frames:
- REDS sample `val/` (10 frames of a scene never trained on) and GoPro sample `val/` (30 frames of the
  training scene, later frames than the training ones), with every measure of :mod:`diffdeblur.perception`
  (PSNR, SSIM, MS-SSIM, VIF, HaarPSI, GMSD, blur effect, NIQE) of the restored frames and of the blurry
  inputs (needs ``pip install "diffdeblur[metrics,niqe]"``);
- procedural pairs (the :func:`~diffdeblur.example.example_pair` generator, seeds 1000-1007) and the
  built-in example itself (:func:`~diffdeblur.example.builtin_example`, the real crop `diffdeblur deblur`
  runs with no input; its source is recorded), PSNR / SSIM.
It times 1280x720 deblurring of this model and of NAFNet width 32 side by side in one process (the card
states their ratio), plots the validation curve against training time, makes a before/after crop figure
of a real REDS val frame, and writes:
- src/diffdeblur/weights/default.safetensors (weights + config + card metadata) and default.md (the card),
- docs/results/default_model.{md,json}, default_model_curve.png, default_model_example.png.

    python -m benchmarks.cards.default_model --run RUN_DIR --threads 2
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (DATA, DATA_SHOWN, GOPRO_VAL, MEASURES, REDS_VAL, RESULTS, ROOT, RUNS, gains, machine,
                               measure_header, measure_text, today, write_example_pairs)

VAL_SETS = {"reds_val": REDS_VAL, "gopro_val": GOPRO_VAL}
VAL_NAMES = {"reds_val": "REDS val", "gopro_val": "GoPro val"}
WEIGHTS = ROOT / "src" / "diffdeblur" / "weights"
OUT = RESULTS
FIGURE_CROP = 320


def time_720p(model: torch.nn.Module, repeats: int = 3) -> float:
    """Median seconds of one whole-image 1280x720 restore (after one warm-up)."""
    from diffdeblur.inference import restore_tensor

    x = torch.rand(1, 3, 720, 1280, generator=torch.Generator().manual_seed(0))
    restore_tensor(model, x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        restore_tensor(model, x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def run_clock(log: list[dict[str, str]], offset_h: float = 0.0) -> tuple[list[dict[str, float]], dict[int, float]]:
    """From a run's log.csv (each resume restarts its clock): its process segments (steps and wall seconds) and
    the cumulative wall hours at each logged step, across segments, starting at ``offset_h``."""
    segs: list[dict[str, float]] = []
    hours: dict[int, float] = {}
    prev_step, prev_sec, done = 0, 0.0, 0.0
    for row in log:
        step, sec = int(row["step"]), float(row["seconds"])
        if not segs or sec < prev_sec:
            done += prev_sec if segs else 0.0
            segs.append({"from_step": prev_step, "to_step": step, "seconds": sec})
        segs[-1]["to_step"], segs[-1]["seconds"] = step, sec
        hours[step] = offset_h + (done + sec) / 3600
        prev_step, prev_sec = step, sec
    return segs, hours


def segment_hours(segs: list[dict[str, float]], steps: list[int], offset_h: float = 0.0) -> dict[int, float]:
    """Cumulative wall hours at ``steps`` from a stage's recorded segments alone (an earlier card's, when the
    run's log is gone): linear in the step within each segment, starting at ``offset_h``."""
    hours: dict[int, float] = {}
    done = 0.0
    for seg in segs:
        lo, hi, sec = int(seg["from_step"]), int(seg["to_step"]), float(seg["seconds"])
        for s in steps:
            if lo < s <= hi:
                hours[s] = offset_h + (done + sec * (s - lo) / max(1, hi - lo)) / 3600
        done += sec
    return hours


def run_config(run: Path) -> dict[str, Any]:
    """The training config of a run: from its final/best weights, else from its (unfinished) training state."""
    from diffdeblur.checkpoint import read_metadata

    for name in ("final", "best"):
        if (run / f"{name}.safetensors").exists():
            cfg = read_metadata(run / f"{name}.safetensors").get("info", {}).get("config", {})
            if cfg:
                return cfg
    if (run / "state.pt").exists():
        return json.loads(torch.load(run / "state.pt", map_location="cpu", weights_only=True)["config"])
    return {}


def describe_stage(cfg: dict[str, Any], segs: list[dict[str, float]], hardware: str) -> dict[str, Any]:
    """What the card says of one training stage: data, recipe, steps and wall time."""
    data_root = str(DATA)
    sources = [f"{s['type']}:{s['root'].replace(data_root, DATA_SHOWN)} (weight {s['weight']}"
               + (f", {s['options']}" if s.get("options") else "") + ")" for s in cfg.get("data", {}).get("train", [])]
    t = cfg.get("train", {})
    return {"steps": t.get("steps"), "train_sources": sources, "loss": t.get("loss"), "lr": t.get("lr"),
            "crop": cfg.get("data", {}).get("crop"), "batch_size": cfg.get("data", {}).get("batch_size"),
            "threads": t.get("threads"), "train_wall_hours": sum(s["seconds"] for s in segs) / 3600,
            "segments": segs, "hardware": hardware}


def stage_text(st: dict[str, Any]) -> str:
    """One stage in words, for the card."""
    segments = "; ".join(f"steps {s['from_step']}-{s['to_step']} in {s['seconds'] / 3600:.2f} h" for s in st["segments"])
    return (f"{st['steps']} steps on {'; '.join(st['train_sources'])}; crops {st['crop']}x{st['crop']}, batch "
            f"{st['batch_size']}, flips and 90-degree rotations; loss `{st['loss']}`, AdamW lr {st['lr']}, cosine "
            f"schedule; {st['train_wall_hours']:.2f} h of wall time on {st['hardware']}, {st['threads']} training "
            f"thread(s) ({segments})")


def score_set(model: torch.nn.Module, folder: Path, metrics: tuple[str, ...] = MEASURES,
              show_progress: bool = False) -> dict[str, Any]:
    """A paired folder scored by :func:`diffdeblur.evaluate.evaluate` with ``metrics``, whole images: the
    PSNR / SSIM gains of :func:`benchmarks.common.gains` (the card's older keys), every measure's mean for the
    restored and the blurry images (``ms_ssim``, ``input_ms_ssim``, ...), the measures and the images a
    measure could not score (``errors``, left out of its mean)."""
    from diffdeblur.evaluate import evaluate, score_columns

    rep = evaluate(model, folder, metrics=metrics, show_progress=show_progress)
    return {**gains(rep), **{c: rep.summary[c] for c in score_columns(rep.metrics)}, "metrics": list(rep.metrics),
            "errors": list(rep.errors)}


def score_builtin_example(model: torch.nn.Module) -> dict[str, Any]:
    """PSNR / SSIM of the restored and of the blurry built-in example (:func:`diffdeblur.example.builtin_example`,
    the real crop `diffdeblur deblur` runs with no input), its size and its source (data set, frame, crop)."""
    from diffdeblur.example import builtin_example
    from diffdeblur.inference import restore_tensor
    from diffdeblur.io import to_numpy, to_tensor
    from diffdeblur.metrics import psnr, ssim

    blur, sharp, source = builtin_example()
    out = to_numpy(restore_tensor(model, to_tensor(blur)))
    return {"psnr": psnr(out, sharp), "ssim": ssim(out, sharp), "input_psnr": psnr(blur, sharp),
            "input_ssim": ssim(blur, sharp), "width": blur.shape[1], "height": blur.shape[0], "source": source}


def example_source_text(s: dict[str, Any]) -> str:
    """Where the built-in example comes from, in words: ``GoPro frame 000100, 384x256 at (352, 0)``."""
    src = s.get("source", {})
    where = f" at ({src['crop_xywh'][0]}, {src['crop_xywh'][1]})" if "crop_xywh" in src else ""
    return f"{src.get('dataset', '?')} frame {src.get('frame', '?')}, {s.get('width')}x{s.get('height')}{where}"


def perception_lines(scores: dict[str, dict[str, Any]], names: dict[str, str] = VAL_NAMES) -> list[str]:
    """The card's table of every measure on the data sets ``names`` (key -> title) that ``scores`` holds: each
    cell ``blurry input → restored``, the restored value in bold when the measure, by its direction, scores it
    better than the input."""
    from diffdeblur.perception import PERCEPTION_METRICS, column

    keys = [k for k in names if k in scores]
    metrics = [m for m in MEASURES if any(column(m) in scores[k] for k in keys)]

    def cell(s: dict[str, Any], m: str) -> str:
        c = column(m)
        restored, blurry = s.get(c), s.get(f"input_{c}")
        better = (restored is not None and blurry is not None
                  and (restored > blurry if PERCEPTION_METRICS[m].higher_is_better else restored < blurry))
        shown = measure_text(m, restored)
        return f"{measure_text(m, blurry)} → {'**' + shown + '**' if better else shown}"

    lines = ["| data | " + " | ".join(measure_header(m) for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    lines += [f"| {names[k]} ({scores[k]['images']} frames) | " + " | ".join(cell(scores[k], m) for m in metrics)
              + " |" for k in keys]
    errors = [e for k in keys for e in scores[k].get("errors", [])]
    return lines + (["", "Frames a measure could not score (left out of its mean): " + "; ".join(errors) + "."]
                    if errors else [])


def speed_lines(latency: dict[str, float], threads: int) -> list[str]:
    """The card's speed table: 1280x720 seconds of the default and of NAFNet width 32, measured side by side in
    one run (:func:`time_720p`, same process), and their ratio."""
    run = f"{threads} thread{'s' * (threads > 1)}, median of 3, both in one run"
    return [f"| 1280x720, whole image ({run}) | seconds |",
            "|---|---|",
            f"| diffdeblur default | {latency['default']:.2f} |",
            f"| NAFNet width 32 (`nafnet-width32`) | {latency['nafnet-width32']:.2f} |",
            f"| **ratio** default / NAFNet width 32 | **{latency['ratio']:.2f}** |"]


def procedural_set(root: Path, n: int = 8) -> Path:
    """Procedural pairs never trained on: the built-in example generator, seeds 1000.., 512x384."""
    return write_example_pairs(root, n, 384, 512, first_seed=1000)


def plot_curve(stages: list[tuple[str, list[dict[str, str]], dict[int, float]]], path: Path) -> None:
    """REDS val gain against cumulative training hours, one line per stage (label, val log, hours at step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=110)
    for label, val_log, hours in stages:
        h = [hours.get(int(r["step"]), float("nan")) for r in val_log]
        gain = [float(r["psnr"]) - float(r["input_psnr"]) for r in val_log]
        ax.plot(h, gain, marker="o", ms=3, label=label)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("training wall time (h, 2-core CPU)")
    ax.set_ylabel("PSNR gain over the blurry input (dB)")
    ax.set_title("REDS val (unseen scene) during training")
    ax.grid(alpha=0.3)
    if len(stages) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def figure_box(folder: Path) -> tuple[np.ndarray, np.ndarray, str, tuple[int, int], int]:
    """(blurry, sharp, name, (y, x), size) of the first pair of ``folder``: the most degraded FIGURE_CROP²
    box of 64 candidates (fixed seed), the crop the cards show."""
    from diffdeblur.data.datasets import blur_focused_box
    from diffdeblur.data.pairs import find_pairs, pair_name
    from diffdeblur.io import read_image

    pair = find_pairs(folder)[0][0]
    blur, _ = read_image(pair.blur)
    sharp, _ = read_image(pair.sharp)
    to8 = lambda a: np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)  # noqa: E731
    box = blur_focused_box(np.random.default_rng(0), to8(blur), to8(sharp), FIGURE_CROP, 64)
    return blur, sharp, pair_name(pair, folder), box, FIGURE_CROP


def figure_panels(crops: list[np.ndarray], titles: list[str], path: Path) -> None:
    """One row of image crops (H, W, 3) in [0, 1] with their titles, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(crops), figsize=(3.2 * len(crops), 3.5), dpi=100)
    for ax, img, title in zip(axes, crops, titles):
        ax.imshow(np.clip(img, 0, 1))
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def example_figure(model: torch.nn.Module, folder: Path, path: Path) -> dict[str, Any]:
    """blurry | restored | sharp for the crop of :func:`figure_box`; returns the crop's PSNRs."""
    from diffdeblur.inference import restore_tensor
    from diffdeblur.io import to_numpy, to_tensor
    from diffdeblur.metrics import psnr

    blur, sharp, name, (y, x), size = figure_box(folder)
    out = to_numpy(restore_tensor(model, to_tensor(blur)))
    crops = [a[y:y + size, x:x + size] for a in (blur, out, sharp)]
    scores = {"image": name, "box_yx": [y, x],
              "blurry_psnr": psnr(crops[0], crops[2]), "restored_psnr": psnr(crops[1], crops[2])}
    titles = [f"blurry ({scores['blurry_psnr']:.2f} dB)", f"diffdeblur default ({scores['restored_psnr']:.2f} dB)", "sharp"]
    figure_panels(crops, titles, path)
    return scores


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=RUNS / "default-nafnet-small")
    first = ap.add_mutually_exclusive_group()
    first.add_argument("--stage1", type=Path, default=None,
                       help="the run that --run was initialised from (train.init_from), for a two-stage card")
    first.add_argument("--stage1-card", type=Path, default=None,
                       help="instead of --stage1, when that run's folder is gone: the card JSON of the weights --run "
                            "was initialised from (docs/results/default_model.json before this card); its training "
                            "stages are kept as they were recorded")
    ap.add_argument("--recipe", default="recipes/default-nafnet-small-ft256.yaml",
                    help="the recipe of --run when it is a second stage, for the card")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                    help="storage type of the shipped weights; the card evaluates exactly what is stored")
    ap.add_argument("--hardware", default="2-core CPU (AMD EPYC, AVX-512)",
                    help="what the run trained on, for the card")
    ap.add_argument("--weights-dir", type=Path, default=WEIGHTS, help="where default.safetensors/.md go")
    ap.add_argument("--results", type=Path, default=OUT, help="where the docs/results files go")
    args = ap.parse_args(argv)
    weights_dir, out_dir = args.weights_dir, args.results
    torch.set_num_threads(args.threads)
    from diffdeblur.runtime import tune_allocator

    tune_allocator()  # as the CLI does (CPU_NOTES.md: the allocator setting)
    from diffdeblur import build_model
    from diffdeblur.checkpoint import load_model_file, read_metadata
    from diffdeblur.errors import ConfigError
    from diffdeblur.evaluate import count_macs, count_parameters, evaluate
    from diffdeblur.packaging import package_run
    from diffdeblur.perception import require

    try:
        require(MEASURES)  # before any model runs: the card scores every measure
    except ConfigError as exc:
        raise SystemExit(f"default_model: {exc}") from None

    run = args.run.expanduser()
    files = {n: run / f"{n}.safetensors" for n in ("best", "final") if (run / f"{n}.safetensors").exists()}
    if not files:
        raise SystemExit(f"{run}: no best.safetensors or final.safetensors")
    selection = {n: evaluate(load_model_file(p, "cpu"), VAL_SETS["reds_val"]).summary["psnr"] for n, p in files.items()}
    chosen = max(selection, key=selection.get)
    print("REDS val PSNR of the candidates:", selection, "->", chosen)
    meta = read_metadata(files[chosen])
    with tempfile.TemporaryDirectory() as tmp:  # evaluate the weights as stored (rounded to --dtype)
        model = load_model_file(package_run(run, Path(tmp) / "w.safetensors", weights=chosen, dtype=args.dtype).path,
                                "cpu")

    scores = {k: score_set(model, folder, show_progress=True) for k, folder in VAL_SETS.items()}
    with tempfile.TemporaryDirectory() as tmp:
        scores["procedural"] = gains(evaluate(model, procedural_set(Path(tmp) / "proc")))
    scores["builtin_example"] = score_builtin_example(model)

    w32 = build_model("nafnet-width32").eval()  # untrained: latency does not depend on the weights
    latency = {"default": time_720p(model), "nafnet-width32": time_720p(w32)}
    latency["ratio"] = latency["default"] / latency["nafnet-width32"]
    del w32

    two_stage = bool(args.stage1 or args.stage1_card)
    runs = ([("stage 1", args.stage1.expanduser())] if args.stage1 else []) + [("stage 2" if two_stage else "", run)]
    stages, curves, offset = [], [], 0.0
    if args.stage1_card:  # the earlier card's stages as recorded (their run folders are gone)
        # a card this script wrote with --stage1-card holds "stage 2" too: that is the stage being written now
        for st in [st for st in json.loads(args.stage1_card.read_text())["stages"] if st.get("stage") != "stage 2"]:
            st = {**st, "stage": st.get("stage") or "stage 1"}
            val_log = st.get("val_during_training", [])
            hours = segment_hours(st["segments"], [int(r["step"]) for r in val_log], offset)
            stages.append(st)
            curves.append((st["stage"], val_log, hours))
            offset += st["train_wall_hours"]
    for label, r in runs:
        segs, hours = run_clock(read_csv(r / "log.csv"), offset)
        st = describe_stage(run_config(r), segs, args.hardware)
        stages.append({"stage": label, **st, "val_during_training": read_csv(r / "val.csv")})
        curves.append((label or "training", stages[-1]["val_during_training"], hours))
        offset += st["train_wall_hours"]
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(c[1] for c in curves):
        plot_curve(curves, out_dir / "default_model_curve.png")
    figure = example_figure(model, VAL_SETS["reds_val"], out_dir / "default_model_example.png")

    last = stages[-1]
    card = {
        "model": meta["model"], "kwargs": meta["kwargs"], "params": count_parameters(model),
        "gmacs_256": count_macs(model) / 1e9, "weights": chosen,
        "weights_step": meta.get("info", {}).get("step", last["steps"]),
        "storage_dtype": args.dtype, "selection_reds_val_psnr": selection,
        **{k: last[k] for k in ("steps", "train_sources", "loss", "lr", "crop", "batch_size")},
        "train_wall_hours": offset, "stages": [{k: v for k, v in st.items() if k != "val_during_training"}
                                               for st in stages],
        "train_hardware": args.hardware, **scores, "latency_720p_s": latency, "latency_threads": args.threads,
        "example_figure": figure, "machine": machine(), "date": today(),
    }
    weights_dir.mkdir(parents=True, exist_ok=True)
    # the library's packaging of the chosen checkpoint (the same stored weights as evaluated), the card in its info
    package_run(run, weights_dir / "default.safetensors", weights=chosen, dtype=args.dtype, overwrite=True,
                info={k: v for k, v in card.items() if k != "stages"})
    (out_dir / "default_model.json").write_text(json.dumps({**card, "stages": stages}, indent=2) + "\n")

    def row(name: str, s: dict[str, Any]) -> str:
        extra = (f" | {s['worst_gain']:+.2f} | {s['images_worse_than_input']}/{s['images']}" if "worst_gain" in s
                 else " | | ")
        return (f"| {name} | {s['input_psnr']:.2f} / {s['input_ssim']:.4f} | **{s['psnr']:.2f}** / {s['ssim']:.4f} | "
                f"{s['psnr'] - s['input_psnr']:+.2f} | {s['ssim'] - s['input_ssim']:+.4f}{extra} |")

    recipes = "`diffdeblur train recipes/default-nafnet-small.yaml`" + (
        f" then `diffdeblur train {args.recipe}` from its weights" if two_stage else "")
    synthetic = [s for s in last["train_sources"] if not s.startswith("paired:")]
    stage1_how = (" --stage1 <run dir>" if args.stage1 else
                  f" --stage1-card {args.stage1_card.as_posix()}" if args.stage1_card else "")
    perception = "\n".join(perception_lines(scores))
    example_label = ("built-in example (`diffdeblur deblur` with no input: "
                     f"{example_source_text(scores['builtin_example'])})")
    speed = "\n".join(speed_lines(latency, args.threads))
    stage_lines = "\n".join(f"  - {st['stage'] + ': ' if st['stage'] else ''}{stage_text(st)}." for st in stages)
    text = f"""# Model card: diffdeblur default (`{card['model']}`)

The weights `diffdeblur deblur` uses when no `--model` is given. Written by
`python -m benchmarks.cards.default_model --run <run dir>{stage1_how} --threads {args.threads}`
on {card['date']} from {recipes} (rerun them to reproduce).

- **Architecture**: NAFNet (Chen et al. 2022), CPU-friendly preset `{card['model']}` {card['kwargs']}, with test-time
  local statistics (TLC). {card['params'] / 1e6:.3f} M parameters, {card['gmacs_256']:.2f} GMACs at 256x256.
- **Training** ({offset:.2f} h of wall time in all):
{stage_lines}
  Shipped weights: **{chosen}** (step {card['weights_step']}), the better on REDS val of
  {', '.join(f'{k}: {v:.2f} dB' for k, v in selection.items())}; `best` was itself picked during training by
  REDS val PSNR, so the REDS val numbers below carry that selection. Stored as {args.dtype}; every number below
  is measured with the stored weights, whole-image inference.

| data | blurry input PSNR / SSIM | restored PSNR / SSIM | ΔPSNR (dB) | ΔSSIM | worst image ΔPSNR | images worse than input |
|---|---|---|---|---|---|---|
{row(f"REDS val ({scores['reds_val']['images']} frames, unseen scene)", scores['reds_val'])}
{row(f"GoPro val ({scores['gopro_val']['images']} frames, training scene)", scores['gopro_val'])}
{row('procedural pairs (8, 512x384, never trained on)', scores['procedural'])}
{row(example_label, scores['builtin_example'])}

Every perception measure (`diffdeblur.perception`; ↑ higher is better, ↓ lower is better), blurry input → restored
(bold: the restored frames score better):

{perception}

Speed: NAFNet width 32 (untrained: its cost does not depend on the weights) timed beside the default in the
same process, this machine:

{speed}

- **Example**: `default_model_example.png` in docs/results: the most degraded {FIGURE_CROP}² crop of REDS val
  `{figure['image']}`: {figure['blurry_psnr']:.2f} dB blurry, {figure['restored_psnr']:.2f} dB restored.
  Curve of REDS val PSNR against training time: `default_model_curve.png`.
- **Metrics**: PSNR/SSIM on 8-bit RGB, no border crop (see `diffdeblur.metrics`); MS-SSIM, VIF (VIF-p),
  HaarPSI, GMSD against the sharp frames and the no-reference blur effect and NIQE, also on 8-bit RGB (see
  `diffdeblur.perception` and docs/methods/perception.md); means over the frames each could score.
- **Limits**: trained for hours on a 2-core CPU on 34 real frames of three scenes (GoPro, REDS){' and sharp photos blurred on the fly (' + '; '.join(synthetic) + ')' if synthetic else ''}; far below the paper's NAFNet (32.87 dB on the GoPro test set after 200k iterations on 8 GPUs). Use it
  as a working default and a starting point for `diffdeblur train` on your data.
"""
    (weights_dir / "default.md").write_text(text)
    (out_dir / "default_model.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
