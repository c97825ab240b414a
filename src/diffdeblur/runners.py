"""Runners: how ``model.restore`` runs with one concrete engine (:mod:`diffdeblur.engines` says which one ``auto``
picks), and the private copies, compiled functions and exported sessions they keep.

``eager`` and ``bf16`` run the caller's model inside :func:`eval_mode` (every submodule's ``training`` flag is put
back after); the channels-last engines run a :func:`private_copy` converted to channels-last, ``compile`` compiles a
private copy's restore, ``onnx`` / ``openvino`` run an export of a private copy. Prepared runners are kept in
:data:`_RUNNERS`, a weak map keyed by the model (nothing is stored on it), per weights version.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import tempfile
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from .cache import read_cached, write_cached
from .errors import ConfigError
from .export import OnnxModel, onnx_bytes, vector_noise
from .models.blocks import pad_to_multiple
from .models.protocol import check_options

Runner = Callable[..., torch.Tensor]  # runner(blur_on_device, **restore_options) -> restored
# the runners prepared for a model (a converted or compiled copy, an ONNX / OpenVINO session), per model
# object (weak, as _CHOSEN): model -> {(engine, device): (weak refs to its tensors, their versions, runner)}.
# A runner holds no reference to its model (else the weak key would never go).
_RUNNERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[tuple, tuple, Runner]]] = weakref.WeakKeyDictionary()
# engines that run a private copy (converted or compiled) or an exported graph: prepared once, kept in _RUNNERS
PREPARED_ENGINES = ("channels-last", "bf16-channels-last", "compile", "onnx", "openvino")


def config_of(model: nn.Module) -> Any:
    """The model's own hyper-parameters (:class:`~diffdeblur.models.hparams.HyperParameters`), the same for a model
    built by name, from its class or loaded from a file; else the registry's config, else None (ONNX graphs)."""
    return getattr(model, "hparams", None) or getattr(model, "diffdeblur_config", None)


def private_copy(model: nn.Module, memory_format: torch.memory_format = torch.contiguous_format) -> nn.Module:
    """A deep copy of ``model`` in eval mode, its tensors in ``memory_format``: what engines convert,
    compile, export and measure, never the caller's model."""
    with torch.inference_mode(False):  # ordinary tensors, as the caller's: an ONNX export can trace them
        return copy.deepcopy(model).eval().to(memory_format=memory_format)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with every submodule in eval mode inside the block; each one's own ``training`` flag
    is put back after it (k-diffusion's ``utils.eval_mode``): the caller's model looks untouched."""
    flags = [(m, m.training) for m in model.modules()]
    if not any(training for _, training in flags):  # already in eval mode (a loaded model): nothing to change
        yield model
        return
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training


# -- runners -----------------------------------------------------------------------------------------

def weights_key(model: nn.Module) -> str:
    """Hash of a model's config, weights and the torch version: the name of its cached ONNX graph."""
    h = hashlib.sha256(f"{config_of(model) or type(model).__name__}|{torch.__version__}".encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def onnx_graph_name(model: nn.Module) -> str:
    """The cache file name of ``model``'s exported ONNX graph."""
    return f"onnx-{weights_key(model)}.onnx"


def onnx_graph(model: nn.Module) -> bytes:
    """``model``'s ONNX graph, from the cache or exported now (and cached)."""
    name = onnx_graph_name(model)
    data = read_cached(name)
    if data is None:
        data = onnx_bytes(private_copy(model))  # the export puts its model in eval mode, float32, on the CPU
        write_cached(name, data)
    return data


def onnx_runner(model: nn.Module) -> OnnxModel:
    """ONNX Runtime session for ``model``, from the cache or exported now (and cached)."""
    return OnnxModel(onnx_graph(model))


def require_openvino() -> Any:
    """The ``openvino`` module; ConfigError when it is not installed (it is optional, not a dependency)."""
    try:
        import openvino
    except ImportError:
        raise ConfigError("the openvino engine needs OpenVINO, which diffdeblur does not install: "
                          "pip install openvino") from None
    return openvino


def openvino_runner(model: nn.Module) -> Runner:
    """OpenVINO's CPU plugin compiling ``model``'s ONNX graph (the onnx engine's, cached), with the
    threads PyTorch uses and the latency hint; pads to the network's stride and crops back as
    :class:`~diffdeblur.export.OnnxModel` does, and feeds a BlurDM graph its noise vector."""
    ov = require_openvino()
    data = onnx_graph(model)
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:  # OpenVINO's ONNX reader takes a file
        path = Path(tmp) / "restore.onnx"
        path.write_bytes(data)
        compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                      {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    multiple = int(getattr(model, "size_multiple", 1))
    noisy = vector_noise(model)
    owner = weakref.ref(model)  # the runner is kept in _RUNNERS keyed by the model: no strong reference back

    def run(blur: torch.Tensor, noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
            **options: Any) -> torch.Tensor:
        check_options("the openvino engine", ("noise", "generator"), options)
        x, h, w = pad_to_multiple(blur.detach().float().cpu(), multiple)
        feeds = [np.ascontiguousarray(x.numpy())]
        if noisy:
            noise = owner().noise_like(blur, generator) if noise is None else noise
            feeds.append(np.ascontiguousarray(noise.detach().float().cpu().numpy()))
        out = np.array(compiled(feeds)[compiled.output(0)])
        return torch.from_numpy(out)[:, :, :h, :w]

    return run


def make_runner(model: nn.Module, engine: str, device: torch.device) -> Runner:
    """A function running ``model.restore`` with the concrete ``engine`` (see :func:`resolve_engine`).

    ``eager`` and ``bf16`` run ``model`` itself (the caller puts it in eval mode, :func:`eval_mode`);
    the channels-last engines run a private copy converted to channels-last, ``compile`` compiles a
    private copy's restore, ``onnx`` / ``openvino`` an export of a private copy: ``model`` is never
    converted, and the prepared runners hold no reference to it."""
    if engine == "onnx":
        onnx_model = model if isinstance(model, OnnxModel) else onnx_runner(model)
        return lambda blur, **options: onnx_model.restore(blur, **options)
    if engine == "openvino":
        return openvino_runner(model)
    if engine == "compile":
        compiled = torch.compile(private_copy(model).restore, dynamic=False)
        return lambda blur, **options: compiled(blur, **options)
    nhwc = engine in ("channels-last", "bf16-channels-last")
    if nhwc:
        model = private_copy(model, torch.channels_last)

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
    """:func:`make_runner`; for :data:`PREPARED_ENGINES` kept in :data:`_RUNNERS` (a weak map keyed by
    the model, nothing stored on it) so that later calls reuse its copy, compiled graph or session.

    Kept per weights version: a model trained further, loaded with other weights in place or moved to
    another device (other tensors) gets a new runner, never a stale copy or exported graph."""
    if engine not in PREPARED_ENGINES or isinstance(model, OnnxModel):  # nothing to prepare: run the model
        return make_runner(model, engine, device)
    tensors = list(model.state_dict(keep_vars=True).values())
    versions = tuple(t._version for t in tensors)
    runners = _RUNNERS.setdefault(model, {})
    kept = runners.get((engine, str(device)))
    if kept is not None:
        refs, kept_versions, runner = kept
        if kept_versions == versions and len(refs) == len(tensors) and all(r() is t for r, t in zip(refs, tensors)):
            return runner
    runners.clear()  # one prepared runner per model: a stale copy or session goes before the next is made
    runner = make_runner(model, engine, device)
    runners[(engine, str(device))] = (tuple(weakref.ref(t) for t in tensors), versions, runner)
    return runner
