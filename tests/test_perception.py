"""Perception measures (:mod:`diffdeblur.perception`): the torchmetrics ones against torchmetrics' own
classes, GMSD and HaarPSI against their papers' formulas on analytic cases and an independent
re-implementation, the blur effect against scikit-image, the direction of each on a blur sweep, and
their use in evaluate() and `diffdeblur eval --metrics`. Images are tiny (at most 176 pixels)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffdeblur import perception as P
from diffdeblur.errors import ConfigError

from conftest import make_paired_folder

ndimage = pytest.importorskip("scipy.ndimage")
torchmetrics = pytest.importorskip("torchmetrics", reason="MS-SSIM and VIF need torchmetrics: pip install 'diffdeblur[metrics]'")
skimage_measure = pytest.importorskip("skimage.measure")

Y601 = np.array([0.299, 0.587, 0.114])


def on_8bit_grid(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A random image whose values are already k / 255 (the measures' 8-bit quantisation is then a no-op)."""
    return rng.integers(0, 256, size=shape).astype(np.float64) / 255.0


def noisy(img: np.ndarray, rng: np.random.Generator, std: float = 0.08) -> np.ndarray:
    return np.round(np.clip(img + std * rng.standard_normal(img.shape), 0, 1) * 255) / 255


def textured(n: int = 96, seed: int = 0) -> np.ndarray:
    """(n, n, 3) in [0, 1]: smoothed colour noise + an 8-pixel checkerboard + a colour ramp."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((n, n, 3)), (1, 1, 0))
    noise = (noise - noise.mean()) / noise.std()
    checker = ((np.arange(n)[:, None] // 8 + np.arange(n)[None] // 8) % 2).astype(float)
    ramp = np.linspace(-0.5, 0.5, n)[None, :, None] * np.array([1.0, 0.5, -1.0])
    return np.clip(0.5 + 0.075 * noise + 0.25 * (checker[..., None] - 0.5) + 0.2 * ramp, 0, 1)


def as_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))[None]


# --- MS-SSIM and VIF: torchmetrics' own classes --------------------------------------------------

@pytest.mark.parametrize("size", [(64, 80), (176, 176)])
def test_ms_ssim_equals_torchmetrics_class(rng, size):
    from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

    target = on_8bit_grid(rng, (*size, 3))
    pred = noisy(target, rng)
    scales = P.ms_ssim_scales(*size)
    assert scales == (3 if size == (64, 80) else 5)
    # 5 scales: torchmetrics' defaults (Wang et al.'s exponents); fewer: the first ones renormalised
    metric = (MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0) if scales == 5 else
              MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0, betas=P.ms_ssim_betas(scales)))
    metric.update(as_tensor(pred), as_tensor(target))
    expected = float(metric.compute())
    assert P.ms_ssim(pred, target) == pytest.approx(expected, abs=1e-6)
    assert 0 < expected < 0.999 and P.ms_ssim(target, target) == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_scales_and_betas():
    thresholds = {176: 5, 175: 4, 99: 4, 98: 3, 44: 3, 43: 2, 22: 2, 21: 1, 11: 1}
    assert {side: P.ms_ssim_scales(side, 1000) for side in thresholds} == thresholds
    assert P.ms_ssim_scales(1000, 99) == 4
    with pytest.raises(ValueError, match="at least 11x11"):
        P.ms_ssim_scales(10, 300)
    assert P.ms_ssim_betas(5) == P.MS_SSIM_BETAS
    three = P.ms_ssim_betas(3)
    assert sum(three) == pytest.approx(1.0) and three[0] / three[1] == pytest.approx(0.0448 / 0.2856)


def test_vif_equals_torchmetrics_class_on_luminance(rng):
    from torchmetrics.image import VisualInformationFidelity

    target = on_8bit_grid(rng, (48, 56, 3))
    pred = noisy(target, rng)
    metric = VisualInformationFidelity(sigma_n_sq=2.0)
    metric.update(as_tensor(((pred * 255) @ Y601)[..., None]), as_tensor(((target * 255) @ Y601)[..., None]))
    assert P.vif(pred, target) == pytest.approx(float(metric.compute()), abs=1e-6)
    assert P.vif(target, target) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 41x41"):
        P.vif(target[:40], target[:40])


# --- GMSD: Xue et al. 2014 --------------------------------------------------------------------------

def test_gmsd_is_zero_for_identical_images(rng):
    img = on_8bit_grid(rng, (40, 56, 3))
    assert P.gmsd(img, img) == 0.0


def test_gmsd_of_two_flat_images_matches_the_paper_by_hand():
    """Grey levels a, b (0-255). After the 2x2 mean the images are still flat; the Prewitt gradients
    (zeros outside, as MATLAB conv2 'same') vanish inside and see the border: on an edge pixel
    m = a (three rows of a / 3), at a corner m = 2 sqrt(2) a / 3. So GMS is 1 inside,
    (2ab + c) / (a^2 + b^2 + c) on the edges and (16/9 ab + c) / (8/9 (a^2 + b^2) + c) at the corners,
    c = 170; GMSD is the standard deviation of that map, eq. (8)."""
    a, b, c = 100.0, 200.0, 170.0
    h, w = 16, 20  # the halved 32x40 image
    edge = (2 * a * b + c) / (a * a + b * b + c)
    corner = (16 / 9 * a * b + c) / (8 / 9 * (a * a + b * b) + c)
    gms = np.array([corner] * 4 + [edge] * (2 * (h - 2) + 2 * (w - 2)) + [1.0] * ((h - 2) * (w - 2)))
    expected = np.sqrt(np.mean((gms - gms.mean()) ** 2))
    got = P.gmsd(np.full((32, 40, 3), a / 255), np.full((32, 40, 3), b / 255))
    assert got == pytest.approx(expected, rel=1e-9) and got > 0.05


def gmsd_independent(pred: np.ndarray, target: np.ndarray) -> float:
    """GMSD written differently: block means by reshaping, Prewitt by scipy.ndimage.convolve (zeros outside)."""
    prewitt = np.array([[1.0, 0.0, -1.0]] * 3) / 3

    def grad(img: np.ndarray) -> np.ndarray:
        y = np.round(img * 255) @ Y601
        h, w = y.shape
        y = y.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        gx = ndimage.convolve(y, prewitt, mode="constant", cval=0.0)
        gy = ndimage.convolve(y, prewitt.T, mode="constant", cval=0.0)
        return np.hypot(gx, gy)

    m1, m2 = grad(pred), grad(target)
    return float(np.std((2 * m1 * m2 + 170) / (m1 ** 2 + m2 ** 2 + 170)))


def test_gmsd_matches_an_independent_implementation_and_is_symmetric(rng):
    target = textured(48)
    pred = noisy(target, rng)
    assert P.gmsd(pred, target) == pytest.approx(gmsd_independent(pred, target), rel=1e-10)
    assert P.gmsd(pred, target) == pytest.approx(P.gmsd(target, pred), rel=1e-12)


def test_conv2_same_follows_matlab():
    x = np.arange(1.0, 13.0).reshape(3, 4)
    # MATLAB: conv2(x, [1 1], 'same') = x(:, j) + x(:, j + 1), zero past the last column
    assert np.array_equal(P.conv2_same(x, np.ones((1, 2))), x + np.pad(x[:, 1:], ((0, 0), (0, 1))))
    # an odd kernel is centred: conv2(x, [1 2 3], 'same')(j) = 3 x(j - 1) + 2 x(j) + 1 x(j + 1)
    row = np.array([0.0, 1, 2, 3, 0])
    assert np.array_equal(P.conv2_same(row[None], np.array([[1.0, 2, 3]]))[0], [1, 4, 10, 12, 9])
    assert np.array_equal(P.conv2_same(row[:, None], np.array([[1.0], [2], [3]]))[:, 0], [1, 4, 10, 12, 9])


# --- HaarPSI: Reisenhofer et al. 2018 -----------------------------------------------------------

def test_haarpsi_identical_symmetric_and_in_range(rng):
    target = textured(48)
    pred = noisy(target, rng)
    assert P.haarpsi(target, target) == pytest.approx(1.0, abs=1e-12)
    score = P.haarpsi(pred, target)
    assert 0 < score < 0.99 and score == pytest.approx(P.haarpsi(target, pred), rel=1e-12)
    assert P.haarpsi(np.zeros((32, 32, 3)), np.zeros((32, 32, 3))) == 1.0
    odd = target[:45, :47]
    assert P.haarpsi(odd, odd) == pytest.approx(1.0, abs=1e-12)


def test_haarpsi_of_a_point_against_black_matches_the_paper_by_hand():
    """Reference: black with one white 2x2 block, aligned so that the 2x2 mean turns it into one pixel
    of Y = A = 255 (I = Q = 0: grey); distorted: black. The scale-j Haar response of a point is
    +-2^-j A on a 2^j x 2^j square, nested around it (MATLAB conv2 'same'); the distorted image's
    responses are 0. So, for each orientation, the weights (scale 3) are A / 8 on 64 pixels and 0
    elsewhere; there, with S(x) = C / (x^2 + C), the local similarity is (S(A/2) + S(A/4)) / 2 on the
    2x2 square, (1 + S(A/4)) / 2 on the other 12 pixels of the 4x4 one, 1 on the other 48. The colour
    map is 1 with the same weights. HaarPSI = (l^-1(sum l(HS) W / sum W))^2, l the logistic of slope alpha."""
    C, alpha, A = 30.0, 4.2, 255.0
    ref = np.zeros((48, 48, 3))
    ref[20:22, 20:22] = 1.0

    def S(x: float) -> float:
        return C / (x * x + C)

    def logistic(x: float) -> float:
        return 1 / (1 + np.exp(-alpha * x))

    inner, ring = (S(A / 2) + S(A / 4)) / 2, (1 + S(A / 4)) / 2
    per_orientation = 4 * logistic(inner) + 12 * logistic(ring) + 48 * logistic(1.0)
    pooled = (2 * per_orientation + 64 * logistic(1.0)) / (3 * 64)
    expected = (np.log(pooled / (1 - pooled)) / alpha) ** 2
    assert P.haarpsi(np.zeros_like(ref), ref) == pytest.approx(expected, rel=1e-10)
    assert P.haarpsi(ref, np.zeros_like(ref)) == pytest.approx(expected, rel=1e-10)
    assert 0.3 < expected < 0.7


def test_haar_filters_are_the_reference_filters():
    for scale in (1, 2, 3):
        column, row = P.haar_filters(scale)
        n = 2 ** scale
        full = 2.0 ** -scale * np.ones((n, n))
        full[: n // 2] *= -1  # the reference code's haarFilter: the first half of the rows negated
        assert np.array_equal(column @ row, full)


# --- blur effect: scikit-image ------------------------------------------------------------------------

def test_blur_effect_equals_skimage_on_the_luminance(rng):
    from skimage.color import rgb2gray

    img = on_8bit_grid(rng, (40, 48, 3))
    smooth = np.round(ndimage.gaussian_filter(img, (2, 2, 0)) * 255) / 255
    for x in (img, smooth):
        assert P.blur_effect(x) == pytest.approx(skimage_measure.blur_effect(rgb2gray(x)), abs=1e-12)
        assert P.blur_effect(x) == pytest.approx(skimage_measure.blur_effect(x, channel_axis=2), abs=1e-12)
    assert 0 <= P.blur_effect(img) < P.blur_effect(smooth) <= 1


# --- direction on a blur sweep ------------------------------------------------------------------------

def test_every_measure_moves_the_right_way_on_a_blur_sweep():
    from diffdeblur.metrics import psnr, ssim

    sharp = textured(96)
    sweep = [ndimage.gaussian_filter(sharp, (s, s, 0)) for s in (0.5, 1, 2, 3)]
    better_higher = {"psnr": psnr, "ssim": ssim, "ms-ssim": P.ms_ssim, "vif": P.vif, "haarpsi": P.haarpsi}
    for name, fn in better_higher.items():
        scores = [fn(x, sharp) for x in sweep]
        assert all(a > b for a, b in zip(scores, scores[1:])), (name, scores)
        assert P.PERCEPTION_METRICS[name].higher_is_better
    gmsd_scores = [P.gmsd(x, sharp) for x in sweep]
    assert all(a < b for a, b in zip(gmsd_scores, gmsd_scores[1:])), gmsd_scores
    blur_scores = [P.blur_effect(x) for x in [sharp] + sweep]
    assert all(a < b for a, b in zip(blur_scores, blur_scores[1:])), blur_scores
    assert not P.PERCEPTION_METRICS["gmsd"].higher_is_better
    assert not P.PERCEPTION_METRICS["blur-effect"].higher_is_better


# --- names, extras ------------------------------------------------------------------------------------

def test_parse_metrics_names_and_errors():
    assert P.parse_metrics("psnr, SSIM,ms_ssim,ms-ssim,blur-effect") == ("psnr", "ssim", "ms-ssim", "blur-effect")
    assert set(P.PERCEPTION_METRICS) == {"psnr", "ssim", "niqe", "ms-ssim", "vif", "haarpsi", "gmsd", "blur-effect"}
    with pytest.raises(ConfigError) as info:
        P.parse_metrics("psnr,lpips")
    message = str(info.value)
    assert "'lpips'" in message and "\n" not in message
    assert all(name in message for name in P.PERCEPTION_METRICS)
    with pytest.raises(ConfigError, match="no metric"):
        P.parse_metrics(" , ")


def test_a_missing_extra_is_a_config_error_naming_it(monkeypatch, rng):
    find_spec = P.importlib.util.find_spec
    monkeypatch.setattr(P.importlib.util, "find_spec",
                        lambda name, *args: None if name in ("torchmetrics", "skimage") else find_spec(name, *args))
    img = on_8bit_grid(rng, (48, 48, 3))
    for call in (lambda: P.ms_ssim(img, img), lambda: P.vif(img, img), lambda: P.blur_effect(img),
                 lambda: P.require(["psnr", "vif"])):
        with pytest.raises(ConfigError, match=r'pip install "diffdeblur\[metrics\]"'):
            call()
    P.require(["psnr", "ssim", "haarpsi", "gmsd"])  # no extra needed


def test_the_module_and_the_eval_parser_load_without_torch():
    code = ("import sys; from diffdeblur.perception import parse_metrics; parse_metrics('vif,gmsd'); "
            "from diffdeblur.cli import build_parser; build_parser('eval').parse_args("
            "['eval', '--data', 'd', '--metrics', 'haarpsi']); assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# --- evaluate() and `diffdeblur eval --metrics` ------------------------------------------------------

def test_evaluate_with_metrics_adds_their_columns(tmp_path):
    from diffdeblur import build_model
    from diffdeblur.evaluate import ROW_FIELDS, evaluate, write_report

    data = make_paired_folder(tmp_path / "pairs", n=2, size=(48, 64))
    model = build_model("nafnet-tiny")
    report = evaluate(model, data, metrics="psnr,ms-ssim,vif,haarpsi,gmsd,blur-effect", niqe=False)
    new = ["ms_ssim", "vif", "haarpsi", "gmsd", "blur_effect"]
    keys = ["psnr"] + new
    assert report.errors == [] and len(report.rows) == 2
    for row in report.rows:
        assert [k for k in row if k not in ("image", "seconds", "cpu_seconds")] == \
            [f for f in ROW_FIELDS if f in keys or f.removeprefix("input_") in keys]
        assert all(np.isfinite(row[k]) and np.isfinite(row[f"input_{k}"]) for k in keys)
        assert 0 <= row["blur_effect"] <= 1 and 0 < row["input_haarpsi"] <= 1
    assert all(k in report.summary and f"input_{k}" in report.summary for k in keys)
    assert "ssim" not in report.summary
    write_report(report, tmp_path / "out")
    header = (tmp_path / "out" / "per_image.csv").read_text().splitlines()[0].split(",")
    assert header == ["image", "psnr", "input_psnr", "ms_ssim", "input_ms_ssim", "vif", "input_vif", "haarpsi",
                      "input_haarpsi", "gmsd", "input_gmsd", "blur_effect", "input_blur_effect", "seconds",
                      "cpu_seconds"]
    # the default is unchanged: PSNR and SSIM only
    default = evaluate(model, data, max_images=1)
    assert set(default.rows[0]) == {"image", "psnr", "ssim", "input_psnr", "input_ssim", "seconds", "cpu_seconds"}
    # an image a measure cannot score keeps its row, NaN there, and is reported
    small = evaluate(model, data, metrics=["vif", "gmsd"], crop=32, max_images=1)
    assert np.isnan(small.rows[0]["vif"]) and np.isfinite(small.rows[0]["gmsd"]) and np.isnan(small.summary["vif"])
    assert len(small.errors) == 2 and all("at least 41x41" in e for e in small.errors)
    with pytest.raises(ConfigError, match="unknown metric 'dists'"):
        evaluate(model, data, metrics=["psnr", "dists"])


def test_eval_command_metrics_option(tmp_path, ckpt, capsys):
    from diffdeblur.cli import main

    data = make_paired_folder(tmp_path / "data", n=2, size=(48, 48))
    out = tmp_path / "ev"
    assert main(["eval", "--model", ckpt, "--data", str(data), "--out", str(out), "--quiet",
                 "--metrics", "ssim,gmsd,blur-effect"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "SSIM" in line and "GMSD" in line and "blur effect" in line and "PSNR" not in line
    assert line.count("(input ") == 3
    summary = json.loads((out / "summary.json").read_text())
    assert all(np.isfinite(summary[k]) for k in ("ssim", "input_ssim", "gmsd", "input_gmsd", "blur_effect",
                                                 "input_blur_effect"))
    header = (out / "per_image.csv").read_text().splitlines()[0]
    assert header == "image,ssim,input_ssim,gmsd,input_gmsd,blur_effect,input_blur_effect,seconds,cpu_seconds"
    with pytest.raises(SystemExit) as info:
        main(["eval", "--model", ckpt, "--data", str(data), "--metrics", "psnr,lpips"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown metric 'lpips'" in err and "haarpsi" in err
