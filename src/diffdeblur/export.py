"""ONNX export of the regression networks, its parity check, and a model that runs an ONNX file.

:func:`onnx_bytes` exports ``model.restore`` (clamping included) with PyTorch's dynamo-based ONNX
exporter. Height and width are dynamic, in steps of the network's ``size_multiple``: the graph
itself does not pad, :class:`OnnxModel` pads by reflection and crops back as the network's own
``forward`` does, so any image size runs. The file's metadata (``diffdeblur``) holds the network's
config, its ``size_multiple`` and its ``tile_context`` (the input pixels a tile grows by).

BlurDM-enhanced networks export too: their restore draws one start-noise vector per image for the
latent prior's reverse chain (``noise_like``: (1, prior_dim), not spatial), so the graph takes it as a
second input ``noise`` and :class:`OnnxModel` draws it from the caller's generator as the network does
(the metadata records its shape). Pixel-space diffusion models (noise fields the size of the image,
sampling options) are not exportable.

Needs the optional extra ``onnx`` (``pip install 'diffdeblur[onnx]'``: onnx, onnxruntime).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import DiffdeblurError, OutputError
from .io import atomic_write_bytes
from .methods.base import ChainModel
from .models.blocks import pad_to_multiple
from .models.protocol import model_options, restore_options, tile_context

OPSET = 18
METADATA_KEY = "diffdeblur"
MAX_ABS_TOLERANCE = 1e-4  # fp32 parity of ONNX Runtime against PyTorch eager (issue 15)
MIN_PSNR_DB = 60.0
EXAMPLE_SIDE = 96  # export example (rounded up to the size multiple); any size runs afterwards
# the exporter's log lines that are not the user's business: missing torchvision ops, and a graph dump
# for the schedule constants read by BlurDM's reverse chain (harmless: they are constants)
QUIET_LOGGERS = ("torch.onnx._internal.exporter._registration", "torch.fx.experimental.symbolic_shapes")


class ExportError(DiffdeblurError, ValueError):
    """A model cannot be exported, onnx/onnxruntime are missing, or the export fails its parity check."""


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("ONNX needs the optional extra: pip install 'diffdeblur[onnx]' (onnx, onnxruntime)") from None
    return onnxruntime


def vector_noise(model: nn.Module) -> bool:
    """Whether ``model`` is a chain whose whole run is one fixed graph with its noise as an input: the chain
    protocol's ``graph_noise`` (BlurDM: T fixed deterministic steps from one start vector per image)."""
    return isinstance(model, ChainModel) and model.graph_noise


def check_exportable(model: nn.Module) -> None:
    """ExportError unless ``model`` runs as one graph: a regression network (no sampling options), or a chain
    that declares ``graph_noise`` (run at its default sampling options, the noise an input of the graph)."""
    name = getattr(model, "diffdeblur_config", {}).get("model", type(model).__name__)
    if isinstance(model, ChainModel):
        if not model.graph_noise:
            raise ExportError(f"{name}: only regression and BlurDM-enhanced models export to ONNX (a sampled "
                              "chain exports only when its noise is one input of a fixed graph: graph_noise)")
        return
    extra = set(model_options(model)) - {"prior"}
    if extra:
        raise ExportError(f"{name}: only regression and BlurDM-enhanced models export to ONNX "
                          f"(this one takes {', '.join(sorted(extra))})")


@contextlib.contextmanager
def _quiet_exporter():
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class _RestoreGraph(nn.Module):
    """The traced function: restore(blur) of a network, on sides that are multiples of its stride."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, blur: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.restore(blur) if noise is None else self.model.restore(blur, noise=noise)


def onnx_bytes(model: nn.Module) -> bytes:
    """The ONNX graph (opset :data:`OPSET`) of ``model.restore``: input ``blur`` (1, 3, H, W) float32
    in [0, 1] with H, W multiples of ``model.size_multiple`` (and ``noise`` (1, D) for BlurDM models);
    output ``restored``, same shape as ``blur``."""
    check_exportable(model)
    require_onnxruntime()
    model = model.eval().float().cpu()
    multiple = int(getattr(model, "size_multiple", 1))
    side = multiple * math.ceil(EXAMPLE_SIDE / multiple)
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(1, 3, side, side + multiple, generator=gen)
    inputs, names = (example,), ["blur"]
    if vector_noise(model):
        inputs, names = (example, model.noise_like(example, gen)), ["blur", "noise"]
    h = torch.export.Dim("h_blocks", min=1, max=65536 // multiple) * multiple
    w = torch.export.Dim("w_blocks", min=1, max=65536 // multiple) * multiple
    with warnings.catch_warnings(), _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's FutureWarnings and optional-dependency notes
        shapes = ({2: h, 3: w},) + ((None,) if len(inputs) > 1 else ())
        program = torch.onnx.export(_RestoreGraph(model), inputs, dynamic_shapes=shapes,
                                    input_names=names, output_names=["restored"], opset_version=OPSET,
                                    dynamo=True, optimize=True, verbose=False)
    proto = program.model_proto
    meta = {"size_multiple": multiple, "tile_context": tile_context(model),
            "config": getattr(model, "diffdeblur_config", None)}
    if len(inputs) > 1:
        meta["noise_shape"] = list(inputs[1].shape)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    return proto.SerializeToString()


def export_onnx(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the ONNX graph of ``model`` (see :func:`onnx_bytes`) to ``path`` atomically; an
    OutputError names the file when it cannot be written."""
    data = onnx_bytes(model)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return Path(path)


class OnnxModel(nn.Module):
    """An exported diffdeblur ONNX graph run by ONNX Runtime (CPU execution provider, all graph
    optimisations), with the interface of a registered network: ``restore(blur)`` on any size,
    ``size_multiple``, and no parameters (it runs on the CPU). A BlurDM graph (a ``noise`` input) is
    ``stochastic`` like its network: ``restore(blur, noise=, generator=)``, ``noise_like``, ``slice_noise``.

    ``source``: an ``.onnx`` path or the graph's bytes. ``threads``: intra-op threads (default:
    ``torch.get_num_threads()``, so that OMP_NUM_THREADS / torch.set_num_threads govern both engines).
    """

    def __init__(self, source: str | os.PathLike | bytes, threads: int | None = None) -> None:
        super().__init__()
        ort = require_onnxruntime()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        # no busy-waiting between runs: spinning intra-op threads take the cores from whatever runs next
        # (PyTorch, the next tile's bookkeeping), which on a 2-core machine slowed it measurably
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        where = "ONNX bytes" if isinstance(source, bytes) else os.fspath(source)
        try:
            self.session = ort.InferenceSession(source if isinstance(source, bytes) else where, opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(f"{where}: not a loadable ONNX file ({str(exc).splitlines()[0]})") from None
        meta = json.loads(self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "{}"))
        self.size_multiple = int(meta.get("size_multiple", 1))
        self.tile_context = int(meta.get("tile_context", 0))  # tiles grow by the exported network's context
        self.input_name = self.session.get_inputs()[0].name
        self.noise_shape = tuple(meta["noise_shape"]) if "noise_shape" in meta else None
        self.stochastic = self.noise_shape is not None

    def noise_like(self, blur: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A BlurDM graph's start noise: (B, D), one vector per image, as its network draws it."""
        return torch.randn(blur.shape[0], *self.noise_shape[1:], generator=generator)

    def slice_noise(self, noise: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        return noise  # the prior is not spatial: every tile uses the image's vector

    @restore_options
    def restore(self, blur: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> restored (B, 3, H, W) float32 in [0, 1] (CPU). ``noise`` /
        ``generator``: a BlurDM graph's start noise (drawn from ``generator`` when None); others ignore them."""
        x, h, w = pad_to_multiple(blur.detach().float().cpu(), self.size_multiple)
        feeds = {self.input_name: np.ascontiguousarray(x.numpy())}
        if self.stochastic:
            noise = self.noise_like(blur, generator) if noise is None else noise
            feeds["noise"] = np.ascontiguousarray(noise.detach().float().cpu().numpy())
        out = self.session.run(None, feeds)[0]
        return torch.from_numpy(out)[:, :, :h, :w]

    def forward(self, blur: torch.Tensor) -> torch.Tensor:
        return self.restore(blur)


def parity(model: nn.Module, onnx_model: OnnxModel, sizes: tuple[tuple[int, int], ...] = ((128, 160), (333, 517)),
           seed: int = 0) -> dict[str, float]:
    """Max absolute difference and PSNR (float, peak 1, not 8-bit quantised) between PyTorch eager fp32 and ONNX Runtime outputs on
    seeded random images of ``sizes`` (the worst over them)."""
    worst_abs, worst_psnr = 0.0, math.inf
    gen = torch.Generator().manual_seed(seed)
    model = model.eval().float().cpu()
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=gen)
        noise = {"noise": model.noise_like(x, gen)} if onnx_model.stochastic else {}
        with torch.inference_mode():
            ref = model.restore(x, **noise).float()
        out = onnx_model.restore(x, **noise)
        worst_abs = max(worst_abs, float((out - ref).abs().max()))
        mse = float(((out.double() - ref.double()) ** 2).mean())  # unquantised: parity is below 8-bit steps
        worst_psnr = min(worst_psnr, math.inf if mse == 0 else -10.0 * math.log10(mse))
    return {"max_abs": worst_abs, "psnr": worst_psnr}


def check_parity(result: dict[str, float], where: str) -> None:
    """ExportError (one line) when ``result`` of :func:`parity` is outside the tolerances."""
    if result["max_abs"] > MAX_ABS_TOLERANCE or result["psnr"] < MIN_PSNR_DB:
        raise ExportError(f"{where}: ONNX output differs from PyTorch (max abs {result['max_abs']:.2e} > "
                          f"{MAX_ABS_TOLERANCE:.0e} or PSNR {result['psnr']:.1f} dB < {MIN_PSNR_DB:.0f} dB)")
