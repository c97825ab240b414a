"""PSNR and SSIM as the deblurring literature reports them.

Definition (the BasicSR ``calculate_psnr`` / ``calculate_ssim`` protocol used by NAFNet, MIMO-UNet
and BlurDM for GoPro): both images are quantised to 8-bit RGB (round(x * 255)), no border crop,
no Y-channel conversion.
- PSNR = 10 log10(255^2 / MSE), MSE over all pixels and the three channels.
- SSIM (Wang et al. 2004): Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
  'valid' filtering (no padding), computed per channel and averaged over channels.
This equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=2)`` (checked in the tests).
"""
from __future__ import annotations

import numpy as np
import torch

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _as_uint8_tensor(img: np.ndarray | torch.Tensor) -> torch.Tensor:
    """An image or a batch in [0, 1] -> (B, 3, H, W) float64 in [0, 255], quantised to 8 bits.

    Arrays: (H, W, 3) or (B, H, W, 3); tensors: (3, H, W) or (B, 3, H, W).
    """
    if isinstance(img, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(img))
        t = t.permute(2, 0, 1).unsqueeze(0) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    else:
        t = img.detach().cpu()
        t = t.unsqueeze(0) if t.ndim == 3 else t
    if t.ndim != 4:
        raise ValueError(f"expected an image or a batch of images, got shape {tuple(img.shape)}")
    return torch.round(t.double().clamp(0, 1) * 255.0)


def _pair(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_uint8_tensor(pred), _as_uint8_tensor(target)
    if a.shape != b.shape:
        raise ValueError(f"{what}: image sizes differ {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b


def psnr(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB between two RGB images in [0, 1] (8-bit quantised; inf when identical).

    On batches (B > 1) the mean of the per-image PSNRs (the literature's per-image average).
    """
    a, b = _pair(pred, target, "psnr")
    mse = torch.mean((a - b) ** 2, dim=(1, 2, 3)).tolist()
    return float(np.mean([float("inf") if m == 0 else 10.0 * float(np.log10(255.0 ** 2 / m)) for m in mse]))


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """SSIM between two RGB images in [0, 1], per the module docstring (mean over channels).

    On batches (B > 1) the mean of the per-image SSIMs.
    """
    a, b = _pair(pred, target, "ssim")
    return _ssim_255(a, b, "ssim")


def _ssim_255(a: torch.Tensor, b: torch.Tensor, what: str) -> float:
    """SSIM of (B, C, H, W) float64 images on [0, 255] (L = 255), mean over channels, then images."""
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"{what}: images must be at least {SSIM_WINDOW}x{SSIM_WINDOW}")
    c1, c2 = (SSIM_K1 * 255) ** 2, (SSIM_K2 * 255) ** 2
    g = _gaussian_window()[0, 0].sum(dim=0).tolist()  # the separable 1-D factor of the 2-D window
    n = SSIM_WINDOW

    def filt(x: torch.Tensor) -> torch.Tensor:
        # 'valid' Gaussian filtering as two 1-D passes of shifted sums: float64 grouped conv2d on
        # CPU takes a slow im2col path (~30 s and >1 GB for one 1280x720 image); this is ~10x faster
        # and gives the same values to float64 rounding.
        h, w = x.shape[-2:]
        y = sum(gi * x[..., i:i + h - n + 1, :] for i, gi in enumerate(g))
        return sum(gi * y[..., :, i:i + w - n + 1] for i, gi in enumerate(g))

    mu_a, mu_b = filt(a), filt(b)
    s_aa = filt(a * a) - mu_a ** 2
    s_bb = filt(b * b) - mu_b ** 2
    s_ab = filt(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * s_ab + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2)
    return float((num / den).mean(dim=(2, 3)).mean(dim=1).mean().item())  # channels, then images


# ---- the super-resolution protocol: luma (Y) only, a border cropped ----------------------------------------
# BT.601 Y of MATLAB's rgb2ycbcr and BasicSR's ``bgr2ycbcr(y_only=True)``, for R, G, B in [0, 1]:
# Y = 16 + 65.481 R + 128.553 G + 24.966 B, in [16, 235] on the 8-bit scale (not rounded, as BasicSR's
# ``calculate_psnr(test_y_channel=True)`` / ``calculate_ssim`` and the MATLAB scripts of EDSR / RCAN compute it).
Y_OFFSET = 16.0
Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(img: np.ndarray | torch.Tensor) -> torch.Tensor:
    """RGB image(s) in [0, 1] (as :func:`psnr` takes them), quantised to 8 bits first -> BT.601 Y, (B, 1, H, W)
    float64 on [0, 255] (values in [16, 235])."""
    t = _as_uint8_tensor(img) / 255.0
    if t.shape[1] != 3:
        raise ValueError(f"rgb_to_y: expected RGB images, got {t.shape[1]} channels")
    r, g, b = t[:, 0:1], t[:, 1:2], t[:, 2:3]
    return Y_OFFSET + Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b


def _y_pair(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, border: int,
            what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The Y channels of both images, ``border`` pixels cropped on every side; ValueError (one line) for
    different sizes, a negative border or one that leaves nothing."""
    a, b = rgb_to_y(pred), rgb_to_y(target)
    if a.shape != b.shape:
        raise ValueError(f"{what}: image sizes differ {tuple(a.shape)} vs {tuple(b.shape)}")
    h, w = a.shape[-2:]
    if border < 0 or 2 * border >= min(h, w):
        raise ValueError(f"{what}: border {border} must be >= 0 and leave pixels of a {w}x{h} image")
    if border:
        a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    return a, b


def psnr_y(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, border: int = 0) -> float:
    """PSNR in dB of the BT.601 Y channel (:func:`rgb_to_y`) with ``border`` pixels cropped on every side: the
    super-resolution protocol (border = the scale). RGB images in [0, 1], (H, W, 3) arrays or (B, 3, H, W)
    tensors as :func:`psnr`; batches give the mean of the per-image PSNRs; inf when identical."""
    ya, yb = _y_pair(a, b, border, "psnr_y")
    mse = torch.mean((ya - yb) ** 2, dim=(1, 2, 3)).tolist()
    return float(np.mean([float("inf") if m == 0 else 10.0 * float(np.log10(255.0 ** 2 / m)) for m in mse]))


def ssim_y(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, border: int = 0) -> float:
    """SSIM (the window and constants of :func:`ssim`, L = 255) of the BT.601 Y channel with ``border`` pixels
    cropped on every side: the super-resolution protocol. Inputs as :func:`psnr_y`."""
    ya, yb = _y_pair(a, b, border, "ssim_y")
    return _ssim_255(ya, yb, "ssim_y")
