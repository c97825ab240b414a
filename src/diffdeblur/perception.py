"""Perceptual image measures beside PSNR / SSIM (:mod:`diffdeblur.metrics`) and NIQE (:mod:`diffdeblur.niqe`).

All of them run without downloaded network weights and without torchvision (LPIPS and DISTS need
ImageNet backbones; ``piq`` imports torchvision), see docs/methods/perception.md.

Full reference, ``f(pred, target) -> float`` (``target`` is the sharp reference):
- :func:`ms_ssim`: multi-scale SSIM (Wang, Simoncelli, Bovik 2003), torchmetrics. Higher is better, 1 = identical.
- :func:`vif`: pixel-domain visual information fidelity VIF-p (Sheikh, Bovik 2006), torchmetrics.
  Higher is better, 1 = identical.
- :func:`gmsd`: gradient magnitude similarity deviation (Xue, Zhang, Mou, Bovik 2014), written here.
  Lower is better, 0 = identical.
- :func:`haarpsi`: Haar wavelet-based perceptual similarity index (Reisenhofer, Bosse, Kutyniok,
  Wiegand 2018), written here. Higher is better, 1 = identical.
No reference, ``f(image) -> float``:
- :func:`blur_effect`: the blur annoyance of Crete-Roffet et al. 2007, scikit-image. In [0, 1], higher is blurrier.

Every function takes RGB images as (H, W, 3) float arrays in [0, 1] and scores them as 8-bit images
(round(x * 255), the protocol of :mod:`diffdeblur.metrics`), so a restored image is scored as it is saved.
Luminance, where a measure works on it, is BT.601 Y = 0.299 R + 0.587 G + 0.114 B on [0, 255] (the Y
row of NTSC YIQ, as the GMSD and HaarPSI reference code use it); ``blur_effect`` keeps scikit-image's
own ``rgb2gray``. An image a measure cannot score (too small, wrong shape, not finite) raises a
one-line ValueError; a missing optional package raises a ConfigError naming the extra to install.

:data:`PERCEPTION_METRICS` names every measure that ``evaluate()`` and ``diffdeblur eval --metrics`` know,
with whether it needs the reference, its direction and its extra; :func:`parse_metrics` reads a list.
This module imports neither torch nor the optional packages until a measure runs.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from .errors import ConfigError

METRICS_EXTRA = "metrics"
INSTALL_HINT = 'pip install "diffdeblur[{extra}]"'

# BT.601 luma and the two chroma rows of NTSC YIQ, applied to 8-bit RGB (HaarPSI reference code, GMSD paper)
Y_WEIGHTS = np.array([0.299, 0.587, 0.114])
I_WEIGHTS = np.array([0.596, -0.274, -0.322])
Q_WEIGHTS = np.array([0.211, -0.523, 0.312])

# MS-SSIM (Wang et al. 2003, Sec. 3.2): the five scale exponents fitted to their subjective data
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_WINDOW = 11           # Gaussian window side (sigma 1.5); the coarsest scale must be at least this wide
VIF_SIGMA_N_SQ = 2.0          # visual noise variance sigma_n^2 of VIF-p, calibrated for [0, 255] pixel values
VIF_MIN_SIZE = 41             # torchmetrics' VIF needs 41x41 (a 17x17 window after three halvings)
GMSD_C = 170.0                # GMSD's stabilising constant c, eq. (5), for [0, 255] images
HAARPSI_C = 30.0              # HaarPSI's similarity constant C, eq. (4)
HAARPSI_ALPHA = 4.2           # slope alpha of HaarPSI's logistic function l_alpha, eq. (5)
HAARPSI_SCALES = 3            # Haar filter scales: 1-2 for the local similarity, 3 for the weights
BLUR_EFFECT_H_SIZE = 11       # scikit-image's re-blurring filter length (its default)


class Measure(NamedTuple):
    """One entry of :data:`PERCEPTION_METRICS`.

    function: ``f(pred, target) -> float`` when ``needs_reference``, else ``f(image) -> float``;
    higher_is_better: the measure's direction; extra: the optional-dependency group it needs (None: core).
    """

    function: Callable[..., float]
    needs_reference: bool
    higher_is_better: bool
    extra: str | None


# ---------------------------------------------------------------------------------------------
# Inputs and optional packages

def _rgb255(img: np.ndarray, what: str) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1] -> (H, W, 3) float64 in [0, 255], quantised to 8 bits."""
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{what}: expected an (H, W, 3) RGB image, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{what}: expected a float image in [0, 1], got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: the image contains NaN or infinite values")
    return np.round(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0)


def _pair255(pred: np.ndarray, target: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _rgb255(pred, what), _rgb255(target, what)
    if a.shape != b.shape:
        raise ValueError(f"{what}: image sizes differ {a.shape} vs {b.shape}")
    return a, b


def _need(module: str, package: str, what: str, extra: str = METRICS_EXTRA) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} needs {package} (not installed): {INSTALL_HINT.format(extra=extra)}")


def _torchmetrics_image(what: str) -> Any:
    """``torchmetrics.functional.image``, or a ConfigError naming the ``metrics`` extra."""
    _need("torchmetrics", "torchmetrics", what)
    import torchmetrics.functional.image as image_metrics

    return image_metrics


def _to_tensor(rgb255: np.ndarray) -> Any:
    """(H, W, C) float64 array -> (1, C, H, W) float32 tensor (torchmetrics' float32 path: float64 grouped
    convolutions take a slow im2col path on CPU)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb255.transpose(2, 0, 1), dtype=np.float32))[None]


# ---------------------------------------------------------------------------------------------
# MS-SSIM and VIF: torchmetrics

def ms_ssim_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales an (height, width) image gets: the largest n <= 5 whose coarsest scale
    (the image halved n - 1 times) is at least 11 pixels on its short side and that torchmetrics
    accepts (it asks short side // max(1, n - 1)^2 > 10). 5 from 176 pixels, 4 from 99, 3 from 44,
    2 from 22, 1 from 11; ValueError below 11."""
    side = min(height, width)
    for n in range(len(MS_SSIM_BETAS), 0, -1):
        if side >> (n - 1) >= MS_SSIM_WINDOW and side // max(1, n - 1) ** 2 > MS_SSIM_WINDOW - 1:
            return n
    raise ValueError(f"ms-ssim: images must be at least {MS_SSIM_WINDOW}x{MS_SSIM_WINDOW} pixels, got {width}x{height}")


def ms_ssim_betas(scales: int) -> tuple[float, ...]:
    """The scale exponents for ``scales`` scales: Wang et al.'s five, or the first ``scales`` of them
    renormalised to sum to 1 (so a smaller image's score stays a weighted geometric mean)."""
    if scales == len(MS_SSIM_BETAS):
        return MS_SSIM_BETAS
    kept = MS_SSIM_BETAS[:scales]
    return tuple(float(b / sum(kept)) for b in kept)


def ms_ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Multi-scale SSIM, higher is better (1 for identical images, about 0-1).

    Z. Wang, E. P. Simoncelli, A. C. Bovik, "Multiscale structural similarity for image quality
    assessment", 37th Asilomar Conference on Signals, Systems and Computers, 2003, eq. (7):
    MS-SSIM = l_M^{beta_M} prod_{j=1..M} (c_j s_j)^{beta_j}, with 2x2 average pooling between scales,
    Gaussian window 11x11 sigma 1.5, K1 = 0.01, K2 = 0.03, M = 5.
    Computed by ``torchmetrics.functional.image.multiscale_structural_similarity_index_measure`` with
    data_range=1 on the 8-bit-quantised RGB images (the SSIM maps averaged over the three channels at
    each scale; negative contrast-structure terms clipped at 0, torchmetrics' ``normalize="relu"``).
    Images under 176 pixels on the short side get fewer scales (:func:`ms_ssim_scales`) with the
    exponents truncated and renormalised (:func:`ms_ssim_betas`); under 11 pixels a ValueError.

    pred, target: (H, W, 3) float RGB in [0, 1].
    """
    a, b = _pair255(pred, target, "ms-ssim")
    betas = ms_ssim_betas(ms_ssim_scales(*a.shape[:2]))
    image_metrics = _torchmetrics_image("ms-ssim")
    value = image_metrics.multiscale_structural_similarity_index_measure(
        _to_tensor(a / 255.0), _to_tensor(b / 255.0), data_range=1.0, betas=betas)
    return float(value)


def vif(pred: np.ndarray, target: np.ndarray) -> float:
    """Pixel-domain visual information fidelity VIF-p, higher is better (1 for identical images,
    0 when no information survives; above 1 for contrast enhancement).

    H. R. Sheikh, A. C. Bovik, "Image information and visual quality", IEEE Transactions on Image
    Processing 15(2), 2006: VIF = sum_j I(C_j; F_j) / sum_j I(C_j; E_j) over four scales, the
    information the distorted and the reference image carry through a visual channel with noise
    variance sigma_n^2 = 2 (eqs. (9)-(10); the pixel-domain variant of the authors' ``vifvec`` release).
    Computed by ``torchmetrics.functional.image.visual_information_fidelity`` on the luminance Y in
    [0, 255] (one channel, as the paper scores grey images; sigma_n^2 is set for that range).

    pred: the distorted (restored) image, target: the reference; (H, W, 3) float RGB in [0, 1], at
    least 41x41 pixels (ValueError otherwise).
    """
    a, b = _pair255(pred, target, "vif")
    h, w = a.shape[:2]
    if min(h, w) < VIF_MIN_SIZE:
        raise ValueError(f"vif: images must be at least {VIF_MIN_SIZE}x{VIF_MIN_SIZE} pixels, got {w}x{h}")
    image_metrics = _torchmetrics_image("vif")
    value = image_metrics.visual_information_fidelity(
        _to_tensor((a @ Y_WEIGHTS)[..., None]), _to_tensor((b @ Y_WEIGHTS)[..., None]), sigma_n_sq=VIF_SIGMA_N_SQ)
    return float(value)


# ---------------------------------------------------------------------------------------------
# GMSD and HaarPSI: written from the papers, with the reference code's MATLAB filtering conventions

def conv2_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """MATLAB ``conv2(x, kernel, 'same')``: 2-D convolution, zeros outside ``x``, the central part of
    the full result (for an even kernel side k the window covers k/2 - 1 pixels before, k/2 after).

    x: (H, W) float64; kernel: (kh, kw). Returns (H, W) float64. Shifted sums: the kernels here are tiny.
    """
    kh, kw = kernel.shape
    h, w = x.shape
    top, left = kh - 1 - kh // 2, kw - 1 - kw // 2
    padded = np.pad(x, ((top, kh // 2), (left, kw // 2)))
    flipped = kernel[::-1, ::-1]  # convolution = correlation with the flipped kernel
    out = np.zeros((h, w))
    for i in range(kh):
        for j in range(kw):
            if flipped[i, j] != 0:
                out += flipped[i, j] * padded[i:i + h, j:j + w]
    return out


def half_mean(x: np.ndarray) -> np.ndarray:
    """Average over 2x2 blocks, then keep every second pixel: MATLAB ``conv2(x, ones(2, 2) / 4, 'same')``
    then ``(1:2:end, 1:2:end)``, the downsampling of both the GMSD and the HaarPSI reference code
    (an odd last row or column is averaged with zeros). (H, W) -> (ceil(H/2), ceil(W/2))."""
    return conv2_same(x, np.full((2, 2), 0.25))[::2, ::2]


PREWITT_X = np.array([[1.0, 0.0, -1.0]] * 3) / 3.0   # GMSD eq. (1): h_x; h_y is its transpose


def gmsd(pred: np.ndarray, target: np.ndarray) -> float:
    """Gradient magnitude similarity deviation, lower is better (0 for identical images; a standard
    deviation of similarities in (0, 1], so below 0.5, in practice below about 0.35).

    W. Xue, L. Zhang, X. Mou, A. C. Bovik, "Gradient Magnitude Similarity Deviation: A Highly
    Efficient Perceptual Image Quality Index", IEEE Transactions on Image Processing 23(2), 2014:
    1. luminance Y = 0.299 R + 0.587 G + 0.114 B on [0, 255]; 2x2 average filter, then downsampling
       by 2 (:func:`half_mean`, as the authors' code does before eq. (1));
    2. Prewitt gradients h_x = [1 0 -1; 1 0 -1; 1 0 -1] / 3, h_y = h_x^T, eq. (1) (MATLAB ``conv2``
       'same', zeros outside the image); magnitudes m = sqrt((Y * h_x)^2 + (Y * h_y)^2), eqs. (3)-(4);
    3. GMS = (2 m_r m_d + c) / (m_r^2 + m_d^2 + c), c = 170, eq. (5);
    4. GMSD = sqrt(mean((GMS - mean(GMS))^2)), eq. (8): the population standard deviation (the
       authors' MATLAB ``std2`` divides by N - 1 instead, a relative difference of sqrt(N / (N - 1))).
    Symmetric in its arguments.

    pred, target: (H, W, 3) float RGB in [0, 1].
    """
    a, b = _pair255(pred, target, "gmsd")
    m = [_gradient_magnitude(half_mean(img @ Y_WEIGHTS)) for img in (a, b)]
    gms = (2 * m[0] * m[1] + GMSD_C) / (m[0] ** 2 + m[1] ** 2 + GMSD_C)
    return float(np.std(gms))


def _gradient_magnitude(y: np.ndarray) -> np.ndarray:
    return np.sqrt(conv2_same(y, PREWITT_X) ** 2 + conv2_same(y, PREWITT_X.T) ** 2)


def haar_filters(scale: int) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D Haar filter of side 2^scale as its separable factors (column, row): the column is
    2^-scale * (-1, ..., -1, 1, ..., 1) (first half negative), the row all ones; their outer product
    is the reference code's ``haarFilter`` (its transpose gives the other orientation)."""
    n = 2 ** scale
    column = np.concatenate([-np.ones(n // 2), np.ones(n // 2)]) * 2.0 ** -scale
    return column[:, None], np.ones((1, n))


def haar_coefficients(y: np.ndarray, scales: int = HAARPSI_SCALES) -> np.ndarray:
    """Haar wavelet responses of a (H, W) image: (2, scales, H, W) float64, orientation first
    (0: the filter varies down the columns, 1: its transpose, along the rows), then scale 1..scales.
    MATLAB ``conv2(..., 'same')`` of the separable filter, one axis after the other (the same result)."""
    out = np.empty((2, scales, *y.shape))
    for k in range(1, scales + 1):
        column, row = haar_filters(k)
        out[0, k - 1] = conv2_same(conv2_same(y, column), row)
        out[1, k - 1] = conv2_same(conv2_same(y, row.T), column.T)
    return out


def _similarity(a: np.ndarray, b: np.ndarray, c: float) -> np.ndarray:
    """S(a, b; C) = (2 a b + C) / (a^2 + b^2 + C), HaarPSI eq. (4) (GMSD's eq. (5) has the same form)."""
    return (2 * a * b + c) / (a ** 2 + b ** 2 + c)


def logistic(x: np.ndarray | float, alpha: float = HAARPSI_ALPHA) -> np.ndarray | float:
    """l_alpha(x) = 1 / (1 + exp(-alpha x)), HaarPSI eq. (5)."""
    return 1.0 / (1.0 + np.exp(-alpha * x))


def logit(y: np.ndarray | float, alpha: float = HAARPSI_ALPHA) -> np.ndarray | float:
    """l_alpha^{-1}(y) = ln(y / (1 - y)) / alpha, the inverse of :func:`logistic`."""
    return np.log(y / (1.0 - y)) / alpha


def haarpsi(pred: np.ndarray, target: np.ndarray) -> float:
    """Haar wavelet-based perceptual similarity index, higher is better (1 for identical images, in (0, 1]).

    R. Reisenhofer, S. Bosse, G. Kutyniok, T. Wiegand, "A Haar wavelet-based perceptual similarity
    index for image quality assessment", Signal Processing: Image Communication 61, 2018, the colour
    version (Sec. 3, eqs. (4)-(9)), C = 30, alpha = 4.2:
    1. RGB on [0, 255] -> YIQ (Y = 0.299 R + 0.587 G + 0.114 B, I = 0.596 R - 0.274 G - 0.322 B,
       Q = 0.211 R - 0.523 G + 0.312 B); each channel downsampled by a 2x2 mean (:func:`half_mean`,
       as the reference code does to model the viewing distance);
    2. Haar filters of sides 2, 4, 8 on Y, two orientations k = 1 (filter down the columns) and 2 (its
       transpose): coefficients g_j^(k) (:func:`haar_coefficients`);
    3. local similarity HS^(k) = (S(|g_1^(k)(r)|, |g_1^(k)(d)|) + S(|g_2^(k)(r)|, |g_2^(k)(d)|)) / 2, with
       S(a, b) = (2ab + C) / (a^2 + b^2 + C), eq. (4); weights W^(k) = max(|g_3^(k)(r)|, |g_3^(k)(d)|), eq. (6);
    4. colour: HS^(3) = (S(|I_r * m|, |I_d * m|) + S(|Q_r * m|, |Q_d * m|)) / 2 with m the 2x2 mean
       filter, W^(3) = (W^(1) + W^(2)) / 2, eq. (8);
    5. HaarPSI = (l_alpha^{-1}( sum_{k,x} l_alpha(HS^(k)(x)) W^(k)(x) / sum_{k,x} W^(k)(x) ))^2,
       l_alpha(x) = 1 / (1 + exp(-alpha x)), eqs. (5) and (9).
    Filtering is MATLAB ``conv2(..., 'same')`` with zeros outside the image, as in the authors' code.
    Symmetric in its arguments. A ValueError when both images are black but differ in nothing the
    weights see (no weight anywhere); two identical black images score 1.

    pred, target: (H, W, 3) float RGB in [0, 1].
    """
    a, b = _pair255(pred, target, "haarpsi")
    (ya, ia, qa), (yb, ib, qb) = ([half_mean(img @ wts) for wts in (Y_WEIGHTS, I_WEIGHTS, Q_WEIGHTS)]
                                  for img in (a, b))
    ga, gb = np.abs(haar_coefficients(ya)), np.abs(haar_coefficients(yb))   # (2, 3, h, w) each
    weights = np.maximum(ga[:, 2], gb[:, 2])                                 # (2, h, w): W^(1), W^(2)
    local = _similarity(ga[:, :2], gb[:, :2], HAARPSI_C).mean(axis=1)       # (2, h, w): HS^(1), HS^(2)
    mean2 = np.full((2, 2), 0.25)
    colour = (_similarity(np.abs(conv2_same(ia, mean2)), np.abs(conv2_same(ib, mean2)), HAARPSI_C)
              + _similarity(np.abs(conv2_same(qa, mean2)), np.abs(conv2_same(qb, mean2)), HAARPSI_C)) / 2
    local = np.concatenate([local, colour[None]])                           # (3, h, w)
    weights = np.concatenate([weights, weights.mean(axis=0, keepdims=True)])
    total = weights.sum()
    if total == 0:
        if np.array_equal(a, b):
            return 1.0
        raise ValueError("haarpsi: both images have no Haar response at the coarsest scale (black)")
    return float(logit(np.sum(logistic(local) * weights) / total) ** 2)


# ---------------------------------------------------------------------------------------------
# Blur effect: scikit-image

def blur_effect(image: np.ndarray) -> float:
    """The no-reference blur annoyance of an image, in [0, 1]: higher is blurrier (lower is better).

    F. Crete-Roffet, T. Dolmiere, P. Ladret, M. Nicolas, "The Blur Effect: Perception and Estimation
    with a New No-Reference Perceptual Blur Metric", SPIE Electronic Imaging (Human Vision and
    Electronic Imaging XII), 2007: the image is re-blurred along each axis by an 11-tap mean filter;
    the less its neighbour differences drop, the blurrier it was; the larger of the two axes' values.
    Computed by ``skimage.measure.blur_effect(Y, h_size=11)`` on the luminance of the 8-bit-quantised
    image (scikit-image's own ``rgb2gray``, Y = 0.2125 R + 0.7154 G + 0.0721 B, in [0, 1]).

    image: (H, W, 3) float RGB in [0, 1].
    """
    rgb = _rgb255(image, "blur-effect") / 255.0
    _need("skimage", "scikit-image", "blur-effect")
    from skimage.color import rgb2gray
    from skimage.measure import blur_effect as skimage_blur_effect

    return float(skimage_blur_effect(rgb2gray(rgb), h_size=BLUR_EFFECT_H_SIZE))


# ---------------------------------------------------------------------------------------------
# The table evaluate() and `diffdeblur eval --metrics` read

def _psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB (:func:`diffdeblur.metrics.psnr`), higher is better."""
    from .metrics import psnr  # torch loads when a score is computed, not when a name is parsed

    return psnr(pred, target)


def _ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """SSIM (:func:`diffdeblur.metrics.ssim`), higher is better."""
    from .metrics import ssim

    return ssim(pred, target)


def _niqe(image: np.ndarray) -> float:
    """NIQE (:func:`diffdeblur.niqe.niqe`), no reference, lower is more natural."""
    from .niqe import NIQEUnavailableError, niqe

    try:
        return niqe(image)
    except NIQEUnavailableError as exc:
        raise ConfigError(str(exc)) from None


PERCEPTION_METRICS: dict[str, Measure] = {
    "psnr": Measure(_psnr, True, True, None),
    "ssim": Measure(_ssim, True, True, None),
    "niqe": Measure(_niqe, False, False, "niqe"),
    "ms-ssim": Measure(ms_ssim, True, True, METRICS_EXTRA),
    "vif": Measure(vif, True, True, METRICS_EXTRA),
    "haarpsi": Measure(haarpsi, True, True, None),
    "gmsd": Measure(gmsd, True, False, None),
    "blur-effect": Measure(blur_effect, False, False, METRICS_EXTRA),
}
DEFAULT_METRICS = ("psnr", "ssim")


def column(name: str) -> str:
    """The report column of a measure: its name with underscores (``ms-ssim`` -> ``ms_ssim``)."""
    return name.replace("-", "_")


def check_metrics(names: Iterable[str]) -> tuple[str, ...]:
    """Known measure names, lower-cased, in order, without repeats (column spellings such as
    ``ms_ssim`` accepted); a one-line ConfigError naming an unknown one and listing the known ones."""
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower().replace("_", "-")
        if not name:
            continue
        if name not in PERCEPTION_METRICS:
            raise ConfigError(f"unknown metric '{raw.strip()}' (known: {', '.join(PERCEPTION_METRICS)})")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"no metric given (known: {', '.join(PERCEPTION_METRICS)})")
    return tuple(out)


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"psnr,ssim,ms-ssim"`` -> ``("psnr", "ssim", "ms-ssim")``; see :func:`check_metrics`."""
    return check_metrics(text.split(","))


def require(names: Iterable[str]) -> None:
    """A ConfigError naming the extra to install when a measure among ``names`` lacks its optional
    package (checked without importing it; NIQE's pristine model is loaded, it is cached)."""
    for name in names:
        if name in ("ms-ssim", "vif"):
            _need("torchmetrics", "torchmetrics", name)
        elif name == "blur-effect":
            _need("skimage", "scikit-image", name)
        elif name == "niqe":
            from .niqe import NIQEUnavailableError, load_pristine_model

            try:
                load_pristine_model()
            except NIQEUnavailableError as exc:
                raise ConfigError(str(exc)) from None
