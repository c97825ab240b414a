"""Package a trained super-resolution (``sr-x2``, ``sr-x4``) or object-removal (``remove``) model as shipped
weights, then write its model card from the peers study of exactly that file.

    python -m benchmarks.cards.task_model package --run RUN_DIR [--name sr-x4] [--dtype float32|float16]
    python -m benchmarks.studies.sr_peers --model sr-x4=src/diffdeblur/weights/sr-x4.safetensors --threads 2
    python -m benchmarks.cards.task_model card --run RUN_DIR [--name sr-x4]

(removal: ``python -m benchmarks.studies.removal_peers run --model remove=src/diffdeblur/weights/remove.safetensors``
between the two.)

``package`` reads a run of ``diffdeblur train`` (its ``best.safetensors``, kept during training by the val PSNR on
the 20 held-out BSDS500 photos, and the training config embedded in the run's files) and stores that checkpoint
under ``src/diffdeblur/weights/<registered name>.safetensors`` (the name is the checkpoint's own; ``--name`` only
checks it) with the library's packaging (:func:`diffdeblur.packaging.package_run`: weights, config, provenance),
float32 for super-resolution (0.3 M parameters) and float16 for removal by default. It then checks the stored file
through the product API (``diffdeblur.upscale`` / ``diffdeblur.remove``; by its shipped name when it is in the
package's weights folder): its output on the first held-out image (the run's validation folder) must equal
``best.safetensors``'s, exactly for float32, within float16 rounding for float16 (the PSNR between them is printed).

``card`` reads the study's rows of that file (``docs/results/sr_peers.json`` / ``removal_peers.json``: the model
given to the study as the path of the shipped file, or by its registered name), the run's logs (steps, wall time,
the val curve: PSNR against ``input_psnr``, PIL bicubic for SR, the holed input for removal) and writes
``<name>.md`` beside the weights and ``docs/results/<name>.{md,json}``, ``<name>_curve.png``. Nothing in the card
is typed by hand.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.cards.default_model import (WEIGHTS, describe_stage, read_csv, run_clock, run_config, segment_hours,
                                            stage_text)
from benchmarks.common import RESULTS, ROOT, hardware, load_json, machine, md_table, portable, save_json, today
from benchmarks.studies.paired_compare import RESAMPLES, bootstrap_ci

# what differs between the two tasks: the study, its peers, the default storage type, the val input's name
TASKS: dict[str, dict[str, Any]] = {
    "sr": {"study": "sr_peers", "peers": {"bicubic": "PIL bicubic", "lanczos": "PIL Lanczos"}, "dtype": "float32",
           "input": "PIL bicubic upsampling", "what": "super-resolution"},
    "removal": {"study": "removal_peers", "peers": {"telea": "OpenCV Telea", "ns": "OpenCV Navier-Stokes"},
                "dtype": "float16", "input": "the holed input", "what": "object removal"},
}
SR_MEASURES = {"psnr_y": ("Y-PSNR (dB)", 2), "ssim_y": ("Y-SSIM", 4), "psnr": ("RGB PSNR (dB)", 2)}
REMOVAL_MEASURES = {"psnr_mask": ("PSNR in the mask (dB)", 2), "ssim_mask": ("SSIM in the mask", 4),
                    "psnr": ("whole-image PSNR (dB)", 2), "ssim": ("whole-image SSIM", 4)}
REMOVAL_PAIRED = ("psnr_mask", "ssim_mask", "psnr")  # the measures compared image by image with each peer
FP16_MIN_PSNR = 50.0  # float16 storage: the stored file's output against best.safetensors', 8-bit PSNR (dB)
FP32_MAX_DIFF = 1e-5  # float32 storage: the largest difference allowed (the same weights: 0 in practice)
PROBE_OPTIONS = {"device": "cpu", "tile": 0, "seed": 0, "engine": "eager"}  # whole image, eager fp32, seed 0


# ---- paths as committed files show them ------------------------------------------------------------

def shown(path: str | os.PathLike) -> str:
    """``path`` as the card shows it: :func:`portable` (data root, repository), else under the home folder as
    ``~/...``, else the folder's last component (a card names no machine's folders)."""
    text = portable(path)
    if not text.startswith("/"):
        return text
    try:
        return "~/" + Path(text).relative_to(Path.home()).as_posix()
    except ValueError:
        return Path(text).name


def scrub(obj: Any) -> Any:
    """``obj`` (nested dicts / lists) with every absolute path string :func:`shown`."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v) for v in obj]
    return shown(obj) if isinstance(obj, str) and obj.startswith(("/", "~")) else obj


def portable_text(text: str) -> str:
    """A recorded command with the data root, the repository and the home folder shown as :func:`shown` does."""
    from benchmarks.common import DATA, DATA_SHOWN

    for base, short in ((DATA, DATA_SHOWN), (ROOT, ""), (Path.home(), "~")):
        for b in {str(base), str(Path(base).resolve())}:
            text = text.replace(b + "/", f"{short}/" if short else "")
    return text


def resolve(path: str | os.PathLike) -> Path:
    """A path of a config or a study: ``~`` expanded, a relative one from the repository root (where the
    commands run)."""
    p = Path(path).expanduser()
    return (p if p.is_absolute() else ROOT / p).resolve()


def is_package_dir(weights_dir: Path) -> bool:
    """Whether ``weights_dir`` is the folder shipped weights load from by name (``diffdeblur.tensorfile``)."""
    from diffdeblur import tensorfile

    return weights_dir.resolve() == Path(tensorfile.WEIGHTS_DIR).resolve()


# ---- the model and its task ------------------------------------------------------------------------

def task_of(model: torch.nn.Module, name: str) -> str:
    """``sr`` (the output is ``scale`` times the input) or ``removal`` (a ``mask`` input); else a one-line exit."""
    from diffdeblur.models.protocol import extra_inputs, output_scale

    if output_scale(model) > 1:
        return "sr"
    if "mask" in extra_inputs(model):
        return "removal"
    sys.exit(f"task_model: '{name}' is neither a super-resolution nor an object-removal model (deblurring models: "
             f"benchmarks.cards.default_model / fewstep_model)")


def default_name(task: str, model: torch.nn.Module) -> str:
    """The shipped name the task's command loads with no --model (``sr-x<scale>``, ``remove``)."""
    from diffdeblur.models.protocol import output_scale
    from diffdeblur.tasks import REMOVE_WEIGHTS, sr_weights_name

    return sr_weights_name(output_scale(model)) if task == "sr" else REMOVE_WEIGHTS


def best_file(run: Path) -> Path:
    best = run / "best.safetensors"
    if not best.is_file():
        sys.exit(f"{run}: no best.safetensors (the run has not validated yet; it is written at each val_every)")
    return best


def checkpoint_name(run: Path, name: str | None) -> str:
    """The registered name of the run's best.safetensors; a one-line exit when ``name`` is another."""
    from diffdeblur.checkpoint import read_metadata

    got = read_metadata(best_file(run))["model"]
    if name is not None and name != got:
        sys.exit(f"{best_file(run)}: a '{got}' checkpoint, not '{name}'")
    return got


# ---- the check of the stored file: the first held-out image ----------------------------------------

def probe_image(run: Path, task: str, data: Path | None = None) -> tuple[str, np.ndarray, np.ndarray | None]:
    """(name, input, mask or None) of the first pair of ``data`` (default: the run's validation folder, the
    held-out photos: low-resolution ``blur/`` for SR, holed ``blur/`` with ``mask/`` for removal)."""
    from diffdeblur.data.masks import read_companion
    from diffdeblur.data.pairs import find_pairs, pair_name
    from diffdeblur.io import read_image

    val = data if data is not None else run_config(run).get("data", {}).get("val")
    folder = resolve(val) if val else None
    if folder is None or not folder.is_dir():
        sys.exit(f"{run}: its validation folder ({portable(val) if val else 'none in its config'}) is not here; "
                 f"pass --data PAIRED_FOLDER (the held-out photos)")
    pairs = find_pairs(folder)[0]
    if not pairs:
        sys.exit(f"{portable(folder)}: no image pairs")
    blur = pairs[0].blur
    return pair_name(pairs[0], folder), read_image(blur)[0], read_companion(blur, "mask") if task == "removal" else None


def run_task(task: str, model: Any, image: np.ndarray, mask: np.ndarray | None, scale: int) -> np.ndarray:
    """The product API's output (``diffdeblur.upscale`` / ``diffdeblur.remove``) of ``model`` (a path, a shipped
    name or None: the task's shipped default), whole image, eager, seed 0."""
    import diffdeblur

    if task == "sr":
        return diffdeblur.upscale(image, scale, model, **PROBE_OPTIONS)
    return diffdeblur.remove(image, mask, model=model, **PROBE_OPTIONS)


def agreement(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """8-bit PSNR (inf when equal) and the largest absolute difference between two outputs."""
    from diffdeblur.metrics import psnr

    return {"psnr": psnr(out, ref), "max_abs_diff": float(np.abs(out.astype(np.float64) - ref).max())}


def agrees(a: dict[str, float], dtype: str) -> bool:
    return a["max_abs_diff"] <= FP32_MAX_DIFF if dtype == "float32" else a["psnr"] >= FP16_MIN_PSNR


def agreement_text(a: dict[str, float]) -> str:
    db = "identical 8-bit images" if math.isinf(a["psnr"]) else f"{a['psnr']:.2f} dB"
    return f"PSNR {db}, max |difference| {a['max_abs_diff']:.2e}"


def reproduce(run: Path, stored: Path | str | None, what: str, task: str, scale: int, dtype: str,
              data: Path | None = None) -> dict[str, Any]:
    """``stored`` (a path, a shipped name or None: the task's shipped default), called ``what`` in messages,
    against the run's best.safetensors on the first held-out image, through the product API; exits when they
    differ beyond the storage type's rounding (:func:`agrees`)."""
    name, image, mask = probe_image(run, task, data)
    ref = run_task(task, str(best_file(run)), image, mask, scale)
    a = agreement(run_task(task, stored if stored is None else str(stored), image, mask, scale), ref)
    print(f"{what} vs best.safetensors on held-out '{name}': {agreement_text(a)}")
    if not agrees(a, dtype):
        sys.exit(f"task_model: {what} does not reproduce best.safetensors on '{name}' ({agreement_text(a)})")
    return {"image": name, **a}


# ---- package ---------------------------------------------------------------------------------------

def package(run: Path, weights_dir: Path, dtype: str | None = None, name: str | None = None,
            data: Path | None = None, threads: int = 1) -> Path:
    """Store the run's best.safetensors as ``weights_dir/<name>.safetensors`` (``dtype``: the task's default
    when None) with :func:`diffdeblur.packaging.package_run`, once it reproduces best on the first held-out
    image (written beside, checked, then moved into place; in the package's folder checked again by name).
    Returns the written path."""
    from diffdeblur.checkpoint import load_model_file
    from diffdeblur.inference import weights_for
    from diffdeblur.models.protocol import output_scale
    from diffdeblur.packaging import package_run

    torch.set_num_threads(threads)
    name = checkpoint_name(run, name)
    best = load_model_file(best_file(run), "cpu")
    task, scale = task_of(best, name), output_scale(best)
    dtype = dtype or TASKS[task]["dtype"]
    weights_dir.mkdir(parents=True, exist_ok=True)
    out, tmp = weights_dir / f"{name}.safetensors", weights_dir / f".{name}.packaging.safetensors"
    try:
        package_run(run, tmp, weights="best", dtype=dtype, overwrite=True)
        reproduce(run, tmp, f"the stored {dtype} file", task, scale, dtype, data)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    if is_package_dir(weights_dir):  # as users load it: by name, and as the command's default when it is that
        if weights_for(name) is None or weights_for(name).resolve() != out.resolve():
            sys.exit(f"task_model: diffdeblur.load_model('{name}') does not load {portable(out)}")
        default = name == default_name(task, best)  # `diffdeblur sr --scale S` / `diffdeblur remove` without --model
        reproduce(run, None if default else name, f"the shipped '{name}'" + (" (the command's default)" if default else ""),
                  task, scale, dtype, data)
    print(f"wrote {portable(out)} ({dtype}, {out.stat().st_size / 1e6:.2f} MB)")
    return out


# ---- the study's rows of the shipped file ----------------------------------------------------------

def study_command(task: str, name: str, weights: Path) -> str:
    if task == "sr":
        return f"python -m benchmarks.studies.sr_peers --model {name}={portable(weights)} --threads 2"
    return f"python -m benchmarks.studies.removal_peers run --model {name}={portable(weights)} --threads 2"


def find_label(study: dict[str, Any], task: str, name: str, weights: Path) -> str:
    """The study's label of the shipped file: the model given as its path, or by ``name`` when ``weights`` is
    in the package's folder (a name loads the shipped file); else a one-line exit naming the command to run."""
    for label, m in study.get("models", {}).items():
        path = m.get("path", "") if isinstance(m, dict) else m
        if (path == name and is_package_dir(weights.parent)) or (path and resolve(path) == weights.resolve()):
            return label
    sys.exit(f"{TASKS[task]['study']}.json has no rows of the shipped weights {portable(weights)}: run "
             f"`{study_command(task, name, weights)}` first")


def our_methods(methods: list[str], label: str) -> list[str]:
    """The study's method names of ``label``: itself, or one per steps of a chain (``label (k steps)``)."""
    return [m for m in methods if m == label or m.startswith(f"{label} (")]


def paired(diffs: list[float]) -> dict[str, Any]:
    """Mean, 95 % percentile-bootstrap interval (the images resampled) and images better of per-image
    differences."""
    d = np.asarray(diffs, dtype=np.float64)
    lo, hi = bootstrap_ci(d)
    return {"mean": float(d.mean()), "ci95": [lo, hi], "better": int((d > 0).sum()), "images": len(d)}


def paired_text(p: dict[str, Any] | None, digits: int, unit: str = "") -> str:
    """``+1.16 dB [+0.90, +1.43], 20/20 better`` (the numbers as the studies print them)."""
    if p is None:
        return "–"
    lo, hi = p["ci95"]
    return (f"{p['mean']:+.{digits}f}{unit} [{lo:+.{digits}f}, {hi:+.{digits}f}], "
            f"{p['better']}/{p['images']} better")


def sr_results(study: dict[str, Any], label: str, scale: int) -> dict[str, Any]:
    """The means of ours and of the peers at ``scale`` and ours minus each peer, image by image."""
    part = study.get("scales", {}).get(str(scale))
    ours = our_methods(part["methods"], label) if part else []
    if not ours:
        sys.exit(f"sr_peers.json: no x{scale} rows of '{label}'")
    rows, methods = part["rows"], [*TASKS["sr"]["peers"], *ours]
    means = {m: {k: float(np.mean([r["scores"][m][k] for r in rows])) for k in SR_MEASURES} for m in methods}
    seconds = {m: float(np.mean([r["seconds"][m] for r in rows])) for m in methods}
    diffs = {o: {p: {k: paired([r["scores"][o][k] - r["scores"][p][k] for r in rows]) for k in SR_MEASURES}
                 for p in TASKS["sr"]["peers"]} for o in ours}
    return {"scale": scale, "images": len(rows), "ours": ours, "means": means, "cpu_s_per_image": seconds,
            "paired": diffs, "figure": part.get("figure", "")}


def removal_results(study: dict[str, Any], label: str) -> dict[str, Any]:
    """Per hole-area bin: the means of every method, ours minus each peer image by image, and whether ours gave
    back every unmasked pixel."""
    if study.get("smoke"):
        sys.exit("removal_peers.json is a smoke run (generated photos): run the study on the held-out photos")
    if not study.get("opencv"):
        sys.exit("removal_peers.json has no Telea / NS rows (OpenCV was not installed): pip install "
                 "\"diffdeblur[studies]\" and run the study again")
    ours = our_methods(study["methods"], label)
    methods = ["input", *TASKS["removal"]["peers"], *ours]
    bins: dict[str, Any] = {}
    for b in study["bins"]:
        rows = [r for r in study["rows"] if r["bin"] == b]
        of = lambda m: [r for r in rows if r["method"] == m]  # noqa: E731

        def diffs(o: str, p: str, k: str) -> dict[str, Any] | None:
            base = {r["image"]: r[k] for r in of(p)}
            d = [r[k] - base[r["image"]] for r in of(o) if r["image"] in base
                 and math.isfinite(r[k]) and math.isfinite(base[r["image"]])]
            return paired(d) if d else None

        means = {m: {k: float(np.nanmean([r[k] for r in of(m)])) for k in REMOVAL_MEASURES} for m in methods}
        bins[b] = {"images": len(of("input")), "hole_percent": 100 * float(np.mean([r["hole_fraction"] for r in of("input")])),
                   "means": means, "seconds_per_image": {m: float(np.mean([r["seconds"] for r in of(m)]))
                                                         for m in methods if m != "input"},
                   "paired": {o: {p: {k: diffs(o, p, k) for k in REMOVAL_PAIRED} for p in TASKS["removal"]["peers"]}
                              for o in ours},
                   "unmasked_identical": {o: [sum(r["unmasked_identical"] for r in of(o)), len(of(o))] for o in ours}}
    return {"ours": ours, "bins": bins, "target_bin": study["target_bin"], "seed": study.get("seed"),
            "radius": study.get("radius"), "figure": (study.get("example") or {}).get("file", "")}


# ---- the training part -----------------------------------------------------------------------------

def recipe_overrides(name: str, cfg: dict[str, Any]) -> tuple[str, list[str]]:
    """(what ``diffdeblur train`` was given: ``recipes/<name>.yaml``, else the shipped preset config ``<name>``, else
    '', and the settings where the run's config differs from it, as ``key=value`` overrides; train.out_dir left
    out, paths shown as :func:`shown` shows them)."""
    from diffdeblur.config import config_to_dict, load_config
    from diffdeblur.errors import DiffdeblurError

    recipe = ROOT / "recipes" / f"{name}.yaml"
    source = portable(recipe) if recipe.is_file() else name
    try:
        base = config_to_dict(load_config(recipe if recipe.is_file() else name))
    except DiffdeblurError:  # neither a recipe nor a preset config of that name (or it no longer loads)
        return (source if recipe.is_file() else ""), []

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict):
            return {k2: v2 for k, v in d.items() for k2, v2 in flat(v, f"{prefix}{k}.").items()}
        return {prefix[:-1]: d}

    def same(a: Any, b: Any) -> bool:
        return a == b or (isinstance(a, str) and isinstance(b, str) and resolve(a) == resolve(b))

    a, b = flat(base), flat(scrub(cfg))
    return source, [f"{k}={b[k] if isinstance(b[k], str) else json.dumps(b[k])}" for k in sorted(b)
                    if k != "train.out_dir" and not same(a.get(k), b[k])]


def data_text(cfg: dict[str, Any]) -> dict[str, Any]:
    """The data section in words: validation folder and the holdout rules of the training sources."""
    from diffdeblur.data.sr_pairs import HOLDOUT_EVERY

    d = cfg.get("data", {})
    holdouts = sorted({s.get("options", {}).get("holdout") for s in d.get("train", [])} - {None, ""})
    rules = {"bsds20": f"`holdout: bsds20` leaves out BSDS500's 20 held-out photos (`diffdeblur.data.sr_pairs."
                       f"bsds_holdout`: every {HOLDOUT_EVERY}th training photo by file name); they are the validation "
                       "set and the study's test photos, never trained on"}
    return {"val": shown(d["val"]) if d.get("val") else "", "val_max_images": d.get("val_max_images", 0),
            "holdout": [rules.get(h, f"`holdout: {h}`") for h in holdouts]}


def plot_val(val_log: list[dict[str, str]], hours: dict[int, float], label: str, input_label: str, title: str,
             path: Path) -> None:
    """Val PSNR and the input's against training wall hours (the curves of default_model's plot_curve, with the
    task's labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = [hours.get(int(r["step"]), float("nan")) for r in val_log]
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=110)
    ax.plot(h, [float(r["psnr"]) for r in val_log], marker="o", ms=3, label=label)
    ax.plot(h, [float(r["input_psnr"]) for r in val_log], ls="--", color="grey", label=input_label)
    ax.set_xlabel("training wall time (h)")
    ax.set_ylabel("val PSNR (dB, RGB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---- card ------------------------------------------------------------------------------------------

def sr_lines(res: dict[str, Any], name: str) -> list[str]:
    peers = TASKS["sr"]["peers"]
    table = [[peers.get(m, f"**`{m}`**"), *[f"{res['means'][m][k]:.{d}f}" for k, (_, d) in SR_MEASURES.items()],
              f"{res['cpu_s_per_image'][m]:.3f}"] for m in [*peers, *res["ours"]]]
    diffs = [[f"`{o}` − {peers[p]}", *[paired_text(res["paired"][o][p][k], d, " dB" if k != "ssim_y" else "")
                                       for k, (_, d) in SR_MEASURES.items()]]
             for o in res["ours"] for p in peers]
    return [f"x{res['scale']}, {res['images']} held-out BSDS500 photos (means):", "",
            *md_table(["method", *[t for t, _ in SR_MEASURES.values()], "CPU s / image"], table), "",
            "Ours minus each peer, image by image: mean, 95 % bootstrap interval, photos where ours is better:", "",
            *md_table(["", *[t.replace(" (dB)", "") for t, _ in SR_MEASURES.values()]], diffs)]


def removal_lines(res: dict[str, Any]) -> list[str]:
    peers = TASKS["removal"]["peers"]
    lines: list[str] = []
    for b, part in res["bins"].items():
        names = {"input": "holed input", **peers}
        table = [[names.get(m, f"**`{m}`**"), *[f"{part['means'][m][k]:.{d}f}" for k, (_, d) in REMOVAL_MEASURES.items()],
                  f"{part['seconds_per_image'][m]:.3f}" if m in part["seconds_per_image"] else ""]
                 for m in ["input", *peers, *res["ours"]]]
        diffs = [[f"`{o}` − {peers[p]}", *[paired_text(part["paired"][o][p][k], REMOVAL_MEASURES[k][1],
                                                        " dB" if k.startswith("psnr") else "") for k in REMOVAL_PAIRED]]
                 for o in res["ours"] for p in peers]
        same = "; ".join(f"`{o}`: {n}/{t}" for o, (n, t) in part["unmasked_identical"].items())
        lines += [f"Holes of {b} of the image ({part['images']} photos, mean hole {part['hole_percent']:.1f} %)"
                  + (" — the target bin" if b == res["target_bin"] else "") + ":", "",
                  *md_table(["method", *[t for t, _ in REMOVAL_MEASURES.values()], "wall s / image"], table), "",
                  *md_table(["ours minus", *[REMOVAL_MEASURES[k][0].replace(" (dB)", "") for k in REMOVAL_PAIRED]], diffs),
                  "", f"Photos whose every unmasked pixel equals the input's: {same}.", ""]
    return lines


def card(run: Path, name: str | None, results: Path, weights_dir: Path, hw: str, threads: int = 1,
         data: Path | None = None) -> dict[str, Any]:
    """Write the card of the shipped weights of the run's model (see the module docstring); returns its JSON."""
    from diffdeblur.checkpoint import load_model_file, read_metadata
    from diffdeblur.evaluate import count_parameters
    from diffdeblur.models.protocol import output_scale
    from diffdeblur.registry import get_entry

    torch.set_num_threads(threads)
    name = checkpoint_name(run, name)
    weights = weights_dir / f"{name}.safetensors"
    if not weights.is_file():
        sys.exit(f"{portable(weights)}: not found; run `python -m benchmarks.cards.task_model package --run RUN_DIR` first")
    meta, model = read_metadata(weights), load_model_file(weights, "cpu")
    task, scale = task_of(model, name), output_scale(model)
    spec = TASKS[task]
    study_path = results / f"{spec['study']}.json"
    study = load_json(study_path)
    if not study:
        sys.exit(f"{portable(study_path)}: no study results; run `{study_command(task, name, weights)}` first")
    label = find_label(study, task, name, weights)
    if weights.stat().st_mtime > study_path.stat().st_mtime:
        print(f"note: {portable(weights)} is newer than {portable(study_path)}: if the weights changed since the study, "
              f"run it again")
    res = sr_results(study, label, scale) if task == "sr" else removal_results(study, label)
    info = meta.get("info", {})
    dtype = info.get("storage_dtype", "float16")
    check = reproduce(run, weights, f"the shipped {portable(weights)}", task, scale, dtype, data)

    cfg = run_config(run)
    segs, _ = run_clock(read_csv(run / "log.csv"))
    stage = describe_stage(cfg, segs, hw)
    val_log = read_csv(run / "val.csv")
    hours = segment_hours(segs, [int(r["step"]) for r in val_log])
    results.mkdir(parents=True, exist_ok=True)
    if val_log:
        plot_val(val_log, hours, name, spec["input"], f"{name} on the held-out val photos during training",
                 results / f"{name}_curve.png")
    recipe, overrides = recipe_overrides(name, cfg)
    params = count_parameters(model)
    photos = res["images"] if task == "sr" else len({r["image"] for r in study["rows"]})
    best_val = info.get("val") or {}
    summary = {
        "model": name, "task": task, "scale": scale, "kwargs": meta["kwargs"], "params": params,
        "file_bytes": weights.stat().st_size, "storage_dtype": dtype, "weights": info.get("weights"),
        "weights_step": info.get("weights_step"), "val_at_weights": best_val, "packaged": info.get("date"),
        "training": stage, "data": data_text(cfg), "recipe": recipe, "recipe_overrides": overrides,
        "val_during_training": val_log, "reproduces_best": check,
        "study": {**{k: study.get(k) for k in ("date", "machine", "threads", "photos")},
                  "command": portable_text(study.get("command", "?")), "images": photos, "label": label,
                  "file": f"{spec['study']}.json"}, "results": res,
        "bootstrap_resamples": RESAMPLES, "machine": machine(), "date": today(),
    }
    save_json(results / f"{name}.json", scrub(summary))

    steps_run = segs[-1]["to_step"] if segs else stage["steps"]
    curve = ", ".join(f"{float(r['psnr']):.2f} @{r['step']}" for r in val_log) or "no validation"
    train_cmd = f"diffdeblur train {recipe or 'CONFIG'}" + "".join(f" {o}" for o in overrides)
    default = name == default_name(task, model)  # what the command loads without --model
    flag, kw = ("", "") if default else (f" --model {name}", f", model='{name}'")
    cli = ([f"diffdeblur sr IMAGE --scale {scale} -o OUT.png{flag}", f"diffdeblur sr FOLDER --scale {scale} -o OUT_DIR{flag}"]
           if task == "sr" else
           [f"diffdeblur remove IMAGE --mask MASK.png -o OUT.png{flag}", f"diffdeblur remove IMAGE --box X,Y,W,H -o OUT.png{flag}"])
    python = (f"diffdeblur.upscale('photo.png', scale={scale}{kw})" if task == "sr"
              else f"diffdeblur.remove('photo.png', mask='mask.png'{kw})")
    study_cmd = summary["study"]["command"]
    measured = sr_lines(res, name) if task == "sr" else removal_lines(res)
    protocol = ("HR = the photo cropped to a multiple of the scale, LR = its PIL bicubic reduction; Y-PSNR / Y-SSIM on "
                f"BT.601 luma with a {scale}-pixel border cropped, RGB PSNR on the whole image (8-bit). The model runs on "
                "the whole image, CPU seconds from the study."
                if task == "sr" else
                f"One fixed-seed hole mask per photo and area bin (seed {res['seed']}: strokes, boxes, object "
                f"silhouettes); the methods get the holed photo and its mask; OpenCV radius {res['radius']}. PSNR over "
                "the masked pixels, the SSIM map averaged over them, and whole-image PSNR / SSIM (8-bit RGB).")
    figure = f" Example crops: `docs/results/{res['figure']}`." if res.get("figure") else ""
    data_part = summary["data"]
    limits = (f"Trained for {stage['train_wall_hours']:.2f} h on {hw}, {stage['crop']}-pixel crops. " + (
        "The low-resolution inputs of training and of the study are PIL bicubic reductions of sharp photos: real "
        "camera images (noise, blur, JPEG) are another degradation than the one measured here." if task == "sr" else
        "The holes of training and of the study are random strokes, boxes and object silhouettes; the fill is one "
        "regression estimate (smooth over large holes); the pixels outside the mask are the input's."))
    text = f"""# Model card: `{name}` ({spec['what']})

`{cli[0]}` loads these weights; from Python `{python}`. Written by
`python -m benchmarks.cards.task_model card --run <run dir>` on {summary['date']} from the study
`{study_cmd}` ({study.get('date')}, {study.get('machine')}) of exactly this file, and the run of
`{train_cmd}` (rerun them to reproduce).

- **Model**: {type(model).__name__} (`{type(model).__module__}`), preset `{name}` {meta['kwargs']}: {get_entry(name).description}.
  **{params:,} parameters** ({params / 1e6:.3f} M); stored as {dtype} ({summary['file_bytes'] / 1e6:.2f} MB).
- **Data and training**: {stage_text(stage)}; {steps_run} of {stage['steps']} steps run.
- **Held out**: {' '.join(h[0].upper() + h[1:] + '.' for h in data_part['holdout']) or 'no holdout rule in the training sources.'}
  Validation during training: `{data_part['val']}`{f" (first {data_part['val_max_images']})" if data_part['val_max_images'] else ''}.
- **Shipped weights**: `{summary['weights']}.safetensors` of the run (step {summary['weights_step']}), the highest val
  PSNR during training: {best_val.get('psnr', float('nan')):.2f} dB against {best_val.get('input_psnr', float('nan')):.2f} dB for
  {spec['input']} ({best_val.get('images', '?')} photos). The stored file reproduces it on held-out `{check['image']}`
  through `diffdeblur.{'upscale' if task == 'sr' else 'remove'}`: {agreement_text(check)}.
- **Val during training** (PSNR @ step; {spec['input']}: {float(val_log[0]['input_psnr']) if val_log else float('nan'):.2f} dB):
  {curve}. Curve against wall time: `docs/results/{name}_curve.png`.

## Measured on photos never trained on

{photos} held-out BSDS500 photos, study `{spec['study']}` (label `{label}`), {study.get('threads')} thread(s).
{protocol}{figure}

{chr(10).join(measured)}

Intervals: {RESAMPLES} bootstrap resamples of the photos (`benchmarks.studies.paired_compare.bootstrap_ci`), from the
study's per-photo rows in `docs/results/{spec['study']}.json`.

## How to use

```
{chr(10).join(cli)}
```

```python
import diffdeblur
out = {python}  # float32 RGB (H, W, 3) in [0, 1]; a path or an array in
```

`diffdeblur {'sr' if task == 'sr' else 'remove'} --help` lists the rest (tiling, `--device`, folders and globs).

## Commands behind each number

- Training (steps, wall time, val curve, the shipped checkpoint): `{train_cmd}` (`log.csv`, `val.csv` of the run).
- Stored file and its check: `python -m benchmarks.cards.task_model package --run <run dir> --dtype {dtype}`.
- Peers table: `{study_cmd}`.
- This card: `python -m benchmarks.cards.task_model card --run <run dir>`.

## Limits

{limits}
"""
    (weights_dir / f"{name}.md").write_text(text)
    (results / f"{name}.md").write_text(text)
    print(text)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["package", "card"])
    ap.add_argument("--run", type=Path, required=True, help="the training run (train.out_dir of diffdeblur train)")
    ap.add_argument("--name", default=None, help="the registered name expected in the run's checkpoint (checked)")
    ap.add_argument("--dtype", choices=["float16", "float32"], default=None,
                    help="package: storage type (default: float32 for super-resolution, float16 for removal)")
    ap.add_argument("--data", type=Path, default=None,
                    help="the paired folder whose first image checks the stored file (default: the run's data.val)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hardware", default=hardware(), help="card: what the run trained on (default: this machine)")
    ap.add_argument("--weights-dir", type=Path, default=WEIGHTS, help="where <name>.safetensors/.md go")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the study JSON is and the card files go")
    args = ap.parse_args(argv)
    run = args.run.expanduser()
    if not run.is_dir():
        sys.exit(f"{run}: training run folder not found")
    if args.part == "package":
        package(run, args.weights_dir, args.dtype, args.name, args.data, args.threads)
    else:
        card(run, args.name, args.results, args.weights_dir, args.hardware, args.threads, args.data)


if __name__ == "__main__":
    main()
