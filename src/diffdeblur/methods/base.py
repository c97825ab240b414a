"""What every method shares: the chain-model base classes, the typed sampling options, and the objective table.

A *method* (one file in this package) is a wrapper around networks of :mod:`diffdeblur.models` that knows its
process, its training loss and its presets. The sampled ones derive from :class:`ChainModel`, which writes once
what every sampled model needs: the noise field and its tile slices, padding, sample averaging, the per-step
trace hook, and the check of the sampler name. A subclass provides

- ``sampling_context(x) -> (cond, (h, w), to_image)`` for sampling a padded input x (B, 3, H, W): the condition,
  the spatial size of the chain's state, and ``to_image(state, final) -> (B, 3, H, W)`` mapping a state (a sample,
  x_t or an x0 estimate) to an unclamped image in [0, 1];
- ``timesteps(options)``: the chain's times for a restore call;
- ``run_chain(sampler, options, ts, cond, draw, callback)``: one sample: the start state and the process's step
  function (:mod:`diffdeblur.diffusion.samplers`, :mod:`~diffdeblur.diffusion.shifting`,
  :mod:`~diffdeblur.diffusion.blur_process`) run by the one chain loop :func:`diffdeblur.diffusion.chain.run_chain`;
- ``samplers``: the sampler names its process accepts (the command line offers them; anything else is a
  one-line ConfigError).

:class:`DiffusionModel` is the Gaussian (alpha_bar) case: the schedule buffer, the network call with its time
scaling, the parameterisation (:func:`diffdeblur.diffusion.process.make_denoiser`) and the DDPM / DDIM / SDE
steps of :mod:`diffdeblur.diffusion.samplers`.

Objectives: ``fn(model, batch, generator) -> (loss, logs)`` with ``batch`` a dict of (B, C, h, w) float tensors
in [0, 1]: ``"input"`` (the degraded image), ``"target"`` (the clean one), optionally ``"mask"`` and
``"partials"``; ``logs`` a dict of floats. Each method file registers its objectives here with
:func:`register_objective`; a preset names its default objective (``spec(..., loss=NAME)``).
"""
from __future__ import annotations

import functools
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import nn

from ..diffusion.noise import NoiseField, new_noise_field, scaled_box
from ..diffusion.process import DenoiseFn, DiffusionTerms, check_objective, diffusion_terms, make_denoiser
from ..diffusion.blur_process import DUAL_SAMPLERS
from ..diffusion.samplers import SAMPLERS, average_samples, run_sampler
from ..diffusion.shifting import SHIFT_SAMPLERS
from ..diffusion.schedules import SPACINGS, alpha_bar_from_betas, make_beta_schedule, make_timesteps
from ..errors import ConfigError
from ..options import SAMPLER_NAMES
from ..typecheck import check_value
from ..models.blocks import pad_to_multiple
from ..models.hparams import HyperParameters
from ..models.protocol import exclude_from_state, restore_options
from ..tensorfile import load_into, read_metadata, read_tensors, shipped_weights
from ..registrar import name_registrar

# every sampler name some process declares (the command line offers these: options.SAMPLER_NAMES, checked by a test)
PROCESS_SAMPLERS = tuple(dict.fromkeys((*SAMPLERS, *SHIFT_SAMPLERS, *DUAL_SAMPLERS)))
assert PROCESS_SAMPLERS == SAMPLER_NAMES, "options.SAMPLER_NAMES must list every process's samplers"
TIME_SCALE = 1000.0  # the network sees t * 1000 / T, so embeddings span the same range for any T
LOSS_TYPES = ("l1", "l2")
Callback = Callable[[dict[str, Any]], None]
ToImage = Callable[[torch.Tensor, bool], torch.Tensor]


@dataclass(frozen=True)
class SamplingOptions:
    """The typed sampling options of a diffusion model's ``restore`` (checked on creation).

    steps: denoiser calls (None = the model's default); sampler: one of the model's ``samplers`` (None =
    the model's default; the model checks the name); eta: DDIM noise (0 = deterministic); num_samples: draws averaged;
    spacing: timestep spacing (:data:`.schedules.SPACINGS`); timesteps: explicit timesteps (win over
    steps and spacing).
    """

    steps: int | None = None
    sampler: str | None = None
    eta: float = 0.0
    num_samples: int = 1
    spacing: str = "trailing"
    timesteps: Sequence[float] | None = None

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(SamplingOptions)
        for f in fields(self):  # restore(x, eta="0.5") is a one-line ConfigError, not a torch traceback
            check_value("sampling options", f.name, getattr(self, f.name), hints[f.name])
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.eta < 0:
            raise ConfigError(f"eta must be >= 0, got {self.eta}")
        if self.spacing not in SPACINGS:
            raise ConfigError(f"unknown timestep spacing '{self.spacing}' (known: {', '.join(SPACINGS)})")
        if self.timesteps is not None:
            object.__setattr__(self, "timesteps", tuple(float(t) for t in self.timesteps))


Batch = dict[str, torch.Tensor]
Logs = dict[str, float]
Objective = Callable[[nn.Module, Batch, "torch.Generator | None"], tuple[torch.Tensor, Logs]]
OBJECTIVES: dict[str, Objective] = {}
_register = name_registrar(OBJECTIVES, "objective")
BATCH_ALIASES = {"blur": "input", "sharp": "target"}  # the deblurring task's own names for input / target


def task_batch(batch: Batch) -> Batch:
    """``batch`` with the task keys "input" / "target" present: a batch spelled with the deblurring names
    "blur" / "sharp" (older data code, user objectives) gets them as aliases of the same tensors (no copy)."""
    out = dict(batch)
    for old, new in BATCH_ALIASES.items():
        if old in out and new not in out:
            out[new] = out[old]
    return out


def register_objective(name: str) -> Callable[[Objective], Objective]:
    """``@register_objective(name)``: store an objective in :data:`OBJECTIVES`; the stored function sees the
    batch with the task keys (:func:`task_batch`), so an objective reads ``batch["input"]`` / ``batch["target"]``."""
    def deco(fn: Objective) -> Objective:
        @functools.wraps(fn)
        def with_task_keys(model: nn.Module, batch: Batch, generator: torch.Generator | None = None,
                           **kwargs: Any) -> tuple[torch.Tensor, Logs]:
            return fn(model, task_batch(batch), generator, **kwargs)
        _register(name)(with_task_keys)
        return fn
    return deco


KINDS = ("regression", "diffusion", "latent-diffusion", "blurdm", "autoencoder")


class SubmodelFactory(Protocol):
    """``make(name, *, kinds=("regression",), **kwargs) -> nn.Module``: build a registered network
    of one of ``kinds``, given by the registry to composite methods (a method never imports the registry);
    ``make.loss(name)``: that preset's default objective name."""

    def __call__(self, name: str, *, kinds: tuple[str, ...] = ("regression",), **kwargs: Any) -> nn.Module: ...

    def loss(self, name: str) -> str: ...


@dataclass(frozen=True)
class ModelSpec:
    """A named preset of a network: ``builder(**defaults)`` builds it.

    ``composite``: the builder also takes ``submodel=`` (a :data:`SubmodelFactory`) to build the
    registered networks it contains by name.
    """

    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    kind: str = "regression"  # one of KINDS
    composite: bool = False
    loss: str = ""  # the default training objective (a name of OBJECTIVES)


def spec(name: str, builder: Callable[..., nn.Module], description: str, *, kind: str = "regression",
         composite: bool = False, loss: str = "", **defaults: Any) -> ModelSpec:
    """Shorthand for :class:`ModelSpec` with the preset keyword arguments as keywords."""
    if kind not in KINDS:
        raise ValueError(f"model '{name}': kind must be one of {KINDS}, got '{kind}'")
    return ModelSpec(name, builder, dict(defaults), description, kind, composite, loss)


def frozen_predictor(owner: nn.Module, attr: str, submodel: SubmodelFactory | None, name: str,
                     kwargs: dict[str, Any] | None, weights: str) -> nn.Module:
    """A frozen regression network built by name for a predict-and-refine method (set it as ``owner.<attr>``).

    ``weights``: the name of shipped weights to load ('' = random, e.g. filled later by ``train.init_from``); the
    predictor is then built as the network those weights were trained as (their embedded kwargs, TLC windows
    included, under ``kwargs``), and left out of ``owner``'s state dicts (it is rebuilt from its own file).
    One-line ConfigErrors for a missing factory, unknown weights, or weights of another network.
    """
    if submodel is None:
        raise ConfigError(f"{type(owner).__name__} builds its predictor by name: build it with diffdeblur.build_model")
    path = shipped_weights(weights) if weights else None
    if weights and path is None:
        raise ConfigError(f"predictor_weights: no shipped weights named '{weights}'")
    kwargs = dict(kwargs or {})
    if path is not None:
        # the predictor is the network those weights were trained as (TLC windows included:
        # a preset's train_size would change its estimate at sizes above the training crops)
        meta = read_metadata(path)
        if meta["model"] != name:
            raise ConfigError(f"predictor_weights: '{weights}' holds a {meta['model']}, not the predictor {name}")
        kwargs = {**meta.get("kwargs", {}), **kwargs}
    predictor = submodel(name, kinds=("regression",), **kwargs)
    predictor.requires_grad_(False)
    if path is not None:
        load_into(predictor, read_tensors(path), str(path))
        setattr(owner, attr, predictor)
        exclude_from_state(owner, attr)
    return predictor


class ChainModel(HyperParameters, nn.Module):
    """Base of every model that restores by sampling a reverse chain (see the module docstring).

    ``noise_channels``: channels of the chain's state; ``noise_scale``: image pixels per pixel of the
    state (1 in pixel space, 8 for latents); ``samplers``: the sampler names this chain accepts.
    Subclasses implement :meth:`sampling_context`, :meth:`run_chain` and :meth:`timesteps`.
    """

    stochastic = True
    fixed_steps = False  # True: the chain always runs its default_steps (not respaced; e.g. BlurDM's T)
    graph_noise = False  # True: the whole chain is one fixed graph whose noise is a plain tensor input (exportable)
    samplers: tuple[str, ...] = tuple(SAMPLERS)  # the process's samplers (the Gaussian ones by default)
    scale = 1  # output pixels per input pixel (super-resolution methods: 2, 4)

    def __init__(self, *, default_steps: int, default_sampler: str, noise_channels: int,
                 noise_scale: int = 1) -> None:
        super().__init__()
        self.default_steps, self.default_sampler = default_steps, self.check_sampler(default_sampler)
        self.noise_channels, self.noise_scale = noise_channels, noise_scale

    def check_sampler(self, name: str) -> str:
        """``name`` if this chain's process accepts it, else a ConfigError listing the ones it does."""
        if name not in PROCESS_SAMPLERS:
            raise ConfigError(f"unknown sampler '{name}' (known: {', '.join(PROCESS_SAMPLERS)})")
        if name not in self.samplers:
            raise ConfigError(f"{type(self).__name__}: sampler '{name}' does not apply to this chain "
                              f"(available: {', '.join(self.samplers)})")
        return name

    def sampling_context(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        raise NotImplementedError

    def run_chain(self, sampler: str, options: SamplingOptions, ts: list[float], cond: torch.Tensor,
                  draw: Callable[[int], torch.Tensor], callback: Callback | None) -> torch.Tensor:
        """One sample of the reverse chain: ``draw(i)`` is the state-shaped noise of step index i
        (0 = the start state); returns the final state (in the space ``to_image`` maps from)."""
        raise NotImplementedError

    def timesteps(self, options: SamplingOptions) -> list[float]:
        """The chain's times for ``options`` (explicit ``options.timesteps`` are used as given)."""
        raise NotImplementedError

    def steps_range(self) -> tuple[int, int | None]:
        """(fewest, most) network calls a restore may take: the T of a discrete chain, None = any number;
        exactly ``default_steps`` for a chain with ``fixed_steps``."""
        if self.fixed_steps:
            return self.default_steps, self.default_steps
        return 1, getattr(self, "num_train_steps", None)

    @restore_options
    @torch.inference_mode()
    def restore(self, blur: torch.Tensor, steps: int | None = None, sampler: str | None = None, eta: float = 0.0,
                num_samples: int = 1, noise: NoiseField | None = None, generator: torch.Generator | None = None,
                callback: Any = None, spacing: str = "trailing",
                timesteps: Sequence[float] | None = None, options: SamplingOptions | None = None) -> torch.Tensor:
        """Deblur (B,3,H,W) in [0,1] -> (B,3,H,W) in [0,1] by sampling the reverse chain.

        steps: number of network calls (default ``default_steps``), timesteps spaced by ``spacing``
        (or give ``timesteps`` explicitly); sampler: one of the chain's ``samplers``; eta: DDIM noise
        (0 = deterministic); num_samples: draws averaged (DvSR's sample averaging); noise: a
        :class:`NoiseField` (tiling passes the slice for this tile) or None to draw one from
        ``generator``; callback: per-step hook, see :mod:`diffdeblur.diffusion.samplers` (adds
        "x0_image", "x_t_image", "sample"). ``options``: a :class:`SamplingOptions` built once by the caller
        (the API and the command line pass one); when given, it replaces the keyword options.
        A model with other options declares its own ``restore``.
        """
        if options is None:
            options = SamplingOptions(steps, sampler, eta, num_samples, spacing, timesteps)
        return self.sample_image(blur, options, noise, generator, callback)

    # -- noise (registry protocol) --
    def noise_like(self, blur: torch.Tensor, generator: torch.Generator | None = None) -> NoiseField:
        """Noise for the full image ``blur`` (B, 3, H, W): a lazily generated :class:`NoiseField`."""
        return new_noise_field(blur.shape[0], generator, channels=self.noise_channels)

    def slice_noise(self, noise: NoiseField, box: tuple[int, int, int, int]) -> NoiseField:
        """The noise of the pixel tile box = (y0, y1, x0, x1), on the diffused state's grid."""
        return noise.crop(scaled_box(box, self.noise_scale))

    # -- sampling --
    def sample_image(self, blur: torch.Tensor, options: SamplingOptions, noise: NoiseField | None = None,
                     generator: torch.Generator | None = None, callback: Callback | None = None,
                     **context: Any) -> torch.Tensor:
        """Deblur (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1] by sampling the reverse process.

        ``noise``: a :class:`NoiseField` (tiling passes the slice for this tile) or None to draw one
        from ``generator``; ``callback``: per-step hook, see :mod:`diffdeblur.diffusion.samplers`
        (adds "x0_image", "x_t_image", "sample"); ``context`` goes to :meth:`sampling_context`.
        ``options.num_samples`` draws are averaged in the diffused space (DvSR's sample averaging).
        """
        sampler = self.check_sampler(options.sampler or self.default_sampler)
        ts, noise = self.sampling_inputs(blur, options, noise, generator)
        x, h, w = pad_to_multiple(blur, self.size_multiple)
        h, w = h * self.scale, w * self.scale  # the output grid
        cond, (sh, sw), to_image = self.sampling_context(x, **context)

        def one_sample(k: int) -> torch.Tensor:
            def hook(info: dict[str, Any]) -> None:
                callback(dict(info, sample=k, x0_image=to_image(info["x0"], True)[..., :h, :w].clamp(0, 1),
                              x_t_image=to_image(info["x_t"], False)[..., :h, :w].clamp(0, 1)))
            return self.run_chain(sampler, options, ts, cond, lambda i: noise.sample(k, i, sh, sw, dtype=cond.dtype),
                                  hook if callback is not None else None)

        state = average_samples(one_sample, options.num_samples).to(cond.dtype)
        return to_image(state, True)[..., :h, :w].clamp(0, 1)

    def sampling_inputs(self, blur: torch.Tensor, options: SamplingOptions, noise: NoiseField | None,
                        generator: torch.Generator | None) -> tuple[list[float], NoiseField]:
        """The timesteps (:meth:`timesteps`) and the noise field of one restore call.

        ``noise`` (a tile's slice) wins over a fresh field from ``generator``. ConfigError when the
        field's batch differs from ``blur``'s. The field is moved to ``blur``'s device.
        """
        ts = list(options.timesteps) if options.timesteps is not None else self.timesteps(options)
        if noise is None:
            noise = self.noise_like(blur, generator)
        if len(noise.seeds) != blur.shape[0]:
            raise ConfigError(f"noise field has {len(noise.seeds)} images, input batch has {blur.shape[0]}")
        return ts, noise.to(blur.device)


class DiffusionModel(ChainModel):
    """Base of the registered Gaussian diffusion models (see the module docstring).

    ``clip``: |x0| bound of the estimates while sampling (None = no clamp).
    """

    unet: nn.Module

    def __init__(self, *, num_train_steps: int, schedule: str, objective: str, loss_type: str,
                 default_steps: int, default_sampler: str, noise_channels: int, noise_scale: int = 1,
                 beta_start: float | None = None, beta_end: float | None = None) -> None:
        super().__init__(default_steps=default_steps, default_sampler=default_sampler,
                         noise_channels=noise_channels, noise_scale=noise_scale)
        check_objective(objective)
        if loss_type not in LOSS_TYPES:
            raise ConfigError(f"unknown loss_type '{loss_type}' (known: {', '.join(LOSS_TYPES)})")
        self.objective, self.loss_type = objective, loss_type
        self.num_train_steps = num_train_steps
        self.clip: float | None = None
        betas = make_beta_schedule(schedule, num_train_steps, beta_start=beta_start, beta_end=beta_end)
        self.register_buffer("alpha_bar", alpha_bar_from_betas(betas), persistent=False)  # (T,)

    # -- the network and its parameterisation --
    def net(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Raw UNet output (eps | x0 | v | x0-precond) for timestep indices t (B,) float in [0, T-1]."""
        return self.unet(x_t, t.float() * (TIME_SCALE / self.num_train_steps), cond)

    forward = net

    def denoiser(self) -> DenoiseFn:
        """The samplers' ``denoise_fn(x_t, t, cond) -> Prediction`` for this model."""
        return make_denoiser(self.net, self.alpha_bar, self.objective, self.clip)

    # -- hooks of the subclasses --
    def diffusion_inputs(self, blur: torch.Tensor, sharp: torch.Tensor) -> tuple:
        """Training: ``(x0, cond, aux_loss | None)``: the clean sample to diffuse (diffusion range), the
        condition the network sees, and an optional extra loss term (e.g. a predictor's auxiliary L1)."""
        raise NotImplementedError

    # -- the training loss: where the parameterisation meets its loss --
    def loss_terms(self, batch: Batch, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, Logs, DiffusionTerms, torch.Tensor | None]:
        """(loss, logs, terms, cond) of one batch: :func:`~diffdeblur.diffusion.process.diffusion_terms` on
        :meth:`diffusion_inputs` (t and eps drawn from ``generator``) plus the auxiliary term, if any."""
        x0, cond, aux = self.diffusion_inputs(batch["input"], batch["target"])
        terms = diffusion_terms(self.net, x0, cond, self.alpha_bar, objective=self.objective,
                                loss_type=self.loss_type, generator=generator)
        loss, logs = terms.loss, {"diffusion": float(terms.loss.detach())}
        if aux is not None:
            loss = loss + aux
            logs["aux"] = float(aux.detach())
        return loss, logs, terms, cond

    def run_chain(self, sampler: str, options: SamplingOptions, ts: list[float], cond: torch.Tensor,
                  draw: Callable[[int], torch.Tensor], callback: Callback | None) -> torch.Tensor:
        """One sample: ``sampler`` of :data:`~diffdeblur.diffusion.samplers.SAMPLERS` from x_T = draw(0)."""
        return run_sampler(sampler, self.denoiser(), draw(0), ts, alpha_bar=self.alpha_bar, cond=cond,
                           eta=options.eta, noise=draw, callback=callback)

    def timesteps(self, options: SamplingOptions) -> list[float]:
        """``options.steps`` (default ``default_steps``) timesteps of the T-step schedule, spaced by
        ``options.spacing`` (:func:`~diffdeblur.diffusion.schedules.make_timesteps`)."""
        steps = int(options.steps or self.default_steps)
        return make_timesteps(self.num_train_steps, steps, options.spacing).tolist()
