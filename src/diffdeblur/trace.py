"""Trace the reverse process of a diffusion model: per-step images, metrics, grid, GIF and curves.

Works with any model whose ``restore(blur, ..., callback=fn)`` follows the callback protocol of
:mod:`diffdeblur.diffusion.samplers` (``fn(info)`` once per step with "i", "t", "x0_image" and, if
available, "x_t_image": (1, 3, H, W) in [0, 1]). Only the first of several samples is traced.

Outputs of :func:`write_trace` in ``out_dir``: ``steps.csv`` (per step: t, PSNR/SSIM of the predicted
clean image x0 and of the noisy state x_t against the reference, and the mean change of x0 since the
previous step; without a reference only t and the change), ``grid.png`` (chosen steps; top row x_t, bottom row predicted x0; first column the
blurry input and the reference), ``trace.gif`` (x_t | x0 side by side, every step or a subsample),
``curves.png`` (PSNR/SSIM per step, or the change of x0 per step without a reference; matplotlib when installed, else a small Pillow plot) and
``restored.png`` (the final output at full resolution).
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from .errors import ConfigError
from .figures import label
from .io import atomic_write_bytes, to_numpy, to_tensor, write_image
from .metrics import SSIM_WINDOW, psnr, ssim
from .models.protocol import model_options
from .options import DEFAULT_THUMB

GIF_FRAME_MS = 120
CSV_FIELDS = ("step", "t", "t_next", "psnr_x0", "ssim_x0", "psnr_xt", "ssim_xt", "x0_change")
REFERENCE_FIELDS = ("psnr_x0", "ssim_x0", "psnr_xt", "ssim_xt")  # left out of steps.csv without a reference


@dataclass
class Trace:
    """What :func:`record_trace` collected. ``rows``: one dict per step (keys :data:`CSV_FIELDS`);
    ``x0_thumbs`` / ``xt_thumbs``: uint8 (h, w, 3) thumbnails per step; ``output``: the final image
    (H, W, 3) float32 in [0, 1]; ``input_psnr`` / ``input_ssim``: blurry input vs the reference."""

    rows: list[dict[str, float]] = field(default_factory=list)
    x0_thumbs: list[np.ndarray] = field(default_factory=list)
    xt_thumbs: list[np.ndarray] = field(default_factory=list)
    output: np.ndarray | None = None
    blur_thumb: np.ndarray | None = None
    sharp_thumb: np.ndarray | None = None
    input_psnr: float = float("nan")
    input_ssim: float = float("nan")

    @property
    def has_reference(self) -> bool:
        return self.sharp_thumb is not None


def thumbnail(rgb: np.ndarray, size: int = DEFAULT_THUMB) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> uint8 image whose longest side is at most ``size``."""
    img = Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    scale = size / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    return np.asarray(img)


def _metrics(img: np.ndarray, ref: np.ndarray | None) -> tuple[float, float]:
    if ref is None:
        return float("nan"), float("nan")
    s = ssim(img, ref) if min(ref.shape[:2]) >= SSIM_WINDOW else float("nan")
    return psnr(img, ref), s


def record_trace(model: nn.Module, blur: np.ndarray, sharp: np.ndarray | None = None, *, seed: int = 0,
                 thumb: int = DEFAULT_THUMB, **options: Any) -> Trace:
    """Run ``model.restore`` once on ``blur`` (H, W, 3) float in [0, 1] with a per-step callback.

    ``sharp``: optional reference of the same size (enables PSNR/SSIM columns). ``options`` go to
    ``restore`` (steps, sampler, eta, ...). Raises ConfigError when the model has no steps to trace.
    """
    if "callback" not in model_options(model):
        raise ConfigError(f"{type(model).__name__} is not a diffusion model: it has no reverse process to trace")
    if sharp is not None and sharp.shape != blur.shape:
        raise ConfigError(f"reference size {sharp.shape[1]}x{sharp.shape[0]} differs from the input "
                         f"{blur.shape[1]}x{blur.shape[0]}")
    tr = Trace(blur_thumb=thumbnail(blur, thumb), sharp_thumb=thumbnail(sharp, thumb) if sharp is not None else None)
    tr.input_psnr, tr.input_ssim = _metrics(blur, sharp)
    prev: list[np.ndarray] = []

    def on_step(info: dict[str, Any]) -> None:
        if info.get("sample", 0) != 0:
            return
        x0 = to_numpy(info["x0_image"][:1].float().cpu())
        xt = to_numpy(info["x_t_image"][:1].float().cpu()) if "x_t_image" in info else None
        p0, s0 = _metrics(x0, sharp)
        pt, st = _metrics(xt, sharp) if xt is not None else (float("nan"), float("nan"))
        change = float(np.abs(x0 - prev[0]).mean()) if prev else float("nan")
        prev[:] = [x0]
        tr.rows.append({"step": int(info["i"]), "t": float(info["t"]), "t_next": float(info.get("t_next", math.nan)),
                        "psnr_x0": p0, "ssim_x0": s0, "psnr_xt": pt, "ssim_xt": st, "x0_change": change})
        tr.x0_thumbs.append(thumbnail(x0, thumb))
        tr.xt_thumbs.append(thumbnail(xt, thumb) if xt is not None else np.zeros_like(tr.x0_thumbs[-1]))

    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        out = model.restore(to_tensor(blur).to(device), generator=generator, callback=on_step, **options)
    if not tr.rows:
        raise ConfigError("the model reported no sampling steps (is it a diffusion model with a restore callback?)")
    tr.output = to_numpy(out.float().clamp(0, 1).cpu())
    return tr


def select_steps(num_steps: int, count: int) -> list[int]:
    """``count`` step indices spread evenly over 0..num_steps-1, always including the first and last."""
    if count >= num_steps:
        return list(range(num_steps))
    if count <= 1:
        return [num_steps - 1]
    return sorted({round(i * (num_steps - 1) / (count - 1)) for i in range(count)})


def make_grid(tr: Trace, steps: list[int]) -> Image.Image:
    """Column 0: input (top) and reference (bottom); then one column per chosen step (x_t over x0)."""
    h, w = tr.x0_thumbs[0].shape[:2]
    gap = 2
    cols = 1 + len(steps)
    grid = Image.new("RGB", (cols * (w + gap) - gap, 2 * (h + gap) - gap), (255, 255, 255))
    blur = tr.blur_thumb if tr.blur_thumb is not None and tr.blur_thumb.shape[:2] == (h, w) else np.zeros((h, w, 3), np.uint8)
    grid.paste(label(blur, "input"), (0, 0))
    ref = tr.sharp_thumb if tr.sharp_thumb is not None else np.full((h, w, 3), 255, np.uint8)
    grid.paste(label(ref, "reference" if tr.sharp_thumb is not None else "no reference"), (0, h + gap))
    for c, i in enumerate(steps, start=1):
        t = tr.rows[i]["t"]
        grid.paste(label(tr.xt_thumbs[i], f"x_t i={i} t={t:g}"), (c * (w + gap), 0))
        grid.paste(label(tr.x0_thumbs[i], "x0 pred"), (c * (w + gap), h + gap))
    return grid


def make_gif(tr: Trace, max_frames: int = 60, frame_ms: int = GIF_FRAME_MS) -> bytes:
    """Animated GIF bytes: x_t | predicted x0 side by side, at most ``max_frames`` steps (last held)."""
    frames = []
    for i in select_steps(len(tr.rows), max_frames):
        pair = np.concatenate([tr.xt_thumbs[i], tr.x0_thumbs[i]], axis=1)
        frames.append(label(pair, f"step {i + 1}/{len(tr.rows)}  t={tr.rows[i]['t']:g}"))
    buf = io.BytesIO()
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 10]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return buf.getvalue()


def write_csv(tr: Trace, path: str | os.PathLike) -> None:
    fields = [k for k in CSV_FIELDS if tr.has_reference or k not in REFERENCE_FIELDS]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in tr.rows:
        w.writerow({k: (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k]) for k in fields})
    atomic_write_bytes(path, buf.getvalue().encode())


def plot_curves(series: dict[str, list[float]], path: str | os.PathLike, *, title: str = "",
                hlines: dict[str, float] | None = None, xlabel: str = "sampling step",
                ylabels: tuple[str, str] = ("PSNR (dB)", "SSIM")) -> str:
    """Plot named per-step curves (keys containing 'ssim' go to a second panel) to a PNG.

    Uses matplotlib when installed, else a small Pillow line plot. Returns the backend name.
    """
    hlines = hlines or {}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _pillow_plot(series, path, title, hlines)
        return "pillow"
    panels = (False, True) if any("ssim" in name.lower() for name in series) else (False,)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, want_ssim, ylabel in zip(axes[0], panels, ylabels):
        for name, ys in series.items():
            if ("ssim" in name.lower()) == want_ssim and any(np.isfinite(ys)):
                ax.plot(range(1, len(ys) + 1), ys, label=name)
        for name, y in hlines.items():
            if ("ssim" in name.lower()) == want_ssim and np.isfinite(y):
                ax.axhline(y, ls="--", c="gray", lw=1, label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return "matplotlib"


def _pillow_plot(series: dict[str, list[float]], path: str | os.PathLike, title: str,
                 hlines: dict[str, float]) -> None:
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    pw, ph, m = 400, 260, 40
    img = Image.new("RGB", (2 * pw, ph + 20), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((m, 2), title, fill=(0, 0, 0))
    for panel, want_ssim in enumerate((False, True)):
        ox = panel * pw
        curves = {k: [y for y in v] for k, v in series.items() if ("ssim" in k.lower()) == want_ssim}
        lines = {k: v for k, v in hlines.items() if ("ssim" in k.lower()) == want_ssim and np.isfinite(v)}
        vals = [y for ys in curves.values() for y in ys if np.isfinite(y)] + list(lines.values())
        if not vals:
            continue
        lo, hi = min(vals), max(vals)
        hi = hi if hi > lo else lo + 1
        n = max(len(ys) for ys in curves.values())

        def xy(i: int, y: float) -> tuple[float, float]:
            return (ox + m + (pw - 2 * m) * (i / max(1, n - 1)), 20 + ph - m - (ph - 2 * m) * (y - lo) / (hi - lo))
        draw.rectangle([ox + m, 20 + m, ox + pw - m, 20 + ph - m], outline=(0, 0, 0))
        draw.text((ox + 2, 20 + m - 12), f"{hi:.3g}", fill=(0, 0, 0))
        draw.text((ox + 2, 20 + ph - m), f"{lo:.3g}", fill=(0, 0, 0))
        for c, (name, ys) in enumerate(curves.items()):
            pts = [xy(i, y) for i, y in enumerate(ys) if np.isfinite(y)]
            if len(pts) > 1:
                draw.line(pts, fill=colours[c % len(colours)], width=2)
            draw.text((ox + m + 4, 20 + m + 4 + 12 * c), name, fill=colours[c % len(colours)])
        for name, y in lines.items():
            draw.line([xy(0, y), xy(n - 1, y)], fill=(128, 128, 128), width=1)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def write_trace(tr: Trace, out_dir: str | os.PathLike, frames: int = 8, gif_frames: int = 60,
                title: str = "") -> dict[str, Path]:
    """Write steps.csv, grid.png, trace.gif, curves.png and restored.png into ``out_dir``; return the paths.

    ``frames``: steps shown in the grid; ``gif_frames``: steps in the GIF (0: no GIF is written).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = ("steps.csv", "grid.png") + (("trace.gif",) if gif_frames > 0 else ()) + ("curves.png", "restored.png")
    paths = {name: out / name for name in names}
    write_csv(tr, paths["steps.csv"])
    buf = io.BytesIO()
    make_grid(tr, select_steps(len(tr.rows), frames)).save(buf, format="PNG")
    atomic_write_bytes(paths["grid.png"], buf.getvalue())
    if gif_frames > 0:
        atomic_write_bytes(paths["trace.gif"], make_gif(tr, gif_frames))
    if tr.has_reference:
        series = {name: [r[name] for r in tr.rows] for name in REFERENCE_FIELDS}
        plot_curves(series, paths["curves.png"], title=title,
                    hlines={"input PSNR": tr.input_psnr, "input SSIM": tr.input_ssim})
    else:
        plot_curves({"x0 change": [r["x0_change"] for r in tr.rows]}, paths["curves.png"],
                    title=f"{title} (no reference: mean |change| of predicted x0 per step)".strip(),
                    ylabels=("mean |x0 change|", ""))
    assert tr.output is not None
    write_image(paths["restored.png"], tr.output)
    return paths
