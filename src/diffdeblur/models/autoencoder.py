"""Image <-> latent autoencoders (8x spatial downscaling) for latent diffusion.

Two autoencoders share one interface (:class:`LatentAutoencoder`):

- :class:`TAEF2`: the TAESD-family tiny autoencoder for the FLUX.2 latent space (madebyollin/taesd,
  MIT), 32 latent channels, 1.34 M parameters per half. The architecture is written here; the
  pretrained weights (``taef2_encoder.pth`` / ``taef2_decoder.pth``, plain fp16 state dicts) are read
  from a folder the user names (``weights_dir`` or the environment variable
  ``DIFFDEBLUR_TAEF2_DIR``) and are never downloaded.
- :class:`TinyAutoencoder`: a small conv autoencoder trained by this project (~1 M parameters), so
  that latent diffusion works with no third-party weights. It does its full-resolution work on
  pixel-unshuffled inputs, which makes it several times cheaper than TAEF2 at 720p.

Conventions: images (B, 3, H, W) float in [0, 1]; ``encode`` returns latents (B, C, H/8, W/8)
scaled to roughly unit standard deviation (the diffusion's working scale); ``decode`` inverts it
and returns (B, 3, H, W), roughly in [0, 1] (not clamped, so losses see the raw output). H and W
must be multiples of 8 for ``encode``; ``restore`` pads any size.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..tensorfile import load_into, read_metadata, read_tensors, shipped_weights
from .blocks import pad_to_multiple
from .hparams import HyperParameters
from .protocol import restore_options

DOWNSCALE = 8  # every autoencoder here maps H x W pixels to H/8 x W/8 latents
TAEF2_ENV = "DIFFDEBLUR_TAEF2_DIR"
AE_TINY = "ae-tiny"  # registry name of TinyAutoencoder (its checkpoints carry it)
TAEF2_FILES = ("taef2_encoder.pth", "taef2_decoder.pth")
TAEF2_LATENT_CHANNELS = 32
# TAEF2's raw latents have std ~0.83 on natural images (measured on 10 BSDS500 train crops, per-channel
# std 0.57-1.05, means within +-0.45); multiplying by 1.2 brings them to ~unit std for diffusion.
TAEF2_LATENT_SCALE = 1.2
TAESD_CLAMP = 3.0  # the TAESD decoder soft-clamps latents to +-3 with tanh(x / 3) * 3
AE_LATENT_NOISE = 0.1  # std of noise added to (unit-scale) latents while training the project AE
LATENT_STD_MOMENTUM = 0.01  # running estimate of the project AE's latent std (like BatchNorm stats)


class AutoencoderWeightsError(CheckpointError):
    """Autoencoder weights are missing, unreadable or do not match; the message names the file."""


class LatentAutoencoder(HyperParameters, nn.Module):
    """Common interface. Subclasses implement ``_encode_raw`` / ``_decode_raw`` and ``latent_scale``.

    Weights may be *deferred* (:meth:`defer_weights`): the module builds without them (so every
    registered model can be built, listed and have its state loaded), and the loader runs at the first
    ``encode`` / ``decode``, raising its one-line error there if the weights are unavailable. Loading
    a state dict that contains this module's tensors cancels the deferred loader.
    """

    downscale = DOWNSCALE
    size_multiple = DOWNSCALE
    latent_channels: int

    def __init__(self) -> None:
        super().__init__()
        self._deferred: Callable[[], None] | None = None
        self.register_load_state_dict_pre_hook(_cancel_deferred_if_state_given)

    def defer_weights(self, loader: Callable[[], None]) -> None:
        """Run ``loader()`` (which fills the weights or raises) before the first encode / decode."""
        self._deferred = loader

    def ensure_weights(self) -> None:
        """Load deferred weights now (no-op when there are none); raises AutoencoderWeightsError."""
        if self._deferred is not None:
            self._deferred()  # raises, and stays deferred, when the weights are unavailable
            self._deferred = None

    def _encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def latent_scale(self) -> torch.Tensor | float:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], H and W multiples of 8 -> (B, C, H/8, W/8), ~unit std."""
        if x.shape[-2] % DOWNSCALE or x.shape[-1] % DOWNSCALE:
            raise ValueError(f"encode needs sides that are multiples of {DOWNSCALE}, got {tuple(x.shape[-2:])}")
        self.ensure_weights()
        return self._encode_raw(x) * self.latent_scale()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) unit-scale latents -> (B, 3, 8h, 8w), roughly in [0, 1] (not clamped)."""
        self.ensure_weights()
        return self._decode_raw(z / self.latent_scale())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @restore_options
    @torch.inference_mode()
    def restore(self, blur: torch.Tensor) -> torch.Tensor:
        """Reconstruction decode(encode(x)) of any-size (B, 3, H, W) in [0, 1] -> same shape in [0, 1].

        An autoencoder does not deblur: this is what the deblurring pipeline can at best reproduce.
        """
        x, h, w = pad_to_multiple(blur, DOWNSCALE)
        return self.forward(x)[:, :, :h, :w].clamp(0, 1)


def _cancel_deferred_if_state_given(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    if any(k.startswith(prefix) and k[len(prefix):].startswith(("encoder.", "decoder.")) for k in state_dict):
        module._deferred = None


# ---------------------------------------------------------------------------------------------
# TAEF2 (TAESD family). Layer layout inferred from the state-dict keys and checked against the
# taesd reference: Block = 3x3 conv-ReLU-conv-ReLU-conv + identity skip, fused by ReLU; the FLUX.2
# variant adds, in the three lowest-resolution blocks of each half, a pre-block channel MLP
# ("pool": 1x1 conv C->4C, GroupNorm(4), ReLU, 1x1 conv 4C->C) added to the block input.
# Module indices match the reference nn.Sequential so that the .pth files load without renaming.

def _conv3(c_in: int, c_out: int, **kw) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, **kw)


class TAEBlock(nn.Module):
    """(B, C, H, W) -> (B, C, H, W). ``mid``: add the FLUX.2 channel-MLP branch before the block."""

    def __init__(self, channels: int = 64, mid: bool = False) -> None:
        super().__init__()
        c = channels
        self.conv = nn.Sequential(_conv3(c, c), nn.ReLU(), _conv3(c, c), nn.ReLU(), _conv3(c, c))
        self.fuse = nn.ReLU()
        self.pool = (nn.Sequential(nn.Conv2d(c, 4 * c, 1, bias=False), nn.GroupNorm(4, 4 * c), nn.ReLU(),
                                   nn.Conv2d(4 * c, c, 1, bias=False)) if mid else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + x)


class SoftClamp(nn.Module):
    """tanh(x / m) * m: TAESD's smooth clamp of decoder inputs to (-m, m)."""

    def __init__(self, magnitude: float = TAESD_CLAMP) -> None:
        super().__init__()
        self.magnitude = magnitude

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / self.magnitude) * self.magnitude


def taef2_encoder(latent_channels: int = TAEF2_LATENT_CHANNELS, width: int = 64) -> nn.Sequential:
    """RGB (B, 3, H, W) in [0, 1] -> raw latents (B, 32, H/8, W/8)."""
    c = width
    layers: list[nn.Module] = [_conv3(3, c), TAEBlock(c)]
    for level in range(3):
        mid = level == 2  # FLUX.2: the 1/8-resolution blocks carry the channel MLP
        layers += [_conv3(c, c, stride=2, bias=False), TAEBlock(c, mid), TAEBlock(c, mid), TAEBlock(c, mid)]
    layers.append(_conv3(c, latent_channels))
    return nn.Sequential(*layers)


def taef2_decoder(latent_channels: int = TAEF2_LATENT_CHANNELS, width: int = 64) -> nn.Sequential:
    """Raw latents (B, 32, h, w) -> RGB (B, 3, 8h, 8w), roughly in [0, 1]."""
    c = width
    layers: list[nn.Module] = [SoftClamp(), _conv3(latent_channels, c), nn.ReLU()]
    for level in range(3):
        mid = level == 0
        layers += [TAEBlock(c, mid), TAEBlock(c, mid), TAEBlock(c, mid),
                   nn.Upsample(scale_factor=2), _conv3(c, c, bias=False)]
    layers += [TAEBlock(c), _conv3(c, 3)]
    return nn.Sequential(*layers)


def resolve_taef2_dir(weights_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the TAEF2 .pth files: ``weights_dir`` if given, else ``$DIFFDEBLUR_TAEF2_DIR``."""
    chosen = os.fspath(weights_dir) if weights_dir else os.environ.get(TAEF2_ENV, "")
    if not chosen:
        raise AutoencoderWeightsError(
            f"TAEF2 weights folder not given: pass autoencoder_weights=DIR (or weights_dir=DIR) or set "
            f"{TAEF2_ENV}=DIR, a folder with {' and '.join(TAEF2_FILES)} (they are never downloaded)")
    return Path(chosen).expanduser()


def load_state_file(path: Path, module: nn.Module, what: str) -> None:
    """Load a plain ``torch.save`` state dict (``weights_only=True``) into ``module``, converting dtype.

    Any problem is one :class:`AutoencoderWeightsError` line naming ``path``.
    """
    if not path.is_file():
        raise AutoencoderWeightsError(f"{path}: {what} weights file not found")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickle error, not a torch file...
        raise AutoencoderWeightsError(f"{path}: corrupt {what} weights ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise AutoencoderWeightsError(f"{path}: not a {what} state dict (expected a dict of tensors)")
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    bad_shape = [k for k in expected if k in sd and sd[k].shape != expected[k].shape]
    if missing or unexpected or bad_shape:
        raise AutoencoderWeightsError(
            f"{path}: not a {what} state dict (missing {missing[:2]}, unexpected {unexpected[:2]}, "
            f"wrong shape {bad_shape[:2]})")
    ref = next(iter(expected.values()))
    module.load_state_dict({k: v.to(ref.dtype) for k, v in sd.items()})


class TAEF2(LatentAutoencoder):
    """Pretrained TAEF2 autoencoder (FLUX.2 latent space through the TAESD-family tiny AE).

    weights_dir: folder with ``taef2_encoder.pth`` and ``taef2_decoder.pth``, loaded at once; empty =
    ``$DIFFDEBLUR_TAEF2_DIR``, read at the first encode / decode (deferred, so that the model can be
    built and listed anywhere). ``pretrained=False`` keeps random weights (tests, or when a state
    dict supplies them).
    """

    def __init__(self, weights_dir: str = "", pretrained: bool = True) -> None:
        super().__init__()
        self.latent_channels = TAEF2_LATENT_CHANNELS
        self.encoder = taef2_encoder()
        self.decoder = taef2_decoder()
        if pretrained:
            self.defer_weights(functools.partial(TAEF2.load_pretrained, self, weights_dir))
            if weights_dir:
                self.ensure_weights()

    def load_pretrained(self, weights_dir: str = "") -> None:
        """Read the two .pth files from ``weights_dir`` (or ``$DIFFDEBLUR_TAEF2_DIR``)."""
        folder = resolve_taef2_dir(weights_dir)
        load_state_file(folder / TAEF2_FILES[0], self.encoder, "TAEF2 encoder")
        load_state_file(folder / TAEF2_FILES[1], self.decoder, "TAEF2 decoder")

    def latent_scale(self) -> float:
        return TAEF2_LATENT_SCALE

    def _encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


# ---------------------------------------------------------------------------------------------
# The project's own small autoencoder.

class ResBlock(nn.Module):
    """conv3-GELU-conv3 residual block, (B, C, H, W) -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv3(channels, channels), nn.GELU(), _conv3(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TinyAutoencoder(LatentAutoencoder):
    """Small conv autoencoder, 8x down: pixel-unshuffle 2 -> widths[0] @ H/2 -> widths[1] @ H/4 ->
    widths[2] @ H/8 -> ``latent_channels``; the decoder mirrors it with pixel-shuffle upsampling.

    No full-resolution convolutions (the first and last layers work on 2x2 pixel groups), so it
    costs a fraction of TAEF2. ``blocks``: residual blocks per level. Latents are divided by a
    running estimate of their std (buffer ``latent_std``, updated in training mode), so ``encode``
    returns ~unit-std latents whatever scale the encoder learns.
    """

    def __init__(self, latent_channels: int = 32, widths: tuple[int, ...] | list[int] = (32, 64, 128),
                 blocks: tuple[int, ...] | list[int] = (1, 1, 1)) -> None:
        super().__init__()
        if len(widths) != 3 or len(blocks) != 3:
            raise ConfigError("TinyAutoencoder needs three widths and three block counts (levels 1/2, 1/4, 1/8)")
        w0, w1, w2 = widths
        self.latent_channels = latent_channels
        enc: list[nn.Module] = [nn.PixelUnshuffle(2), _conv3(12, w0)]
        enc += [ResBlock(w0) for _ in range(blocks[0])]
        enc += [nn.Conv2d(w0, w1, 2, stride=2)] + [ResBlock(w1) for _ in range(blocks[1])]
        enc += [nn.Conv2d(w1, w2, 2, stride=2)] + [ResBlock(w2) for _ in range(blocks[2])]
        enc += [_conv3(w2, latent_channels)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [_conv3(latent_channels, w2)] + [ResBlock(w2) for _ in range(blocks[2])]
        dec += [nn.Conv2d(w2, 4 * w1, 1), nn.PixelShuffle(2)] + [ResBlock(w1) for _ in range(blocks[1])]
        dec += [nn.Conv2d(w1, 4 * w0, 1), nn.PixelShuffle(2)] + [ResBlock(w0) for _ in range(blocks[0])]
        dec += [_conv3(w0, 12), nn.PixelShuffle(2)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("latent_std", torch.ones(()))

    def latent_scale(self) -> torch.Tensor:
        return 1.0 / self.latent_std.clamp_min(1e-4)

    def _encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                self.latent_std.lerp_(z.detach().float().std(), LATENT_STD_MOMENTUM)
        return z

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z) + 0.5  # centre the output range on grey


def read_tiny_autoencoder(path: Path) -> "TinyAutoencoder":
    """A trained ae-tiny from its diffdeblur .safetensors file (read directly, not through the
    model-loading API above this layer), in eval mode."""
    if not path.is_file():
        raise AutoencoderWeightsError(f"{path}: autoencoder weights file not found")
    cfg = read_metadata(path)
    if cfg.get("model") != AE_TINY:
        raise AutoencoderWeightsError(f"{path}: not an ae-tiny (TinyAutoencoder) checkpoint")
    try:
        ae = TinyAutoencoder(**cfg.get("kwargs", {}))
    except TypeError as exc:  # kwargs of another version of the class
        raise AutoencoderWeightsError(f"{path}: incompatible ae-tiny checkpoint ({exc})") from None
    load_into(ae, read_tensors(path), str(path))
    return ae.eval()


def _no_shipped_ae() -> None:
    raise AutoencoderWeightsError("ae-tiny: no trained weights ship with this install; pass autoencoder_weights="
                                  "FILE.safetensors (train one with the latent-ae-tiny config)")


RANDOM_WEIGHTS = "random"  # autoencoder weights value meaning "fresh init" (tests; a checkpoint fills them)


def build_autoencoder(kind: str, weights: str = "") -> LatentAutoencoder:
    """A frozen-to-be autoencoder, in eval mode.

    kind ``"taef2"``: pretrained TAEF2; ``weights`` = its folder ('' = ``$DIFFDEBLUR_TAEF2_DIR``).
    kind ``"tiny"``: the project AE; ``weights`` = a diffdeblur .safetensors of a trained ``ae-tiny``
    ('' = the copy shipped in ``diffdeblur/weights/ae-tiny.safetensors``).
    ``weights="random"`` builds either with random weights (tests, or when a checkpoint supplies them).
    """
    if kind == "taef2":
        return TAEF2(pretrained=weights != RANDOM_WEIGHTS, weights_dir="" if weights == RANDOM_WEIGHTS else weights).eval()
    if kind == "tiny":
        if weights == RANDOM_WEIGHTS:
            return TinyAutoencoder().eval()
        path = weights or shipped_weights(AE_TINY)
        if path is None:  # a checkpoint's state may still supply the weights; otherwise fail at first use
            ae = TinyAutoencoder().eval()
            ae.defer_weights(_no_shipped_ae)
            return ae
        return read_tiny_autoencoder(Path(path))
    raise ConfigError(f"unknown autoencoder '{kind}' (use taef2 or tiny)")
