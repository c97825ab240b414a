"""Low-level reading of diffdeblur ``.safetensors`` files, below the model registry.

A diffdeblur file holds the weights plus, in the metadata key ``diffdeblur``, the JSON config that
rebuilds the model (``{"model": name, "kwargs": {...}, "format_version": 1, "info": {...}}``).
This module only reads bytes: it knows no model. Networks that need frozen weights (the latent
model's autoencoder) read them here; :mod:`diffdeblur.checkpoint` builds models from them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import CheckpointError

METADATA_KEY = "diffdeblur"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100_000_000  # a larger header length means the file is not safetensors
WEIGHTS_DIR = Path(__file__).parent / "weights"


def shipped_weights(name: str) -> Path | None:
    """Path of ``weights/<name>.safetensors`` inside the package, or None."""
    p = WEIGHTS_DIR / f"{name}.safetensors"
    return p if p.is_file() else None


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The embedded config of a diffdeblur ``.safetensors`` file (only the header is read)."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if header_len <= 0 or header_len > MAX_HEADER_BYTES:
                raise CheckpointError(f"{p}: not a safetensors file")
            header = json.loads(f.read(header_len))
    except FileNotFoundError:
        raise CheckpointError(f"{p}: checkpoint not found") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{p}: not a readable safetensors file ({exc})") from None
    meta = header.get("__metadata__") or {}
    if METADATA_KEY not in meta:
        raise CheckpointError(f"{p}: safetensors file has no diffdeblur config (was it written by diffdeblur?)")
    try:
        return json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError:
        raise CheckpointError(f"{p}: embedded diffdeblur config is not valid JSON") from None


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file, on the CPU; a one-line CheckpointError if unreadable."""
    p = os.fspath(path)
    try:
        return load_file(p, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{p}: corrupt weights ({exc})") from None


def compare_keys(expected: dict, got: dict) -> tuple[list[str], list[str]]:
    """(missing, unexpected) tensor names of ``got`` against ``expected``, sorted."""
    return sorted(set(expected) - set(got)), sorted(set(got) - set(expected))


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load ``state`` strictly into ``module``; any mismatch is one CheckpointError line naming ``where``."""
    missing, unexpected = compare_keys(module.state_dict(), state)
    if missing or unexpected:
        raise CheckpointError(f"{where}: incompatible checkpoint (missing {len(missing)} tensors e.g. "
                              f"{missing[:2]}, unexpected {len(unexpected)} e.g. {unexpected[:2]})")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: incompatible checkpoint ({str(exc).splitlines()[0]})") from None
