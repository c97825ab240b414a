"""A browser demo (Gradio): upload a blurry image, choose a model, compare before / after, download.

Gradio is an optional extra (``pip install "diffdeblur[demo]"``); it is imported only by
:func:`build_app`, so the rest of the package never needs it. The demo runs the same
:func:`diffdeblur.inference.deblur_file` as ``diffdeblur deblur`` with the same defaults, so the
downloaded PNG equals what the command writes for the same file. Requests are queued and run one
at a time (one model in memory per choice, CPU threads not oversubscribed); uploads above
``max_megabytes`` or ``max_megapixels`` are refused with a message, never a crash.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch import nn

from .errors import ConfigError, DiffdeblurError
from .inference import DEFAULT_MODEL, deblur_file, load_model, weights_for
from .io import read_image
from .models.protocol import model_options
from .registry import get_entry, list_models
from .options import DEMO_MAX_MEGABYTES, DEMO_MAX_MEGAPIXELS, DEMO_MAX_STEPS, DEMO_PORT
from .tensorfile import read_metadata

HOST = "127.0.0.1"  # local only: the demo has no authentication
QUEUE_SIZE = 16  # waiting requests beyond this are refused ("queue is full")
DIFFUSION_KINDS = ("diffusion", "latent-diffusion")


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


def restore_upload(src: str | os.PathLike, model: nn.Module, out_dir: str | os.PathLike, steps: int | None = None,
                   seed: int = 0) -> Path:
    """Deblur the uploaded file into ``out_dir/<name>_deblurred.png``, as ``diffdeblur deblur`` would."""
    src = Path(src)
    options: dict[str, Any] = {"steps": int(steps)} if steps and "steps" in model_options(model) else {}
    dest = Path(out_dir) / f"{src.stem}_deblurred.png"
    return deblur_file(src, dest, model, seed=seed, **options)


def build_app(models: list[str] | None = None, device: str = "auto", limits: Limits = Limits()) -> Any:
    """The Gradio ``Blocks`` app (not launched). ``models``: the choices (default: :func:`demo_models`)."""
    import gradio as gr  # the optional extra: only the demo needs it

    choices = models or demo_models()
    if not choices:
        raise ConfigError("no model to offer: no shipped weights found; pass --model CHECKPOINT.safetensors")
    cache = DemoModels(device)
    out_root = Path(tempfile.mkdtemp(prefix="diffdeblur-demo-"))

    def on_model(name: str):  # the slider follows the model: its default steps and range, or hidden
        try:
            return gr.update(**steps_slider(cache.get(name)))
        except DiffdeblurError as exc:
            raise gr.Error(str(exc)) from None

    def on_run(upload: str | None, name: str, steps: float):
        if not upload:
            raise gr.Error("upload an image first")
        try:
            check_upload(upload, limits)
            model = cache.get(name)
            out_dir = Path(tempfile.mkdtemp(dir=out_root))
            dest = restore_upload(upload, model, out_dir, steps)  # steps only reach a model that takes them
            before, after = read_image(upload)[0], read_image(dest)[0]
        except DiffdeblurError as exc:
            raise gr.Error(str(exc)) from None
        slider = [gr.update(value=(before, after))] if slider_box is not None else []
        return [before, after, *slider, str(dest)]

    with gr.Blocks(title="diffdeblur demo", analytics_enabled=False) as app:
        gr.Markdown("## diffdeblur: deblur a photo\nUpload a blurry image, choose a model and press **Deblur**. "
                    f"Up to {limits.megabytes:g} MB and {limits.megapixels:g} megapixels; requests are queued.")
        with gr.Row():
            upload = gr.File(label="blurry image", file_types=["image"], type="filepath", elem_id="upload")
            with gr.Column():
                model = gr.Dropdown(choices, value=choices[0], label="model", elem_id="model")
                first = {"minimum": 1, "maximum": DEMO_MAX_STEPS, "value": 1, **steps_slider(cache.get(choices[0]))}
                steps = gr.Slider(step=1, label="sampling steps (diffusion models)", elem_id="steps", **first)
                run = gr.Button("Deblur", variant="primary", elem_id="run")
        with gr.Row():
            before = gr.Image(label="before", format="png", interactive=False, height=320, elem_id="before")
            after = gr.Image(label="after", format="png", interactive=False, height=320, elem_id="after")
        slider_box = (gr.ImageSlider(label="before / after slider", format="png", interactive=False, elem_id="slider")
                      if hasattr(gr, "ImageSlider") else None)  # Gradio >= 5
        download = gr.File(label="download the deblurred PNG", elem_id="download")
        model.change(on_model, model, steps)
        outputs = [before, after] + ([slider_box] if slider_box is not None else []) + [download]
        run.click(on_run, [upload, model, steps], outputs, concurrency_limit=1)
    app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return app


def launch(port: int = DEMO_PORT, models: list[str] | None = None, device: str = "auto",
           limits: Limits = Limits()) -> None:
    """Build and serve the app on http://127.0.0.1:PORT until interrupted."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the demo makes no outside calls
    app = build_app(models, device, limits)
    app.launch(server_name=HOST, server_port=port, max_file_size=f"{limits.megabytes:g}mb", show_error=True,
               share=False, inbrowser=False, quiet=True)  # quiet: no "set share=True" hint; the command prints the URL
