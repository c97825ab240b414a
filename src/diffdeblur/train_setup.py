"""What a training run needs around its steps (:mod:`diffdeblur.train` is the loop): claiming the output
folder, the process settings the command line applies, the run's scoped random state, the distributed set-up
under ``torchrun``, the learning-rate schedule, the EMA of the weights, and weights from ``train.init_from``.
"""
from __future__ import annotations

import math
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import BEST_FILE, FINAL_FILE, STATE_FILE, TRAIN_LOG, VAL_LOG
from .config import ExperimentConfig
from .device import resolve_device
from .errors import CheckpointError, TrainingError
from .tensorfile import read_tensors, shipped_weights

# what a run writes into out_dir: a new run there must not mix with (or replace) an earlier one
RUN_FILES = (STATE_FILE, BEST_FILE, FINAL_FILE, TRAIN_LOG, VAL_LOG)
RUN_FOLDERS = ("samples", "tb")


def claim_out_dir(out_dir: Path, resume: bool, overwrite: bool, is_main: bool) -> None:
    """Refuse an ``out_dir`` that holds an earlier run unless ``resume`` (continue it) or
    ``overwrite`` (rank 0 deletes its files first), so that a new run never silently replaces a
    better ``best.safetensors`` or appends to another run's CSV logs."""
    found = [name for name in RUN_FILES + RUN_FOLDERS if (out_dir / name).exists()]
    if not found or resume:
        return
    if not overwrite:
        raise TrainingError(f"{out_dir}: holds an earlier training run ({', '.join(found)}); pass --resume to "
                            f"continue it, --overwrite to replace it, or choose another train.out_dir")
    if is_main:
        for name in found:
            path = out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def apply_process_settings(cfg: ExperimentConfig) -> None:
    """Apply the config's process-wide settings: ``train.threads`` > 0 sets ``torch.set_num_threads``
    (0 leaves the thread count as it is). ``diffdeblur train`` calls it before :func:`train`; the library's
    :func:`train` never does (a thread count is the whole process's, not one call's)."""
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)


def _cuda_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextmanager
def run_rng(seed: int, device: torch.device, cpu_state: torch.Tensor | None = None) -> Iterator[None]:
    """The global RNG scoped to a block: inside, the CPU generator starts from ``seed`` (or from
    ``cpu_state``, a state saved by :func:`torch.get_rng_state`) and the training device's CUDA generator
    from ``seed``; on exit both are as they were before (:func:`torch.random.fork_rng`). Modules draw their
    initial weights and dropout masks from the global generators; this makes them depend on the run's seed
    only, without reseeding the caller's process."""
    cuda = _cuda_devices(device)
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        if cpu_state is not None:
            torch.set_rng_state(cpu_state)
        yield


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str = "auto") -> tuple[DistInfo, torch.device]:
    """Set up torch.distributed when launched by torchrun (WORLD_SIZE > 1).

    The device comes from :func:`diffdeblur.device.resolve_device`: ``cuda`` without a GPU is a
    DeviceError, never a silent fall-back to the CPU.
    """
    dev = resolve_device(device_pref)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), dev
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = dev.type == "cuda"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
    return DistInfo(rank, world, local), torch.device(f"cuda:{local}" if use_cuda else "cpu")


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base LR at ``step``: linear warm-up, then cosine to min_ratio (or constant)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def init_from_path(init_from: str) -> str:
    """``train.init_from`` as a file: a path, or the name of weights shipped in the package
    (``default`` = the shipped default model, resolved by :func:`~diffdeblur.tensorfile.shipped_weights`)."""
    if init_from.endswith(".safetensors") or os.sep in init_from or os.path.exists(init_from):
        return init_from
    shipped = shipped_weights(init_from)
    if shipped is None:
        raise TrainingError(f"init_from '{init_from}': no such file and no shipped weights of that name")
    return str(shipped)


def load_matching_weights(model: nn.Module, path: str) -> tuple[int, int]:
    """Initialise the tensors of ``model`` that a .safetensors file has with the same name and shape.
    Returns (loaded, total). Used to start a stage from an earlier stage's weights.

    A model may list ``init_prefixes`` (e.g. ``("unet.",)``): a file tensor ``k`` then also fills the
    model's ``prefix + k`` when no tensor of the file has that exact name, so that a plain regression
    checkpoint initialises the network inside a wrapper (the few-step chains' time-conditioned NAFNet)."""
    try:
        sd = read_tensors(path)
    except CheckpointError as exc:
        raise TrainingError(f"{path}: cannot read init_from weights ({exc})") from None
    own = model.state_dict()
    matched = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    for prefix in getattr(model, "init_prefixes", ()):
        matched.update({prefix + k: v for k, v in sd.items() if prefix + k not in matched and prefix + k not in sd
                        and prefix + k in own and own[prefix + k].shape == v.shape})
    if not matched:
        raise TrainingError(f"{path}: no tensor matches the model (wrong init_from checkpoint?)")
    model.load_state_dict(matched, strict=False)
    return len(matched), len(own)


def ema_decay(decay: float, step: int) -> float:
    """EMA decay with warm-up, min(decay, (1 + step) / (10 + step)) (as in TensorFlow's
    ExponentialMovingAverage with num_updates): without it, the random initial weights keep a share
    decay**step of the average (37 % after 1000 steps at 0.999)."""
    return min(decay, (1 + step) / (10 + step))


def restore_ema(ema: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> None:
    """Copy a saved EMA (read on the CPU) into ``ema`` in place, so it stays on the training device."""
    with torch.no_grad():
        for k, v in saved.items():
            ema[k].copy_(v)


def _ema_update(ema: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                ema[k].copy_(v)
