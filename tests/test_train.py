"""Training: dataset determinism, exact resume after SIGKILL and after Ctrl-C, DDP equivalence, NaN guard."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from diffdeblur.config import DataSource, config_from_dict
from diffdeblur.data.datasets import StepBatchSampler, build_train_dataset
from diffdeblur.example import procedural_scene
from diffdeblur.io import write_image
from diffdeblur.objectives import register_objective
from diffdeblur.train import TrainingError, train

from conftest import make_paired_folder

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}


def _config(tmp_path: Path, data: Path, **train_kw) -> dict:
    train_cfg = {"steps": 16, "lr": 1e-3, "log_every": 4, "val_every": 1000, "save_every": 4, "ema": 0.9,
                 "warmup_steps": 2, "out_dir": str(tmp_path / "run"), "threads": 1}
    train_cfg.update(train_kw)
    return {"model": {"type": "nafnet-tiny", "width": 4},
            "data": {"train": [{"type": "paired", "root": str(data)}], "crop": 32, "batch_size": 4},
            "train": train_cfg, "seed": 3}


def _sharp_folder(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        write_image(root / f"s{i}.png", procedural_scene(64, 80, seed=i))
    return root


def test_dataset_is_deterministic_and_mixes_sources(tmp_path):
    pairs = make_paired_folder(tmp_path / "p", n=2, size=(48, 48))
    sharp = _sharp_folder(tmp_path / "s")
    sources = (DataSource("paired", str(pairs), 1.0), DataSource("blur-kernels", str(sharp), 1.0, {"noise": 0.02}))
    a, b = build_train_dataset(sources, 24, seed=7), build_train_dataset(sources, 24, seed=7)
    c = build_train_dataset(sources, 24, seed=8)
    for i in (0, 5, 123):
        assert all(torch.equal(a[i][k], b[i][k]) for k in ("blur", "sharp"))
    assert not torch.equal(a[5]["blur"], c[5]["blur"])
    item = a[0]
    assert item["blur"].shape == (3, 24, 24) and item["blur"].dtype == torch.float32
    assert 0 <= float(item["blur"].min()) and float(item["blur"].max()) <= 1


def test_step_sampler_shards_the_global_batch():
    full = list(StepBatchSampler(8, start_step=2, steps=4))
    r0 = list(StepBatchSampler(8, start_step=2, rank=0, world_size=2, steps=4))
    r1 = list(StepBatchSampler(8, start_step=2, rank=1, world_size=2, steps=4))
    assert full == [a + b for a, b in zip(r0, r1)] and full[0] == list(range(16, 24))
    with pytest.raises(ValueError, match="divisible"):
        StepBatchSampler(7, world_size=2)


SLOW_TRAIN = """
import sys, time, yaml
from diffdeblur.config import config_from_dict
from diffdeblur.objectives import get_objective, register_objective
from diffdeblur.train import train

@register_objective("slow-psnr")
def slow(model, batch, generator):
    time.sleep(0.15)  # make the run long enough to be killed in the middle
    return get_objective("psnr")(model, batch, generator)

cfg = config_from_dict(yaml.safe_load(open(sys.argv[1])))
train(cfg, resume=True, device="cpu", show_progress=False)
"""


def _final_weights(path: Path) -> dict:
    return load_file(str(path / "final.safetensors"))


def test_resume_after_sigkill_is_exact(tmp_path):
    data = make_paired_folder(tmp_path / "d", n=2, size=(48, 48))
    script = tmp_path / "slow_train.py"
    script.write_text(SLOW_TRAIN)
    cfgs = {}
    for name in ("a", "b"):
        cfg = _config(tmp_path / name, data, loss="slow-psnr")
        cfgs[name] = tmp_path / f"{name}.yaml"
        cfgs[name].write_text(yaml.safe_dump(cfg))
    # uninterrupted reference run
    subprocess.run([sys.executable, str(script), str(cfgs["a"])], check=True, env=ENV, capture_output=True)
    # interrupted run: SIGKILL once the first checkpoint exists, then resume
    run_b = tmp_path / "b" / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(cfgs["b"])], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_b / "state.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_b / "final.safetensors").exists(), "the run finished before it could be killed"
    subprocess.run([sys.executable, str(script), str(cfgs["b"])], check=True, env=ENV, capture_output=True)
    a, b = _final_weights(tmp_path / "a" / "run"), _final_weights(run_b)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


SLOW_CLI_TRAIN = """
import sys, time
from diffdeblur.cli import main
from diffdeblur.objectives import get_objective, register_objective

@register_objective("slow-psnr")
def slow(model, batch, generator):
    time.sleep(0.15)  # make the run long enough to be interrupted in the middle
    return get_objective("psnr")(model, batch, generator)

sys.exit(main(["train", *sys.argv[1:], "--device", "cpu", "--no-progress"]))
"""


def _logged_steps(run: Path) -> int:
    try:
        return len((run / "log.csv").read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


def test_ctrl_c_saves_the_state_and_resume_is_exact(tmp_path):
    data = make_paired_folder(tmp_path / "d", n=2, size=(48, 48))
    script = tmp_path / "slow_cli_train.py"
    script.write_text(SLOW_CLI_TRAIN)
    cfgs = {}
    for name in ("a", "b"):  # no periodic save before the end: only Ctrl-C can write a state mid-run
        cfgs[name] = tmp_path / f"{name}.yaml"
        cfgs[name].write_text(yaml.safe_dump(_config(tmp_path / name, data, loss="slow-psnr", log_every=1,
                                                     save_every=100)))
    subprocess.run([sys.executable, str(script), str(cfgs["a"])], check=True, env=ENV, capture_output=True)
    run_b = tmp_path / "b" / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(cfgs["b"])], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while _logged_steps(run_b) < 3 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    state = torch.load(run_b / "state.pt", weights_only=True)
    step = int(state["step"])
    assert 3 <= step < 16 and step == _logged_steps(run_b)  # saved at the step reached, not at a periodic save
    assert err.strip() == f"diffdeblur train: interrupted at step {step} of 16; training state saved to " \
                          f"{run_b / 'state.pt'} (continue with --resume)"
    assert not (run_b / "final.safetensors").exists()
    done = subprocess.run([sys.executable, str(script), str(cfgs["b"]), "--resume"], env=ENV, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = _final_weights(tmp_path / "a" / "run"), _final_weights(run_b)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    data = make_paired_folder(tmp_path / "d", n=2, size=(48, 48))
    results = {}
    for name, nproc in (("single", 1), ("ddp", 2)):
        cfg = _config(tmp_path / name, data, steps=6, ema=0.0, save_every=100)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "diffdeblur.cli", "train", str(path), "--device", "cpu", "--no-progress"]
        done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.count('"best_val_psnr"') == 1, done.stdout  # only rank 0 prints its summary
        # every parameter is used, so DDP does not search for unused ones (nor warn about it on each rank)
        assert "find_unused_parameters" not in done.stderr, done.stderr[-2000:]
        results[name] = _final_weights(tmp_path / name / "run")
    single, ddp = results["single"], results["ddp"]
    assert single.keys() == ddp.keys()
    for k in single:
        assert torch.allclose(single[k], ddp[k], rtol=1e-4, atol=1e-6), k
    # the zero-initialised NAFBlock scales moved, so the comparison is over trained weights
    assert any(float(single[k].abs().max()) > 0 for k in single if k.endswith(".beta"))


@register_objective("test-nan")
def _nan_objective(model, batch, generator):
    return model(batch["blur"]).mean() * float("nan"), {}


def test_nan_guard_stops_with_clear_message(tmp_path):
    data = make_paired_folder(tmp_path / "d", n=1, size=(48, 48))
    cfg = config_from_dict(_config(tmp_path, data, loss="test-nan", steps=3), source="nan.yaml")
    with pytest.raises(TrainingError, match=r"step 0: loss is nan \(not finite\)"):
        train(cfg, device="cpu", show_progress=False)


def test_training_reduces_loss_and_writes_outputs(tmp_path):
    data = make_paired_folder(tmp_path / "d", n=2, size=(48, 48))
    cfg = _config(tmp_path, data, steps=30, lr=3e-3, val_every=30, sample_images=1, log_every=5)
    cfg["data"]["val"] = str(data)
    summary = train(config_from_dict(cfg), device="cpu", show_progress=False)
    run = tmp_path / "run"
    assert summary["steps"] == 30
    for f in ("final.safetensors", "best.safetensors", "state.pt", "log.csv", "val.csv"):
        assert (run / f).is_file(), f
    losses = [float(r.split(",")[1]) for r in (run / "log.csv").read_text().splitlines()[1:]]
    assert losses[-1] < losses[0]
    assert len(list((run / "samples").iterdir())) == 1


def test_resumed_ema_stays_on_the_training_device(tmp_path):
    from diffdeblur.train import build_run, restore_ema

    data = make_paired_folder(tmp_path / "d", n=1, size=(48, 48))
    cfg = config_from_dict(_config(tmp_path, data, steps=8, save_every=2))
    train(cfg, device="cpu", show_progress=False, stop_after=2)
    run = build_run(cfg, resume=True, device="cpu")
    saved = torch.load(tmp_path / "run" / "state.pt", weights_only=True)["ema"]
    device = next(run.model.parameters()).device
    assert run.start_step == 2 and run.ema is not None
    for k, v in run.ema.items():  # the run's own tensors, filled in place with the saved values
        assert v.device == device and v is not saved[k] and torch.equal(v.cpu(), saved[k])
    # the saved EMA is read on the CPU: restoring copies it into tensors on the training device
    # (a CUDA run used to keep the CPU copy and crash at its next EMA update)
    ema = {"w": torch.zeros(3, device="meta")}
    restore_ema(ema, {"w": torch.ones(3)})
    assert ema["w"].device.type == "meta"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_an_error_not_a_cpu_fallback(tmp_path):
    from diffdeblur.errors import DeviceError

    data = make_paired_folder(tmp_path / "d", n=1, size=(48, 48))
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        train(config_from_dict(_config(tmp_path, data, steps=1)), device="cuda", show_progress=False)


def test_the_validation_model_is_built_once(tmp_path, monkeypatch):
    import diffdeblur.train as train_module

    built = []
    real = train_module.build_model
    monkeypatch.setattr(train_module, "build_model", lambda *a, **k: built.append(a[0]) or real(*a, **k))
    data = make_paired_folder(tmp_path / "d", n=1, size=(48, 48))
    cfg = _config(tmp_path, data, steps=4, val_every=1, sample_images=0)
    cfg["data"]["val"] = str(data)
    summary = train(config_from_dict(cfg), device="cpu", show_progress=False)
    assert len((tmp_path / "run" / "val.csv").read_text().splitlines()) == 1 + 4  # four validations
    assert built == ["nafnet-tiny", "nafnet-tiny"] and summary["best_val_psnr"] > 0  # the model + one eval model
