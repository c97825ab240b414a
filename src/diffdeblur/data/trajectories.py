"""Continuous motion over one exposure: camera shake and moving objects, plus kernel rasterisation.

A :class:`Motion` is a rigid 2-D motion (shift, in-plane rotation, zoom) sampled at ``KNOTS``
points of the normalised exposure time t in [0, 1] and linearly interpolated in between. Every
motion is the identity at t = 0.5, the instant that the sharp reference shows (as GoPro's middle
frame). Coordinates are pixels: x to the right, y down.

Camera shake follows the inertial random-walk idea of Boracchi & Foi, "Modeling the Performance
of Image Restoration From Motion Blur", IEEE TIP 2012 (also used by DeblurGAN's trajectory
generator): the heading of a moving point turns smoothly at a random rate (``curvature``), its
speed varies (real shakes slow down at turning points, which makes the bright kernel ends), and an
optional jerk reverses the direction abruptly. The path is then scaled to a requested arc length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KNOTS = 129  # samples of a continuous path over [0, 1]; odd, so t = 0.5 is a knot
MID = KNOTS // 2
SMOOTH_WIDTH = KNOTS / 10  # correlation length (in knots) of the random heading / speed signals


def knot_times() -> np.ndarray:
    """(KNOTS,) float64 exposure times 0 .. 1."""
    return np.linspace(0.0, 1.0, KNOTS)


def smooth_noise(rng: np.random.Generator, n: int = KNOTS, width: float = SMOOTH_WIDTH) -> np.ndarray:
    """(n,) float64 Gaussian-smoothed white noise, zero mean, unit RMS."""
    pad = int(math.ceil(3 * width))
    white = rng.standard_normal(n + 2 * pad)
    x = np.arange(-pad, pad + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / width) ** 2)
    out = np.convolve(white, g / g.sum(), mode="valid")[:n]
    out = out - out.mean()
    rms = float(np.sqrt(np.mean(out ** 2)))
    return out / rms if rms > 0 else out


@dataclass(frozen=True)
class Motion:
    """A rigid 2-D motion over the exposure, identity at t = 0.5.

    shift: (KNOTS, 2) float64 px (dx, dy); angle: (KNOTS,) rad (positive turns x towards y);
    log_scale: (KNOTS,) natural log of the zoom factor. Rotation and zoom act about a centre given
    when the motion is applied (the image centre for the camera, the object centre for a layer).
    A scene point q (its position at t = 0.5) is at ``exp(log_scale) R(angle) (q - c) + c + shift``
    at time t.
    """

    shift: np.ndarray
    angle: np.ndarray
    log_scale: np.ndarray

    @staticmethod
    def still() -> "Motion":
        return Motion(np.zeros((KNOTS, 2)), np.zeros(KNOTS), np.zeros(KNOTS))

    def at(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interpolate at times ``t`` (T,) in [0, 1] -> shift (T, 2), angle (T,), log_scale (T,)."""
        tk = knot_times()
        t = np.asarray(t, dtype=np.float64)
        shift = np.stack([np.interp(t, tk, self.shift[:, 0]), np.interp(t, tk, self.shift[:, 1])], axis=1)
        return shift, np.interp(t, tk, self.angle), np.interp(t, tk, self.log_scale)

    def forward_affine(self, t: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
        """(T, 3, 3) float64 matrices mapping a point's t = 0.5 position to its position at t."""
        shift, angle, log_scale = self.at(t)
        s = np.exp(log_scale)
        cos, sin = np.cos(angle) * s, np.sin(angle) * s
        cx, cy = centre
        m = np.zeros((len(shift), 3, 3))
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
        m[:, 0, 2] = cx + shift[:, 0] - (cos * cx - sin * cy)
        m[:, 1, 2] = cy + shift[:, 1] - (sin * cx + cos * cy)
        m[:, 2, 2] = 1.0
        return m

    @property
    def is_still(self) -> bool:
        return not (np.any(self.shift) or np.any(self.angle) or np.any(self.log_scale))

    def path_length(self) -> float:
        """Arc length in px of the shift path (rotation and zoom excluded)."""
        return float(np.linalg.norm(np.diff(self.shift, axis=0), axis=1).sum())

    def summary(self, points: int = 9) -> dict:
        """JSON-ready description: path length, rotation / zoom range, and the path at ``points`` times."""
        t = np.linspace(0.0, 1.0, points)
        shift, angle, log_scale = self.at(t)
        return {
            "length_px": round(self.path_length(), 3),
            "rotation_deg": round(float(np.degrees(self.angle.max() - self.angle.min())), 4),
            "zoom": round(float(np.exp(self.log_scale.max() - self.log_scale.min()) - 1.0), 5),
            "path_px": np.round(shift, 2).tolist(),
            "angle_deg": np.round(np.degrees(angle), 4).tolist(),
            "scale": np.round(np.exp(log_scale), 5).tolist(),
        }


def _anchor(x: np.ndarray) -> np.ndarray:
    """Shift a (KNOTS, ...) path so it is zero at t = 0.5."""
    return x - x[MID]


def shake_path(rng: np.random.Generator, length: float, curvature: float, *,
               speed_jitter: float = 0.3, jerk_prob: float = 0.0) -> np.ndarray:
    """(KNOTS, 2) float64 random inertial path of arc length ``length`` px, zero at t = 0.5.

    curvature: RMS deviation (radians) of the heading from its start; 0 gives a straight line,
    ~1 a clearly curved stroke, >= 3 loops. speed_jitter: RMS of log-speed. jerk_prob: chance of
    one abrupt turn by 90-180 degrees (a hand jerk reversing the shake).
    """
    heading = rng.uniform(0.0, 2 * math.pi) + curvature * smooth_noise(rng)
    if rng.random() < jerk_prob:
        at = int(rng.integers(KNOTS // 8, KNOTS - KNOTS // 8))
        heading[at:] += rng.choice([-1.0, 1.0]) * rng.uniform(0.5 * math.pi, math.pi)
    speed = np.exp(speed_jitter * smooth_noise(rng))
    step = speed[:-1, None] * np.stack([np.cos(heading[:-1]), np.sin(heading[:-1])], axis=1)
    path = np.concatenate([np.zeros((1, 2)), np.cumsum(step, axis=0)])
    total = float(np.linalg.norm(step, axis=1).sum())
    path = path * (length / total) if total > 0 and length > 0 else np.zeros_like(path)
    return _anchor(path)


def sample_camera_motion(rng: np.random.Generator, length: float, curvature: float, *,
                         rotation_deg: float = 0.0, zoom: float = 0.0, jerk_prob: float = 0.0,
                         speed_jitter: float = 0.3) -> Motion:
    """Camera shake: an inertial path of arc length ``length`` px, an in-plane rotation that wanders
    over a total range of ``rotation_deg`` degrees, and a monotone zoom by a factor ``1 + zoom``."""
    shift = shake_path(rng, length, curvature, speed_jitter=speed_jitter, jerk_prob=jerk_prob)
    angle = np.zeros(KNOTS)
    if rotation_deg > 0:
        w = np.cumsum(smooth_noise(rng))  # a wandering (not oscillating) angle
        span = w.max() - w.min()
        angle = _anchor(w / span * math.radians(rotation_deg)) if span > 0 else angle
    log_scale = np.zeros(KNOTS)
    if zoom > 0:
        log_scale = _anchor(rng.choice([-1.0, 1.0]) * math.log1p(zoom) * knot_times())
    return Motion(shift, angle, log_scale)


def sample_object_motion(rng: np.random.Generator, length: float, curvature: float, *,
                         rotation_deg: float = 0.0) -> Motion:
    """An independently moving object: a smooth, nearly constant-speed path of arc length
    ``length`` px plus a steady spin of ``rotation_deg`` degrees over the exposure."""
    shift = shake_path(rng, length, curvature, speed_jitter=0.1)
    angle = _anchor(rng.choice([-1.0, 1.0]) * math.radians(rotation_deg) * knot_times())
    return Motion(shift, angle, np.zeros(KNOTS))


def splat_kernel(displacements: np.ndarray, radius: int | None = None,
                 weights: np.ndarray | None = None) -> np.ndarray:
    """Rasterise displacements into a blur kernel that sums to 1.

    displacements: (T, 2) px (dx, dy) of where a point's light lands during the exposure;
    weights: (T,) the share of the exposure each represents (default: equal), normalised to sum 1.
    Returns (2r+1, 2r+1) float64 with the zero displacement at the centre, bilinear weights, so
    that ``blur(p) = sum_d k[r + dy, r + dx] * sharp(p - d)`` (a true convolution) reproduces a
    bilinear warp-and-average exactly. ``radius`` defaults to the smallest that holds every point.
    """
    d = np.asarray(displacements, dtype=np.float64).reshape(-1, 2)
    w = np.full(len(d), 1.0) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != len(d) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("splat_kernel needs one non-negative weight per displacement")
    w = w / w.sum()
    need = int(math.floor(np.abs(d).max(initial=0.0))) + 1
    r = need if radius is None else int(radius)
    if r < need:
        raise ValueError(f"kernel radius {r} is too small for displacements up to {need - 1} px")
    k = np.zeros((2 * r + 1, 2 * r + 1))
    x, y = d[:, 0] + r, d[:, 1] + r
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(k, (np.minimum(y0 + dy, 2 * r), np.minimum(x0 + dx, 2 * r)), w * wy * wx)
    return k
