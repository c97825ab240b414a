"""The explicit model protocol and the error contract: checked options, one error base class."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffdeblur import DiffdeblurError, build_model, restore_tensor
from diffdeblur.cli import main
from diffdeblur.config import config_from_dict
from diffdeblur.errors import CheckpointError, ConfigError, ImageError, TrainingError, UnknownNameError
from diffdeblur.metrics import psnr, ssim
from diffdeblur.models.protocol import model_options
from diffdeblur.registry import list_models


@pytest.mark.parametrize("name", ["sr3-tiny", "latent-tiny", "nafnet-tiny", "blurdm-nafnet-tiny"])
def test_a_misspelt_restore_option_is_an_error_naming_it_and_the_allowed(name):
    model = build_model(name, **({"autoencoder_weights": "random"} if name.startswith("latent") else {})).eval()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ConfigError, match=r"unknown restore option 'stpes' \(allowed: .*\)") as exc:
        model.restore(x, stpes=2)
    for allowed in model_options(model):
        assert allowed in str(exc.value)
    with pytest.raises(ConfigError, match="stpes"):
        restore_tensor(model, x, stpes=2)


def test_every_registered_model_declares_its_options():
    for entry in list_models():
        options = entry.builder.restore.options
        assert isinstance(options, tuple) and "blur" not in options, entry.name


def test_sampler_names_come_from_the_processes():
    from diffdeblur.commands import add_sampling_args
    from diffdeblur.methods.base import PROCESS_SAMPLERS
    import argparse

    p = argparse.ArgumentParser()
    add_sampling_args(p)
    choices = next(a.choices for a in p._actions if a.dest == "sampler")
    assert list(choices) == list(PROCESS_SAMPLERS)  # the union of what the processes declare
    with pytest.raises(ConfigError, match="unknown sampler 'ddimm'"):
        build_model("sr3-tiny").restore(torch.rand(1, 3, 8, 8), sampler="ddimm", steps=2)
    for name, sampler in (("sr3-tiny", "dual"), ("indi-nafnet-tiny", "sde"), ("blurdm-nafnet-tiny", "ddim")):
        with pytest.raises(ConfigError, match=f"sampler '{sampler}' does not apply to this chain"):
            build_model(name).restore(torch.rand(1, 3, 8, 8), sampler=sampler)


def test_a_typo_in_train_val_options_is_a_config_error(tmp_path, paired_folder):
    from diffdeblur.train import train

    cfg = config_from_dict({"model": {"type": "sr3-tiny"}, "data": {"train": [{"type": "paired", "root": str(paired_folder)}],
                            "val": str(paired_folder), "crop": 16, "batch_size": 1},
                            "train": {"steps": 1, "out_dir": str(tmp_path / "run"), "val_options": {"stpes": 2}}})
    with pytest.raises(ConfigError, match=r"train.val_options.*unknown restore option 'stpes'"):
        train(cfg, show_progress=False)


def test_error_classes_share_one_base():
    for cls in (ConfigError, CheckpointError, ImageError, TrainingError, UnknownNameError):
        assert issubclass(cls, DiffdeblurError)
    assert str(UnknownNameError("unknown model 'x'")) == "unknown model 'x'"  # no KeyError quotes


def test_unknown_hyper_parameter_is_named_but_an_internal_type_error_stays_a_bug(monkeypatch):
    with pytest.raises(ConfigError, match=r"model 'nafnet-tiny': unknown hyper-parameter 'widht' \(allowed: .*width"):
        build_model("nafnet-tiny", widht=8)
    from diffdeblur.models import nafnet

    def broken_init(self, *args, **kwargs):
        raise TypeError("internal bug")

    monkeypatch.setattr(nafnet.NAFNet, "__init__", broken_init)
    with pytest.raises(TypeError, match="internal bug"):
        build_model("nafnet-tiny")


def test_cli_prints_user_errors_in_one_line_and_lets_bugs_raise(tmp_path, capsys, monkeypatch):
    assert main(["deblur", "--model", str(tmp_path / "none.safetensors"), "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "checkpoint not found" in err
    from diffdeblur import inference

    def bug(*args, **kwargs):
        raise KeyError("model_config")

    monkeypatch.setattr(inference, "load_model", bug)  # the command imports it when it runs
    with pytest.raises(KeyError, match="model_config"):
        main(["deblur", "-o", str(tmp_path)])


def test_psnr_and_ssim_on_a_batch_average_every_image():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, 3, 24, 24, generator=g)
    pred = (target + 0.05 * torch.randn(4, 3, 24, 24, generator=g) * torch.arange(1, 5).view(4, 1, 1, 1)).clamp(0, 1)
    per_image_psnr = [psnr(pred[i], target[i]) for i in range(4)]
    per_image_ssim = [ssim(pred[i], target[i]) for i in range(4)]
    assert len(set(round(p, 6) for p in per_image_psnr)) == 4  # the images differ: truncation would show
    assert psnr(pred, target) == pytest.approx(np.mean(per_image_psnr), abs=1e-9)
    assert ssim(pred, target) == pytest.approx(np.mean(per_image_ssim), abs=1e-9)
    arrays = [p.permute(1, 2, 0).numpy() for p in pred], [t.permute(1, 2, 0).numpy() for t in target]
    assert psnr(np.stack(arrays[0]), np.stack(arrays[1])) == pytest.approx(np.mean(per_image_psnr), abs=1e-9)
    with pytest.raises(ValueError, match="sizes differ"):
        psnr(pred, target[:2])
