"""Inference engines: how ``model.restore`` runs on one image or tile.

- ``eager``: PyTorch eager, float32 (the reference every other engine is checked against);
- ``bf16``: bfloat16 autocast (CUDA's default; on CPU it uses AVX-512 BF16 where present);
- ``channels-last``: eager float32 on NHWC tensors (the model's parameters are converted in place);
- ``bf16-channels-last``: both (bf16 autocast on NHWC tensors);
- ``compile``: ``torch.compile`` of restore (minutes of compilation per process and input shape);
- ``onnx``: the network exported to ONNX (:mod:`diffdeblur.export`) and run by ONNX Runtime's
  CPU execution provider with all graph optimisations. The exported graph is cached in the user's
  cache folder (:mod:`diffdeblur.cache`), keyed by a hash of the weights and config, so only the
  first use of a model pays for the export.

``auto`` is :data:`CUDA_DEFAULT` on CUDA and :data:`CPU_DEFAULT` on the CPU, chosen by
``python -m benchmarks.bench.engines`` (docs/results/engines.md): the fastest engine whose PSNR stays
within 0.05 dB of eager fp32, on the default model and on NAFNet width 32, with no start-up cost (the
ONNX export costs a minute or more once per model and weights): bf16 autocast on NHWC tensors where
the CPU has native bf16 instructions (AVX-512 BF16 or AMX, as oneDNN reports; engines.md), fp32 on NHWC
tensors elsewhere: on an AVX2-only CPU bf16 is emulated and many times slower, while oneDNN's NHWC
convolutions (depthwise ones above all) beat its NCHW ones once TLC's local pooling keeps the NHWC layout
(docs/results/avx2/engines.md).
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Callable

import torch
from torch import nn

from .cache import read_cached, write_cached
from .errors import ConfigError
from .export import OnnxModel, check_exportable, onnx_bytes
from .options import ENGINES

CPU_DEFAULT = "bf16-channels-last"
CPU_DEFAULT_NO_BF16 = "channels-last"  # CPUs without native bf16 (e.g. AVX2 only): fp32
CUDA_DEFAULT = "bf16"
Runner = Callable[..., torch.Tensor]  # runner(blur_on_device, **restore_options) -> restored


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (else bf16 is emulated, slower than fp32)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_engine(engine: str, model: nn.Module, device: torch.device) -> str:
    """The concrete engine for ``engine`` (``auto`` included) on ``device``; ConfigError if unknown
    or impossible (ONNX on CUDA or for a model that cannot be exported)."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine '{engine}' (choose from {', '.join(ENGINES)})")
    if isinstance(model, OnnxModel):
        if engine not in ("auto", "onnx"):
            raise ConfigError(f"an ONNX file runs with the onnx engine only, not '{engine}'")
        return "onnx"
    if engine == "auto":
        if device.type == "cuda":
            return CUDA_DEFAULT
        return CPU_DEFAULT if cpu_has_bf16() else CPU_DEFAULT_NO_BF16
    if engine == "onnx":
        if device.type != "cpu":
            raise ConfigError("the onnx engine runs on the CPU (use --device cpu)")
        check_exportable(model)
    return engine


def training_engine(device: torch.device) -> str:
    """The engine for a model whose weights keep changing (validation during training): never an
    export (it would be redone at every validation); bf16 autocast on CUDA as before, fp32 on the CPU."""
    return CUDA_DEFAULT if device.type == "cuda" else "eager"


def weights_key(model: nn.Module) -> str:
    """Hash of a model's config, weights and the torch version: the name of its cached ONNX graph."""
    h = hashlib.sha256(f"{getattr(model, 'diffdeblur_config', type(model).__name__)}|{torch.__version__}".encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def onnx_runner(model: nn.Module) -> OnnxModel:
    """ONNX Runtime session for ``model``, from the cache or exported now (and cached)."""
    name = f"onnx-{weights_key(model)}.onnx"
    data = read_cached(name)
    if data is None:
        data = onnx_bytes(model)
        write_cached(name, data)
    return OnnxModel(data)


def make_runner(model: nn.Module, engine: str, device: torch.device) -> Runner:
    """A function running ``model.restore`` with the concrete ``engine`` (see :func:`resolve_engine`)."""
    if engine == "onnx":
        onnx_model = model if isinstance(model, OnnxModel) else onnx_runner(model)
        return lambda blur, **options: onnx_model.restore(blur, **options)
    if engine == "compile":
        compiled = torch.compile(model.restore, dynamic=False)
        return lambda blur, **options: compiled(blur, **options)
    nhwc = engine in ("channels-last", "bf16-channels-last")
    if nhwc:
        model.to(memory_format=torch.channels_last)

    def run(blur: torch.Tensor, **options: Any) -> torch.Tensor:
        if nhwc:
            blur = blur.contiguous(memory_format=torch.channels_last)
        with precision(device, engine):
            return model.restore(blur, **options)

    return run


def precision(device: torch.device, engine: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for the ``bf16`` engines; float32 otherwise."""
    if engine in ("bf16", "bf16-channels-last"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def runner_for(model: nn.Module, engine: str, device: torch.device) -> Runner:
    """:func:`make_runner`, kept on the model so that later calls reuse its compiled graph or session.

    Kept per weights version: a model trained further (or loaded with other weights) in place gets
    a new runner, never a stale exported graph."""
    stamp = (engine, tuple(t._version for t in model.state_dict(keep_vars=True).values()))
    runners: dict[tuple, Runner] = model.__dict__.setdefault("_diffdeblur_runners", {})
    if stamp not in runners:
        runners.clear()
        runners[stamp] = make_runner(model, engine, device)
    return runners[stamp]
