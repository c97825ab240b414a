"""`diffdeblur sr` and :func:`diffdeblur.upscale` (issue 26): output sizes, the input's mode kept (alpha upscaled,
16-bit, EXIF), tiles equal to the whole image, one-line errors with nothing written, batches that go on past a bad
file; and ``data.cache_images`` reaching the ``sr`` and ``inpaint`` sources. Tiny presets with random weights,
saved with :func:`diffdeblur.checkpoint.save_model` into a temporary folder and passed as ``--model``."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import one_line_error

import diffdeblur
from diffdeblur import build_model, save_model
from diffdeblur.cli import main
from diffdeblur.config import DataSource
from diffdeblur.data.datasets import build_train_dataset, takes_cache
from diffdeblur.errors import ConfigError, ImageError
from diffdeblur.example import procedural_scene
from diffdeblur.inference import upscale_alpha
from diffdeblur.io import read_image, write_image
from diffdeblur.png16 import png_header

SIZES = [(13, 17), (5, 3), (24, 31)]  # (H, W): odd sides, a strip thinner than a 3x3 conv's reach


def active(name: str, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Preset ``name`` with every tensor drawn at random: the untrained network is bicubic upsampling exactly."""
    torch.manual_seed(seed)
    model = build_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * std)
    return model.eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> dict[int, Path]:
    """{scale: checkpoint path} of the tiny x2 and x4 networks, random weights."""
    folder = tmp_path_factory.mktemp("sr-models")
    out = {}
    for scale in (2, 4):
        out[scale] = folder / f"sr{scale}.safetensors"
        save_model(active(f"sr-tiny-x{scale}", seed=scale), out[scale])
    return out


def photo(h: int, w: int, seed: int = 1) -> np.ndarray:
    return procedural_scene(h, w, seed=seed)


def sr(*args: str) -> int:
    return main(["sr", *map(str, args), "--device", "cpu", "--quiet"])


# ---- sizes, CLI and API ----------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("size", SIZES)
def test_the_output_is_scale_times_the_input_through_cli_and_api(tmp_path, ckpt, scale, size):
    src = tmp_path / "in.png"
    write_image(src, photo(*size))
    assert sr(src, "--scale", scale, "--model", ckpt[scale], "-o", tmp_path / "out.png") == 0
    with Image.open(tmp_path / "out.png") as img:
        assert img.size == (size[1] * scale, size[0] * scale)
        written = np.asarray(img.convert("RGB"))
    api = diffdeblur.upscale(read_image(src)[0], scale, ckpt[scale], device="cpu")
    assert api.shape == (size[0] * scale, size[1] * scale, 3) and api.dtype == np.float32
    assert np.array_equal(np.round(api * 255).astype(np.uint8), written)  # the same result and defaults
    assert diffdeblur.upscale(src, scale, ckpt[scale], device="cpu").shape == api.shape  # a path works too


def test_folders_and_globs_keep_their_names(tmp_path, ckpt):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        write_image(folder / f"p{i}.png", photo(9, 11, seed=i))
    assert sr(folder, "--scale", 2, "--model", ckpt[2], "-o", tmp_path / "out") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png"]
    assert sr(str(folder / "p*.png"), "--scale", 2, "--model", ckpt[2], "-o", tmp_path / "glob") == 0
    assert len(list((tmp_path / "glob").iterdir())) == 2


def test_tiled_equals_whole_through_the_api(ckpt):
    x = photo(70, 90)
    whole = diffdeblur.upscale(x, 2, ckpt[2], device="cpu", tile=0, engine="eager")
    tiled = diffdeblur.upscale(x, 2, ckpt[2], device="cpu", tile=24, overlap=4, engine="eager")
    assert tiled.shape == whole.shape == (140, 180, 3)
    assert 10 * np.log10(1 / float(np.mean((tiled - whole) ** 2))) > 45  # the default context: windows left out
    assert float(np.abs(whole - diffdeblur.upscale(x, 2, ckpt[2], device="cpu", tile=0)).max()) < 1e-6  # auto


# ---- the input's mode: alpha, 16-bit, grey, EXIF -----------------------------------------------------

def test_alpha_is_upscaled_bicubically_and_attached_again(tmp_path, ckpt):
    rgb = (photo(12, 15) * 255).round().astype(np.uint8)
    alpha = np.zeros((12, 15), np.uint8)
    alpha[3:9, 4:11] = 255
    alpha[0, :] = 128
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "a.png")
    assert sr(tmp_path / "a.png", "--scale", 4, "--model", ckpt[4], "-o", tmp_path / "out") == 0
    with Image.open(tmp_path / "out" / "a.png") as img:
        assert img.mode == "RGBA" and img.size == (60, 48)
        got = np.asarray(img)[..., 3]
    expected = np.round(upscale_alpha(alpha.astype(np.float32) / 255, 4) * 255).astype(np.uint8)
    assert np.array_equal(got, expected)
    assert got[20, 30] == 255 and got[47, 0] == 0  # inside the opaque box; the transparent corner


def test_16_bit_and_grey_inputs_stay_16_bit_and_grey(tmp_path, ckpt):
    rgb16 = (photo(10, 14) * 65535).round().astype(np.uint16)
    from diffdeblur.png16 import encode_png16

    (tmp_path / "c16.png").write_bytes(encode_png16(rgb16))
    Image.fromarray((photo(10, 14)[..., 0] * 255).astype(np.uint8), "L").save(tmp_path / "g.png")
    assert sr(tmp_path / "c16.png", tmp_path / "g.png", "--scale", 2, "--model", ckpt[2], "-o", tmp_path / "out") == 0
    w, h, depth, colour, _ = png_header((tmp_path / "out" / "c16.png").read_bytes())
    assert (w, h, depth, colour) == (28, 20, 16, 2)  # 16-bit RGB
    with Image.open(tmp_path / "out" / "g.png") as img:
        assert img.mode == "L" and img.size == (28, 20)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
def test_exif_is_kept_and_its_orientation_applied_once(tmp_path, ckpt, ext):
    img = Image.fromarray((photo(10, 16) * 255).astype(np.uint8))
    exif = img.getexif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0112] = 6  # orientation: rotate 90 degrees for display (applied on read)
    img.save(tmp_path / f"e{ext}", exif=exif, **({"quality": 95} if ext == ".jpg" else {}))
    assert sr(tmp_path / f"e{ext}", "--scale", 2, "--model", ckpt[2], "-o", tmp_path / "out") == 0
    with Image.open(tmp_path / "out" / f"e{ext}") as out:
        assert out.size == (20, 32)  # the displayed (rotated) 10x16 image, twice
        tags = out.getexif()
        assert tags.get(0x010F) == "TestCam" and tags.get(0x0112) in (None, 1)


def test_a_16_bit_png_keeps_its_exif(tmp_path):
    from diffdeblur.io import ImageInfo, encode_image

    exif = Image.Exif()
    exif[0x010F] = "Cam16"
    data = encode_image(photo(6, 8), ImageInfo(bit_depth=16, exif=exif.tobytes()), "PNG")
    (tmp_path / "x.png").write_bytes(data)
    rgb, info = read_image(tmp_path / "x.png")
    assert info.bit_depth == 16 and info.exif is not None
    with Image.open(io.BytesIO(data)) as img:
        assert img.getexif().get(0x010F) == "Cam16"


# ---- one-line errors, nothing written --------------------------------------------------------------

@pytest.fixture
def one_input(tmp_path) -> Path:
    src = tmp_path / "in.png"
    write_image(src, photo(9, 11))
    return src


def test_an_unsupported_scale_is_one_line_and_writes_nothing(tmp_path, ckpt, one_input, capsys):
    assert sr(one_input, "--scale", 3, "--model", ckpt[2], "-o", tmp_path / "out") == 1
    one_line_error(capsys, "--scale 3", "supported: 2, 4")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="scale 3 is not supported"):
        diffdeblur.upscale(photo(4, 4), 3, ckpt[2])


def test_a_model_of_another_scale_is_one_line(tmp_path, ckpt, one_input, capsys):
    assert sr(one_input, "--scale", 4, "--model", ckpt[2], "-o", tmp_path / "out") == 1
    one_line_error(capsys, "upscales x2, not x4")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="upscales x4, not x2"):
        diffdeblur.upscale(photo(4, 4), 2, ckpt[4])


def test_a_deblurring_model_is_not_a_super_resolution_model(tmp_path, one_input, capsys):
    save_model(build_model("nafnet-tiny"), tmp_path / "deblur.safetensors")
    assert sr(one_input, "--scale", 2, "--model", tmp_path / "deblur.safetensors", "-o", tmp_path / "out") == 1
    one_line_error(capsys, "not a super-resolution model")


def test_without_shipped_weights_the_error_says_to_pass_a_model(tmp_path, one_input, capsys, monkeypatch):
    monkeypatch.setattr("diffdeblur.tasks.weights_for", lambda name: None)  # a package without the weights
    for scale in (2, 4):
        assert sr(one_input, "--scale", scale, "-o", tmp_path / "out") == 1
        one_line_error(capsys, f"no shipped super-resolution weights yet (sr-x{scale})", "--model")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("scale", [2, 4])
def test_the_shipped_weights_load_by_default_and_beat_bicubic(scale):
    """`upscale` without a model loads the shipped sr-x<scale> and is closer to the truth than PIL's bicubic
    upsampling of a generated photo (Y-PSNR, the SR protocol's border)."""
    from diffdeblur.data.sr_pairs import resize
    from diffdeblur.inference import weights_for
    from diffdeblur.metrics import psnr_y

    if weights_for(f"sr-x{scale}") is None:
        pytest.skip("no shipped super-resolution weights in this checkout")
    truth = photo(96, 128, seed=0)
    small = resize(truth, 96 // scale, 128 // scale)
    out = diffdeblur.upscale(small, scale=scale, engine="eager")
    assert out.shape == truth.shape
    assert psnr_y(out, truth, scale) > psnr_y(resize(small, 96, 128), truth, scale) + 0.3


def test_a_mask_is_refused_in_one_line(tmp_path, ckpt, one_input, capsys):
    assert sr(one_input, "--mask", one_input, "--scale", 2, "--model", ckpt[2], "-o", tmp_path / "out") == 1
    one_line_error(capsys, "--mask", "diffdeblur remove")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="takes no mask"):
        diffdeblur.upscale(photo(4, 4), 2, ckpt[2], mask=np.ones((4, 4)))


def test_an_output_over_the_pixel_limit_is_one_line_naming_the_limit(tmp_path, ckpt, one_input, capsys,
                                                                   monkeypatch):
    monkeypatch.setattr("diffdeblur.inference.MAX_UPSCALED_PIXELS", 1000)  # 9x11 x4 = 1584 output pixels
    assert sr(one_input, "--scale", 4, "--model", ckpt[4], "-o", tmp_path / "out") == 1
    line = one_line_error(capsys, str(one_input), "44x36", "MAX_UPSCALED_PIXELS", "smaller scale")
    assert "0.001 MP limit" in line
    assert not (tmp_path / "out").exists()
    assert sr(one_input, "--scale", 2, "--model", ckpt[2], "-o", tmp_path / "out2") == 0  # 22x18 = 396 fits
    with pytest.raises(ImageError, match="MAX_UPSCALED_PIXELS"):
        diffdeblur.upscale(photo(9, 11), 4, ckpt[4])


def test_a_batch_goes_on_past_a_bad_file_and_fails_in_the_exit_code(tmp_path, ckpt, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "a.png", photo(8, 8))
    (folder / "b.png").write_bytes(b"not an image at all")
    write_image(folder / "c.png", photo(7, 9))
    assert sr(folder, "--scale", 2, "--model", ckpt[2], "-o", tmp_path / "out") == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert len(errors) == 1 and "b.png" in errors[0] and "Traceback" not in captured.err
    assert "upscaled 2 image(s)" in captured.out and "1 failed" in captured.out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


def test_inputs_and_earlier_outputs_are_never_overwritten(tmp_path, ckpt, capsys):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write_image(tmp_path / sub / "x.png", photo(6, 6, seed=len(sub)))
    before = (tmp_path / "a" / "x.png").read_bytes()
    assert sr(tmp_path / "a" / "x.png", "--scale", 2, "--model", ckpt[2], "-o", tmp_path / "a") == 1
    one_line_error(capsys, "would overwrite an input")
    assert (tmp_path / "a" / "x.png").read_bytes() == before
    assert sr(tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", "--scale", 2, "--model", ckpt[2],
              "-o", tmp_path / "out") == 1
    assert "also the output of" in capsys.readouterr().err
    with Image.open(tmp_path / "out" / "x.png") as img:
        assert img.size == (12, 12)  # the first one's, not replaced by the second


# ---- data.cache_images reaches the sr and inpaint sources ------------------------------------------

@pytest.mark.parametrize("source", ["sr", "inpaint"])
@pytest.mark.parametrize("cache", [True, False])
def test_cache_images_reaches_the_sr_and_inpaint_sources(tmp_path, source, cache):
    for i in range(2):
        write_image(tmp_path / f"p{i}.png", photo(40, 40, seed=i))
    assert takes_cache(source)
    dataset = build_train_dataset((DataSource(source, str(tmp_path)),), crop=16, seed=0, cache=cache)
    dataset[0]
    images = dataset.sources[0].images
    assert images.keep is cache and bool(images._cache) is cache
    pinned = build_train_dataset((DataSource(source, str(tmp_path), 1.0, {"cache": False}),), 16, 0, cache=True)
    assert pinned.sources[0].images.keep is False  # a source's own option wins
    assert not takes_cache("synth")  # builders without the option get none
