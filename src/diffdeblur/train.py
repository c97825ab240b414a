"""The training loop: :func:`train` reads top to bottom over small functions (build the run, one
step, log, validate, save), on the device chosen by :mod:`diffdeblur.device`.

- Data of step s is fixed by (seed, s) (see :mod:`diffdeblur.data.datasets`), so a resumed run
  sees exactly the batches an uninterrupted run would.
- Training state (model, EMA, optimizer, scheduler, RNG, step) goes to ``out_dir/state.pt``
  atomically every ``save_every`` steps, and at the step where Ctrl-C (SIGINT) stops the run;
  ``resume=True`` continues from it bit-exactly on CPU.
- Inference files: ``out_dir/final.safetensors`` (EMA weights when EMA is on) and
  ``out_dir/best.safetensors`` (best validation PSNR), with the model config embedded.
- Distributed data parallel under ``torchrun``: NCCL on GPUs, gloo on CPU; the global batch
  ``data.batch_size`` is split over ranks; rank 0 logs, validates and saves.
- No process-wide setting is changed by :func:`train`: the seed drives the model's initialisation and the
  training steps through the global RNG *scoped* to the run (:func:`run_rng`: saved before, restored after),
  and the thread count ``train.threads`` is applied only by :func:`apply_process_settings`, which the
  command line calls (a library caller calls it explicitly when it wants the config's thread count).
"""
from __future__ import annotations

import csv
import json
import math
import signal
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import (BEST_FILE, FINAL_FILE, STATE_FILE, TRAIN_LOG, VAL_LOG, load_training_state, save_model,
                         save_training_state)
from .config import ExperimentConfig, ModelConfig, config_to_dict
from .data.datasets import StepBatchSampler, build_train_dataset
from .device import autocast
from .errors import Interrupted, TrainingError
from .engines import training_engine
from .evaluate import evaluate
from .io import missing_folders, remove_empty_folders, write_image
from .models.protocol import check_model_options
from .objectives import default_objective, get_objective
from .registry import build_model
from .train_setup import (DistInfo, _ema_update, apply_process_settings, claim_out_dir, ema_decay,  # noqa: F401
                          init_distributed, init_from_path, lr_factor, load_matching_weights, restore_ema, run_rng)



class ObjectiveModule(nn.Module):
    """Wraps (model, objective) so that DDP sees the whole loss computation as one forward."""

    def __init__(self, model: nn.Module, objective: Any) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None):
        return self.objective(self.model, batch, generator)


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
    """Evaluate ``model`` on ``cfg.data.val`` (with ``train.val_options``), saving a few samples."""
    d, t = cfg.data, cfg.train
    sample_dir = out_dir / "samples"
    saved: list[str] = []

    def keep_sample(name: str, img) -> None:
        if len(saved) < t.sample_images:
            sample_dir.mkdir(parents=True, exist_ok=True)
            write_image(sample_dir / f"step{step:07d}_{name.replace('/', '_')}.png", img)
            saved.append(name)

    report = evaluate(model, d.val, tile=d.val_tile, crop=d.val_crop, max_images=d.val_max_images,
                      seed=cfg.seed, on_image=keep_sample, engine=training_engine(next(model.parameters()).device),
                      **t.val_options)
    return {k: report.summary[k] for k in ("psnr", "ssim", "input_psnr", "input_ssim", "images")}


@dataclass
class Run:
    """One training run: what :func:`build_run` makes and the loop's steps update (no batch inside)."""

    cfg: ExperimentConfig
    info: DistInfo
    device: torch.device
    out_dir: Path
    model: nn.Module
    wrapped: nn.Module  # (model, objective), under DDP when distributed
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: dict[str, torch.Tensor] | None
    eval_model: nn.Module | None  # built once; gets the inference weights at each validation
    dataset: Any = None  # the training pairs (data.datasets.TrainPairs), built once
    writer: Any = None
    start_step: int = 0
    best_psnr: float = -math.inf
    t_start: float = field(default_factory=time.perf_counter)
    rng_state: torch.Tensor | None = None  # the CPU RNG state the steps start from (after init, or resumed)

    @property
    def state_path(self) -> Path:
        return self.out_dir / STATE_FILE

    def inference_weights(self) -> dict[str, torch.Tensor]:
        return self.ema if self.ema is not None else self.model.state_dict()

    def model_cfg(self) -> dict[str, Any]:
        """The model config the training state records: ``{"model": NAME, "kwargs": {...}}``."""
        return self.cfg.model.to_dict()

    def rng(self) -> AbstractContextManager[None]:
        """The global RNG scoped to this run's steps (:func:`run_rng`), from :attr:`rng_state`."""
        return run_rng(self.cfg.seed + self.info.rank, self.device, self.rng_state)


def build_run(cfg: ExperimentConfig, resume: bool = False, device: str = "auto", overwrite: bool = False) -> Run:
    """Build the model (seeded by ``cfg.seed``), optimizer, scheduler, EMA and validation model; resume if asked.
    An ``out_dir`` holding an earlier run needs ``resume`` or ``overwrite`` (:func:`claim_out_dir`).
    No process-wide setting changes (see :func:`apply_process_settings` and :func:`run_rng`)."""
    info, dev = init_distributed(device)
    t = cfg.train
    out_dir = Path(t.out_dir)
    claim_out_dir(out_dir, resume, overwrite, info.is_main)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    with run_rng(cfg.seed + info.rank, torch.device("cpu")):  # model init (identical on all ranks below via broadcast)
        model = build_model(cfg.model_name, **cfg.model_kwargs)
        rng_state = torch.get_rng_state()  # the steps continue this stream
    check_model_options(model, t.val_options, f"{cfg.source}: train.val_options")
    if t.init_from:
        loaded, total = load_matching_weights(model, init_from_path(t.init_from))
        if info.is_main:
            print(f"init_from {t.init_from}: loaded {loaded}/{total} tensors")
    model.to(dev)
    objective = get_objective(t.loss) if t.loss else default_objective(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError(f"{cfg.source}: the model has no trainable parameters")
    opt_cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    min_ratio = t.min_lr / t.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, t.steps, t.warmup_steps, t.scheduler, min_ratio))
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if t.ema > 0 else None
    eval_model = None
    if info.is_main and cfg.data.val:
        with torch.random.fork_rng(devices=[]):  # building it must not move the training RNG stream
            eval_model = build_model(cfg.model_name, **cfg.model_kwargs).to(dev).eval()
    d = cfg.data
    dataset = build_train_dataset(d.train, d.crop, cfg.seed, d.cache_images)
    run = Run(cfg, info, dev, out_dir, model, ObjectiveModule(model, objective), params, optimizer, scheduler,
              ema, eval_model, dataset=dataset, writer=_tensorboard(out_dir) if info.is_main else None,
              rng_state=rng_state)
    if resume:
        resume_run(run)
    if info.world_size > 1:
        for p in model.state_dict().values():
            dist.broadcast(p, src=0)
        run.wrapped = nn.parallel.DistributedDataParallel(
            run.wrapped, device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=has_unused_parameters(run))
    return run


def has_unused_parameters(run: Run) -> bool:
    """Whether some trainable parameter gets no gradient from the objective on a first batch.

    DDP must then search for unused parameters at every step; when none are unused that search
    only costs time and makes PyTorch warn on every rank. The probe is the same on every rank
    (batch of step 0, rank 0's noise, broadcast weights) and leaves the RNG streams as they were.
    """
    d = run.cfg.data
    items = [run.dataset[i] for i in range(max(1, d.batch_size // run.info.world_size))]
    batch = {k: torch.stack([it[k] for it in items]).to(run.device) for k in items[0]}
    with torch.random.fork_rng(devices=[]), autocast(run.device, run.cfg.train.amp):
        loss, _ = run.wrapped(batch, _step_generator(run.cfg.seed, 0, 0))
        grads = torch.autograd.grad(loss, run.params, allow_unused=True)
    return any(g is None for g in grads)


def resume_run(run: Run) -> None:
    """Load ``out_dir/state.pt`` into ``run`` (model, optimizer, scheduler, EMA, RNG, step), if it exists."""
    if not run.state_path.exists():
        if run.info.is_main:
            print(f"no {run.state_path} yet: starting from scratch")
        return
    state = load_training_state(run.state_path)
    saved = state.get("model_config")
    # states written before the model config had one shape stored the config file's {"type": NAME, **kwargs}
    if not isinstance(saved, dict) or ModelConfig.from_dict(saved).to_dict() != run.model_cfg():
        raise TrainingError(f"{run.state_path}: saved for another model config; use a new train.out_dir")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.ema is not None and state.get("ema") is not None:
        restore_ema(run.ema, state["ema"])
    run.rng_state = state["torch_rng"]
    run.start_step, run.best_psnr = int(state["step"]), float(state["best_psnr"])
    if run.info.is_main:
        print(f"resumed from {run.state_path} at step {run.start_step}")


def train_step(run: Run, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """One optimisation step on ``batch`` (already on the device); returns (loss, logs, grad norm)."""
    t = run.cfg.train
    with autocast(run.device, t.amp):
        loss, logs = run.wrapped(batch, _step_generator(run.cfg.seed, step, run.info.rank))
    if not torch.isfinite(loss.detach()):
        raise TrainingError(f"step {step}: loss is {float(loss.detach())} (not finite); stopping. Lower train.lr "
                            f"or set train.grad_clip; the last good state is {run.state_path}")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, t.grad_clip if t.grad_clip > 0 else float("inf"))
    if not torch.isfinite(grad_norm):
        raise TrainingError(f"step {step}: gradient norm is {float(grad_norm)}; stopping. Lower train.lr "
                            f"or set train.grad_clip; the last good state is {run.state_path}")
    run.optimizer.step()
    run.scheduler.step()
    if run.ema is not None:
        _ema_update(run.ema, run.model, ema_decay(t.ema, step))
    return loss, logs, grad_norm


def log_step(run: Run, step: int, loss: torch.Tensor, logs: dict[str, float], grad_norm: torch.Tensor) -> dict:
    """Append one row to ``log.csv`` (and TensorBoard); returns the row."""
    row = {"step": step, "loss": float(loss.detach()), "lr": run.scheduler.get_last_lr()[0],
           "grad_norm": float(grad_norm), "seconds": time.perf_counter() - run.t_start,
           **{k: float(v) for k, v in logs.items()}}
    _append_csv(run.out_dir / TRAIN_LOG, row)
    if run.writer is not None:
        run.writer.add_scalar("train/loss", row["loss"], step)
        run.writer.add_scalar("train/lr", row["lr"], step)
    return row


def validate_run(run: Run, step: int) -> None:
    """Score the inference weights (EMA if on) on the validation folder; keep the best as best.safetensors."""
    if run.eval_model is None:
        return
    run.eval_model.load_state_dict(run.inference_weights())
    metrics = validate(run.eval_model, run.cfg, run.out_dir, step)
    _append_csv(run.out_dir / VAL_LOG, {"step": step, **metrics})
    if run.writer is not None:
        run.writer.add_scalar("val/psnr", metrics["psnr"], step)
        run.writer.add_scalar("val/ssim", metrics["ssim"], step)
    if metrics["psnr"] > run.best_psnr:
        run.best_psnr = metrics["psnr"]
        save_model(run.model, run.out_dir / BEST_FILE, info={"step": step, "val": metrics},
                   state_dict=run.inference_weights())
    tqdm.write(f"step {step}: val PSNR {metrics['psnr']:.3f} dB SSIM {metrics['ssim']:.4f} "
               f"(input {metrics['input_psnr']:.3f} / {metrics['input_ssim']:.4f})")


def save_state(run: Run, step: int) -> None:
    """Write the full training state atomically (rank 0 only)."""
    if run.info.is_main:
        save_training_state({
            "step": step, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "ema": run.ema, "torch_rng": torch.get_rng_state(),
            "best_psnr": run.best_psnr, "model_config": run.model_cfg(),
            "config": json.dumps(config_to_dict(run.cfg)),
        }, run.state_path)


def save_final(run: Run, step: int, elapsed: float) -> None:
    """Write ``final.safetensors`` (the inference weights with the config embedded), rank 0 only."""
    if run.info.is_main:
        save_model(run.model, run.out_dir / FINAL_FILE,
                   info={"steps": step, "train_seconds": elapsed, "config": config_to_dict(run.cfg)},
                   state_dict=run.inference_weights())


def data_loader(run: Run) -> DataLoader:
    """This rank's batches for steps start_step .. train.steps - 1 (fixed by (seed, step))."""
    d = run.cfg.data
    sampler = StepBatchSampler(d.batch_size, run.start_step, run.info.rank, run.info.world_size, run.cfg.train.steps)
    return DataLoader(run.dataset, batch_sampler=sampler, num_workers=d.num_workers,
                      persistent_workers=d.num_workers > 0, pin_memory=run.device.type == "cuda")


class StopRequest:
    """Ctrl-C (SIGINT) in the training loop as a request to stop at the end of the current step,
    where the training state is consistent and can be saved; a second Ctrl-C interrupts at once
    (the last saved state stays). A context manager: its handler is installed in the main thread
    only (Python delivers signals there) and the previous handler is restored on exit."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None
        self.installed = False

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self.on_sigint)
            self.installed = True
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self.previous if self.previous is not None else signal.default_int_handler)
            self.installed = False

    def on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def stop_agreed(run: Run, requested: bool) -> bool:
    """Whether any rank was asked to stop, so that all ranks stop at the same step (every rank takes
    part: this is also the per-step barrier of a distributed run)."""
    if run.info.world_size == 1:
        return requested
    flag = torch.tensor([float(requested)], device=run.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def run_steps(run: Run, bar: tqdm, stop: StopRequest, stop_after: int | None) -> tuple[int, bool]:
    """The optimisation steps from ``run.start_step`` (log, validate, save on schedule); returns the
    step reached and whether a stop request (Ctrl-C) ended the loop, after saving the state there."""
    t, main = run.cfg.train, run.info.is_main
    step = run.start_step
    for batch in data_loader(run):
        loss, logs, grad_norm = train_step(run, {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}, step)
        step += 1
        bar.update(1)
        if main and (step % t.log_every == 0 or step == t.steps):
            bar.set_postfix(loss=f"{log_step(run, step, loss, logs, grad_norm)['loss']:.4f}")
        if step % t.val_every == 0 or step == t.steps:
            validate_run(run, step)
        saved = step % t.save_every == 0 or step == t.steps
        if saved:
            save_state(run, step)
        if stop_agreed(run, stop.requested) and step < t.steps:
            if not saved:
                save_state(run, step)
            return step, True
        if stop_after is not None and step >= stop_after:
            break
    return step, False


def train(cfg: ExperimentConfig, resume: bool = False, device: str = "auto", show_progress: bool = True,
          stop_after: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train ``cfg``; returns a summary dict. ``stop_after`` ends the run early at that step
    (after checkpointing), as an interruption would; used to test exact resumption. An out_dir
    with an earlier run is refused unless ``resume`` or ``overwrite`` (which replaces it).

    Process-wide settings are the caller's: this function does not change the thread count (call
    :func:`apply_process_settings` first to apply ``train.threads``, as ``diffdeblur train`` does) and does
    not reseed the process (``cfg.seed`` drives the global RNG only inside the run, :func:`run_rng`).

    Ctrl-C (SIGINT) stops the run at the end of the current step: the training state is saved there
    and :class:`~diffdeblur.errors.Interrupted` (a KeyboardInterrupt) is raised, naming the step and
    the file; ``resume=True`` continues exactly. Folders this call creates for ``train.out_dir`` are
    removed again when the run fails before writing anything into them."""
    created = missing_folders(cfg.train.out_dir)
    try:
        return _train(cfg, resume, device, show_progress, stop_after, overwrite)
    finally:
        remove_empty_folders(created)


def _train(cfg: ExperimentConfig, resume: bool, device: str, show_progress: bool, stop_after: int | None,
           overwrite: bool) -> dict[str, Any]:
    run = build_run(cfg, resume, device, overwrite)
    t, main = cfg.train, run.info.is_main
    bar = tqdm(total=t.steps, initial=run.start_step, desc="train", disable=not (show_progress and main),
               dynamic_ncols=True)
    run.model.train()
    run.t_start = time.perf_counter()
    with StopRequest() as stop, run.rng():  # only around the steps: Ctrl-C while the run is built interrupts at once
        step, interrupted = run_steps(run, bar, stop, stop_after)
    bar.close()
    elapsed = time.perf_counter() - run.t_start
    if step >= t.steps:
        save_final(run, step, elapsed)
    if run.writer is not None:
        run.writer.close()
    if run.info.world_size > 1:
        dist.barrier()
    if interrupted:
        raise Interrupted(f"interrupted at step {step} of {t.steps}; training state saved to {run.state_path} "
                          f"(continue with --resume)")
    return {"steps": step, "seconds": elapsed, "best_val_psnr": run.best_psnr, "out_dir": str(run.out_dir)}
