"""Dynamic-scene blur synthesis: physics checks, determinism, the training source and the CLI."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from diffdeblur.cli import main
from diffdeblur.config import DataSource
from diffdeblur.data.datasets import build_source
from diffdeblur.data.exposure import (Layer, linear_to_srgb, partial_exposures, render_instants, srgb_to_linear)
from diffdeblur.data.kernels import convolve
from diffdeblur.data.pairs import find_pairs
from diffdeblur.data.synth import (SynthParams, get_preset, render, sample_params, still_params, synthesize)
from diffdeblur.data.trajectories import KNOTS, Motion, knot_times, sample_camera_motion, splat_kernel
from diffdeblur.io import read_image, write_image


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour image (H, W, 3) in [0, 1] with edges at several scales."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for _ in range(6):
        f, ph = rng.uniform(2, 12, 2), rng.uniform(0, 2 * math.pi, 3)
        img += np.sin(2 * math.pi * (f[0] * x + f[1] * y)[..., None] + ph) * rng.uniform(0.05, 0.15, 3)
    img += (((x * 7).astype(int) + (y * 5).astype(int)) % 2)[..., None] * 0.3
    return np.clip(img - img.min(), 0, None).astype(np.float32) / np.float32(img.max() - img.min())


def straight_motion(dx: float, dy: float) -> Motion:
    """Constant-velocity shift by (dx, dy) px over the exposure, centred on t = 0.5."""
    t = knot_times() - 0.5
    return Motion(np.stack([dx * t, dy * t], axis=1), np.zeros(KNOTS), np.zeros(KNOTS))


PRESET = get_preset("gopro-like", layers=(2, 2), highlight_prob=1.0, jpeg_prob=1.0)


def test_same_seed_same_sample_and_seed_matters():
    img = texture(80, 96)
    a = synthesize(img, np.random.default_rng(5), PRESET, crop=48, other=texture(64, 64, 1), partials=(1, 11))
    b = synthesize(img, np.random.default_rng(5), PRESET, crop=48, other=texture(64, 64, 1), partials=(1, 11))
    c = synthesize(img, np.random.default_rng(6), PRESET, crop=48, other=texture(64, 64, 1), partials=(1, 11))
    assert np.array_equal(a.blur, b.blur) and np.array_equal(a.sharp, b.sharp)
    assert np.array_equal(a.partials, b.partials)
    assert a.params.to_dict() == b.params.to_dict()
    assert not np.array_equal(a.blur, c.blur)


def test_kernels_sum_to_one_and_constant_scene_stays_constant():
    rng = np.random.default_rng(0)
    for _ in range(5):
        cam = sample_camera_motion(rng, rng.uniform(0, 40), rng.uniform(0, 3), rotation_deg=1.0, jerk_prob=0.5)
        k = splat_kernel(cam.at(rng.random(200))[0])
        assert k.sum() == pytest.approx(1.0, abs=1e-12) and k.min() >= 0
    grey = np.full((40, 50, 3), 0.4, dtype=np.float32)
    params = sample_params(np.random.default_rng(1), get_preset("severe", layers=(2, 2)), 40, 50)
    params = dataclasses.replace(params, shot_noise=0.0, read_noise=0.0, jpeg_quality=0)
    res = render(grey, params, motion=True)
    assert res.kernel.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.abs(res.blur - 0.4).max() < 1e-4  # light is moved, never created or lost


def test_translation_blur_is_convolution_with_the_camera_kernel():
    img = texture(96, 96, 2)
    params = SynthParams(subframes=5, camera=straight_motion(7.3, -4.1))
    box = (30, 30, 36, 36)  # interior: the margin is real image, no mirroring
    res = render(img, params, box, motion=True, keep_subframes=True)
    blur_lin = partial_exposures(res.subframes, [5])[0]
    r = res.kernel.shape[0] // 2
    lin = srgb_to_linear(img)[30 - r:66 + r, 30 - r:66 + r]
    expected = convolve(lin, res.kernel.astype(np.float32), mode="valid")
    assert np.abs(blur_lin - expected).max() < 1e-4
    assert np.allclose(res.motion, [7.3, -4.1], atol=1e-4)  # whole image moved start -> end


def test_zero_motion_returns_the_input():
    img = texture(40, 56, 3)
    res = render(img, still_params())
    assert np.abs(res.blur - img).max() < 1e-5 and np.abs(res.sharp - img).max() < 1e-5
    still = get_preset("gopro-like", camera_length=(0, 0), rotation_deg=(0, 0), zoom=(0, 0), layers=(0, 0),
                       highlight_prob=0.0, shot_noise=(0, 0), read_noise=(0, 0))
    res = synthesize(img, np.random.default_rng(0), still, partials=(1, 5, 11))
    assert np.abs(res.blur - img).max() < 1e-5 and np.abs(res.partials - img).max() < 1e-5
    # still foreground layers: every warped instant equals the directly composited sharp frame
    params = sample_params(np.random.default_rng(2), get_preset("severe", layers=(3, 3)), 40, 56)
    params = dataclasses.replace(params, camera=Motion.still(), shot_noise=0.0, read_noise=0.0, jpeg_quality=0,
                                 layers=tuple(dataclasses.replace(lp, motion=Motion.still()) for lp in params.layers))
    res = render(img, params)
    assert np.abs(res.blur - res.sharp).max() < 1e-5 and np.abs(res.sharp - img).max() > 0.05


def test_partial_exposures_accumulate_to_the_blur():
    img = texture(64, 64, 4)
    params = sample_params(np.random.default_rng(3), get_preset("severe", jpeg_prob=0.0), 48, 48)
    res = render(img, params, (8, 8, 48, 48), partials=(1, 4, 13), keep_subframes=True)
    assert params.shot_noise > 0  # noise on: the partials share its draw
    assert np.array_equal(res.partials[-1], res.blur)  # k = N is the blurred image, bit for bit
    lin = partial_exposures(res.subframes, (1, 4, 13))
    for k, p in zip((1, 4, 13), lin):
        assert np.allclose(p * k, res.subframes[:k].sum(axis=0), atol=1e-5)
    with pytest.raises(ValueError, match="1..13"):
        render(img, params, partials=(14,))


def test_linear_light_integration_brightens_a_blurred_edge():
    img = np.zeros((32, 64, 3), dtype=np.float32)
    img[:, 32:] = 1.0
    res = render(img, SynthParams(subframes=9, camera=straight_motion(16.0, 0.0)), (8, 16, 16, 32), motion=True)
    mid = res.blur[8, 15:17].mean()  # the old edge: half black, half white over the exposure
    naive = convolve(img, res.kernel.astype(np.float32))[16, 31:33].mean()  # averaging sRGB values
    assert naive == pytest.approx(0.5, abs=0.03)
    assert mid == pytest.approx(float(linear_to_srgb(np.float32(0.5))), abs=0.03)  # ~0.735
    assert mid > naive + 0.15
    srgb_params = SynthParams(subframes=9, camera=straight_motion(16.0, 0.0), integration="srgb")
    shortcut = render(img, srgb_params, (8, 16, 16, 32))
    assert shortcut.blur[8, 15:17].mean() == pytest.approx(naive, abs=0.01)  # the sRGB shortcut is the naive mean


def test_boosted_highlights_leave_longer_saturated_streaks():
    img = np.full((48, 48, 3), 0.2, dtype=np.float32)
    img[22:26, 22:26] = 1.0
    cam = straight_motion(20.0, 0.0)
    plain = render(img, SynthParams(subframes=9, camera=cam))
    bright = render(img, SynthParams(subframes=9, camera=cam, highlight_gain=8.0))
    assert (bright.blur[24] >= 0.999).sum() > (plain.blur[24] >= 0.999).sum()
    assert np.abs(bright.sharp - plain.sharp).max() < 1e-5  # the sharp frame clips back to the photo


def test_nearer_layers_occlude_farther_ones():
    h = w = 32
    yy, xx = np.mgrid[0:h, 0:w]
    disk = lambda cx: ((xx - cx) ** 2 + (yy - 16) ** 2 <= 64).astype(np.float32)  # noqa: E731
    red, green = np.zeros((h, w, 3), np.float32), np.zeros((h, w, 3), np.float32)
    red[..., 0], green[..., 1] = 1.0, 1.0
    layers = [Layer(red, disk(12), Motion.still(), (12, 16)), Layer(green, disk(18), Motion.still(), (18, 16))]
    frame = render_instants(np.zeros((h, w, 3), np.float32), Motion.still(), layers, np.array([0.5]))[0]
    assert np.allclose(frame[16, 15], [0, 1, 0]) and np.allclose(frame[16, 6], [1, 0, 0])
    moving = [layers[0], Layer(green, disk(18), straight_motion(10.0, 0.0), (18, 16))]
    frames = render_instants(np.zeros((h, w, 3), np.float32), Motion.still(), moving, np.array([0.0, 1.0]))
    assert np.allclose(frames[0, 16, 22], [0, 0, 0]) and np.allclose(frames[1, 16, 26], [0, 1, 0])


def test_sources_return_float_crops_and_partials(tmp_path):
    for i in range(2):
        write_image(tmp_path / f"im{i}.png", texture(50, 70, i))
    synth = build_source(DataSource("synth", str(tmp_path), 1.0, {"preset": "mild", "partials": [1, 7]}))
    a, b = synth.sample(np.random.default_rng(1), 64), synth.sample(np.random.default_rng(1), 64)
    assert a["blur"].shape == a["sharp"].shape == (64, 64, 3) and a["partials"].shape == (2, 64, 64, 3)
    assert all(v.dtype == np.float32 and v.min() >= 0 and v.max() <= 1 for v in a.values())
    assert np.array_equal(a["partials"][-1], a["blur"]) and np.array_equal(a["blur"], b["blur"])
    naive = build_source(DataSource("uniform-kernel", str(tmp_path), 1.0, {"preset": "gopro-like"}))
    n = naive.sample(np.random.default_rng(2), 32)
    assert n["blur"].shape == n["sharp"].shape == (32, 32, 3) and n["blur"].dtype == np.float32
    with pytest.raises(ValueError, match="unknown synth option"):
        build_source(DataSource("synth", str(tmp_path), 1.0, {"bogus": 1}))


def test_cli_writes_a_paired_folder_and_skips_a_corrupt_file(tmp_path, capsys):
    src = tmp_path / "sharp_in"
    src.mkdir()
    for i in range(3):
        write_image(src / f"photo{i}.png", texture(40, 52, 10 + i))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    common = ["synth", str(src), "--count", "8", "--seed", "7", "--partials", "1,11", "--size", "32", "--quiet"]
    rc = main([*common, "-o", str(out1), "--motion"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and "broken.png" in err[0]
    pairs, unmatched = find_pairs(out1)
    assert len(pairs) == 6 and not unmatched  # 8 samples, the 2 from the broken file skipped
    meta = [json.loads(line) for line in (out1 / "meta.jsonl").read_text().splitlines()]
    assert [m["index"] for m in meta] == [1, 2, 3, 5, 6, 7]  # "broken.png" sorts first: samples 0 and 4
    assert meta[0]["params"]["camera"]["length_px"] > 0 and meta[0]["seed"] == [7, 1]
    name = meta[0]["name"]
    blur, _ = read_image(out1 / "blur" / f"{name}.png")
    last, _ = read_image(out1 / "partials" / f"{name}_k11.png")
    assert blur.shape == (32, 32, 3) and np.array_equal(blur, last)
    assert np.load(out1 / "kernels" / f"{name}.npy").sum() == pytest.approx(1.0, abs=1e-5)
    assert np.load(out1 / "motion" / f"{name}.npy").shape == (32, 32, 2)
    # the same seed with two worker processes gives the same files
    assert main([*common, "-o", str(out2), "--workers", "2"]) == 1
    for p in pairs:
        for kind in ("blur", "sharp"):
            assert (out1 / kind / p.blur.name).read_bytes() == (out2 / kind / p.blur.name).read_bytes()
    assert (out1 / "meta.jsonl").read_text() == (out2 / "meta.jsonl").read_text()


def test_real_like_preset_is_deterministic_and_creates_no_light():
    """The preset calibrated on real pairs (benchmarks/synth_calibration.py): no highlight boost and
    faint noise, so a flat field keeps its brightness; averaged as sRGB values it keeps the mean of
    textured pairs with highlights too (what gopro-like's boost does not); in linear light it
    brightens them less than gopro-like."""
    from diffdeblur.data.synth import PRESETS
    assert "real-like" in PRESETS
    preset = get_preset("real-like")
    assert preset.highlight_prob == 0.0 and preset.shot_noise == (0.0, 0.0) and preset.integration == "linear"
    img = texture(64, 64, 7)
    img[10:18, 30:40] = 1.0  # clipped highlights
    img[40:44, 8:30] = 1.0
    other = texture(64, 64, 8)
    a = synthesize(img, np.random.default_rng(4), "real-like", crop=32, other=other)
    b = synthesize(img, np.random.default_rng(4), "real-like", crop=32, other=other)
    assert np.array_equal(a.blur, b.blur) and np.array_equal(a.sharp, b.sharp)
    assert a.params.to_dict() == b.params.to_dict()

    def mean_shift(image: np.ndarray, p, second: np.ndarray | None = other, seeds: int = 10) -> float:
        """mean(blur - sharp) in 8-bit levels over ``seeds`` generated pairs."""
        pairs = (synthesize(image, np.random.default_rng(s), p, crop=32, other=second) for s in range(seeds))
        return float(np.mean([(r.blur - r.sharp).mean() * 255 for r in pairs]))

    grey = np.full((48, 48, 3), 0.4, dtype=np.float32)
    assert abs(mean_shift(grey, preset, None)) < 0.01  # moving grey layers on grey: light is only moved
    assert abs(mean_shift(img, get_preset("real-like", integration="srgb"))) < 0.6
    assert mean_shift(img, get_preset("gopro-like", integration="srgb")) > 2.0  # its highlight boost adds light
    assert mean_shift(img, preset) < mean_shift(img, get_preset("gopro-like")) - 1.0
