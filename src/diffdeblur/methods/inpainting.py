"""Object removal (inpainting): the mask-conditioned regression network, a few-step chain on its fill, their
losses and presets.

- ``remove`` / ``remove-tiny``: :class:`~diffdeblur.models.inpaint_nafnet.InpaintNAFNet`, one pass, trained
  with ``inpaint``: Charbonnier on the raw prediction, inside the hole weighted :data:`HOLE_WEIGHT` times the
  valid region (the hole / valid split of partial convolutions, Liu et al., ECCV 2018, arXiv 1804.07723, and
  LaMa, Suvorov et al., WACV 2022, arXiv 2109.07161); ``inpaint-fft`` adds MIMO-UNet's frequency term on the
  composited output.
- ``remove-chain`` / ``remove-chain-tiny``: :class:`InpaintChain`, InDI's direct iteration
  (:mod:`diffdeblur.diffusion.indi`) from the frozen regression's fill y towards the photo x, in image units
  [0, 1]: x_t = (1 - t) x + t y, F(x_t, t, [x (1 - m); m]) ~ x, trained with ``inpaint-chain``. The network's
  last conv starts at zero, so F(x_t) = x_t and the untrained chain returns y, the regression's output, bit for
  bit; ``train.init_from`` with a ``remove`` checkpoint fills the predictor (``init_prefixes``).

Every output is composited (:func:`~diffdeblur.models.inpaint_nafnet.keep_unmasked`): pixels outside the mask
are the input's, bit for bit. Batches carry ``"input"`` (the photo with the hole), ``"target"`` (the photo)
and ``"mask"`` (B, 1, h, w) in {0, 1}, 1 = hole (the ``inpaint`` data source, :mod:`diffdeblur.data.masks`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..diffusion.indi import indi_loss, indi_sample, indi_start, indi_times
from ..diffusion.noise import NoiseField
from ..errors import ConfigError
from ..losses import FFT_LOSS_WEIGHT, charbonnier, fft_l1
from ..models.blocks import pad_to_multiple
from ..models.inpaint_nafnet import InpaintNAFNet, binary_mask, keep_unmasked
from ..models.protocol import extra_inputs, restore_options, tile_context
from ..models.time_nafnet import TIME_DIM
from .base import (TIME_SCALE, Batch, Callback, Logs, SamplingOptions, SubmodelFactory, ToImage, frozen_predictor,
                   register_objective, spec)
from .shifting import TINY, FewStepModel

HOLE_WEIGHT = 6.0  # hole pixels count 6x the valid ones (partial convolutions' L_hole / L_valid weights)


# ---- the chain -------------------------------------------------------------------------------------

class InpaintChain(FewStepModel):
    """A few-step InDI chain from a frozen inpainting regression's fill (see the module docstring).

    TimeNAFNet kwargs ``width, middle_blk_num, enc_blk_nums, dec_blk_nums, train_size, time_dim``; it sees
    x_t and, through its extra input, the holed image and the mask. ``predictor`` / ``predictor_kwargs`` /
    ``predictor_weights``: the registered mask-conditioned regression model (frozen; :func:`frozen_predictor`);
    ``sigma``: noise of the path (image units; 0 = deterministic), ``loss_type`` (l1 | l2), ``endpoint_prob``
    as :func:`~diffdeblur.diffusion.indi.indi_loss`; sampling defaults ``default_steps``, ``default_sampler``.
    The chain's state is an image in [0, 1] (not [-1, 1]): with F(x_t) = x_t every step returns its input
    exactly, so the untrained chain is the regression bit for bit."""

    extra_inputs = ("mask",)
    init_prefixes = ("predictor.",)  # init_from: a `remove` checkpoint fills the frozen predictor

    def __init__(self, width: int = 16, middle_blk_num: int = 1, enc_blk_nums: Sequence[int] = (1, 1, 1, 1),
                 dec_blk_nums: Sequence[int] = (1, 1, 1, 1), train_size: int = 128, time_dim: int = TIME_DIM,
                 predictor: str = "remove", predictor_kwargs: dict[str, Any] | None = None, predictor_weights: str = "",
                 sigma: float = 0.0, loss_type: str = "l1", endpoint_prob: float = 0.0, default_steps: int = 4,
                 default_sampler: str = "ddim", submodel: SubmodelFactory | None = None) -> None:
        super().__init__(width=width, middle_blk_num=middle_blk_num, enc_blk_nums=enc_blk_nums,
                         dec_blk_nums=dec_blk_nums, train_size=train_size, time_dim=time_dim, extra_channels=4,
                         loss_type=loss_type, default_steps=default_steps, default_sampler=default_sampler)
        if sigma < 0:
            raise ConfigError(f"sigma must be >= 0, got {sigma}")
        if not 0 <= endpoint_prob <= 1:
            raise ConfigError(f"endpoint_prob must be in [0, 1], got {endpoint_prob}")
        nn.init.zeros_(self.unet.ending.weight)  # F(x_t) = x_t at initialisation (the global residual alone)
        nn.init.zeros_(self.unet.ending.bias)
        self.predictor = frozen_predictor(self, "predictor", submodel, predictor, predictor_kwargs, predictor_weights)
        if "mask" not in extra_inputs(self.predictor):
            raise ConfigError(f"predictor '{predictor}' takes no mask: the chain needs an inpainting model (e.g. remove)")
        self.size_multiple = math.lcm(self.size_multiple, int(getattr(self.predictor, "size_multiple", 1)))
        self.sigma, self.endpoint_prob = float(sigma), float(endpoint_prob)
        self.stochastic = self.sigma > 0

    def train(self, mode: bool = True) -> "InpaintChain":
        super().train(mode)
        self.predictor.eval()  # frozen
        return self

    @property
    def tile_context(self) -> int:
        """The predictor's context plus the chain network's: the chain refines the fill around each pixel."""
        return tile_context(self.predictor) + tile_context(self.unet)

    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """F(x_t, t): x_t (B, 3, H, W) in [0, 1], t (B,) in [0, 1], cond = [x (1 - m); m] (B, 4, H, W) -> the
        photo's estimate, composited (the holed image outside the mask), unclamped."""
        assert cond is not None
        return keep_unmasked(self.unet(x_t, t.float() * TIME_SCALE, cond), cond[:, :3], cond[:, 3:])

    forward = net

    def x0_fn(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The samplers' estimate: :meth:`net` clamped to [0, 1]."""
        return self.net(x_t, t, cond).clamp(0, 1)

    @torch.no_grad()
    def anchor(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """y: the frozen predictor's composited fill of ``image`` (B, 3, H, W) under ``mask`` (B, 1, H, W), in [0, 1]."""
        return self.predictor.restore(image, mask=mask)

    def chain_inputs(self, image: torch.Tensor, photo: torch.Tensor, mask: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training: (x0 = the photo, y = the predictor's fill, the network's condition [x (1 - m); m])."""
        m = binary_mask(mask, image, type(self).__name__)
        return photo, self.anchor(image, m), torch.cat([image * (1 - m), m], dim=1)

    def sampling_context(self, x: torch.Tensor, mask: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        """x (B, 3, H, W) padded to ``size_multiple``; ``mask`` the unpadded (B, 1, h, w) {0, 1} mask, padded
        here the same way. cond = [x (1 - m); m; y] (B, 7, H, W)."""
        if mask is None:
            binary_mask(mask, x, type(self).__name__)  # the one-line "a mask is required"
        mp = pad_to_multiple(mask.to(x.dtype), self.size_multiple)[0]  # as sample_image padded the image
        cond = torch.cat([x * (1 - mp), mp, self.anchor(x, mp)], dim=1)
        return cond, (x.shape[-2], x.shape[-1]), lambda state, final: state

    def timesteps(self, options: SamplingOptions) -> list[float]:
        return indi_times(int(options.steps or self.default_steps))

    def run_chain(self, sampler: str, options: SamplingOptions, ts: list[float], cond: torch.Tensor,
                  draw: Callable[[int], torch.Tensor], callback: Callback | None) -> torch.Tensor:
        y = cond[:, 4:]
        x_1 = indi_start(y, self.sigma, draw(0) if self.sigma > 0 else None)
        return indi_sample(self.x0_fn, x_1, ts, y=y, sigma=self.sigma, eta=self.chain_eta(sampler, options),
                           cond=cond[:, :4], noise=draw, callback=callback)

    @restore_options
    @torch.inference_mode()
    def restore(self, blur: torch.Tensor, mask: torch.Tensor | None = None, steps: int | None = None,
                sampler: str | None = None, eta: float = 0.0, num_samples: int = 1, noise: NoiseField | None = None,
                generator: torch.Generator | None = None, callback: Any = None,
                timesteps: Sequence[float] | None = None, options: SamplingOptions | None = None) -> torch.Tensor:
        """Fill the hole: blur (B, 3, H, W) in [0, 1] (the photo), mask (B, 1, H, W) in {0, 1}, 1 = remove ->
        (B, 3, H, W) in [0, 1], the input's pixels outside the mask bit for bit. ``steps`` InDI steps from the
        regression's fill (uniform in t; or explicit ``timesteps`` in (0, 1]); sampler / eta / num_samples /
        noise / generator / callback / options as :meth:`diffdeblur.methods.indi.InDIDeblur.restore`.
        No mask: a one-line ConfigError."""
        m = binary_mask(mask, blur, type(self).__name__)
        options = options or SamplingOptions(steps, sampler, eta, num_samples, "trailing", timesteps)
        return keep_unmasked(self.sample_image(blur, options, noise, generator, callback, mask=m), blur, m)


# ---- the losses ------------------------------------------------------------------------------------

def batch_mask(batch: Batch, objective: str) -> torch.Tensor:
    """The batch's "mask" (B, 1, h, w); a one-line ConfigError naming the objective when it has none."""
    if "mask" not in batch:
        raise ConfigError(f"objective '{objective}' needs batches with a \"mask\" (train on the 'inpaint' data source)")
    return batch["mask"]


def hole_valid_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, hole_weight: float = HOLE_WEIGHT
                    ) -> tuple[torch.Tensor, Logs]:
    """hole_weight * Charbonnier over the hole's values + Charbonnier over the valid region's: pred, target
    (B, 3, h, w), mask (B, 1, h, w) in {0, 1}; each term a mean over its own pixels (0 when it has none)."""
    hole = (mask > 0.5).expand_as(pred)
    terms = {}
    for name, sel in (("hole", hole), ("valid", ~hole)):
        terms[name] = charbonnier(pred[sel].float(), target[sel].float()) if bool(sel.any()) else pred.sum() * 0.0
    loss = hole_weight * terms["hole"] + terms["valid"]
    return loss, {k: float(v.detach()) for k, v in terms.items()}


@register_objective("inpaint")
def inpaint(model: nn.Module, batch: Batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Logs]:
    """:func:`hole_valid_loss` of the raw prediction ``model.fill(input, mask)``."""
    mask = batch_mask(batch, "inpaint")
    return hole_valid_loss(model.fill(batch["input"], mask), batch["target"], mask)


@register_objective("inpaint-fft")
def inpaint_fft(model: nn.Module, batch: Batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Logs]:
    """``inpaint`` plus 0.1 x the FFT-L1 (:func:`diffdeblur.losses.fft_l1`) of the composited output."""
    mask = batch_mask(batch, "inpaint-fft")
    pred = model.fill(batch["input"], mask)
    loss, logs = hole_valid_loss(pred, batch["target"], mask)
    freq = fft_l1(keep_unmasked(pred, batch["input"], mask), batch["target"])
    return loss + FFT_LOSS_WEIGHT * freq, {**logs, "fft": float(freq.detach())}


@register_objective("inpaint-chain")
def inpaint_chain(model: nn.Module, batch: Batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Logs]:
    """InDI (:func:`diffdeblur.diffusion.indi.indi_loss`) on ``model.chain_inputs``: the composited estimate
    equals the photo outside the hole, so only hole pixels contribute."""
    x0, y, cond = model.chain_inputs(batch["input"], batch["target"], batch_mask(batch, "inpaint-chain"))
    return indi_loss(model.net, x0, y, cond, sigma=model.sigma, loss_type=model.loss_type,
                     endpoint_prob=model.endpoint_prob, generator=generator)


# ---- presets ---------------------------------------------------------------------------------------

TINY_FILL = dict(width=8, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1), dilations=(1, 2), train_size=32, prefill="pull-push")
REMOVE = dict(width=12, enc_blk_nums=(1, 1, 1, 1), dec_blk_nums=(1, 1, 1, 1), dilations=(1, 2, 4), train_size=128,
              prefill="pull-push")  # the network refines a smooth classical fill

PRESETS = (
    spec("remove-tiny", InpaintNAFNet, "Tiny mask-conditioned inpainting NAFNet for tests (width 8, two levels, "
         "dilated bottleneck 1, 2)", loss="inpaint", **TINY_FILL),
    spec("remove", InpaintNAFNet, "Object removal: mask-conditioned inpainting NAFNet refining a pull-push fill, width "
         "12, four levels, dilated bottleneck (1, 2, 4), about 1.2 M parameters; unmasked pixels are copied bit for bit",
         loss="inpaint", **REMOVE),
    spec("remove-chain-tiny", InpaintChain, "Tiny few-step InDI chain from remove-tiny's fill, for tests",
         kind="diffusion", composite=True, loss="inpaint-chain", predictor="remove-tiny", train_size=32, **TINY),
    spec("remove-chain", InpaintChain, "Object removal refined by a few-step InDI chain from the frozen remove "
         "model's fill (init_from: a remove checkpoint); untrained it equals remove", kind="diffusion",
         composite=True, loss="inpaint-chain", predictor="remove", width=12, middle_blk_num=1,
         enc_blk_nums=(1, 1, 1, 1), dec_blk_nums=(1, 1, 1, 1), train_size=128),
)
