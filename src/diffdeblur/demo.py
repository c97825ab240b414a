"""A browser demo (Gradio), three tabs: deblur (upload a blurry image, choose a model, compare before / after,
download), super-resolution (upload, scale 2 or 4, an SR model) and object removal (upload, paint over what to
remove with the white brush).

Gradio is an optional extra (``pip install "diffdeblur[demo]"``); it is imported only by
:func:`build_app`, so the rest of the package never needs it. The demo runs the same library functions
as the command line with the same defaults (:func:`diffdeblur.inference.deblur_file` as ``diffdeblur deblur``,
:func:`diffdeblur.tasks.upscale_file` as ``diffdeblur sr``, :func:`diffdeblur.tasks.remove` as ``diffdeblur
remove``), so a downloaded PNG equals what the command writes for the same file (and, for removal, the
downloaded mask). Each model is offered in the tab of its task (:func:`model_task`): the deblurring list leaves
out super-resolution and removal models, which change the size or need a mask. Requests are queued and run one
at a time (one model in memory per choice, CPU threads not oversubscribed); uploads above
``max_megabytes`` or ``max_megapixels`` are refused with a message, never a crash.
"""
from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch import nn

from .errors import ConfigError, DiffdeblurError
from .inference import DEFAULT_MODEL, deblur_file, load_model, weights_for
from .io import ImageInfo, read_image, write_image
from .options import MASK_THRESHOLD
from .models.protocol import extra_inputs, model_options, output_scale
from .tasks import array_values, check_region, remove, sr_model, upscale_file
from .registry import get_entry, list_models
from .options import DEMO_MAX_MEGABYTES, DEMO_MAX_MEGAPIXELS, DEMO_MAX_STEPS, DEMO_PORT, SR_SCALES
from .tensorfile import read_metadata

HOST = "127.0.0.1"  # local only: the demo has no authentication
QUEUE_SIZE = 16  # waiting requests beyond this are refused ("queue is full")
DIFFUSION_KINDS = ("diffusion", "latent-diffusion")
TASKS = ("deblur", "sr", "remove")  # the demo's tabs, in order
BRUSH_COLOUR = "#ffffff"  # removal: the one brush colour (white = remove, as the mask files of `diffdeblur remove`)


@dataclass(frozen=True)
class Limits:
    """Upload limits of the demo: file size in MB and pixel count in megapixels."""

    megabytes: float = DEMO_MAX_MEGABYTES
    megapixels: float = DEMO_MAX_MEGAPIXELS


def demo_models(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The choices offered: each shipped weights file once (``default`` first, then the registered
    models with weights of their own; a name that loads the default's file is not listed again),
    then ``extra`` (checkpoint paths given on the command line)."""
    names: list[str] = []
    files: set[Path] = set()
    for name in [DEFAULT_MODEL] + [e.name for e in list_models() if e.kind != "autoencoder"]:
        path = weights_for(name)
        if path is not None and path.resolve() not in files:
            files.add(path.resolve())
            names.append(name)
    return names + [os.fspath(p) for p in extra if os.fspath(p) not in names]


@dataclass(frozen=True)
class StepsRange:
    """The sampling steps a model offers: its default (its operating point), the fewest and the most it takes."""

    default: int
    maximum: int
    minimum: int = 1


def steps_range(model: nn.Module) -> StepsRange | None:
    """The steps of ``model`` (the most capped at DEMO_MAX_STEPS); None for a model without steps."""
    if "steps" not in model_options(model):
        return None
    low, high = getattr(model, "steps_range", lambda: (1, None))()  # the chain protocol: ChainModel.steps_range
    maximum = max(1, min(int(high or DEMO_MAX_STEPS), DEMO_MAX_STEPS))
    minimum = min(int(low), maximum)
    default = min(int(getattr(model, "default_steps", 0) or maximum), maximum)
    return StepsRange(default, maximum, minimum)


def steps_slider(model: nn.Module) -> dict[str, Any]:
    """Settings of the steps slider for ``model``: its default and range, or hidden without steps."""
    steps = steps_range(model)
    if steps is None:
        return {"visible": False}
    return {"visible": True, "minimum": steps.minimum, "maximum": steps.maximum, "value": steps.default,
            "interactive": steps.maximum > steps.minimum}


def model_kind(name_or_path: str) -> str:
    """The registry kind of a shipped name or checkpoint, read from the weights' header only."""
    path = weights_for(name_or_path) or Path(name_or_path)
    return get_entry(read_metadata(path)["model"]).kind


def check_upload(path: str | os.PathLike, limits: Limits) -> None:
    """ConfigError with a one-line reason when the upload is too large, not an image or too many pixels."""
    size_mb = os.path.getsize(path) / 1e6
    if size_mb > limits.megabytes:
        raise ConfigError(f"the file is {size_mb:.1f} MB; the demo accepts up to {limits.megabytes:g} MB")
    try:
        with Image.open(path) as img:  # reads the header only
            w, h = img.size
    except (UnidentifiedImageError, OSError):
        raise ConfigError("the file is not an image this demo can read (PNG, JPEG, TIFF, WebP, BMP)") from None
    if w * h > limits.megapixels * 1e6:
        raise ConfigError(f"the image is {w}x{h} ({w * h / 1e6:.1f} megapixels); the demo accepts up to "
                          f"{limits.megapixels:g} megapixels (use `diffdeblur deblur` for larger ones)")


class DemoModels:
    """Loads each chosen model once, on first use, on ``device``."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self.loaded: dict[str, nn.Module] = {}

    def get(self, name: str) -> nn.Module:
        if name not in self.loaded:
            self.loaded[name] = load_model(name, self.device)
        return self.loaded[name]


def model_task(model: nn.Module) -> str:
    """The demo tab a model belongs to: ``remove`` (it takes a mask), ``sr`` (its output is larger), else ``deblur``."""
    if "mask" in extra_inputs(model):
        return "remove"
    return "sr" if output_scale(model) > 1 else "deblur"


def models_by_task(choices: list[str], models: DemoModels) -> dict[str, list[str]]:
    """``choices`` split by :func:`model_task` (each model loaded once, to ask it), in their order."""
    by_task: dict[str, list[str]] = {task: [] for task in TASKS}
    for name in choices:
        by_task[model_task(models.get(name))].append(name)
    return by_task


def restore_upload(src: str | os.PathLike, model: nn.Module, out_dir: str | os.PathLike, steps: int | None = None,
                   seed: int = 0) -> Path:
    """Deblur the uploaded file into ``out_dir/<name>_deblurred.png``, as ``diffdeblur deblur`` would."""
    src = Path(src)
    options: dict[str, Any] = {"steps": int(steps)} if steps and "steps" in model_options(model) else {}
    dest = Path(out_dir) / f"{src.stem}_deblurred.png"
    return deblur_file(src, dest, model, seed=seed, **options)


def upscale_upload(src: str | os.PathLike, model: nn.Module, scale: int, out_dir: str | os.PathLike) -> Path:
    """Upscale the uploaded file into ``out_dir/<name>_x<scale>.png``, as ``diffdeblur sr`` would."""
    src = Path(src)
    return upscale_file(src, Path(out_dir) / f"{src.stem}_x{scale}.png", scale, model)


def drawn_mask(editor: dict[str, Any] | None) -> np.ndarray:
    """The region painted in the image editor's layers, (H, W) bool: a pixel whose layer colour is white and
    opaque above 50 % (:func:`diffdeblur.tasks.array_values`, as a mask file's); ConfigError when nothing is painted."""
    layers = [np.asarray(a) for a in (editor or {}).get("layers") or [] if a is not None]
    background = (editor or {}).get("background")
    if background is None:
        raise ConfigError("upload an image first")
    h, w = np.asarray(background).shape[:2]
    region = np.zeros((h, w), bool)
    for layer in layers:
        if layer.shape[:2] != (h, w):
            raise ConfigError(f"a painted layer is {layer.shape[1]}x{layer.shape[0]} but the image is {w}x{h}")
        region |= array_values(layer) > MASK_THRESHOLD
    if not region.any():
        raise ConfigError("paint over what to remove first (the white brush)")
    check_region(region, "the painted mask")
    return region


def remove_painted(editor: dict[str, Any] | None, model: nn.Module, out_dir: str | os.PathLike,
                   limits: Limits) -> tuple[np.ndarray, np.ndarray, Path, Path]:
    """Remove the painted region from the editor's image: (before, after, result PNG, mask PNG), the result as
    ``diffdeblur remove IMAGE --mask MASK`` writes it (the mask file: white = removed)."""
    region = drawn_mask(editor)
    image = np.asarray(editor["background"])  # type: ignore[index]
    h, w = image.shape[:2]
    if w * h > limits.megapixels * 1e6:
        raise ConfigError(f"the image is {w}x{h} ({w * h / 1e6:.1f} megapixels); the demo accepts up to "
                          f"{limits.megapixels:g} megapixels (use `diffdeblur remove` for larger ones)")
    rgb = image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    rgb = rgb.astype(np.float32) / (65535.0 if rgb.dtype == np.uint16 else 255.0 if rgb.dtype == np.uint8 else 1.0)
    after = remove(rgb, mask=region, model=model)
    out_dir = Path(out_dir)
    dest, mask_file = out_dir / "removed.png", out_dir / "mask.png"
    write_image(dest, after)
    write_image(mask_file, np.repeat(region[..., None], 3, axis=2).astype(np.float32), ImageInfo(grey=True))
    return rgb, after, dest, mask_file


def build_app(models: list[str] | None = None, device: str = "auto", limits: Limits = Limits()) -> Any:
    """The Gradio ``Blocks`` app (not launched). ``models``: the choices (default: :func:`demo_models`), each
    offered in the tab of its task (:func:`models_by_task`)."""
    import gradio as gr  # the optional extra: only the demo needs it

    choices = models or demo_models()
    if not choices:
        raise ConfigError("no model to offer: no shipped weights found; pass --model CHECKPOINT.safetensors")
    cache = DemoModels(device)
    by_task = models_by_task(choices, cache)
    out_root = Path(tempfile.mkdtemp(prefix="diffdeblur-demo-"))

    def failing(fn):  # a user-fixable error is a message in the page, never a traceback
        @functools.wraps(fn)  # Gradio reads the signature (inputs) through __wrapped__
        def wrapped(*args):
            try:
                return fn(*args)
            except DiffdeblurError as exc:
                raise gr.Error(str(exc)) from None
        return wrapped

    def needs(task: str, name: str | None) -> nn.Module:
        if not name:
            what = {"deblur": "deblurring", "sr": "super-resolution", "remove": "object-removal"}[task]
            raise ConfigError(f"no {what} model to run: start the demo with --model CHECKPOINT.safetensors")
        return cache.get(name)

    @failing
    def on_model(name: str):  # the slider follows the model: its default steps and range, or hidden
        return gr.update(**steps_slider(cache.get(name)))

    @failing
    def on_run(upload: str | None, name: str, steps: float):
        if not upload:
            raise ConfigError("upload an image first")
        check_upload(upload, limits)
        model = needs("deblur", name)
        dest = restore_upload(upload, model, tempfile.mkdtemp(dir=out_root), steps)  # steps reach models with steps
        before, after = read_image(upload)[0], read_image(dest)[0]
        slider = [gr.update(value=(before, after))] if slider_box is not None else []
        return [before, after, *slider, str(dest)]

    @failing
    def on_sr_model(name: str):  # the scale follows the model
        return gr.update(value=output_scale(cache.get(name))) if name else gr.update()

    @failing
    def on_upscale(upload: str | None, name: str | None, scale: int):
        if not upload:
            raise ConfigError("upload an image first")
        check_upload(upload, limits)
        model = sr_model(int(scale), needs("sr", name))  # one line when the model has another scale
        dest = upscale_upload(upload, model, int(scale), tempfile.mkdtemp(dir=out_root))
        return read_image(upload)[0], read_image(dest)[0], str(dest)

    @failing
    def on_remove(editor: dict[str, Any] | None, name: str | None):
        model = needs("remove", name)
        before, after, dest, mask_file = remove_painted(editor, model, tempfile.mkdtemp(dir=out_root), limits)
        return before, after, str(dest), str(mask_file)

    def first(task: str) -> str | None:
        return by_task[task][0] if by_task[task] else None

    def picture(label: str, elem_id: str) -> Any:  # a result image (PNG, not editable)
        return gr.Image(label=label, format="png", interactive=False, height=320, elem_id=elem_id)

    def none_note(task: str, what: str) -> None:
        if not by_task[task]:
            gr.Markdown(f"*No {what} model is installed yet: start the demo with "
                        f"`diffdeblur demo --model CHECKPOINT.safetensors`.*")

    with gr.Blocks(title="diffdeblur demo", analytics_enabled=False) as app:
        gr.Markdown(f"## diffdeblur\nUp to {limits.megabytes:g} MB and {limits.megapixels:g} megapixels per image; "
                    "requests are queued.")
        with gr.Tabs():
            with gr.Tab("Deblur", id="deblur"):
                gr.Markdown("Upload a blurry image, choose a model and press **Deblur**.")
                none_note("deblur", "deblurring")
                with gr.Row():
                    upload = gr.File(label="blurry image", file_types=["image"], type="filepath", elem_id="upload")
                    with gr.Column():
                        model = gr.Dropdown(by_task["deblur"], value=first("deblur"), label="model", elem_id="model")
                        steps_at = {"minimum": 1, "maximum": DEMO_MAX_STEPS, "value": 1,
                                    **(steps_slider(cache.get(first("deblur"))) if first("deblur") else {})}
                        steps = gr.Slider(step=1, label="sampling steps (diffusion models)", elem_id="steps",
                                          **steps_at)
                        run = gr.Button("Deblur", variant="primary", elem_id="run")
                with gr.Row():
                    before, after = picture("before", "before"), picture("after", "after")
                slider_box = (gr.ImageSlider(label="before / after slider", format="png", interactive=False,
                                             elem_id="slider")
                              if hasattr(gr, "ImageSlider") else None)  # Gradio >= 5
                download = gr.File(label="download the deblurred PNG", elem_id="download")
            with gr.Tab("Super-resolution", id="sr"):
                gr.Markdown("Upload an image, choose the scale and press **Upscale**.")
                none_note("sr", "super-resolution")
                with gr.Row():
                    sr_upload = gr.File(label="image", file_types=["image"], type="filepath", elem_id="sr-upload")
                    with gr.Column():
                        sr_choice = gr.Dropdown(by_task["sr"], value=first("sr"), label="model", elem_id="sr-model")
                        scale_at = output_scale(cache.get(first("sr"))) if first("sr") else SR_SCALES[-1]
                        sr_scale = gr.Radio(list(SR_SCALES), value=scale_at, label="scale", elem_id="sr-scale")
                        sr_run = gr.Button("Upscale", variant="primary", elem_id="sr-run")
                with gr.Row():
                    sr_before, sr_after = picture("input", "sr-before"), picture("upscaled", "sr-after")
                sr_download = gr.File(label="download the upscaled PNG", elem_id="sr-download")
            with gr.Tab("Object removal", id="remove"):
                gr.Markdown("Upload an image, paint over what to remove with the white brush and press **Remove**.")
                none_note("remove", "object-removal")
                with gr.Row():
                    editor = gr.ImageEditor(label="image: paint over what to remove", type="numpy", image_mode="RGBA",
                                            format="png", sources=["upload"], transforms=(), layers=False,
                                            brush=gr.Brush(colors=[BRUSH_COLOUR], default_color=BRUSH_COLOUR,
                                                           color_mode="fixed"),
                                            elem_id="rm-editor")
                    with gr.Column():
                        rm_choice = gr.Dropdown(by_task["remove"], value=first("remove"), label="model",
                                                elem_id="rm-model")
                        rm_run = gr.Button("Remove", variant="primary", elem_id="rm-run")
                with gr.Row():
                    rm_before, rm_after = picture("before", "rm-before"), picture("after", "rm-after")
                with gr.Row():
                    rm_download = gr.File(label="download the result PNG", elem_id="rm-download")
                    rm_mask = gr.File(label="download the mask PNG (white = removed)", elem_id="rm-mask")
        model.change(on_model, model, steps)
        outputs = [before, after] + ([slider_box] if slider_box is not None else []) + [download]
        run.click(on_run, [upload, model, steps], outputs, concurrency_limit=1)
        sr_choice.change(on_sr_model, sr_choice, sr_scale)
        sr_run.click(on_upscale, [sr_upload, sr_choice, sr_scale], [sr_before, sr_after, sr_download],
                     concurrency_limit=1)
        rm_run.click(on_remove, [editor, rm_choice], [rm_before, rm_after, rm_download, rm_mask], concurrency_limit=1)
    app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return app


def launch(port: int = DEMO_PORT, models: list[str] | None = None, device: str = "auto",
           limits: Limits = Limits()) -> None:
    """Build and serve the app on http://127.0.0.1:PORT until interrupted."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the demo makes no outside calls
    app = build_app(models, device, limits)
    app.launch(server_name=HOST, server_port=port, max_file_size=f"{limits.megabytes:g}mb", show_error=True,
               share=False, inbrowser=False, quiet=True)  # quiet: no "set share=True" hint; the command prints the URL
