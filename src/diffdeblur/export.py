"""ONNX export of the regression networks, its parity check, and a model that runs an ONNX file.

:func:`onnx_bytes` exports ``model.restore`` (clamping included) with PyTorch's dynamo-based ONNX
exporter. Height and width are dynamic, in steps of the network's ``size_multiple``: the graph
itself does not pad, :class:`OnnxModel` pads by reflection and crops back as the network's own
``forward`` does, so any image size runs. The file's metadata (``diffdeblur``) holds the network's
config and its ``size_multiple``.

Needs the optional extra ``onnx`` (``pip install 'diffdeblur[onnx]'``: onnx, onnxruntime).
Diffusion and BlurDM models (stochastic: their restore draws noise) are not exportable.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import DiffdeblurError
from .io import atomic_write_bytes
from .models.blocks import pad_to_multiple
from .models.protocol import model_options, restore_options

OPSET = 18
METADATA_KEY = "diffdeblur"
MAX_ABS_TOLERANCE = 1e-4  # fp32 parity of ONNX Runtime against PyTorch eager (issue 15)
MIN_PSNR_DB = 60.0
EXAMPLE_SIDE = 96  # export example (rounded up to the size multiple); any size runs afterwards


class ExportError(DiffdeblurError, ValueError):
    """A model cannot be exported, onnx/onnxruntime are missing, or the export fails its parity check."""


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("ONNX needs the optional extra: pip install 'diffdeblur[onnx]' (onnx, onnxruntime)") from None
    return onnxruntime


def check_exportable(model: nn.Module) -> None:
    """ExportError unless ``model`` is a deterministic network whose restore needs no sampling options."""
    name = getattr(model, "diffdeblur_config", {}).get("model", type(model).__name__)
    if getattr(model, "stochastic", False) or set(model_options(model)) - {"prior"}:
        raise ExportError(f"{name}: only deterministic regression models export to ONNX "
                          f"(this one takes {', '.join(model_options(model)) or 'noise'})")


class _RestoreGraph(nn.Module):
    """The traced function: restore(blur) of a network, on sides that are multiples of its stride."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, blur: torch.Tensor) -> torch.Tensor:
        return self.model.restore(blur)


def onnx_bytes(model: nn.Module) -> bytes:
    """The ONNX graph (opset :data:`OPSET`) of ``model.restore``: input ``blur`` (1, 3, H, W) float32
    in [0, 1] with H, W multiples of ``model.size_multiple``; output ``restored``, same shape."""
    check_exportable(model)
    require_onnxruntime()
    model = model.eval().float().cpu()
    multiple = int(getattr(model, "size_multiple", 1))
    side = multiple * math.ceil(EXAMPLE_SIDE / multiple)
    example = torch.rand(1, 3, side, side + multiple, generator=torch.Generator().manual_seed(0))
    h = torch.export.Dim("h_blocks", min=1, max=65536 // multiple) * multiple
    w = torch.export.Dim("w_blocks", min=1, max=65536 // multiple) * multiple
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's FutureWarnings and optional-dependency notes
        program = torch.onnx.export(_RestoreGraph(model), (example,), dynamic_shapes=({2: h, 3: w},),
                                    input_names=["blur"], output_names=["restored"], opset_version=OPSET,
                                    dynamo=True, optimize=True, verbose=False)
    proto = program.model_proto
    meta = {"size_multiple": multiple, "config": getattr(model, "diffdeblur_config", None)}
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    return proto.SerializeToString()


def export_onnx(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the ONNX graph of ``model`` (see :func:`onnx_bytes`) to ``path`` atomically."""
    atomic_write_bytes(path, onnx_bytes(model))
    return Path(path)


class OnnxModel(nn.Module):
    """An exported diffdeblur ONNX graph run by ONNX Runtime (CPU execution provider, all graph
    optimisations), with the interface of a registered network: ``restore(blur)`` on any size,
    ``size_multiple``, and no parameters (it runs on the CPU).

    ``source``: an ``.onnx`` path or the graph's bytes. ``threads``: intra-op threads (default:
    ``torch.get_num_threads()``, so that OMP_NUM_THREADS / torch.set_num_threads govern both engines).
    """

    stochastic = False

    def __init__(self, source: str | os.PathLike | bytes, threads: int | None = None) -> None:
        super().__init__()
        ort = require_onnxruntime()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        where = "ONNX bytes" if isinstance(source, bytes) else os.fspath(source)
        try:
            self.session = ort.InferenceSession(source if isinstance(source, bytes) else where, opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(f"{where}: not a loadable ONNX file ({str(exc).splitlines()[0]})") from None
        meta = json.loads(self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "{}"))
        self.size_multiple = int(meta.get("size_multiple", 1))
        self.onnx_config = meta.get("config")
        self.input_name = self.session.get_inputs()[0].name

    @restore_options
    def restore(self, blur: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> restored (B, 3, H, W) float32 in [0, 1] (CPU)."""
        x, h, w = pad_to_multiple(blur.detach().float().cpu(), self.size_multiple)
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x.numpy())})[0]
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
        with torch.inference_mode():
            ref = model.restore(x).float()
        out = onnx_model.restore(x)
        worst_abs = max(worst_abs, float((out - ref).abs().max()))
        mse = float(((out.double() - ref.double()) ** 2).mean())  # unquantised: parity is below 8-bit steps
        worst_psnr = min(worst_psnr, math.inf if mse == 0 else -10.0 * math.log10(mse))
    return {"max_abs": worst_abs, "psnr": worst_psnr}


def check_parity(result: dict[str, float], where: str) -> None:
    """ExportError (one line) when ``result`` of :func:`parity` is outside the tolerances."""
    if result["max_abs"] > MAX_ABS_TOLERANCE or result["psnr"] < MIN_PSNR_DB:
        raise ExportError(f"{where}: ONNX output differs from PyTorch (max abs {result['max_abs']:.2e} > "
                          f"{MAX_ABS_TOLERANCE:.0e} or PSNR {result['psnr']:.1f} dB < {MIN_PSNR_DB:.0f} dB)")
