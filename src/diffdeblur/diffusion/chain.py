"""The one reverse-chain loop of diffdeblur: every process (Gaussian DDPM / DDIM / SDE, the shifting chains
InDI and ResShift, BlurDM's dual chain) is a *step function* run by :func:`run_chain`.

    run_chain(step_fn, x_T, timesteps, *, cond=None, noise=None, generator=None, callback=None) -> x_0

- ``step_fn(i, t, t_next, x_t, cond, draw) -> Step``: one reverse step from time ``t`` to ``t_next``
  (``t_next`` = -1.0 after the last step: the clean end); ``draw(k)`` returns the state-shaped N(0, I) noise
  injected by step k - 1 (k = 1..K; k = 0 is reserved for the start state by convention). The step returns
  the next state, its clean-end estimate x0 and its noise estimate eps (and any extra per-step tensors).
- ``timesteps``: the K times of the network calls, decreasing; each process gives them in its own units
  (Gaussian indices in [0, T-1], InDI's t in (0, 1], ResShift indices, BlurDM's T..1).
- ``noise``: ``noise(k)`` (e.g. a tile's slice of a :class:`~.noise.NoiseField`) or None to draw from
  ``generator``; the loop never draws anything itself unless a step asks.
- ``callback(info)``: once per step, after it, with "i" (0-based), "num_steps" (K), "t", "t_next",
  "x_t" (state entering the step), "x0", "eps", "x_next" and the step's extra keys. ``diffdeblur trace``
  and the progress bars read this.

Step functions are pure: built by small factories next to their process (:mod:`.samplers`, :mod:`.shifting`,
:mod:`.blur_process`) from the schedule they need; this loop holds no schedule and no network.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import torch

from .process import randn

Callback = Callable[[dict[str, Any]], None]
NoiseFn = Callable[[int], torch.Tensor]


class Step(NamedTuple):
    """What one reverse step returns: the next state, its x0 and eps estimates (same shape as the state),
    and extra per-step tensors for the callback (e.g. BlurDM's blur residual)."""

    x_next: torch.Tensor
    x0: torch.Tensor
    eps: torch.Tensor
    extra: dict[str, Any] | None = None


StepFn = Callable[[int, float, float, torch.Tensor, "torch.Tensor | None", NoiseFn], Step]


def noise_source(x_T: torch.Tensor, generator: torch.Generator | None, noise: NoiseFn | None) -> NoiseFn:
    """``draw(k)``: ``noise(k)`` moved to x_T's device and dtype, else N(0, I) like x_T from ``generator``."""
    if noise is not None:
        return lambda k: noise(k).to(device=x_T.device, dtype=x_T.dtype)
    return lambda k: randn(x_T.shape, generator, x_T.device, x_T.dtype)


def run_chain(step_fn: StepFn, x_T: torch.Tensor, timesteps: Sequence[float], *, cond: torch.Tensor | None = None,
              noise: NoiseFn | None = None, generator: torch.Generator | None = None,
              callback: Callback | None = None) -> torch.Tensor:
    """Run ``step_fn`` over ``timesteps`` from ``x_T``; returns the final state (see the module docstring).

    Not wrapped in inference mode: BlurDM's stage 2 back-propagates through the whole chain; the
    models' ``restore`` wrap their calls.
    """
    ts = [float(t) for t in timesteps]
    draw = noise_source(x_T, generator, noise)
    x = x_T
    for i, t in enumerate(ts):
        t_next = ts[i + 1] if i + 1 < len(ts) else -1.0
        step = step_fn(i, t, t_next, x, cond, draw)
        if callback is not None:
            callback({"i": i, "num_steps": len(ts), "t": t, "t_next": t_next, "x_t": x, "x0": step.x0,
                      "eps": step.eps, "x_next": step.x_next, **(step.extra or {})})
        x = step.x_next
    return x
