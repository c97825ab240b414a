"""The Python API: load a model, deblur an array or a file, at any size (the command line calls these)."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import load_model_file
from .device import resolve_device
from .engines import EXPORTED_ENGINES, resolve_engine
from .runners import eval_mode, runner_for
from .export import OnnxModel
from .io import IMAGE_EXTENSIONS, is_image_file, read_image, to_numpy, to_tensor, write_image
from .errors import CheckpointError, ConfigError, ImageError, UnknownNameError
from .models.nafnet_sr import bicubic_upsample
from .models.protocol import check_options, extra_inputs, output_scale, tile_context, whole_image_inputs
from .registry import get_entry
from .tensorfile import WEIGHTS_DIR, read_metadata, shipped_weights
from .methods.base import SamplingOptions
from .options import DEFAULT_MODEL, DEFAULT_TILE, MAX_UPSCALED_PIXELS
from .tiling import DEFAULT_OVERLAP, check_tile, count_tiles, pad_reflect, resolve_tile, tiled_apply

__all__ = ["WEIGHTS_DIR", "DEFAULT_MODEL", "NoWeightsError", "shipped_weights", "weights_for", "load_model",
           "restore_tensor", "tile_context", "output_scale", "extra_inputs", "check_output_size",
           "deblur", "deblur_file", "upscale_alpha", "DEFAULT_TILE"]


class NoWeightsError(CheckpointError):
    """A registered name was asked for, but no trained weights for it ship with the package."""


def weights_for(name: str) -> Path | None:
    """The shipped weights that ``name`` loads: ``weights/<name>.safetensors``, else the default
    weights when ``name`` is the registered preset they were trained as (the preset's hyper-parameters,
    plus any the run set on top of them)."""
    weights = shipped_weights(name)
    if weights is not None or name == DEFAULT_MODEL:
        return weights
    default = shipped_weights(DEFAULT_MODEL)
    if default is None:
        return None
    meta = read_metadata(default)
    try:
        preset = get_entry(name).defaults
    except UnknownNameError:
        return None
    # the same preset: every preset hyper-parameter equal; extra keys (e.g. the TLC train_size) are the run's own
    kwargs, wanted = meta.get("kwargs", {}), json.loads(json.dumps(preset))
    same = meta.get("model") == name and all(kwargs.get(k) == v for k, v in wanted.items())
    return default if same else None


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device = "auto") -> nn.Module:
    """Load a trained model, in eval mode on ``device``.

    ``name_or_path``: a diffdeblur ``.safetensors`` file, an ``.onnx`` file written by
    :func:`diffdeblur.export.export_onnx` (run by ONNX Runtime on the CPU), or the name of shipped weights
    (``"default"`` or a registered model name with weights in ``diffdeblur/weights``, see
    :func:`weights_for`). A registered name without shipped weights raises :class:`NoWeightsError`
    rather than silently returning random weights; use :func:`diffdeblur.build_model` for a fresh,
    untrained network.
    """
    dev = resolve_device(device)
    s = os.fspath(name_or_path)
    if s.endswith(".onnx"):  # an exported graph (diffdeblur export): ONNX Runtime on the CPU
        if dev.type != "cpu":
            raise ConfigError(f"{s}: an ONNX file runs on the CPU (use --device cpu or auto)")
        return OnnxModel(s)
    if s.endswith(".safetensors") or os.sep in s or os.path.exists(s):
        return load_model_file(s, dev)
    weights = weights_for(s)
    if weights is not None:
        return load_model_file(weights, dev)
    if s == DEFAULT_MODEL:
        raise NoWeightsError("no trained default weights ship with this installation yet; pass --model "
                             "CHECKPOINT.safetensors (train one with `diffdeblur train nafnet-small`)")
    try:
        get_entry(s)
    except UnknownNameError as exc:
        raise NoWeightsError(f"{s}: not a checkpoint file and not a model name ({exc.args[0]})") from None
    raise NoWeightsError(f"{s}: no trained weights ship for this model; pass a checkpoint .safetensors "
                         f"(train one with `diffdeblur train {s}`)")


class SamplingProgress:
    """The per-step callback that shows a bar over the sampling steps of ``calls`` sampler runs
    (tiles x samples). The bar starts at the first step, its total set from that step's
    ``num_steps``: an option the model refuses (``steps`` out of range) fails before any bar is drawn."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.bar: tqdm | None = None

    def __call__(self, info: dict[str, Any]) -> None:
        if self.bar is None:
            total = int(info["num_steps"]) * self.calls if info.get("num_steps") else None
            self.bar = tqdm(total=total, desc="sampling", unit="step", leave=False, dynamic_ncols=True)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def split_extra_inputs(model: nn.Module, blur: torch.Tensor, options: dict[str, Any]
                       ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``options`` split into the model's per-pixel inputs (checked: 4-D, batch 1, the image's H x W)
    and the rest. ImageError for a per-pixel input off the image's grid; ConfigError for an option
    ``model.restore`` does not take (a ``mask=`` to a model without that extra input included)."""
    names, (h, w) = extra_inputs(model), blur.shape[-2:]
    allowed = getattr(type(model).restore, "options", None)
    per_pixel, rest = {}, {}
    for name, value in options.items():
        if name in names:
            if not isinstance(value, torch.Tensor) or value.ndim != 4 or value.shape[0] != blur.shape[0]:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ImageError(f"{name} must be a (1, K, H, W) tensor on the image's grid, got {shape}")
            if tuple(value.shape[-2:]) != (h, w):
                raise ImageError(f"{name} is {value.shape[-1]}x{value.shape[-2]} but the image is {w}x{h}")
            per_pixel[name] = value
        elif isinstance(value, torch.Tensor) and value.ndim == 4 and (allowed is None or name not in allowed):
            raise ConfigError(f"{type(model).__name__} takes no per-pixel input '{name}' "
                              f"(its extra_inputs: {', '.join(names) or 'none'})")
        else:
            rest[name] = value
    if allowed is not None:
        check_options(f"{type(model).__name__}.restore", allowed, rest)
    return per_pixel, rest


def check_output_size(height: int, width: int, scale: int) -> None:
    """ImageError when an H x W input upscaled ``scale`` times would exceed :data:`MAX_UPSCALED_PIXELS`: the
    whole output is held in memory (float32, 12 bytes a pixel), tiled or not. Deblurring (scale 1) has no
    limit but the one on reading (:data:`diffdeblur.io.MAX_PIXELS`)."""
    pixels = height * width * scale * scale
    if scale > 1 and pixels > MAX_UPSCALED_PIXELS:
        raise ImageError(f"the x{scale} output would be {width * scale}x{height * scale} ({pixels / 1e6:.1f} MP), "
                         f"above the {MAX_UPSCALED_PIXELS / 1e6:g} MP limit of upscaled outputs (MAX_UPSCALED_PIXELS; "
                         f"the whole output is held in memory, so tiles do not lift it); upscale a smaller crop "
                         f"or at a smaller scale")


SAMPLING_FIELDS = frozenset(f.name for f in dataclasses.fields(SamplingOptions))


def typed_sampling(model: nn.Module, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with their sampling keywords (``steps``, ``sampler``, ``eta``, ...) turned into one
    :class:`~diffdeblur.methods.base.SamplingOptions` (typed and checked here, once) passed as ``options=``,
    for a model whose ``restore`` takes it; other models and other keywords are passed on unchanged."""
    allowed = getattr(type(model).restore, "options", ())
    keys = SAMPLING_FIELDS & set(options)
    if "options" not in allowed or "options" in options or not keys:
        return options
    rest = {k: v for k, v in options.items() if k not in keys}
    return {**rest, "options": SamplingOptions(**{k: options[k] for k in keys})}


@torch.inference_mode()
def restore_tensor(model: nn.Module, blur: torch.Tensor, tile: int | str = 0, overlap: int = DEFAULT_OVERLAP,
                   show_progress: bool = False, seed: int = 0, engine: str = "auto", **options: Any) -> torch.Tensor:
    """Restore a (1, 3, H, W) float tensor in [0, 1] (CPU) -> (1, C', s H, s W) float32 in [0, 1] (CPU),
    with s = ``model.scale`` (1 for deblurring: the input's shape).

    ``tile`` > 0 runs overlapping tiles of that size (bounded memory); 0 runs the whole image; ``"auto"``
    runs the whole image up to about a megapixel and 512-pixel tiles above (:func:`diffdeblur.tiling.resolve_tile`).
    Each tile is grown by the model's :func:`tile_context` on every side (input pixels its output depends
    on, e.g. the test-time local statistics' windows of a NAFNet); only the tile's own output is kept,
    so tiled output matches the whole image's. ``tile`` is the size of that own region.
    ``options`` go to ``model.restore`` (e.g. ``steps`` / ``sampler`` for diffusion models); the names in
    the model's ``extra_inputs`` are per-pixel inputs, (1, K, H, W) tensors on the input's grid (e.g. a
    ``mask`` in {0, 1}), sliced with every tile (:func:`split_extra_inputs` checks them).
    Stochastic models get a noise field drawn once for the whole image from ``seed`` and sliced
    per tile (``noise_box``), so overlapping tiles see the same noise and no seams appear.
    A model's whole-image conditions (:func:`~diffdeblur.models.protocol.whole_image_inputs`, e.g. BlurDM's
    prior) are computed once from the whole image and that noise, then passed unchanged to every tile (the
    whole image, tile 0, goes through the same call), so tiles agree with the whole image there too; an option
    of the same name given by the caller wins. The exported engines (``onnx``, ``openvino``) run a graph that
    takes the image and its noise only: there each tile computes its own conditions, as before.
    Sides smaller than the model's ``size_multiple`` (a 5x7 image, a 12-pixel strip) are padded by
    reflection to it and cropped back; a zero-size image is an ImageError, as is an upscaled output above
    :data:`~diffdeblur.options.MAX_UPSCALED_PIXELS` (:func:`check_output_size`). ``show_progress`` shows
    a bar over the tiles, or over the sampling steps for models that take a step callback.
    ``engine``: how the network runs (:mod:`diffdeblur.engines`). ``auto``: bf16 autocast on CUDA; on
    the CPU the engine measured fastest on this machine among those within 0.05 dB of fp32
    (:func:`diffdeblur.engines.choose_engine`: the first ``auto`` call for a network architecture on a
    CPU times the candidates on a small probe image, a few seconds, says which won on stderr and caches
    the choice in the user's cache folder; later calls and processes read it).

    The caller's objects are left as they were: ``model`` runs in eval mode inside the call only (every
    submodule's ``training`` flag is put back after it), engines that convert or compile run a private
    copy (kept in a weak map inside :mod:`diffdeblur.engines`, never on the model), and nothing is
    added to the model's ``__dict__``. Process-wide settings are never touched: not the allocator
    (:func:`diffdeblur.runtime.tune_allocator` is the command line's; call it yourself for its speed),
    not PyTorch's thread counts, global random state, default dtype or ``torch.backends`` flags;
    inference mode holds inside the call only.
    """
    h, w = blur.shape[-2:]
    if h == 0 or w == 0:
        raise ImageError(f"image {w}x{h} is empty")
    multiple = int(getattr(model, "size_multiple", 1))
    check_tile(tile, overlap, multiple)
    tile = resolve_tile(tile, h, w)
    scale = output_scale(model)
    check_output_size(h, w, scale)
    per_pixel, options = split_extra_inputs(model, blur, options)
    if h < multiple or w < multiple:
        big = (max(h, multiple), max(w, multiple))
        padded = {name: pad_reflect(v, *big) for name, v in per_pixel.items()}
        out = restore_tensor(model, pad_reflect(blur, *big), tile, overlap, show_progress, seed, engine,
                             **padded, **options)
        return out[..., :h * scale, :w * scale]
    device = next(model.parameters(), torch.empty(0)).device  # an ONNX model has no parameters: CPU
    with eval_mode(model):
        concrete = resolve_engine(engine, model, device)
        runner = runner_for(model, concrete, device)
        generator = torch.Generator().manual_seed(seed)
        needs_noise = getattr(model, "stochastic", False)
        noise = model.noise_like(blur, generator) if needs_noise else None
        # conditions on the whole image: computed once here, the same for every tile (an exported graph takes none)
        whole = {} if concrete in EXPORTED_ENGINES else whole_image_inputs(model, blur, noise, generator)
        whole = {name: value for name, value in whole.items() if name not in options}
        steps_bar = None  # per-step progress; with whole-image conditions the chain ran above: progress by tiles
        if (show_progress and not whole and "callback" in getattr(type(model).restore, "options", ())
                and "callback" not in options):
            steps_bar = SamplingProgress(count_tiles(h, w, tile, overlap) * int(options.get("num_samples") or 1))
            options = dict(options, callback=steps_bar)
        options = typed_sampling(model, options)  # sampling options typed and checked once for all tiles

        def run(tile_img: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
            y0, y1, x0, x1 = box
            extra = dict(options, **{name: value.to(device) for name, value in whole.items()})
            for name, value in per_pixel.items():  # the tile's crop of every per-pixel input
                extra[name] = value[:, :, y0:y1, x0:x1].to(device)
            if needs_noise:
                extra["noise"] = model.slice_noise(noise, box).to(device)
            out = runner(tile_img.to(device), **extra)
            return out.float().clamp(0, 1)

        try:
            return tiled_apply(run, blur, tile, overlap, show_progress=show_progress and steps_bar is None,
                               scale=scale, context=tile_context(model))
        finally:
            if steps_bar is not None:
                steps_bar.close()


def as_model(model: nn.Module | str | os.PathLike, device: str | torch.device = "auto") -> nn.Module:
    """A loaded module as is; a checkpoint path or shipped weights' name loaded with :func:`load_model`."""
    return model if isinstance(model, nn.Module) else load_model(model, device)


def deblur(image: np.ndarray | str | os.PathLike, model: nn.Module | str | os.PathLike = DEFAULT_MODEL,
           tile: int | str = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, device: str | torch.device = "auto",
           seed: int = 0, **options: Any) -> np.ndarray:
    """Deblur an image; returns float32 RGB (H, W, 3) in [0, 1] ((s H, s W, 3) for a model of ``scale``
    s; to write a file, see :func:`deblur_file`).

    image: an (H, W, 3) float array in [0, 1] (uint8 arrays are scaled by 1/255), or a file path.
    model: a loaded module, a checkpoint path, or shipped weights' name (default: the default model).
    tile / overlap / seed / options: as :func:`restore_tensor`, with the command line's defaults
    (``options`` include the model's per-pixel ``extra_inputs``, e.g. ``mask=`` a (1, 1, H, W) tensor).
    As :func:`restore_tensor`, it leaves a passed module as it was (weights, ``training`` flags, memory
    format, attributes) and never changes process-wide settings (allocator, threads, global RNG,
    default dtype, ``torch.backends`` flags).
    """
    model = as_model(model, device)
    if isinstance(image, (str, os.PathLike)):
        image, _ = read_image(image)
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"deblur expects an (H, W, 3) image, got shape {arr.shape}")
    out = restore_tensor(model, to_tensor(arr.astype(np.float32)), tile=tile, overlap=overlap, seed=seed, **options)
    return to_numpy(out)


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """An alpha plane (H, W) in [0, 1] -> (scale H, scale W) float32 in [0, 1]: bicubic interpolation (as the
    super-resolution network's residual, :func:`~diffdeblur.models.nafnet_sr.bicubic_upsample`), clipped."""
    plane = torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32))[None, None]
    return bicubic_upsample(plane, scale)[0, 0].clamp(0, 1).numpy()


PerPixelInputs = Callable[[int, int], dict[str, torch.Tensor]]


def deblur_file(src: str | os.PathLike, dest: str | os.PathLike,
                model: nn.Module | str | os.PathLike = DEFAULT_MODEL, *, tile: int | str = DEFAULT_TILE,
                overlap: int = DEFAULT_OVERLAP, device: str | torch.device = "auto", seed: int = 0,
                show_progress: bool = False, inputs_for: PerPixelInputs | None = None, **options: Any) -> Path:
    """Restore the image file ``src`` into ``dest``; what ``diffdeblur deblur`` (and ``sr``, ``remove``) does
    for each input.

    The output keeps the input's mode: grey stays grey, 16-bit stays 16-bit, alpha is copied (upscaled
    by :func:`upscale_alpha` for a model of ``scale`` > 1), the EXIF block is kept
    (:func:`diffdeblur.io.write_image`); the write is atomic and never replaces ``src``. Large
    images run in overlapping tiles of ``tile`` pixels (0 = whole image at once). ``model``, ``seed``
    and ``options`` as :func:`deblur`. ``inputs_for(height, width)``: the model's per-pixel inputs for
    this image once its size is known (e.g. a removal mask from boxes, :func:`diffdeblur.tasks.remove_file`),
    added to ``options``. Raises ImageError naming the file for unreadable, empty or clashing images (and
    for what ``inputs_for`` refuses), before anything is written. Returns ``dest`` as a Path.
    """
    src, dest = Path(src), Path(dest)
    if not is_image_file(dest):  # before the work, not when the result is written
        raise ImageError(f"{dest}: unsupported output extension (use one of {', '.join(IMAGE_EXTENSIONS)})")
    if dest.resolve() == src.resolve():
        raise ImageError(f"{src}: output {dest} would overwrite the input; choose another output")
    model = as_model(model, device)
    rgb, info = read_image(src)
    blur = to_tensor(rgb)
    del rgb  # one full-size float copy of the input at a time (a 24 MP image: 288 MB each)
    try:
        if inputs_for is not None:
            options = {**options, **inputs_for(blur.shape[-2], blur.shape[-1])}
        restored = restore_tensor(model, blur, tile=tile, overlap=overlap, show_progress=show_progress,
                                  seed=seed, **options)
    except ImageError as exc:
        raise ImageError(f"{src}: {exc}") from None
    del blur
    scale = output_scale(model)
    if info.alpha is not None and scale > 1:  # the alpha plane follows the image to its new size
        info = dataclasses.replace(info, alpha=upscale_alpha(info.alpha, scale))
    # the (H, W, 3) view of the result (encoding clips it band by band): no second full-size copy
    write_image(dest, restored[0].permute(1, 2, 0).numpy(), info)
    return dest
