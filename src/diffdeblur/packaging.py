"""Ship a training run: one slim weights file, with its model config and where it came from.

A run folder (``train.out_dir`` of :func:`diffdeblur.train.train`) holds ``best.safetensors`` (written at the
validation with the highest PSNR, when the run validates), ``final.safetensors`` (the last step's inference
weights), ``state.pt`` (the training state), ``log.csv`` and ``val.csv``. :func:`package_run` turns one of its
checkpoints into the file a user downloads: float16 by default (half the size; loading casts back to float32),
the model config in its one shape (``{"model": NAME, "kwargs": {...}}``, read by :func:`diffdeblur.load_model`)
and the provenance in ``info`` (:func:`run_provenance`): the run folder's name (never an absolute path), its
steps, the chosen checkpoint and its validation scores, the training config, the package version and the date.

Which checkpoint (``weights``), the rule :data:`SELECTION_RULE`:

- ``auto``: ``best`` when the run validated (it then wrote ``best.safetensors``, the checkpoint with the
  highest validation PSNR, which is never below the last step's validated score), else ``final``;
- ``best`` / ``final``: that file, an error when the run has none.
"""
from __future__ import annotations

import csv
import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import (BEST_FILE, FINAL_FILE, STATE_FILE, VAL_LOG, load_model_file, load_training_state,
                         read_metadata, save_model)
from .errors import CheckpointError, ConfigError, OutputError
from .io import check_output_file, output_folder
from .version import __version__

WEIGHT_CHOICES = ("auto", "best", "final")
STORAGE_DTYPES = ("float16", "float32")
SELECTION_RULE = ("auto = best.safetensors when the run validated (the checkpoint with the highest validation "
                  "PSNR), else final.safetensors")
CHECKPOINT_FILES = {"best": BEST_FILE, "final": FINAL_FILE}


@dataclass(frozen=True)
class PackagedRun:
    """What :func:`package_run` wrote: the file, the checkpoint chosen (``best`` | ``final``) and why
    (``reason``, one sentence), the step it was saved at, its validation scores (None when not validated)
    and the ``info`` embedded in the file."""

    path: Path
    weights: str
    reason: str
    step: int | None
    val: dict[str, float] | None
    info: dict[str, Any]


def run_checkpoints(run_dir: str | os.PathLike) -> dict[str, Path]:
    """The checkpoints of a run folder that exist, ``{"best": path, "final": path}``; a one-line
    CheckpointError for a missing folder or one without either file."""
    run = Path(run_dir)
    if not run.exists():
        raise CheckpointError(f"{run}: training run folder not found")
    if not run.is_dir():
        raise CheckpointError(f"{run}: not a folder (give the train.out_dir of a diffdeblur training run)")
    found = {name: run / file for name, file in CHECKPOINT_FILES.items() if (run / file).is_file()}
    if not found:
        unfinished = " (the run has not finished: continue it with diffdeblur train --resume)" \
            if (run / STATE_FILE).is_file() else " (not a diffdeblur training run folder)"
        raise CheckpointError(f"{run}: no {BEST_FILE} or {FINAL_FILE}{unfinished}")
    return found


def _val_rows(run: Path) -> list[dict[str, float]]:
    path = run / VAL_LOG
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _checkpoint_step(info: dict[str, Any]) -> int | None:
    """The step a checkpoint was saved at: best records "step", final the run's "steps"."""
    step = info.get("step", info.get("steps"))
    return int(step) if step is not None else None


def _checkpoint_val(run: Path, name: str, info: dict[str, Any]) -> dict[str, float] | None:
    """The validation scores of a checkpoint: best records them; final's are the val.csv row at its step."""
    if name == "best":
        return info.get("val")
    step = _checkpoint_step(info)
    row = next((r for r in _val_rows(run) if step is not None and int(r.get("step", -1)) == step), None)
    return {k: v for k, v in row.items() if k != "step"} if row else None


def choose_weights(run_dir: str | os.PathLike, weights: str = "auto") -> tuple[str, str]:
    """``(name, reason)``: the checkpoint of the run that ``weights`` picks (``best`` | ``final``) by the rule
    :data:`SELECTION_RULE`, and the reason in one sentence."""
    if weights not in WEIGHT_CHOICES:
        raise ConfigError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, got '{weights}'")
    run = Path(run_dir)
    found = run_checkpoints(run)
    if weights != "auto":
        if weights not in found:
            other = next(iter(found))
            raise CheckpointError(f"{run}: no {CHECKPOINT_FILES[weights]} (the run has {found[other].name}; "
                                  f"use --weights {other} or auto)")
        return weights, f"{weights}: asked for"
    if "best" in found:
        return "best", "auto: the run validated, so best.safetensors (the highest validation PSNR)"
    return "final", "auto: the run did not validate, so final.safetensors (the last step)"


def portable_config(config: Any, run_name: str) -> Any:
    """``config`` with no absolute path: ``train.out_dir`` becomes the run folder's name and every other absolute
    path its last component (a data root, an init_from file), so that a shipped file names no machine's folders."""
    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [scrub(v) for v in value]
        if isinstance(value, str) and os.path.isabs(value):
            return Path(value).name
        return value

    out = scrub(config)
    if isinstance(out, dict) and isinstance(out.get("train"), dict) and "out_dir" in out["train"]:
        out["train"] = {**out["train"], "out_dir": run_name}
    return out


def _training_config(run: Path, files: dict[str, Path]) -> tuple[dict[str, Any] | None, int | None, float | None]:
    """(training config, steps trained, training seconds) of a run: from final.safetensors when it exists, else
    from the training state."""
    if "final" in files:
        info = read_metadata(files["final"]).get("info", {})
        if info.get("config"):
            return info["config"], _checkpoint_step(info), info.get("train_seconds")
    if (run / STATE_FILE).is_file():
        state = load_training_state(run / STATE_FILE)
        config = state.get("config")
        return (json.loads(config) if isinstance(config, str) else config), int(state["step"]), None
    return None, None, None


def run_provenance(run_dir: str | os.PathLike, weights: str = "auto", dtype: str = "float16") -> dict[str, Any]:
    """The ``info`` :func:`package_run` embeds: ``run`` (the folder's name), ``weights`` (best | final),
    ``selection`` (why), ``weights_step``, ``val`` (its validation scores or None), ``steps`` and ``train_seconds``
    of the run, ``config`` (the training config, no absolute paths), ``storage_dtype``, ``diffdeblur_version``
    and ``date`` (YYYY-MM-DD)."""
    run = Path(run_dir)
    files = run_checkpoints(run)
    name, reason = choose_weights(run, weights)
    info = read_metadata(files[name]).get("info", {})
    config, steps, seconds = _training_config(run, files)
    return {"run": run.resolve().name, "weights": name, "selection": reason, "weights_step": _checkpoint_step(info),
            "val": _checkpoint_val(run, name, info), "steps": steps, "train_seconds": seconds,
            "config": portable_config(config, run.resolve().name) if config is not None else None,
            "storage_dtype": dtype, "diffdeblur_version": __version__,
            "date": datetime.date.today().isoformat()}


def package_run(run_dir: str | os.PathLike, output: str | os.PathLike, *, weights: str = "auto",
                dtype: str = "float16", overwrite: bool = False, overrides: dict[str, Any] | None = None,
                info: dict[str, Any] | None = None) -> PackagedRun:
    """Write the shipped-weights file ``output`` (``.safetensors``) from the training run in ``run_dir``.

    ``weights``: ``auto`` | ``best`` | ``final``, chosen by :data:`SELECTION_RULE` (auto: ``best`` when the run
    validated, else ``final``). ``dtype``: ``float16`` (default: half the size) or ``float32``. ``overrides``:
    hyper-parameters that replace the run's and change no tensor (a chain's ``default_steps``); the model is
    rebuilt with them. ``info``: entries added to (or replacing) the provenance of :func:`run_provenance`.

    The file is written atomically; an existing ``output`` is refused unless ``overwrite``. A missing or empty
    run folder, a bad choice and an unwritable output are one-line errors (:class:`~diffdeblur.errors.DiffdeblurError`).
    The result loads with :func:`diffdeblur.load_model` and gives the chosen checkpoint's outputs (up to the
    float16 rounding of the stored weights).
    """
    if dtype not in STORAGE_DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(STORAGE_DTYPES)}, got '{dtype}'")
    out = check_output_file(output, (".safetensors",))
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: already exists; pass --overwrite (overwrite=True) to replace it")
    provenance = run_provenance(run_dir, weights, dtype)
    name = provenance["weights"]
    source = run_checkpoints(run_dir)[name]
    model = load_model_file(source, "cpu", overrides=overrides)
    embedded = {**provenance, **(info or {})}
    with output_folder(out.parent):  # a folder made here is removed again if nothing is written
        try:
            save_model(model, out, info=embedded, dtype=getattr(torch, dtype))
        except OSError as exc:
            raise OutputError(f"{out}: cannot write ({exc.strerror or exc})") from None
    return PackagedRun(out, name, provenance["selection"], provenance["weights_step"], provenance["val"], embedded)
