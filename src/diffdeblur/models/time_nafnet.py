"""NAFNet with a time embedding: the network of the few-step chains that start from the degraded image.

The plain NAFNet (:mod:`.nafnet`) plus
- a sinusoidal embedding of t (Vaswani et al. 2017; DDPM) -> MLP -> per-block scale and shift of the
  block input, x * (1 + scale) + shift (FiLM, Perez et al. 2018), whose projection is zero-initialised
  (as DiT's adaLN-Zero), so that at initialisation every block is the plain NAFBlock;
- optionally an extra input (``extra_channels`` > 0, e.g. ResShift's x_t) through a zero-initialised
  3x3 conv added to the intro features, so that at initialisation the extra input is ignored;
- optionally (:meth:`TimeNAFNet.add_guidance`) guided encoder blocks: multiscale structure guidance
  features (:mod:`.guidance`) enter the blocks of chosen encoder levels through zero-initialised 1x1 convs.
Every NAFNet tensor keeps its name and shape (``intro.weight``, ``encoders.0.0.conv1.weight``, ...):
loading a NAFNet checkpoint by name and shape (``train.init_from``) fills all of them, and the
network then computes exactly the loaded NAFNet for every t. Only ``time_mlp.*``, ``*.time.*``,
``extra_intro.*`` (and ``encoders.*.guide.*`` when guided) are new.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .blocks import pad_to_multiple, timestep_embedding
from .guidance import Features, check_scales, encoder_factors, guide_projection
from .nafnet import NAFBlock, NAFNet

TIME_DIM = 64  # width of the sinusoidal embedding and of the time MLP


def is_conditioning(name: str) -> bool:
    """Whether a TimeNAFNet state-dict name is one of the tensors a plain NAFNet lacks (the time MLP, the
    blocks' time projections, the extra input, the guided blocks' projections), as opposed to the NAFNet trunk."""
    parts = name.split(".")
    return parts[0] in ("time_mlp", "extra_intro") or "time" in parts[1:] or "guide" in parts[1:]


class GuidedEmbedding(NamedTuple):
    """What the blocks of a guided TimeNAFNet receive in place of the time embedding: the embedding (B, E) and
    the guidance features {factor: (B, C_g, H/factor, W/factor)} that guided blocks add to their input."""

    time: torch.Tensor
    guidance: Features


class TimeNAFBlock(NAFBlock):
    """NAFBlock whose input is modulated by the time embedding: block(x (1 + scale) + shift).
    forward(x (B, C, H, W), emb (B, E) or a :class:`GuidedEmbedding`) -> (B, C, H, W). A guided block
    (``guide`` set by :meth:`TimeNAFNet.add_guidance`) first adds ``guide(feature at guide_scale)`` to its input."""

    def __init__(self, c: int, emb_dim: int) -> None:
        super().__init__(c)
        self.time = nn.Linear(emb_dim, 2 * c)
        nn.init.zeros_(self.time.weight)  # identity modulation at initialisation
        nn.init.zeros_(self.time.bias)
        self.guide: nn.Module | None = None
        self.guide_scale = 0

    def forward(self, inp: torch.Tensor, emb: torch.Tensor | GuidedEmbedding | None = None) -> torch.Tensor:
        if isinstance(emb, GuidedEmbedding):
            feature = emb.guidance.get(self.guide_scale) if self.guide is not None else None
            if feature is not None:
                inp = inp + self.guide(feature)
            emb = emb.time
        if emb is not None:
            scale, shift = self.time(emb)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
            inp = inp * (1 + scale) + shift
        return super().forward(inp)


class TimeNAFNet(NAFNet):
    """forward(x (B, 3, H, W), t (B,) float, extra (B, extra_channels, H, W) | None) -> (B, 3, H, W).

    ``x`` takes the path of the plain NAFNet (and its global residual); ``t`` is embedded with
    :func:`~diffdeblur.models.blocks.timestep_embedding` (pass values spanning about [0, 1000]).
    NAFNet kwargs as :class:`~.nafnet.NAFNet`; ``time_dim``: embedding width; ``guide_channels`` > 0 with
    ``guide_scales``: guided encoder blocks (:meth:`add_guidance`; 0, the default, is the plain network).
    """

    def __init__(self, img_channel: int = 3, width: int = 16, middle_blk_num: int = 1,
                 enc_blk_nums: Sequence[int] = (1, 1, 1, 28), dec_blk_nums: Sequence[int] = (1, 1, 1, 1),
                 tlc: bool = True, train_size: int = 256, time_dim: int = TIME_DIM, extra_channels: int = 0,
                 guide_channels: int = 0, guide_scales: Sequence[int] = ()) -> None:
        self.time_dim = time_dim  # read by make_block during NAFNet.__init__ (a plain int, allowed before it)
        super().__init__(img_channel, width, middle_blk_num, tuple(enc_blk_nums), tuple(dec_blk_nums), tlc, train_size)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.extra_intro: nn.Conv2d | None = None
        if extra_channels > 0:
            self.extra_intro = nn.Conv2d(extra_channels, width, 3, padding=1)
            nn.init.zeros_(self.extra_intro.weight)
            nn.init.zeros_(self.extra_intro.bias)
        self.guide_scales: tuple[int, ...] = ()
        if guide_channels > 0:
            self.add_guidance(guide_channels, guide_scales)

    def add_guidance(self, guide_channels: int, guide_scales: Sequence[int]) -> None:
        """Make the blocks of the encoder levels at factors ``guide_scales`` (2^l for ``encoders[l]``, at
        1/2^l resolution with width * 2^l channels) guided blocks: each gets a zero-initialised 1x1 conv
        (:func:`~.guidance.guide_projection`, tensors ``encoders.<l>.<b>.guide.*``) through which the feature
        (B, guide_channels, H/2^l, W/2^l) given to :meth:`forward` is added to its input.
        One-line ConfigError for a factor that is no encoder level, or a level without blocks. Called after the
        constructor (by a wrapper), it also records the two in ``hparams``, which then rebuild the network."""
        scales = check_scales(guide_scales, encoder_factors(len(self.encoders)), "guide_scales")
        for s in scales:
            encoder = self.encoders[s.bit_length() - 1]
            if len(encoder) == 0:
                raise ConfigError(f"guide_scales: the encoder level at factor {s} has no blocks to guide")
            for block in encoder:
                block.guide = guide_projection(guide_channels, block.conv1.in_channels)
                block.guide_scale = s
        self.guide_scales = scales
        if isinstance(getattr(self, "hparams", None), dict):  # set once the constructor has returned
            self.hparams = {**self.hparams, "guide_channels": guide_channels, "guide_scales": list(scales)}

    def make_block(self, channels: int) -> nn.Module:
        return TimeNAFBlock(channels, self.time_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, extra: torch.Tensor | None = None,
                guidance: Features | None = None) -> torch.Tensor:
        """``guidance``: {factor: (B, guide_channels, Hp/factor, Wp/factor)} on the grid of x padded to
        ``size_multiple`` (Hp, Wp), for guided levels; None or {} runs the unguided network."""
        xp, h, w = pad_to_multiple(x, self.size_multiple)
        feat = self.intro(xp)
        if self.extra_intro is not None and extra is not None:
            feat = feat + self.extra_intro(pad_to_multiple(extra, self.size_multiple)[0])
        emb = self.time_mlp(timestep_embedding(t, self.time_dim).to(x.dtype))  # (B, time_dim)
        if guidance:
            unknown = sorted(set(guidance) - set(self.guide_scales))
            if unknown:
                raise ConfigError(f"guidance at factor {unknown[0]}: this network has no guided blocks there "
                                  f"(guided factors: {', '.join(map(str, self.guide_scales)) or 'none'})")
            emb = GuidedEmbedding(emb, guidance)
        return self.body(feat, xp, emb=emb)[:, :, :h, :w]
