"""What the two few-step chains share (:mod:`.indi`, :mod:`.resshift`): a time-conditioned NAFNet wrapper.

Both chains (InDI: Delbracio & Milanfar, TMLR 2023; ResShift: Yue, Wang, Loy, NeurIPS 2023) begin at (a noisy
copy of) the degraded image, so 1-15 steps suffice, and both use :class:`~diffdeblur.models.time_nafnet.TimeNAFNet`,
whose NAFNet tensors keep NAFNet's names: with ``train.init_from: default`` the shipped default regression model
fills all of them, and the model is the default from the first training step. The chain state is in [-1, 1]; the
network works on [0, 1] images. Samplers: ``ddim`` (eta = 0: deterministic; InDI's published iteration) and
``ddpm`` (the posterior sample; ResShift's published sampler), see :func:`diffdeblur.diffusion.shifting.shift_step`.
docs/methods/indi.md, docs/methods/resshift.md.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..diffusion.shifting import SHIFT_SAMPLERS
from ..errors import ConfigError
from ..models.time_nafnet import TimeNAFNet, is_conditioning
from .base import LOSS_TYPES, ChainModel, SamplingOptions

TINY = dict(width=8, middle_blk_num=1, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1), time_dim=16)
# TLC window of the shipped default (nafnet-small trained on 128-pixel crops): with the same window the chains
# initialised from it (init_from: default) equal it at every image size.
DEFAULT_TRAIN_SIZE = 128


class FewStepModel(ChainModel):
    """What the two chains share: the time-conditioned NAFNet (``self.unet``), the loss type, the
    samplers, and the state-dict prefixes that ``train.init_from`` fills from a plain NAFNet file.
    ``freeze_trunk``: train only the conditioning tensors (time MLP, the blocks' time projections, the
    extra input; :func:`~.time_nafnet.is_conditioning`), so that a chain initialised from the default keeps
    the default's NAFNet weights and learns only how to use t (and x_t)."""

    samplers = SHIFT_SAMPLERS
    init_prefixes: tuple[str, ...] = ("unet.",)

    def __init__(self, *, width: int, middle_blk_num: int, enc_blk_nums: Sequence[int], dec_blk_nums: Sequence[int],
                 train_size: int, time_dim: int, extra_channels: int, loss_type: str, default_steps: int,
                 default_sampler: str, freeze_trunk: bool = False) -> None:
        super().__init__(default_steps=default_steps, default_sampler=default_sampler, noise_channels=3)
        if loss_type not in LOSS_TYPES:
            raise ConfigError(f"unknown loss_type '{loss_type}' (known: {', '.join(LOSS_TYPES)})")
        self.loss_type = loss_type
        self.unet = TimeNAFNet(3, width, middle_blk_num, enc_blk_nums, dec_blk_nums, True, train_size, time_dim,
                               extra_channels)
        self.size_multiple = self.unet.size_multiple
        self.freeze_trunk = bool(freeze_trunk)
        if self.freeze_trunk:
            for name, p in self.unet.named_parameters():
                p.requires_grad_(is_conditioning(name))

    def x0_fn(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The samplers' x0 estimate: :meth:`net` clamped to the data range [-1, 1]."""
        return self.net(x_t, t, cond).clamp(-1, 1)

    def chain_eta(self, sampler: str, options: SamplingOptions) -> float:
        return 1.0 if sampler == "ddpm" else float(options.eta)

    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError
