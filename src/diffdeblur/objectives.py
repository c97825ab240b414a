"""The training objectives by name: the table every method file fills (:data:`diffdeblur.methods.base.OBJECTIVES`).

An objective is ``fn(model, batch, generator) -> (loss, logs)`` where ``batch`` is a dict of (B, C, h, w) float
tensors in [0, 1] with ``"input"`` and ``"target"`` (the deblurring data's ``"blur"`` / ``"sharp"`` are read as
those), optionally ``"mask"`` and ``"partials"`` (partial exposures (B, K, 3, h, w) from blur synthesis);
``generator`` a ``torch.Generator`` (or None) for any randomness the objective draws, ``loss`` a scalar tensor and
``logs`` a dict of floats for the training log.

Each objective lives in its method's file, beside the wrapper whose attributes it reads:

- regression (:mod:`diffdeblur.methods.regression`): ``l1``, ``charbonnier``, ``psnr``, ``l1-fft``,
  ``charbonnier-fft``, ``mimo``;
- ``diffusion`` (:mod:`~diffdeblur.methods.sr3`), ``latent-diffusion`` (:mod:`~diffdeblur.methods.latent`),
  ``autoencoder`` (:mod:`~diffdeblur.methods.autoencoder`);
- ``indi`` (:mod:`~diffdeblur.methods.indi`), ``resshift`` (:mod:`~diffdeblur.methods.resshift`);
- ``blurdm`` (the model's stage) and ``blurdm-stage1/2/3`` (:mod:`~diffdeblur.methods.blurdm`).

A model's default objective is the one its preset names (``spec(..., loss=NAME)``): :func:`default_objective`.
"""
from __future__ import annotations

from torch import nn

from .errors import UnknownNameError
from .methods import METHODS  # noqa: F401  (importing the methods registers their objectives)
from .methods.base import OBJECTIVES, Objective, register_objective
from .registry import get_entry, model_config

__all__ = ["Objective", "get_objective", "objective_names", "register_objective", "default_objective",
           "default_objective_name"]


def get_objective(name: str) -> Objective:
    """The registered objective ``name``; an UnknownNameError lists the known ones."""
    if name not in OBJECTIVES:
        raise UnknownNameError(f"unknown loss '{name}'; known: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]


def objective_names() -> list[str]:
    return sorted(OBJECTIVES)


def default_objective_name(model: nn.Module) -> str:
    """The objective the model's preset names (through a DDP / compile wrapper too)."""
    inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None) or model
    return get_entry(model_config(inner)["model"]).loss


def default_objective(model: nn.Module) -> Objective:
    """:func:`get_objective` of :func:`default_objective_name`."""
    return get_objective(default_objective_name(model))
