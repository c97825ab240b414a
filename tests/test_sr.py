"""Super-resolution (issue 26): the NAFNet-family network and its ResShift chain (sizes, exact tiles, the untrained
chain), the Y-channel protocol, the ``sr`` data source and its held-out photos, validation folders, and training
through ``diffdeblur.train.train`` on generated photos."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA
from diffdeblur import build_model
from diffdeblur.config import config_from_dict
from diffdeblur.data.datasets import TrainPairs, build_source
from diffdeblur.config import DataSource
from diffdeblur.data.sr_pairs import (SRSource, bsds_holdout, downscale, modcrop, photo_files, resize,
                                      write_sr_pairs)
from diffdeblur.errors import ConfigError
from diffdeblur.evaluate import evaluate
from diffdeblur.example import procedural_scene
from diffdeblur.inference import load_model, restore_tensor, tile_context
from diffdeblur.io import read_image, to_tensor, write_image
from diffdeblur.metrics import psnr_y, rgb_to_y, ssim_y
from diffdeblur.models.nafnet_sr import NAFNetSR


def active(model: torch.nn.Module, seed: int = 0, std: float = 0.25, prefix: str = "") -> torch.nn.Module:
    """``model`` in eval mode with every tensor (under ``prefix``) drawn at random: its zero-initialised gates and
    upsampling conv would otherwise leave blocks, the residual and the chain's network idle (at std 0.25 the
    local-statistics windows move the output by ~1e-3, see the seams test)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(prefix):
                p.copy_(torch.randn_like(p) * std)
    return model.eval()


def scene(height: int, width: int, seed: int = 1) -> torch.Tensor:
    """A procedural photo as a (1, 3, H, W) tensor: its local means vary, unlike uniform noise's."""
    return to_tensor(procedural_scene(height, width, seed=seed))


def write_photos(folder: Path, n: int, size: tuple[int, int] = (48, 48), first_seed: int = 0) -> Path:
    """``n`` procedural sharp photos (PNG) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_image(folder / f"photo{i:03d}.png", procedural_scene(*size, seed=first_seed + i))
    return folder


# ---- the network and the chain ---------------------------------------------------------------------

@pytest.mark.parametrize("name, scale", [("sr-tiny-x2", 2), ("sr-tiny-x4", 4), ("sr-chain-tiny-x4", 4)])
def test_the_output_is_scale_times_any_input_size(name, scale):
    model = build_model(name).eval()
    assert model.scale == scale and model.size_multiple >= 1
    x = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.restore(x)
    assert out.shape == (1, 3, 37 * scale, 53 * scale) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert restore_tensor(model, torch.rand(1, 3, 5, 7), engine="eager").shape == (1, 3, 5 * scale, 7 * scale)


def test_the_untrained_network_is_bicubic_upsampling():
    x = torch.rand(2, 3, 13, 17)
    model = build_model("sr-tiny-x4")
    expected = torch.nn.functional.interpolate(x, size=(52, 68), mode="bicubic", align_corners=False)
    assert torch.equal(model(x), expected)


@pytest.mark.parametrize("scale", [3, 8, 1])
def test_an_unsupported_scale_is_a_one_line_config_error(scale):
    for make in (lambda: NAFNetSR(scale=scale), lambda: build_model("sr-tiny-x4", scale=scale)):
        with pytest.raises(ConfigError, match=f"scale {scale} is not supported") as info:
            make()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["sr-tiny-x2", "sr-tiny-x4"])
@pytest.mark.parametrize("tile, overlap", [(24, 4), (32, 8)])
def test_the_network_tiled_equals_the_whole_image(name, tile, overlap):
    model = active(build_model(name))
    x = scene(80, 96)
    assert model.exact_tile_context == 16  # 2 blocks of (1 + 12 // 2) plus two 3x3 convs
    assert model.tile_context == 4  # the default: the convolutions' reach only (2 blocks + two 3x3 convs)
    model.exact_tiles = True
    assert model.tile_context == 16
    whole = restore_tensor(model, x, tile=0, engine="eager")
    tiled = restore_tensor(model, x, tile=tile, overlap=overlap, engine="eager")
    assert float((tiled - whole).abs().max()) < 1e-5


def test_the_default_context_keeps_tiles_close_to_the_whole_image():
    """The default context leaves the local-statistics windows out: tiles then differ a little from the whole
    image (here, with random weights far larger than trained ones, still above 45 dB PSNR: the target), in tiles
    far smaller than the exact reach would grow them to."""
    model = active(build_model("sr-tiny-x4"), std=0.05)
    x = scene(80, 96)
    whole = restore_tensor(model, x, tile=0, engine="eager")
    tiled = restore_tensor(model, x, tile=24, overlap=4, engine="eager")
    assert 10 * math.log10(1 / float(((tiled - whole) ** 2).mean())) > 45


def test_without_its_context_the_network_shows_seams():
    """The declared context is what makes tiles exact, and the windows matter (a check on the test above)."""

    class Narrow(NAFNetSR):
        tile_context = 4

    kw = dict(scale=4, width=8, num_blocks=2, train_size=8)
    x = scene(80, 96)
    whole = restore_tensor(active(NAFNetSR(**kw)), x, tile=0, engine="eager")
    narrow = restore_tensor(active(Narrow(**kw)), x, tile=24, overlap=4, engine="eager")
    assert float((narrow - whole).abs().max()) > 1e-3
    assert NAFNetSR(**kw, tlc=False).tile_context == 0  # global pools: no margin makes tiles exact


def test_the_chain_tiled_equals_the_whole_image_with_a_fixed_seed():
    model = active(build_model("sr-chain-tiny-x4"), std=0.05)
    model.predictor.exact_tiles = True  # exact tiles: the predictor's exact reach
    assert model.stochastic and tile_context(model) == 16 + math.ceil(28 / 4)  # predictor + network (HR) / 4
    x = torch.rand(1, 3, 64, 72, generator=torch.Generator().manual_seed(2))
    whole = restore_tensor(model, x, tile=0, seed=3, steps=2, engine="eager")
    tiled = restore_tensor(model, x, tile=24, overlap=4, seed=3, steps=2, engine="eager")
    assert whole.shape == (1, 3, 256, 288)
    assert float((tiled - whole).abs().max()) < 1e-5
    other_seed = restore_tensor(model, x, tile=0, seed=4, steps=2, engine="eager")
    assert float((other_seed - whole).abs().max()) > 1e-3  # the active network uses x_t: the noise matters


@pytest.mark.parametrize("steps, sampler", [(1, "ddpm"), (4, "ddpm"), (2, "ddim")])
def test_the_untrained_chain_returns_its_regression_predictor(steps, sampler):
    model = active(build_model("sr-chain-tiny-x4"), prefix="predictor.")
    x = torch.rand(1, 3, 21, 30, generator=torch.Generator().manual_seed(4))
    out = model.restore(x, steps=steps, sampler=sampler, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.predictor.restore(x)
    assert out.shape == ref.shape == (1, 3, 84, 120)
    assert float((out - ref).abs().max()) < 1e-6  # up to the [0, 1] <-> [-1, 1] conversions' rounding
    assert float((ref - torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic")).abs().max()) > 1e-2


def test_the_chain_needs_a_super_resolution_predictor():
    with pytest.raises(ConfigError, match="not a super-resolution model") as info:
        build_model("sr-chain-tiny-x4", predictor="nafnet-tiny")
    assert "\n" not in str(info.value)


# ---- the Y-channel protocol --------------------------------------------------------------------------

def test_y_psnr_of_pure_red_against_black_is_the_hand_computed_value():
    red, black = np.zeros((16, 20, 3), np.float32), np.zeros((16, 20, 3), np.float32)
    red[..., 0] = 1.0
    y = rgb_to_y(red)
    assert y.shape == (1, 1, 16, 20) and torch.allclose(y, torch.full_like(y, 16 + 65.481))
    assert float(rgb_to_y(black).max()) == 16.0
    # Y differs by 65.481 everywhere: PSNR = 20 log10(255 / 65.481)
    assert psnr_y(red, black) == pytest.approx(20 * math.log10(255 / 65.481), abs=1e-9)
    assert ssim_y(red, red) == pytest.approx(1.0)


def test_the_border_is_cropped_on_every_side():
    a = np.full((20, 24, 3), 0.5, np.float32)
    b = a.copy()
    b[:3] = b[-3:] = b[:, :3] = b[:, -3:] = 0.9  # differences only within 3 pixels of an edge
    assert math.isinf(psnr_y(a, b, border=3)) and ssim_y(a, b, border=3) == pytest.approx(1.0)
    assert psnr_y(a, b, border=2) < 40 and psnr_y(a, b) < psnr_y(a, b, border=2)
    # one grey row inside a 2-pixel border: MSE over the 16 x 20 interior; 8-bit values 191 and 128 (0.75 x 255
    # = 191.25, 0.5 x 255 = 127.5 rounds to even), Y difference (191 - 128) / 255 x (65.481 + 128.553 + 24.966)
    c = a.copy()
    c[5] = 0.75
    dy = (191 - 128) / 255 * (65.481 + 128.553 + 24.966)
    mse = dy ** 2 * 20 / (16 * 20)
    assert psnr_y(a, c, border=2) == pytest.approx(10 * math.log10(255 ** 2 / mse), abs=1e-9)
    with pytest.raises(ValueError, match="border 10"):
        psnr_y(a, b, border=10)


# ---- the data source, the held-out photos, val folders ------------------------------------------------

def test_the_source_yields_low_and_high_resolution_crops(tmp_path):
    write_photos(tmp_path / "photos" / "nested", 2, size=(40, 44))
    for degradation in ("bicubic", "blur-noise"):
        src = SRSource(str(tmp_path / "photos"), scale=4, degradation=degradation)
        s = src.sample(np.random.default_rng(0), 32)
        assert s["input"].shape == (8, 8, 3) and s["target"].shape == (32, 32, 3)
        assert s["input"].dtype == s["target"].dtype == np.float32 and 0 <= s["input"].min() and s["input"].max() <= 1
        again = src.sample(np.random.default_rng(0), 32)
        assert all(np.array_equal(s[k], again[k]) for k in s)  # seeded by the loader's generator alone
    bicubic = SRSource(str(tmp_path / "photos"), scale=2).sample(np.random.default_rng(1), 24)
    hr = np.round(bicubic["target"] * 255).astype(np.uint8)
    pil = np.asarray(Image.fromarray(hr).resize((12, 12), Image.Resampling.BICUBIC), np.float32) / 255
    assert np.array_equal(bicubic["input"], pil)
    with pytest.raises(ConfigError, match="not a multiple of the scale 4"):
        SRSource(str(tmp_path / "photos"), scale=4).sample(np.random.default_rng(0), 30)


def test_the_loader_turns_both_crops_alike():
    class Fixed:
        def sample(self, rng, crop):
            hr = np.arange(crop * crop * 3, dtype=np.float32).reshape(crop, crop, 3)
            return {"input": hr[::2, ::2].copy(), "target": hr}

    pairs = TrainPairs([Fixed()], [1.0], 8, seed=0)
    for i in range(6):
        item = pairs[i]
        assert item["input"].shape == (3, 4, 4) and item["target"].shape == (3, 8, 8)
        lo, hi = item["input"], item["target"]  # the same flip / rotation: the LR grid stays the HR's even pixels
        assert torch.equal(lo, hi[:, ::2, ::2]) or torch.equal(lo, hi[:, 1::2, 1::2]) or \
            torch.equal(lo, hi[:, ::2, 1::2]) or torch.equal(lo, hi[:, 1::2, ::2])


def test_a_folder_without_photos_is_a_one_line_error_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(ConfigError, match=str(root)) as info:
            build_source(DataSource("sr", str(root), 1.0, {"scale": 4}))
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="unknown degradation 'jpeg'"):
        SRSource(str(tmp_path), degradation="jpeg")


def test_the_holdout_excludes_every_tenth_of_200_names(tmp_path):
    names = [f"{i:06d}.jpg" for i in range(200)]
    rng = np.random.default_rng(0)
    held = bsds_holdout([tmp_path / n for n in rng.permutation(names)])  # the order given does not matter
    assert [p.name for p in held] == names[9::10] and len(held) == 20
    for n in names:  # empty files: the source reads a photo only when a crop is drawn
        (tmp_path / n).touch()
    src = SRSource(str(tmp_path), scale=4, holdout="bsds20")
    assert len(src.images) == 180 and not set(src.images.paths) & set(held)
    with pytest.raises(ConfigError, match="unknown holdout 'bsds10'"):
        SRSource(str(tmp_path), holdout="bsds10")


@pytest.mark.skipif(not (SHARED_DATA / "bsds500" / "train").is_dir(), reason="BSDS500 not staged")
def test_the_bsds_holdout_is_20_of_the_200_training_photos():
    photos = photo_files(SHARED_DATA / "bsds500" / "train")
    assert len(photos) == 200 and len(bsds_holdout(photos)) == 20


def test_val_pairs_are_written_whole_and_evaluated_at_their_two_sizes(tmp_path):
    photos = sorted(write_photos(tmp_path / "photos", 2, size=(45, 50)).iterdir())
    out = write_sr_pairs(photos, tmp_path / "val", 4)
    lr, hr = read_image(out / "blur" / "photo000.png")[0], read_image(out / "sharp" / "photo000.png")[0]
    assert hr.shape == (44, 48, 3) and lr.shape == (11, 12, 3)
    assert np.array_equal(hr, modcrop(read_image(photos[0])[0], 4))
    assert np.allclose(lr, downscale(np.round(hr * 255).astype(np.uint8), 4))
    with pytest.raises(ConfigError, match="earlier run"):
        write_sr_pairs(photos, tmp_path / "val", 4)
    model = build_model("sr-tiny-x4")  # untrained: torch's bicubic upsampling
    report = evaluate(model, out, tile=0, engine="eager")
    assert not report.errors and len(report.rows) == 2
    row = report.rows[0]  # the input is scored as PIL's bicubic upsampling: close to torch's, not equal
    assert 20 < row["input_psnr"] < 60 and abs(row["psnr"] - row["input_psnr"]) < 3
    cropped = evaluate(model, out, tile=0, crop=32, engine="eager")
    assert cropped.rows[0]["psnr"] != row["psnr"] and not cropped.errors
    bad = evaluate(build_model("sr-tiny-x2"), out, tile=0, engine="eager")  # 4x pairs for a 2x model
    assert not bad.rows and all("is not 1/2 of" in e for e in bad.errors)
    assert resize(lr, 44, 48).shape == (44, 48, 3)


# ---- training through the product ---------------------------------------------------------------------

def test_a_tiny_sr_model_and_its_chain_train_validate_and_sample(tmp_path):
    from diffdeblur.train import train

    photos = write_photos(tmp_path / "photos", 4, size=(48, 48))
    val = write_sr_pairs(sorted(photos.iterdir())[:2], tmp_path / "val", 4)
    base = {"data": {"train": [{"type": "sr", "root": str(photos), "options": {"scale": 4}}], "val": str(val),
                     "crop": 48, "batch_size": 4},
            "train": {"steps": 6, "lr": 3.0e-3, "log_every": 1, "val_every": 6, "save_every": 6, "threads": 1}}
    cfg = config_from_dict({**base, "model": {"type": "sr-tiny-x4"},
                            "train": {**base["train"], "out_dir": str(tmp_path / "sr")}})
    assert train(cfg, device="cpu", show_progress=False)["steps"] == 6
    with open(tmp_path / "sr" / "log.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    with open(tmp_path / "sr" / "val.csv") as f:
        val_row = next(csv.DictReader(f))
    assert math.isfinite(float(val_row["psnr"])) and math.isfinite(float(val_row["input_psnr"]))
    model = load_model(tmp_path / "sr" / "final.safetensors", device="cpu")
    assert model.restore(torch.rand(1, 3, 9, 11)).shape == (1, 3, 36, 44)
    assert any(float(p.detach().abs().max()) > 0 for p in model.up.parameters())  # the upsampler left zero: it learnt

    chain_cfg = config_from_dict({**base, "model": {"type": "sr-chain-tiny-x4"},
                                  "train": {**base["train"], "steps": 2, "val_every": 2, "save_every": 2,
                                            "loss": "resshift", "val_options": {"steps": 2},
                                            "init_from": str(tmp_path / "sr" / "final.safetensors"),
                                            "out_dir": str(tmp_path / "chain")}})
    assert train(chain_cfg, device="cpu", show_progress=False)["steps"] == 2
    chain = load_model(tmp_path / "chain" / "final.safetensors", device="cpu")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in chain.predictor.state_dict().items())
    out = chain.restore(torch.rand(1, 3, 9, 11), steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 36, 44)
