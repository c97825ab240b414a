"""Super-resolution: the NAFNet-family regression network and a few-step ResShift chain from its estimate.

- Regression (:class:`~diffdeblur.models.nafnet_sr.NAFNetSR`, NAFSSR's single-view path): trained with the
  ``l1`` pixel objective of :mod:`.regression` on (low-resolution ``"input"``, high-resolution ``"target"``)
  batches (the ``sr`` data source, :mod:`diffdeblur.data.sr_pairs`).
- Chain (:class:`ResShiftSR`): ResShift (Yue, Wang & Loy, NeurIPS 2023, arXiv 2307.12348; :mod:`.resshift`)
  shifting from a frozen NAFNetSR predictor's estimate y = g(LR) towards the high-resolution image, on the
  high-resolution grid (predict-and-refine, as ``resshift-nafnet-small-refine`` does for deblurring). The network
  sees y through NAFNet's own path (and global residual) and x_t plus the bicubic upsampling of the
  low-resolution image through a zero-initialised extra input; its ending conv starts at zero too, so the
  untrained network returns y for every x_t and t, and every chain of it returns the predictor's estimate
  exactly. ``train.init_from`` with a trained sr-x4 file fills the predictor (``init_prefixes``).

What the deblurring chain could not take as it is, and is generalised here: the state lives on a grid
``scale`` times the input's (``scale``, :meth:`ResShiftSR.slice_noise`), the network's condition is the pair
(upsampled input, y) rather than the input, its extra input has 6 channels, and the exact ``tile_context`` adds
the predictor's reach to the network's (a one-level network, so tiles equal the whole image).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from ..diffusion.process import to_signed, to_unit
from ..diffusion.resshift import KAPPA, POWER, SQRT_ETA_END, resshift_input_scale, resshift_prior, resshift_sample
from ..diffusion.noise import NoiseField
from ..errors import ConfigError
from ..models.nafnet_sr import NAFNetSR, bicubic_upsample, stack_reach
from ..models.protocol import output_scale, tile_context
from ..models.time_nafnet import TIME_DIM, TimeNAFNet
from .base import TIME_SCALE, Callback, SamplingOptions, SubmodelFactory, ToImage, spec
from .resshift import JOURNAL_MIN_NOISE_LEVEL, ResShiftDeblur

SR_EXTRA_CHANNELS = 6  # the chain network's extra input: x_t (3) and the bicubic upsampling of the input (3)


class ResShiftSR(ResShiftDeblur):
    """ResShift super-resolution from a frozen regression predictor's estimate (see the module docstring).

    Network: a one-level time-conditioned NAFNet at the high resolution, ``width`` channels, ``num_blocks``
    blocks, TLC windows for ``train_size`` high-resolution training crops. Chain: ``num_train_steps`` (T),
    ``kappa``, ``power``, ``min_noise_level``, ``sqrt_eta_end`` as :class:`~.resshift.ResShiftDeblur`; the
    predictor ``predictor`` / ``predictor_kwargs``: a registered super-resolution regression model (its
    ``scale`` is the chain's); ``loss_type`` l1 | l2; sampling defaults ``default_steps`` (None = T),
    ``default_sampler`` (ddpm | ddim). restore: (B, 3, H, W) in [0, 1] -> (B, 3, scale H, scale W) in [0, 1].
    """

    def __init__(self, width: int = 16, num_blocks: int = 4, train_size: int = 128, time_dim: int = TIME_DIM,
                 num_train_steps: int = 4, kappa: float = KAPPA, power: float = POWER,
                 min_noise_level: float = JOURNAL_MIN_NOISE_LEVEL, sqrt_eta_end: float = SQRT_ETA_END,
                 predictor: str = "sr-x4", predictor_kwargs: dict[str, Any] | None = None, loss_type: str = "l1",
                 default_steps: int | None = None, default_sampler: str = "ddpm",
                 submodel: SubmodelFactory | None = None) -> None:
        super().__init__(width=width, middle_blk_num=num_blocks, enc_blk_nums=(), dec_blk_nums=(),
                         train_size=train_size, time_dim=time_dim, num_train_steps=num_train_steps, kappa=kappa,
                         power=power, min_noise_level=min_noise_level, sqrt_eta_end=sqrt_eta_end, anchor="predictor",
                         predictor=predictor, predictor_kwargs=predictor_kwargs, loss_type=loss_type,
                         default_steps=default_steps, default_sampler=default_sampler, submodel=submodel)
        self.scale = output_scale(self.predictor)
        if self.scale == 1:
            raise ConfigError(f"ResShiftSR: predictor '{predictor}' is not a super-resolution model (its scale is 1)")
        # the deblurring chain's network takes x_t alone as its extra input: rebuilt with 6 channels, and its
        # ending zeroed so that the untrained network returns y exactly (no NAFNet file fills it)
        self.unet = TimeNAFNet(3, width, num_blocks, (), (), True, train_size, time_dim, SR_EXTRA_CHANNELS)
        nn.init.zeros_(self.unet.ending.weight)
        nn.init.zeros_(self.unet.ending.bias)
        self.init_prefixes = ("predictor.",)  # a trained predictor's file fills the predictor, not the network
        # input sides: a multiple of the predictor's, and such that scale x side is one of the network's
        unet_multiple = self.unet.size_multiple // math.gcd(self.unet.size_multiple, self.scale)
        self.size_multiple = math.lcm(unet_multiple, int(getattr(self.predictor, "size_multiple", 1)))

    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """f(x_t, y, t): x_t (B, 3, sH, sW) in [-1, 1], t (B,) timestep indices in [0, T-1], cond (B, 6, sH, sW) =
        [bicubic upsampling of the input in [0, 1], y in [-1, 1]] -> x0 estimate in [-1, 1]. y takes the
        network's main path (its global residual); x_t, scaled by
        :func:`~diffdeblur.diffusion.resshift.resshift_input_scale`, and the upsampled input the extra one."""
        upsampled, y = cond[:, :3], cond[:, 3:]
        scale = resshift_input_scale(self.sqrt_etas[t.long()], self.kappa).to(x_t.dtype)[:, None, None, None]
        extra = torch.cat([x_t * scale, upsampled], dim=1)
        return to_signed(self.unet(to_unit(y), t.float() * (TIME_SCALE / self.num_train_steps), extra))

    forward = net

    def condition(self, blur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, cond) for a low-resolution input (B, 3, H, W) in [0, 1]: the anchor y (B, 3, sH, sW) in [-1, 1] and
        the network's condition [bicubic upsampling, y] (B, 6, sH, sW)."""
        y = self.anchor(blur)
        return y, torch.cat([bicubic_upsample(blur, self.scale), y], dim=1)

    def chain_inputs(self, blur: torch.Tensor, sharp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training: (x0 = the high-resolution image, y, network condition), on the high-resolution grid."""
        y, cond = self.condition(blur)
        return to_signed(sharp), y, cond

    def sampling_context(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        _, cond = self.condition(x)
        return cond, (cond.shape[-2], cond.shape[-1]), lambda state, final: to_unit(state)

    def run_chain(self, sampler: str, options: SamplingOptions, ts: list[float], cond: torch.Tensor,
                  draw: Callable[[int], torch.Tensor], callback: Callback | None) -> torch.Tensor:
        y = cond[:, 3:]
        x_T = resshift_prior(y, float(self.sqrt_etas[-1]), self.kappa, draw(0))
        return resshift_sample(self.x0_fn, x_T, ts, sqrt_etas=self.sqrt_etas, kappa=self.kappa, y=y, cond=cond,
                               eta=self.chain_eta(sampler, options), noise=draw, callback=callback)

    def slice_noise(self, noise: NoiseField, box: tuple[int, int, int, int]) -> NoiseField:
        """The noise of the input tile box = (y0, y1, x0, x1): the state's grid is ``scale`` times finer."""
        return noise.crop(tuple(v * self.scale for v in box))

    @property
    def tile_context(self) -> int:
        """Input pixels beyond a tile that the output inside it depends on: the predictor's (its estimate feeds the
        network) plus the network's exact reach on the high-resolution grid (:func:`stack_reach`) in input pixels,
        rounded up to ``size_multiple``; 0 when either pools globally (no margin makes tiles exact)."""
        reach = stack_reach(self.unet.middle_blks)
        before = tile_context(self.predictor)
        if reach is None or before == 0:
            return 0
        total = before + -(-reach // self.scale)
        return -(-total // self.size_multiple) * self.size_multiple


# ---- presets ---------------------------------------------------------------------------------------
# objectives: the regression presets train with the ``l1`` pixel objective (methods/regression.py; it reads
# model(batch["input"]) against batch["target"] whatever their sizes), the chains with ``resshift``.

TINY_SR = dict(width=8, num_blocks=2, train_size=8)
# sr-chain-x4: sqrt(eta_1) = 0.04 / kappa (the NeurIPS configs' level), as recipes/resshift-nafnet-small-refine.yaml
# found for deblurring (the journal level 0.2 left visible grain after the last step)

PRESETS = (
    spec("sr-tiny-x2", NAFNetSR, "Tiny x2 super-resolution NAFNet for tests (width 8, 2 blocks)", scale=2, loss="l1",
         **TINY_SR),
    spec("sr-tiny-x4", NAFNetSR, "Tiny x4 super-resolution NAFNet for tests (width 8, 2 blocks)", scale=4, loss="l1",
         **TINY_SR),
    spec("sr-x2", NAFNetSR, "CPU-sized x2 super-resolution: NAFSSR's single-view path, width 48, 16 NAFBlocks at "
         "the low resolution, pixel-shuffle upsampler, bicubic global residual (0.29 M parameters)", scale=2,
         width=48, num_blocks=16, train_size=32, loss="l1"),
    spec("sr-x4", NAFNetSR, "CPU-sized x4 super-resolution: NAFSSR's single-view path, width 48, 16 NAFBlocks at "
         "the low resolution, pixel-shuffle upsampler, bicubic global residual (0.31 M parameters)", scale=4,
         width=48, num_blocks=16, train_size=32, loss="l1"),
    spec("sr-chain-tiny-x4", ResShiftSR, "Tiny x4 ResShift chain from the sr-tiny-x4 predictor's estimate for tests "
         "(one-level time-conditioned NAFNet width 8, 2 blocks, T=4)", kind="diffusion", composite=True,
         loss="resshift", predictor="sr-tiny-x4", width=8, num_blocks=2, train_size=16, time_dim=16),
    spec("sr-chain-x4", ResShiftSR, "x4 predict-and-refine ResShift: T=4 steps from the frozen sr-x4 predictor's "
         "estimate on the high-resolution grid (init_from a trained sr-x4 fills the predictor; untrained it "
         "returns the predictor's estimate)", kind="diffusion", composite=True, loss="resshift", predictor="sr-x4",
         width=16, num_blocks=4, train_size=128, min_noise_level=0.04),
)
