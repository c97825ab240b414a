"""Few-step chains that start from the degraded image: InDI and ResShift on a time-conditioned NAFNet.

Both chains (InDI: Delbracio & Milanfar, TMLR 2023; ResShift: Yue, Wang, Loy, NeurIPS 2023) begin at
(a noisy copy of) the blurry image, so 1-15 steps suffice, and both
use :class:`~.time_nafnet.TimeNAFNet`, whose NAFNet tensors keep NAFNet's names: with
``train.init_from: default`` the shipped default regression model fills all of them, and the model
is the default from the first training step (exactly so for one InDI step, and for every ResShift chain).

- :class:`InDIDeblur` (Delbracio & Milanfar 2023; :mod:`diffdeblur.diffusion.indi`): the network sees
  x_t only, F(x_t, t) ~ x; at t = 1, x_1 = y is the blurry image, exactly the default's input, so one
  step is the regression estimate and more steps move along the perception-distortion curve.
- :class:`ResShiftDeblur` (Yue et al. 2023; :mod:`diffdeblur.diffusion.resshift`): the network sees the
  blurry image through NAFNet's own path (and global residual) and x_t through a zero-initialised
  extra input, f(x_t, y, t) ~ x. The anchor y of the chain is the blurry image (``anchor="blur"``) or
  the estimate of a frozen regression predictor (``anchor="predictor"``: predict-and-refine, DvSR-style;
  ``init_from: default`` loads the shipped default into the predictor too).

The chain state is in [-1, 1] (:func:`~diffdeblur.diffusion.process.to_signed`); the network works on
[0, 1] images like the NAFNet it is initialised from. Images at the boundary: (B, 3, H, W) in [0, 1].
Samplers: ``ddim`` (eta = 0: deterministic; InDI's published iteration) and ``ddpm`` (the posterior
sample; ResShift's published sampler), see :func:`diffdeblur.diffusion.shifting.shift_step`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..diffusion.indi import indi_sample, indi_start, indi_times
from ..diffusion.noise import NoiseField
from ..diffusion.process import to_signed, to_unit
from ..diffusion.resshift import (KAPPA, POWER, SQRT_ETA_END, resshift_input_scale, resshift_prior,
                                  resshift_sample, resshift_sqrt_etas)
from ..diffusion.samplers import SamplingOptions
from ..diffusion.schedules import make_timesteps
from ..errors import ConfigError
from ..tensorfile import load_into, read_metadata, read_tensors, shipped_weights
from .diffusion_model import LOSS_TYPES, TIME_SCALE, Callback, ChainModel, ToImage
from .nafnet import LITE
from .protocol import SubmodelFactory, exclude_from_state, restore_options, spec
from .time_nafnet import TIME_DIM, TimeNAFNet, is_conditioning

FEWSTEP_SAMPLERS = ("ddpm", "ddim")  # eta = 1 (posterior) / options.eta (0 = deterministic)
JOURNAL_MIN_NOISE_LEVEL = 0.2  # ResShift's 4-step (journal) configs: sqrt(eta_1) = min(0.2 / kappa, 0.2)


class FewStepModel(ChainModel):
    """What the two chains share: the time-conditioned NAFNet (``self.unet``), the loss type, the
    samplers, and the state-dict prefixes that ``train.init_from`` fills from a plain NAFNet file.
    ``freeze_trunk``: train only the conditioning tensors (time MLP, the blocks' time projections, the
    extra input; :func:`~.time_nafnet.is_conditioning`), so that a chain initialised from the default keeps
    the default's NAFNet weights and learns only how to use t (and x_t)."""

    samplers = FEWSTEP_SAMPLERS
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


class InDIDeblur(FewStepModel):
    """InDI deblurring (see the module docstring). NAFNet kwargs: ``width, middle_blk_num, enc_blk_nums,
    dec_blk_nums, train_size``; ``time_dim``: time embedding width; ``sigma``: noise of the path
    x_t = (1 - t) x + t y + sigma t eps (in [-1, 1] units; 0 = deterministic InDI); ``loss_type`` (l2 as the
    paper, or l1); ``endpoint_prob``: share of training images at t = 1 (:func:`~diffdeblur.diffusion.indi.indi_loss`);
    ``freeze_trunk`` as :class:`FewStepModel`; sampling defaults ``default_steps``, ``default_sampler`` (ddim | ddpm)."""

    loss_hint = "indi"

    def __init__(self, width: int = 16, middle_blk_num: int = 1, enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
                 dec_blk_nums: Sequence[int] = (1, 1, 1, 1), train_size: int = 256, time_dim: int = TIME_DIM,
                 sigma: float = 0.0, loss_type: str = "l2", endpoint_prob: float = 0.0, default_steps: int = 4,
                 default_sampler: str = "ddim", freeze_trunk: bool = False) -> None:
        super().__init__(width=width, middle_blk_num=middle_blk_num, enc_blk_nums=enc_blk_nums,
                         dec_blk_nums=dec_blk_nums, train_size=train_size, time_dim=time_dim, extra_channels=0,
                         loss_type=loss_type, default_steps=default_steps, default_sampler=default_sampler,
                         freeze_trunk=freeze_trunk)
        if sigma < 0:
            raise ConfigError(f"sigma must be >= 0, got {sigma}")
        if not 0 <= endpoint_prob <= 1:
            raise ConfigError(f"endpoint_prob must be in [0, 1], got {endpoint_prob}")
        self.sigma = float(sigma)
        self.endpoint_prob = float(endpoint_prob)
        self.stochastic = self.sigma > 0

    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """F(x_t, t): x_t (B, 3, H, W) in [-1, 1], t (B,) in [0, 1] -> x0 estimate in [-1, 1]."""
        return to_signed(self.unet(to_unit(x_t), t.float() * TIME_SCALE))

    forward = net

    def chain_inputs(self, blur: torch.Tensor, sharp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Training: (x0, y, network condition) in the chain's space (see :mod:`diffdeblur.objectives`)."""
        return to_signed(sharp), to_signed(blur), None

    def sampling_context(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        return to_signed(x), (x.shape[-2], x.shape[-1]), lambda state, final: to_unit(state)

    def timesteps(self, options: SamplingOptions) -> list[float]:
        return indi_times(int(options.steps or self.default_steps))

    def run_chain(self, sampler: str, options: SamplingOptions, ts: list[float], cond: torch.Tensor,
                  draw: Callable[[int], torch.Tensor], callback: Callback | None) -> torch.Tensor:
        x_1 = indi_start(cond, self.sigma, draw(0) if self.sigma > 0 else None)
        return indi_sample(self.x0_fn, x_1, ts, y=cond, sigma=self.sigma, eta=self.chain_eta(sampler, options),
                           noise=draw, callback=callback)

    @restore_options
    @torch.inference_mode()
    def restore(self, blur: torch.Tensor, steps: int | None = None, sampler: str | None = None, eta: float = 0.0,
                num_samples: int = 1, noise: NoiseField | None = None, generator: torch.Generator | None = None,
                callback: Any = None, timesteps: Sequence[float] | None = None) -> torch.Tensor:
        """Deblur (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1] by ``steps`` InDI steps from t = 1.

        steps: network calls, uniform in t (default ``default_steps``), or explicit ``timesteps`` in (0, 1];
        sampler: ddim (eta = 0: the published iteration) | ddpm (posterior re-noising; only with sigma > 0);
        num_samples: draws averaged (only differ with sigma > 0); noise / generator / callback as
        :meth:`ChainModel.sample_image`.
        """
        self.eval()
        options = SamplingOptions(steps, sampler, eta, num_samples, "trailing", timesteps)
        return self.sample_image(blur, options, noise, generator, callback)


class ResShiftDeblur(FewStepModel):
    """ResShift deblurring (see the module docstring). NAFNet kwargs as :class:`InDIDeblur`. Chain:
    ``num_train_steps`` (T), ``kappa``, ``power`` (p), ``min_noise_level``, ``sqrt_eta_end`` (the schedule of
    :func:`~diffdeblur.diffusion.resshift.resshift_sqrt_etas`); ``anchor`` = "blur" | "predictor", with
    ``predictor`` / ``predictor_kwargs`` a registered regression model (frozen); ``loss_type`` (l2 as the
    paper, or l1); ``freeze_trunk`` as :class:`FewStepModel`; sampling defaults ``default_steps`` (None = T),
    ``default_sampler`` (ddpm | ddim).
    ``submodel``: the registry's factory for the predictor (given by :func:`diffdeblur.build_model`)."""

    loss_hint = "resshift"

    def __init__(self, width: int = 16, middle_blk_num: int = 1, enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
                 dec_blk_nums: Sequence[int] = (1, 1, 1, 1), train_size: int = 256, time_dim: int = TIME_DIM,
                 num_train_steps: int = 4, kappa: float = KAPPA, power: float = POWER,
                 min_noise_level: float = JOURNAL_MIN_NOISE_LEVEL, sqrt_eta_end: float = SQRT_ETA_END,
                 anchor: str = "blur", predictor: str = "nafnet-small", predictor_kwargs: dict[str, Any] | None = None,
                 predictor_weights: str = "", loss_type: str = "l2", default_steps: int | None = None, default_sampler: str = "ddpm",
                 freeze_trunk: bool = False, submodel: SubmodelFactory | None = None) -> None:
        super().__init__(width=width, middle_blk_num=middle_blk_num, enc_blk_nums=enc_blk_nums,
                         dec_blk_nums=dec_blk_nums, train_size=train_size, time_dim=time_dim, extra_channels=3,
                         loss_type=loss_type, default_steps=int(default_steps or num_train_steps),
                         default_sampler=default_sampler, freeze_trunk=freeze_trunk)
        if anchor not in ("blur", "predictor"):
            raise ConfigError(f"anchor must be 'blur' or 'predictor', got '{anchor}'")
        self.num_train_steps, self.kappa = num_train_steps, float(kappa)
        self.register_buffer("sqrt_etas", resshift_sqrt_etas(num_train_steps, kappa, power, min_noise_level,
                                                             sqrt_eta_end), persistent=False)  # (T,)
        self.predictor: nn.Module | None = None
        if anchor == "predictor":
            if submodel is None:
                raise ConfigError("a predict-and-refine ResShift builds its predictor by name: build it with "
                                  "diffdeblur.build_model")
            path = shipped_weights(predictor_weights) if predictor_weights else None
            if predictor_weights and path is None:
                raise ConfigError(f"predictor_weights: no shipped weights named '{predictor_weights}'")
            kwargs = dict(predictor_kwargs or {})
            if path is not None:
                # the predictor is the network those weights were trained as (TLC windows included:
                # a preset's train_size would change its estimate at sizes above the training crops)
                meta = read_metadata(path)
                if meta["model"] != predictor:
                    raise ConfigError(f"predictor_weights: '{predictor_weights}' holds a {meta['model']}, "
                                      f"not the predictor {predictor}")
                kwargs = {**meta.get("kwargs", {}), **kwargs}
            self.predictor = submodel(predictor, kinds=("regression",), **kwargs)
            self.predictor.requires_grad_(False)
            self.init_prefixes = ("unet.", "predictor.")
            if path is not None:
                load_into(self.predictor, read_tensors(path), str(path))
                exclude_from_state(self, "predictor")
            self.size_multiple = math.lcm(self.size_multiple, int(getattr(self.predictor, "size_multiple", 1)))

    def train(self, mode: bool = True) -> "ResShiftDeblur":
        super().train(mode)
        if self.predictor is not None:
            self.predictor.eval()  # frozen
        return self

    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """f(x_t, y, t): x_t (B, 3, H, W) in [-1, 1], t (B,) timestep indices in [0, T-1], cond = the
        blurry image (B, 3, H, W) in [0, 1] -> x0 estimate in [-1, 1]. x_t is scaled by
        :func:`~diffdeblur.diffusion.resshift.resshift_input_scale` before the network."""
        scale = resshift_input_scale(self.sqrt_etas[t.long()], self.kappa).to(x_t.dtype)[:, None, None, None]
        return to_signed(self.unet(cond, t.float() * (TIME_SCALE / self.num_train_steps), x_t * scale))

    forward = net

    @torch.no_grad()
    def anchor(self, blur: torch.Tensor) -> torch.Tensor:
        """The chain's y in [-1, 1]: the blurry image, or the frozen predictor's estimate."""
        return to_signed(blur if self.predictor is None else self.predictor(blur).clamp(0, 1))

    def chain_inputs(self, blur: torch.Tensor, sharp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training: (x0, y, network condition = the blurry image)."""
        return to_signed(sharp), self.anchor(blur), blur

    def sampling_context(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        cond = torch.cat([x, self.anchor(x)], dim=1)  # (B, 6, H, W): network input [0, 1], anchor y [-1, 1]
        return cond, (x.shape[-2], x.shape[-1]), lambda state, final: to_unit(state)

    def timesteps(self, options: SamplingOptions) -> list[float]:
        steps = int(options.steps or self.default_steps)
        return make_timesteps(self.num_train_steps, steps, options.spacing).tolist()

    def run_chain(self, sampler: str, options: SamplingOptions, ts: list[float], cond: torch.Tensor,
                  draw: Callable[[int], torch.Tensor], callback: Callback | None) -> torch.Tensor:
        blur, y = cond[:, :3], cond[:, 3:]
        x_T = resshift_prior(y, float(self.sqrt_etas[-1]), self.kappa, draw(0))
        return resshift_sample(self.x0_fn, x_T, ts, sqrt_etas=self.sqrt_etas, kappa=self.kappa, y=y, cond=blur,
                               eta=self.chain_eta(sampler, options), noise=draw, callback=callback)

    # restore(blur, steps=, sampler=, eta=, num_samples=, noise=, generator=, callback=, spacing=, timesteps=):
    # the shared ChainModel.restore; steps default to T, fewer respace the chain (spacing as make_timesteps).


# ---- presets -------------------------------------------------------------------------------------

TINY = dict(width=8, middle_blk_num=1, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1), time_dim=16)
# TLC window of the shipped default (nafnet-small trained on 128-pixel crops): with the same window the chains
# initialised from it (init_from: default) equal it at every image size.
DEFAULT_TRAIN_SIZE = 128
PRESETS = (
    spec("indi-nafnet-tiny", InDIDeblur, "Tiny InDI (direct iteration from the blurry image) for tests: "
         "time-conditioned NAFNet width 8, two levels", kind="diffusion", **TINY),
    spec("indi-nafnet-small", InDIDeblur, "InDI direct iteration from the blurry image on a time-conditioned "
         "nafnet-small (init_from: default makes one step the shipped default)",
         kind="diffusion", **LITE, width=16, train_size=DEFAULT_TRAIN_SIZE),
    spec("resshift-nafnet-tiny", ResShiftDeblur, "Tiny ResShift (residual shifting from the blurry image) for "
         "tests: time-conditioned NAFNet width 8, T=4", kind="diffusion", composite=True, **TINY),
    spec("resshift-nafnet-small", ResShiftDeblur, "ResShift residual shifting from the blurry image, T=4, "
         "kappa 2, p 0.3, on a time-conditioned nafnet-small that also sees x_t (init_from: default)",
         kind="diffusion", composite=True, **LITE, width=16, train_size=DEFAULT_TRAIN_SIZE),
    spec("resshift-nafnet-small-refine", ResShiftDeblur, "Predict-and-refine ResShift: the chain shifts from the "
         "frozen nafnet-small predictor's estimate (init_from: default fills predictor and network)",
         kind="diffusion", composite=True, anchor="predictor", predictor="nafnet-small", **LITE, width=16,
         train_size=DEFAULT_TRAIN_SIZE),
)
