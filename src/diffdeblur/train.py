"""The training loop: one readable function over (model, objective, data, config).

- Data of step s is fixed by (seed, s) (see :mod:`diffdeblur.data.datasets`), so a resumed run
  sees exactly the batches an uninterrupted run would.
- Training state (model, EMA, optimizer, scheduler, RNG, step) goes to ``out_dir/state.pt``
  atomically every ``save_every`` steps; ``resume=True`` continues from it bit-exactly on CPU.
- Inference files: ``out_dir/final.safetensors`` (EMA weights when EMA is on) and
  ``out_dir/best.safetensors`` (best validation PSNR), with the model config embedded.
- Distributed data parallel under ``torchrun``: NCCL on GPUs, gloo on CPU; the global batch
  ``data.batch_size`` is split over ranks; rank 0 logs, validates and saves.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import load_training_state, save_model, save_training_state
from .config import ExperimentConfig, config_to_dict
from .data.datasets import StepBatchSampler, build_train_dataset
from .device import autocast
from .evaluate import evaluate
from .io import write_image
from .losses import get_objective
from .registry import build_model

STATE_FILE = "state.pt"


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, incompatible resume state); one-line message."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str = "auto") -> tuple[DistInfo, torch.device]:
    """Set up torch.distributed when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        dev = torch.device("cuda" if torch.cuda.is_available() and device_pref != "cpu" else "cpu")
        return DistInfo(), dev
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
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


class ObjectiveModule(nn.Module):
    """Wraps (model, objective) so that DDP sees the whole loss computation as one forward."""

    def __init__(self, model: nn.Module, objective: Any) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None):
        return self.objective(self.model, batch, generator)


def load_matching_weights(model: nn.Module, path: str) -> tuple[int, int]:
    """Initialise the tensors of ``model`` that a .safetensors file has with the same name and shape.
    Returns (loaded, total). Used to start a stage from an earlier stage's weights."""
    from safetensors.torch import load_file

    try:
        sd = load_file(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - a bad file is a one-line user error
        raise TrainingError(f"{path}: cannot read init_from weights ({exc})") from None
    own = model.state_dict()
    matched = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise TrainingError(f"{path}: no tensor matches the model (wrong init_from checkpoint?)")
    model.load_state_dict(matched, strict=False)
    return len(matched), len(own)


def ema_decay(decay: float, step: int) -> float:
    """EMA decay with warm-up, min(decay, (1 + step) / (10 + step)) (as in TensorFlow's
    ExponentialMovingAverage with num_updates): without it, the random initial weights keep a share
    decay**step of the average (37 % after 1000 steps at 0.999)."""
    return min(decay, (1 + step) / (10 + step))


def _ema_update(ema: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                ema[k].copy_(v)


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional extra
        return None
    return SummaryWriter(str(out_dir / "tb"))


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """Randomness the objective draws at a step (noise levels, noise) is fixed by (seed, step, rank)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 131 + rank)


def validate(model: nn.Module, cfg: ExperimentConfig, out_dir: Path, step: int) -> dict[str, float]:
    d, t = cfg.data, cfg.train
    sample_dir = out_dir / "samples"
    saved: list[str] = []

    def keep_sample(name: str, img) -> None:
        if len(saved) < t.sample_images:
            sample_dir.mkdir(parents=True, exist_ok=True)
            write_image(sample_dir / f"step{step:07d}_{name.replace('/', '_')}.png", img)
            saved.append(name)

    report = evaluate(model, d.val, tile=d.val_tile, crop=d.val_crop, max_images=d.val_max_images,
                      seed=cfg.seed, on_image=keep_sample, **t.val_options)
    return {k: report.summary[k] for k in ("psnr", "ssim", "input_psnr", "input_ssim", "images")}


def train(cfg: ExperimentConfig, resume: bool = False, device: str = "auto", show_progress: bool = True,
          stop_after: int | None = None) -> dict[str, Any]:
    """Train ``cfg``; returns a summary dict. ``stop_after`` ends the run early at that step
    (after checkpointing), as an interruption would; used to test exact resumption."""
    info, dev = init_distributed(device)
    t = cfg.train
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    out_dir = Path(t.out_dir)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + info.rank)  # model init (identical on all ranks below via broadcast)
    model = build_model(cfg.model_name, **cfg.model_kwargs)
    if t.init_from:
        loaded, total = load_matching_weights(model, t.init_from)
        if info.is_main:
            print(f"init_from {t.init_from}: loaded {loaded}/{total} tensors")
    model.to(dev)
    objective = get_objective(t.loss or model.loss_hint)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError(f"{cfg.source}: the model has no trainable parameters")
    opt_cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    min_ratio = t.min_lr / t.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, t.steps, t.warmup_steps, t.scheduler, min_ratio))
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if t.ema > 0 else None
    start_step, best_psnr = 0, -math.inf
    state_path = out_dir / STATE_FILE
    if resume and state_path.exists():
        state = load_training_state(state_path)
        if state["model_config"] != {"type": cfg.model_name, **cfg.model_kwargs}:
            raise TrainingError(f"{state_path}: saved for another model config; use a new train.out_dir")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema = state["ema"]
        torch.set_rng_state(state["torch_rng"])
        start_step, best_psnr = int(state["step"]), float(state["best_psnr"])
        if info.is_main:
            print(f"resumed from {state_path} at step {start_step}")
    elif resume and info.is_main:
        print(f"no {state_path} yet: starting from scratch")

    wrapped: nn.Module = ObjectiveModule(model, objective)
    if info.world_size > 1:
        for p in model.state_dict().values():
            dist.broadcast(p, src=0)
        wrapped = nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True)

    dataset = build_train_dataset(cfg.data.train, cfg.data.crop, cfg.seed, cfg.data.cache_images)
    sampler = StepBatchSampler(cfg.data.batch_size, start_step, info.rank, info.world_size, t.steps)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                        persistent_workers=cfg.data.num_workers > 0, pin_memory=dev.type == "cuda")
    writer = _tensorboard(out_dir) if info.is_main else None
    log_path, val_path = out_dir / "log.csv", out_dir / "val.csv"
    model_cfg = {"type": cfg.model_name, **cfg.model_kwargs}

    def save_state(step: int) -> None:
        if info.is_main:
            save_training_state({
                "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "ema": ema, "torch_rng": torch.get_rng_state(),
                "best_psnr": best_psnr, "model_config": model_cfg, "config": json.dumps(config_to_dict(cfg)),
            }, state_path)

    def inference_weights() -> dict[str, torch.Tensor]:
        return ema if ema is not None else model.state_dict()

    def run_validation(step: int) -> None:
        nonlocal best_psnr
        if not (info.is_main and cfg.data.val):
            return
        eval_model = build_model(cfg.model_name, **cfg.model_kwargs).to(dev)
        eval_model.load_state_dict(inference_weights())
        metrics = validate(eval_model, cfg, out_dir, step)
        _append_csv(val_path, {"step": step, **metrics})
        if writer is not None:
            writer.add_scalar("val/psnr", metrics["psnr"], step)
            writer.add_scalar("val/ssim", metrics["ssim"], step)
        if metrics["psnr"] > best_psnr:
            best_psnr = metrics["psnr"]
            save_model(model, out_dir / "best.safetensors", info={"step": step, "val": metrics},
                       state_dict=inference_weights())
        tqdm.write(f"step {step}: val PSNR {metrics['psnr']:.3f} dB SSIM {metrics['ssim']:.4f} "
                   f"(input {metrics['input_psnr']:.3f} / {metrics['input_ssim']:.4f})")

    model.train()
    bar = tqdm(total=t.steps, initial=start_step, desc="train", disable=not (show_progress and info.is_main),
               dynamic_ncols=True)
    t_start, step = time.perf_counter(), start_step
    for batch in loader:
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        with autocast(dev, t.amp):
            loss, logs = wrapped(batch, _step_generator(cfg.seed, step, info.rank))
        if not torch.isfinite(loss.detach()):
            raise TrainingError(f"step {step}: loss is {float(loss.detach())} (not finite); stopping. Lower train.lr "
                                f"or set train.grad_clip; the last good state is {state_path}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else float("inf"))
        if not torch.isfinite(grad_norm):
            raise TrainingError(f"step {step}: gradient norm is {float(grad_norm)}; stopping. Lower train.lr "
                                f"or set train.grad_clip; the last good state is {state_path}")
        optimizer.step()
        scheduler.step()
        if ema is not None:
            _ema_update(ema, model, ema_decay(t.ema, step))
        step += 1
        bar.update(1)
        if info.is_main and (step % t.log_every == 0 or step == t.steps):
            row = {"step": step, "loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0],
                   "grad_norm": float(grad_norm), "seconds": time.perf_counter() - t_start,
                   **{k: float(v) for k, v in logs.items()}}
            _append_csv(log_path, row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            if writer is not None:
                writer.add_scalar("train/loss", row["loss"], step)
                writer.add_scalar("train/lr", row["lr"], step)
        if step % t.val_every == 0 or step == t.steps:
            model.eval()
            run_validation(step)
            model.train()
        if step % t.save_every == 0 or step == t.steps:
            save_state(step)
        if info.world_size > 1:
            dist.barrier()
        if stop_after is not None and step >= stop_after:
            break
    bar.close()
    elapsed = time.perf_counter() - t_start
    summary = {"steps": step, "seconds": elapsed, "best_val_psnr": best_psnr, "out_dir": str(out_dir)}
    if info.is_main and step >= t.steps:
        save_model(model, out_dir / "final.safetensors",
                   info={"steps": step, "train_seconds": elapsed, "config": config_to_dict(cfg)},
                   state_dict=inference_weights())
    if writer is not None:
        writer.close()
    if info.world_size > 1:
        dist.barrier()
    return summary

