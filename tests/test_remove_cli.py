"""`diffdeblur remove` and :func:`diffdeblur.remove` (issue 26): masks from every image mode thresholded at 50 %,
boxes, unmasked pixels bit for bit in the written file (whole and tiled), one-line errors naming the file with
nothing written, batches sharing one mask; and the engine probe giving a removal model its mask. Tiny presets with
random weights, saved with :func:`diffdeblur.checkpoint.save_model` into a temporary folder as ``--model``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import one_line_error

import diffdeblur
from diffdeblur import build_model, save_model
from diffdeblur.cli import main
from diffdeblur.engines import measure_engines, probe_inputs
from diffdeblur.errors import ConfigError, ImageError
from diffdeblur.example import procedural_scene
from diffdeblur.png16 import decode_png16, encode_png16
from diffdeblur.tasks import load_mask

H, W = 40, 56
BOX = (10, 8, 20, 14)  # x, y, w, h: the region every mask below marks


def perturbed(name: str, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Preset ``name`` with random noise on every tensor (its zero-initialised parts would leave blocks idle)."""
    torch.manual_seed(seed)
    model = build_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model.eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("remove-model") / "remove.safetensors"
    save_model(perturbed("remove-tiny"), path)
    return path


@pytest.fixture(scope="module")
def chain_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("remove-chain") / "chain.safetensors"
    save_model(perturbed("remove-chain-tiny"), path)
    return path


def photo_u8(h: int = H, w: int = W, seed: int = 1) -> np.ndarray:
    return (procedural_scene(h, w, seed=seed) * 255).round().astype(np.uint8)


def box_region(h: int = H, w: int = W, box=BOX) -> np.ndarray:
    x, y, bw, bh = box
    region = np.zeros((h, w), bool)
    region[y:y + bh, x:x + bw] = True
    return region


def remove_cli(*args: object) -> int:
    return main(["remove", *map(str, args), "--device", "cpu", "--quiet"])


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(photo_u8()).save(path)
    return path


# ---- masks from every image mode -------------------------------------------------------------------

def mask_image(mode: str, region: np.ndarray) -> Image.Image:
    """``region`` (white = remove) as a Pillow image of ``mode``."""
    grey = np.where(region, 255, 0).astype(np.uint8)
    if mode == "1":
        return Image.fromarray(grey).convert("1")
    if mode == "L":
        return Image.fromarray(grey)
    if mode == "LA":
        alpha = np.full_like(grey, 255)
        alpha[0, :] = 0
        grey[0, :] = 255  # transparent white: kept
        return Image.fromarray(np.dstack([grey, alpha]), "LA")
    if mode == "RGB":
        return Image.fromarray(np.dstack([grey] * 3))
    if mode == "RGBA":
        rgba = np.dstack([grey] * 3 + [np.full_like(grey, 255)])
        rgba[-1, :, :3], rgba[-1, :, 3] = 255, 0  # transparent white: kept
        return Image.fromarray(rgba, "RGBA")
    if mode == "P":
        img = Image.fromarray(np.where(region, 1, 0).astype(np.uint8), "P")
        img.putpalette([0, 0, 0, 255, 255, 255] + [0] * (256 * 3 - 6))
        return img
    if mode == "I;16":
        return Image.fromarray(np.where(region, 65535, 0).astype(np.uint16))  # Pillow: mode I;16
    raise AssertionError(mode)


MODES = ["1", "L", "LA", "RGB", "RGBA", "P", "I;16"]


@pytest.mark.parametrize("mode", MODES)
def test_a_mask_of_every_image_mode_gives_the_same_output(tmp_path, ckpt, src, mode):
    region = box_region()
    mask_image(mode, region).save(tmp_path / "mask.png")
    with Image.open(tmp_path / "mask.png") as check:
        assert check.mode == mode
    assert np.array_equal(load_mask(tmp_path / "mask.png"), region)
    assert remove_cli(src, "--mask", tmp_path / "mask.png", "--model", ckpt, "-o", tmp_path / "out.png") == 0
    assert remove_cli(src, "--box", ",".join(map(str, BOX)), "--model", ckpt, "-o", tmp_path / "box.png") == 0
    assert (tmp_path / "out.png").read_bytes() == (tmp_path / "box.png").read_bytes()  # the same region


def test_the_threshold_is_half_white_and_alpha_counts(tmp_path):
    grey = np.zeros((4, 6), np.uint8)
    grey[0, 0], grey[0, 1], grey[0, 2] = 127, 128, 255
    assert load_mask(grey).tolist()[0][:3] == [False, True, True]
    assert np.array_equal(load_mask(np.where(grey > 127, 65535, 32767).astype(np.uint16)), grey > 127)
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[0, :2] = 255  # white, opaque: removed
    rgba[1, :2, :3] = 255  # white, transparent: kept
    assert load_mask(rgba).sum() == 2 and load_mask(rgba)[0, :2].all()
    assert load_mask(np.eye(4, dtype=int)).sum() == 4 and load_mask(np.eye(4, dtype=bool)).sum() == 4
    assert load_mask(Image.fromarray(grey)).sum() == 2


# ---- unmasked pixels bit for bit, whole and tiled ---------------------------------------------------

@pytest.mark.parametrize("tile", ["0", "16"])
def test_unmasked_pixels_of_the_written_file_are_the_input_file_bit_for_bit(tmp_path, ckpt, src, tile):
    region = box_region()
    mask_image("L", region).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    assert remove_cli(src, "--mask", tmp_path / "mask.png", "--model", ckpt, "-o", out, "--tile", tile,
                      "--overlap", "4") == 0
    before, after = np.asarray(Image.open(src)), np.asarray(Image.open(out))
    assert after.shape == before.shape and after.dtype == np.uint8
    assert np.array_equal(after[~region], before[~region])
    assert np.abs(after[region].astype(int) - before[region]).mean() > 1  # the hole is filled


def test_tiled_and_whole_agree_and_a_chain_keeps_the_unmasked_pixels(tmp_path, ckpt, chain_ckpt, src):
    region = box_region()
    mask_image("L", region).save(tmp_path / "mask.png")
    for name, tile in (("whole", "0"), ("tiled", "16")):
        assert remove_cli(src, "--mask", tmp_path / "mask.png", "--model", ckpt, "-o", tmp_path / f"{name}.png",
                          "--tile", tile, "--overlap", "4") == 0
    whole, tiled = (np.asarray(Image.open(tmp_path / f"{n}.png")).astype(int) for n in ("whole", "tiled"))
    assert np.abs(whole - tiled).max() <= 1  # tiles equal the whole image (to 8-bit rounding)
    assert remove_cli(src, "--mask", tmp_path / "mask.png", "--model", chain_ckpt, "--steps", "2",
                      "-o", tmp_path / "chain.png") == 0
    chain = np.asarray(Image.open(tmp_path / "chain.png"))
    assert np.array_equal(chain[~region], np.asarray(Image.open(src))[~region])


def test_16_bit_grey_and_alpha_inputs_keep_their_unmasked_pixels(tmp_path, ckpt):
    rgb16 = (procedural_scene(H, W, seed=3) * 65535).round().astype(np.uint16)
    alpha16 = np.full((H, W, 1), 40000, np.uint16)
    (tmp_path / "c16.png").write_bytes(encode_png16(np.concatenate([rgb16, alpha16], axis=2)))
    assert remove_cli(tmp_path / "c16.png", "--box", ",".join(map(str, BOX)), "--model", ckpt,
                      "-o", tmp_path / "out") == 0
    before = decode_png16((tmp_path / "c16.png").read_bytes())
    after = decode_png16((tmp_path / "out" / "c16.png").read_bytes())
    region = box_region()
    assert after.shape == before.shape == (H, W, 4)
    assert np.array_equal(after[~region], before[~region]) and np.array_equal(after[..., 3], before[..., 3])


def test_boxes_are_repeatable_and_join_the_mask(tmp_path, ckpt, src):
    mask_image("L", box_region(box=(0, 0, 5, 5))).save(tmp_path / "corner.png")
    out = tmp_path / "out.png"
    assert remove_cli(src, "--mask", tmp_path / "corner.png", "--box", "10,8,20,14", "--box", "40, 30, 6, 4",
                      "--model", ckpt, "-o", out) == 0
    region = box_region(box=(0, 0, 5, 5)) | box_region() | box_region(box=(40, 30, 6, 4))
    before, after = np.asarray(Image.open(src)), np.asarray(Image.open(out))
    assert np.array_equal(after[~region], before[~region])
    for box in ((0, 0, 5, 5), BOX, (40, 30, 6, 4)):
        part = box_region(box=box)
        assert (after[part] != before[part]).any()


def test_the_api_matches_the_command(tmp_path, ckpt, src):
    mask_image("RGB", box_region()).save(tmp_path / "mask.png")
    assert remove_cli(src, "--mask", tmp_path / "mask.png", "--model", ckpt, "-o", tmp_path / "cli.png") == 0
    image = photo_u8()
    out = diffdeblur.remove(image, mask=tmp_path / "mask.png", model=ckpt, device="cpu")
    assert out.shape == (H, W, 3) and out.dtype == np.float32
    region = box_region()
    assert np.array_equal(out[~region], image[~region].astype(np.float32) / 255)  # bit for bit
    assert np.array_equal(np.round(out * 255).astype(np.uint8), np.asarray(Image.open(tmp_path / "cli.png")))
    by_box = diffdeblur.remove(src, boxes=[BOX], model=ckpt, device="cpu")
    assert np.array_equal(by_box, out)  # a path and a box: the same region, the same result
    assert np.array_equal(diffdeblur.remove(image, mask=region, model=ckpt, device="cpu"), out)


def test_one_mask_serves_several_inputs_of_its_size(tmp_path, ckpt, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(photo_u8(seed=i)).save(folder / f"p{i}.png")
    Image.fromarray(photo_u8(H + 2, W, seed=5)).save(folder / "tall.png")
    mask_image("L", box_region()).save(tmp_path / "mask.png")
    assert remove_cli(folder, "--mask", tmp_path / "mask.png", "--model", ckpt, "-o", tmp_path / "out") == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert len(errors) == 1 and "tall.png" in errors[0] and "56x40 but the image is 56x42" in errors[0]
    assert "inpainted 2 image(s)" in captured.out and "1 failed" in captured.out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png"]


# ---- one-line errors, nothing written --------------------------------------------------------------

@pytest.mark.parametrize("case, fragments", [
    ("size", ("mask.png is 30x20 but the image is 56x40",)),
    ("empty", ("mask.png", "the mask is empty")),
    ("full", ("mask.png", "covers the whole image")),
    ("unreadable", ("mask.png", "not an image")),
])
def test_a_bad_mask_is_one_line_naming_the_file_and_writes_nothing(tmp_path, ckpt, src, capsys, case, fragments):
    mask = tmp_path / "mask.png"
    if case == "size":
        mask_image("L", box_region(20, 30, box=(1, 1, 5, 5))).save(mask)
    elif case == "empty":
        mask_image("L", np.zeros((H, W), bool)).save(mask)
    elif case == "full":
        mask_image("L", np.ones((H, W), bool)).save(mask)
    else:
        mask.write_bytes(b"garbage")
    assert remove_cli(src, "--mask", mask, "--model", ckpt, "-o", tmp_path / "out" / "x.png") == 1
    line = one_line_error(capsys, *fragments)
    if case == "size":
        assert str(src) in line  # the image it does not fit
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, fragments", [
    (["--box", "50,30,10,5"], ("photo.png", "box 50,30,10,5 reaches outside the 56x40 image")),
    (["--box", "0,0,56,40"], ("photo.png", "cover the whole image")),
    (["--box", "1,2,3"], ("--box 1,2,3", "X,Y,W,H")),
    (["--box", "1,2,0,3"], ("--box 1,2,0,3", "W and H >= 1")),
    ([], ("--mask", "--box")),
])
def test_bad_boxes_are_one_line_and_write_nothing(tmp_path, ckpt, src, capsys, args, fragments):
    assert remove_cli(src, *args, "--model", ckpt, "-o", tmp_path / "out") == 1
    one_line_error(capsys, *fragments)
    assert not (tmp_path / "out").exists()


def test_the_model_must_be_a_removal_model_and_defaults_to_shipped_weights(tmp_path, src, capsys, monkeypatch):
    save_model(build_model("sr-tiny-x2"), tmp_path / "sr.safetensors")
    assert remove_cli(src, "--box", "1,1,4,4", "--model", tmp_path / "sr.safetensors", "-o", tmp_path / "out") == 1
    one_line_error(capsys, "takes no mask", "not an object-removal model")
    monkeypatch.setattr("diffdeblur.tasks.weights_for", lambda name: None)  # a package without the weights
    assert remove_cli(src, "--box", "1,1,4,4", "-o", tmp_path / "out") == 1
    one_line_error(capsys, "no shipped object-removal weights yet", "--model")
    assert not (tmp_path / "out").exists()


def test_the_shipped_weights_fill_a_hole_better_than_smooth_interpolation():
    """The shipped `remove` weights load by default and fill a box in a generated photo closer to the truth than
    the holed input and than OpenCV's Telea inpainting (when OpenCV is installed: the `studies` extra), with every
    pixel outside the hole returned unchanged."""
    from diffdeblur.inference import weights_for

    if weights_for("remove") is None:
        pytest.skip("no shipped remove weights in this checkout")
    photo = photo_u8(96, 128, seed=3)
    mask = np.zeros((96, 128), bool)
    mask[30:62, 40:80] = True  # 10 % of the image
    out = diffdeblur.remove(photo, mask=mask)
    truth = photo.astype(np.float32) / 255

    def hole_psnr(image: np.ndarray) -> float:
        return float(10 * np.log10(1 / np.mean((image[mask] - truth[mask]) ** 2)))

    assert np.array_equal((out[~mask] * 255).round().astype(np.uint8), photo[~mask])
    holed = truth.copy()
    holed[mask] = 0
    assert hole_psnr(out) > hole_psnr(holed) + 10
    cv2 = pytest.importorskip("cv2")
    telea = cv2.inpaint(photo, mask.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA).astype(np.float32) / 255
    assert hole_psnr(out) > hole_psnr(telea)


def test_api_errors(ckpt):
    image = photo_u8()
    with pytest.raises(ConfigError, match="nothing to remove"):
        diffdeblur.remove(image, model=ckpt)
    with pytest.raises(ImageError, match="reaches outside"):
        diffdeblur.remove(image, boxes=[(50, 30, 10, 5)], model=ckpt)
    with pytest.raises(ConfigError, match="expected \\(x, y, width, height\\)"):
        diffdeblur.remove(image, boxes=[(1, 2, 3)], model=ckpt)
    with pytest.raises(ImageError, match="is 6x4 but the image is 56x40"):
        diffdeblur.remove(image, mask=np.eye(4, 6, dtype=bool), model=ckpt)


# ---- the engine probe gives a removal model its mask -----------------------------------------------

def test_the_engine_probe_gives_a_mask_and_auto_measures_a_removal_model():
    model = perturbed("remove-tiny")
    blur, options = probe_inputs(model, 32)
    assert torch.equal(options["mask"], torch.ones(1, 1, 32, 32))
    results = measure_engines(model, torch.device("cpu"), ("eager", "channels-last"), probe_size=32)
    assert "dropped" not in results["eager"] and "channels-last" in results
    assert "mask" not in probe_inputs(build_model("nafnet-tiny"), 32)[1]
