"""The command over the library: the API and the command give the same files; shipped assets work."""
from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffdeblur import build_model, load_model, save_model
from diffdeblur.cli import main
from diffdeblur.config import load_config
from diffdeblur.example import example_pair
from diffdeblur.inference import deblur, deblur_file
from diffdeblur.io import read_image, write_image
from diffdeblur.train import train

from conftest import make_paired_folder


@pytest.mark.parametrize("name, options", [("nafnet-tiny", {}), ("sr3-tiny", {"steps": 2, "seed": 5})])
def test_api_and_command_write_byte_identical_files(tmp_path, name, options):
    torch.manual_seed(0)
    model = build_model(name)
    save_model(model, tmp_path / "m.safetensors")
    blur, _ = example_pair(40, 56, seed=4)
    src = tmp_path / "in.png"
    write_image(src, blur)
    # a 16-bit grey input: mode and bit depth pass through both ways
    grey16 = tmp_path / "grey16.png"
    from PIL import Image

    Image.fromarray((blur.mean(axis=2) * 65535).astype(np.uint16)).save(grey16)
    flags = [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    for path in (src, grey16):
        api_out = deblur_file(path, tmp_path / f"api_{path.name}", tmp_path / "m.safetensors", device="cpu", **options)
        cli_out = tmp_path / f"cli_{path.name}"
        assert main(["deblur", str(path), "-o", str(cli_out), "--model", str(tmp_path / "m.safetensors"),
                     "--device", "cpu", "--quiet", *flags]) == 0
        assert api_out.read_bytes() == cli_out.read_bytes()
    info = read_image(tmp_path / "api_grey16.png")[1]
    assert info.grey and info.bit_depth == 16
    # the array API has the same defaults (tiling, seed) as the file API
    arr = deblur(src, tmp_path / "m.safetensors", device="cpu", **options)
    assert np.array_equal(np.round(arr * 255).astype(np.uint8), np.asarray(Image.open(tmp_path / "api_in.png")))


def test_deblur_file_refuses_to_overwrite_its_input(tmp_path):
    from diffdeblur.errors import ImageError

    src = tmp_path / "in.png"
    write_image(src, example_pair(32, 32)[0])
    with pytest.raises(ImageError, match="would overwrite the input"):
        deblur_file(src, src, build_model("nafnet-tiny"))


def test_shipped_default_weights_load_from_the_package_and_run():
    shipped = resources.files("diffdeblur") / "weights" / "default.safetensors"
    assert shipped.is_file()
    model = load_model("default", device="cpu")
    assert not model.training and model.diffdeblur_config["model"]
    blur, sharp = example_pair(64, 64, seed=1)
    out = deblur(blur, model, device="cpu")
    assert out.shape == blur.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert 0.0 <= out.min() and out.max() <= 1.0
    from diffdeblur.metrics import psnr

    assert psnr(out, sharp) > psnr(blur, sharp) - 1.0  # a trained model does not destroy the image


def test_blurdm_stage_configs_chain_through_init_from(tmp_path):
    data = make_paired_folder(tmp_path / "d", n=2, size=(64, 64))
    finals = {}
    for stage in (1, 2, 3):
        overrides = [f"data.train.0.root={data}", "data.val=''", "data.batch_size=2", "data.crop=32",
                     "train.steps=2", "train.log_every=1", "train.threads=1", f"train.out_dir={tmp_path / f's{stage}'}"]
        if stage > 1:
            overrides.append(f"train.init_from={finals[stage - 1]}")
        cfg = load_config(f"blurdm-nafnet-tiny-stage{stage}", overrides)
        assert cfg.model["stage"] == stage and not cfg.train.loss  # the stage alone decides the objective ("blurdm")
        assert train(cfg, device="cpu", show_progress=False)["steps"] == 2
        finals[stage] = tmp_path / f"s{stage}" / "final.safetensors"
    s1, s2, s3 = (load_file(str(finals[k])) for k in (1, 2, 3))
    backbone = [k for k in s1 if k.startswith("backbone.")]
    assert backbone and all(torch.equal(s1[k], s2[k]) for k in backbone)  # stage 2 keeps the stage-1 backbone
    assert any(k.startswith("blurdm.") for k in s2) and not any(k.startswith("blurdm.") for k in s1)
    assert not any(k.startswith("sharp_encoder.") for k in s3) and set(s3) <= set(s2)
    model = load_model(finals[3], device="cpu")
    assert model.restore(torch.rand(1, 3, 32, 32), generator=torch.Generator().manual_seed(0)).shape == (1, 3, 32, 32)
