"""Checkpoints: slim self-describing inference files and full training states.

Inference file: ``.safetensors`` holding the weights, with the JSON config that rebuilds the
model (``{"model": name, "kwargs": {...}}``, plus optional free-form ``info``) in the metadata
key ``diffdeblur``. Training state: a ``torch.save`` dict of tensors and plain values only, read
back with ``weights_only=True`` (never unpickling arbitrary objects). Both are written atomically.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn

from .errors import CheckpointError
from .io import atomic_write_bytes
from .registry import build_model, model_config
from .tensorfile import FORMAT_VERSION, METADATA_KEY, load_into, read_metadata, read_tensors
from .typecheck import is_plain

__all__ = ["CheckpointError", "save_model", "read_metadata", "load_model_file", "save_training_state",
           "load_training_state", "STATE_FILE", "BEST_FILE", "FINAL_FILE", "TRAIN_LOG", "VAL_LOG"]

# the files of a training run folder (train.out_dir), written by diffdeblur.train, read by diffdeblur.packaging
STATE_FILE = "state.pt"  # the training state (save_training_state)
BEST_FILE = "best.safetensors"  # inference weights at the validation with the highest PSNR
FINAL_FILE = "final.safetensors"  # inference weights at the last step (EMA when on)
TRAIN_LOG = "log.csv"  # one row per logged step
VAL_LOG = "val.csv"  # one row per validation


def save_model(model: nn.Module, path: str | os.PathLike, info: dict[str, Any] | None = None,
               state_dict: dict[str, torch.Tensor] | None = None, dtype: torch.dtype = torch.float32) -> None:
    """Write ``model``'s weights (or the given ``state_dict``, e.g. EMA weights) with its config.

    The config is the model's own (:func:`diffdeblur.registry.model_config`): a model built by
    :func:`~diffdeblur.registry.build_model`, or directly from a registered class that records its
    hyper-parameters (:class:`~diffdeblur.models.hparams.HyperParameters`), can be saved.

    ``dtype``: storage type of the floating-point tensors (float16 halves a shipped file; loading
    casts back to the model's float32 parameters, so only the stored values are rounded).
    """
    if not dtype.is_floating_point:
        raise ValueError(f"save_model: dtype must be a floating-point type, got {dtype}")
    cfg = dict(model_config(model))
    if not is_plain(cfg["kwargs"]):
        raise ValueError(f"save_model: the hyper-parameters of model '{cfg['model']}' are not plain JSON data "
                         f"({cfg['kwargs']!r}); such a model cannot be rebuilt from a file")
    cfg["format_version"] = FORMAT_VERSION
    if info:
        cfg["info"] = info
    sd = state_dict if state_dict is not None else model.state_dict()
    tensors = {k: v.detach().to(dtype).cpu().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
               for k, v in sd.items()}
    atomic_write_bytes(path, save(tensors, metadata={METADATA_KEY: json.dumps(cfg)}))


def load_model_file(path: str | os.PathLike, device: str | torch.device = "cpu",
                    overrides: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild a model from a diffdeblur ``.safetensors`` file alone; returns it in eval mode.

    ``overrides``: hyper-parameters that replace the file's (those that change no tensor, e.g. a chain's
    ``default_steps``); the model is built with them, so its own config carries them.
    """
    p = os.fspath(path)
    cfg = read_metadata(p)
    try:
        model = build_model(cfg["model"], **{**cfg.get("kwargs", {}), **(overrides or {})})
    except (KeyError, ValueError) as exc:  # unknown model name or bad hyper-parameters
        raise CheckpointError(f"{p}: incompatible checkpoint ({exc})") from None
    load_into(model, read_tensors(p), p)
    model.checkpoint_info = cfg.get("info", {})
    return model.to(device).eval()


def save_training_state(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Atomically write a training state (model/EMA/optimizer/scheduler state dicts, RNG, step)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training state written by :func:`save_training_state` (``weights_only=True``)."""
    p = os.fspath(path)
    if not Path(p).is_file():
        raise CheckpointError(f"{p}: training state not found")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"{p}: corrupt or unsafe training state ({str(exc).splitlines()[0]})") from None
