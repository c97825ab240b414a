"""BlurDM (He et al., NeurIPS 2025, arXiv 2512.03979): a latent blur-diffusion prior fused into a
deblurring backbone. Reference code: Jin-Ting-He/BlurDM (``LatentBlurDM.py``, ``MIMOUNetBlurDM.py``,
``train_stage{1,2,3}.py``), read at suxh19/BlurDM @ a198412; design notes in docs/methods/blurdm.md.

Pieces (docs/methods/blurdm.md sections 5-7):
- sharp encoder SE (:class:`LatentEncoder` with BN) maps (blur, sharp) to Z^S (B, prior_dim);
- :class:`LatentBlurDM`: blur encoder BE (no BN) maps the blurred image to Z^B, the chain starts
  at z_T = Z^B + beta_bar_T n (one noise vector per image) and runs T deterministic dual
  denoising-and-deblurring steps with a blur-residual and a noise-residual MLP; z_0 is the prior;
- a registered backbone (NAFNet, MIMO-UNet, FFTformer, Stripformer or LoFormer, built with ``prior_dim``) fuses
  the prior before every decoder level (Stripformer: before every strip-attention block) (``PriorFusion``: x * (1 + k) + v; a zero prior is the identity).

Training runs in three stages, chosen by the ``stage`` keyword (it decides which parts exist, which are
trainable, and the training objective: ``blurdm`` runs the stage's loss, defined below):
1. backbone + SE from scratch, prior = SE(blur, sharp), the backbone's own image loss;
2. SE and backbone frozen (eval mode, requires_grad False), BE + both estimators trained so that
   the full reverse chain ends at Z^S (Charbonnier in latent space);
3. SE discarded, prior = BlurDM(blur), backbone + BlurDM fine-tuned with the image loss.
Stage transitions load the previous stage's file non-strictly (config ``train.init_from``).

Backbones: any registered regression model whose constructor takes ``prior_dim`` and whose forward is
``forward(x, prior)``; the presets and the three stage configs of each are generated from one table,
:data:`FUSED_BACKBONES` (:func:`stage_config`). Images are (B, 3, H, W) float in [0, 1].
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

import torch
from torch import nn

from ..diffusion import blur_process as bp
from ..errors import ConfigError
from ..losses import charbonnier, mimo_loss
from ..models.blocks import pad_to_multiple
from ..models.blurdm_encoder import UNSHUFFLE, LatentEncoder, ResidualEstimator, center_image
from ..models.protocol import restore_options
from .base import Batch, ChainModel, SamplingOptions, SubmodelFactory, register_objective, spec
from .regression import PIXEL_DISTANCES, TRANSFORMERS

STAGES = (1, 2, 3)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, then moved to ``like``'s device/dtype."""
    dev = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=dev).to(device=like.device, dtype=like.dtype)


class LatentBlurDM(nn.Module):
    """Blur encoder + two residual estimators + the reverse chain (``LatentExposureDiffusion``).

    forward(blur (B, 3, H, W) in [0, 1], noise (B, D) | None, generator) -> z_0 (B, D); ``z_b`` (B, D) given
    (the blur code computed elsewhere, e.g. block by block on a large image), the encoder is not run.
    """

    def __init__(self, prior_dim: int = 256, timesteps: int = bp.DEFAULT_TIMESTEPS, encoder_width: int = 64,
                 encoder_mid_width: int = 128, encoder_blocks: int = 6, estimator_hidden: int = 256,
                 estimator_layers: int = 6, parameterization: str = "code") -> None:
        super().__init__()
        self.prior_dim = prior_dim
        self.schedule = bp.make_schedule(timesteps, parameterization=parameterization)
        self.condition_encoder = LatentEncoder(prior_dim, encoder_width, encoder_mid_width, encoder_blocks,
                                               batch_norm=False)
        self.blur_residual = ResidualEstimator(prior_dim, prior_dim, estimator_hidden, estimator_layers)
        self.noise_residual = ResidualEstimator(prior_dim, prior_dim, estimator_hidden, estimator_layers)

    def encode(self, blur: torch.Tensor) -> torch.Tensor:
        """Z^B = BE(blur, blur): (B, 3, H, W) -> (B, D)."""
        return self.condition_encoder(blur, blur)

    def estimator(self, z_b: torch.Tensor) -> bp.Estimator:
        """The (e_hat_t, eps_hat_t) estimate function of the chain, conditioned on Z^B."""
        T = self.schedule.timesteps

        def estimate(z_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            t_frac = z_t.new_full((z_t.shape[0], 1), t / T)  # time input: t / T, no embedding
            return self.blur_residual(z_t, z_b, t_frac), self.noise_residual(z_t, z_b, t_frac)

        return estimate

    def forward(self, blur: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None, callback: bp.StepCallback | None = None,
                return_states: bool = False, z_b: torch.Tensor | None = None):
        z_b = self.encode(blur) if z_b is None else z_b
        if noise is None:
            noise = _randn(tuple(z_b.shape), generator, z_b)
        noise = noise.to(z_b).expand_as(z_b)
        z_T = bp.start_state(z_b, self.schedule, noise)
        out = bp.sample_chain(self.estimator(z_b), z_T, self.schedule, callback=callback,
                              return_states=return_states)
        if return_states:
            z0, states = out
            states["z_b"] = z_b
            return z0, states
        return out


class BlurDMNet(ChainModel):
    """A deblurring backbone conditioned on BlurDM's latent prior (registry kind "blurdm").

    Parts by ``stage``: 1 = backbone + ``sharp_encoder``; 2 = backbone + ``sharp_encoder`` (both
    frozen) + ``blurdm``; 3 = backbone + ``blurdm``. ``forward(blur, prior=None)`` uses
    the stage's inference prior when none is given (stage 1: the neutral zero prior, since the
    sharp image is unknown at inference; stages 2-3: a BlurDM sample). ``submodel``: the registry's
    factory that builds the named regression ``backbone`` (given by :func:`diffdeblur.build_model`).

    The chain protocol of :class:`~.base.ChainModel`: ``samplers`` = ("dual",) (the deterministic dual
    denoising-and-deblurring step, :func:`diffdeblur.diffusion.blur_process.dual_step_fn`), ``default_steps`` = T
    (the chain is not respaced), noise = one start vector per image (``noise_like`` (B, prior_dim), the same for
    every tile).

    Tiled inference: the prior is a whole-image condition (:func:`diffdeblur.models.protocol.whole_image_inputs`):
    :meth:`whole_image_inputs` computes it once from the whole image (:meth:`inference_prior`) and every tile's
    ``restore`` gets it as ``prior=``, so tiles fuse the same vector as the whole image and tiled output differs
    from whole only by the backbone's own tiling error.
    """

    samplers = bp.DUAL_SAMPLERS
    fixed_steps = True  # the chain is not respaced: exactly T steps
    graph_noise = True  # T fixed deterministic steps from one start vector per image: exports as one graph
    # input pixels a side above which the blur encoder runs block by block (see blur_code): its activations
    # at 1/4 of the image's size (256 channels at the published sizes) stay bounded on a large image
    encoder_block = 1024
    # train.init_from with plain backbone weights (e.g. the shipped default for blurdm-nafnet-small) fills the
    # backbone; its fusions start at zero (PriorFusion), so the fused model starts as the plain one
    init_prefixes = ("backbone.",)

    def __init__(self, backbone: str = "nafnet-small", backbone_kwargs: dict[str, Any] | None = None,
                 prior_dim: int = 256, timesteps: int = bp.DEFAULT_TIMESTEPS, encoder_width: int = 64,
                 encoder_mid_width: int = 128, encoder_blocks: int = 6, estimator_hidden: int = 256,
                 estimator_layers: int = 6, stage: int = 3, parameterization: str = "code",
                 partials_weight: float = 0.0, submodel: SubmodelFactory | None = None) -> None:
        super().__init__(default_steps=timesteps, default_sampler="dual", noise_channels=prior_dim)
        if stage not in STAGES:
            raise ConfigError(f"stage must be 1, 2 or 3, got {stage}")
        if prior_dim <= 0:
            raise ConfigError(f"prior_dim must be > 0, got {prior_dim}")
        if submodel is None:
            raise ConfigError("BlurDMNet builds its backbone by name: build it with diffdeblur.build_model")
        self.backbone = submodel(backbone, kinds=("regression",), **dict(backbone_kwargs or {}), prior_dim=prior_dim)
        if getattr(self.backbone, "prior_dim", 0) != prior_dim:
            raise ConfigError(f"backbone '{backbone}' does not support prior fusion (prior_dim)")
        self.stage = stage
        self.prior_dim = prior_dim
        self.partials_weight = float(partials_weight)
        enc = dict(width=encoder_width, mid_width=encoder_mid_width, num_blocks=encoder_blocks)
        self.sharp_encoder = LatentEncoder(prior_dim, batch_norm=True, **enc) if stage in (1, 2) else None
        self.blurdm = LatentBlurDM(prior_dim, timesteps, encoder_width, encoder_mid_width, encoder_blocks,
                                   estimator_hidden, estimator_layers, parameterization) if stage in (2, 3) else None
        self.size_multiple = math.lcm(int(self.backbone.size_multiple), UNSHUFFLE)
        self.backbone_loss = submodel.loss(backbone)  # the backbone's own objective: the image loss of stages 1, 3
        self.stochastic = self.blurdm is not None  # the prior holds one noise vector per image
        for module in self.frozen_modules():
            module.requires_grad_(False)

    # ----- stage bookkeeping -------------------------------------------------------------------
    def frozen_modules(self) -> list[nn.Module]:
        """Parts that this stage keeps fixed (stage 2: the backbone and the sharp encoder)."""
        return [self.backbone, self.sharp_encoder] if self.stage == 2 else []

    def train(self, mode: bool = True) -> "BlurDMNet":
        """Like nn.Module.train, but frozen parts always stay in eval mode (BN statistics fixed)."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    # ----- priors ----------------------------------------------------------------------------------
    def sharp_prior(self, blur: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
        """Z^S = SE(blur, sharp) (B, D): the training-time prior of stages 1-2."""
        if self.sharp_encoder is None:
            raise ValueError(f"a stage-{self.stage} BlurDM model has no sharp encoder (stages 1 and 2 only)")
        return self.sharp_encoder(blur, sharp)

    def diffusion_prior(self, blur: torch.Tensor, noise: torch.Tensor | None = None,
                        generator: torch.Generator | None = None, callback: bp.StepCallback | None = None,
                        return_states: bool = False):
        """z_0 = BlurDM(blur) (B, D); ``noise`` (B or 1, D) is the start noise n of z_T = Z^B + beta_bar_T n."""
        if self.blurdm is None:
            raise ValueError("a stage-1 BlurDM model has no diffusion prior yet (train stage 2)")
        return self.blurdm(blur, noise, generator, callback, return_states)

    def inference_prior(self, blur: torch.Tensor, noise: torch.Tensor | None = None,
                        generator: torch.Generator | None = None,
                        callback: bp.StepCallback | None = None) -> torch.Tensor:
        """The prior used without a sharp image: zeros in stage 1 (neutral), else BlurDM(blur), on the model's device.

        The one rule of every inference path (``forward``, ``restore``, :meth:`whole_image_inputs`): up to
        :attr:`encoder_block` pixels a side (and whenever traced, as by an ONNX export) it is
        :meth:`diffusion_prior` itself; above, Z^B comes from :meth:`blur_code` (the same values, block by block)
        and then the same chain. ``blur`` may be on the CPU (the whole image of a tiled run)."""
        device = self.weights_device()
        if self.blurdm is None:
            return torch.zeros(blur.shape[0], self.prior_dim, device=device, dtype=blur.dtype)
        if torch.compiler.is_compiling() or max(blur.shape[-2:]) <= self.encoder_block:
            return self.diffusion_prior(blur.to(device), noise, generator, callback)
        return self.blurdm(blur, noise, generator, callback, z_b=self.blur_code(blur))

    def blur_code(self, blur: torch.Tensor) -> torch.Tensor:
        """Z^B = BE(blur, blur) (B, D) of an image of any size, on the model's device, in bounded memory.

        BE is stride-1 'same' convolutions at 1/4 of the image's size, then a global mean and an MLP, so the mean
        is summed over blocks of :attr:`encoder_block` pixels a side, each run with a margin of BE's receptive
        reach (its convolutions' padding, in 1/4-size cells) that is cut off again: every kept cell sees what it
        sees in the whole image, and the result equals ``self.blurdm.encode(blur)`` up to float rounding
        (the image is padded to a multiple of 4 as BE pads it, before it is cut).
        """
        enc = self.blurdm.condition_encoder
        pool = enc.tail[-1]
        if not isinstance(pool, nn.AdaptiveAvgPool2d):
            raise TypeError("blur_code expects the blur encoder to end in a global average pool")
        convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
        reach = sum(int(m.padding[0]) for m in convs)  # 'same' 3x3 convs: one cell each
        device = self.weights_device()
        x, _, _ = pad_to_multiple(center_image(blur), UNSHUFFLE)
        hq, wq = x.shape[-2] // UNSHUFFLE, x.shape[-1] // UNSHUFFLE
        cells = max(1, self.encoder_block // UNSHUFFLE)
        total = torch.zeros(x.shape[0], convs[-1].out_channels, device=device)
        for y0 in range(0, hq, cells):
            for x0 in range(0, wq, cells):
                y1, x1 = min(y0 + cells, hq), min(x0 + cells, wq)
                gy0, gy1, gx0, gx1 = max(0, y0 - reach), min(hq, y1 + reach), max(0, x0 - reach), min(wq, x1 + reach)
                crop = enc.unshuffle(x[:, :, UNSHUFFLE * gy0:UNSHUFFLE * gy1, UNSHUFFLE * gx0:UNSHUFFLE * gx1].to(device))
                feat = enc.tail[:-1](enc.blocks(enc.head(torch.cat([crop, crop], dim=1))))
                total += feat[:, :, y0 - gy0:y1 - gy0, x0 - gx0:x1 - gx0].float().sum(dim=(2, 3))
                del crop, feat
        return enc.mlp((total / (hq * wq)).to(x.dtype))

    def weights_device(self) -> torch.device:
        """The device the network's weights are on (the CPU for a parameterless one)."""
        return next(self.parameters(), torch.empty(0)).device

    def whole_image_inputs(self, blur: torch.Tensor, noise: torch.Tensor | None = None,
                           generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The whole-image condition of :meth:`restore` (:func:`diffdeblur.models.protocol.whole_image_inputs`):
        ``{"prior": inference_prior(blur, noise, generator)}`` (B, prior_dim), computed once from the whole
        image and passed to every tile as ``prior=``; ``restore(blur, noise=noise)`` computes the same itself."""
        with torch.inference_mode():
            return {"prior": self.inference_prior(blur, noise, generator)}

    # ----- networks -------------------------------------------------------------------------------
    def forward(self, blur: torch.Tensor, prior: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] (+ prior (B, D)) -> restored (B, 3, H, W), unclamped."""
        if prior is None:
            prior = self.inference_prior(blur, noise, generator)
        return self.backbone(blur, prior)

    @property
    def forward_multiscale(self) -> Callable[..., list[torch.Tensor]]:
        """The backbone's multi-scale forward (MIMO-UNet only): (blur, prior) -> [1/4, 1/2, 1] outputs."""
        if not hasattr(self.backbone, "forward_multiscale"):
            raise AttributeError(f"backbone {type(self.backbone).__name__} has no forward_multiscale")
        return self._forward_multiscale

    def _forward_multiscale(self, blur: torch.Tensor, prior: torch.Tensor | None = None,
                            noise: torch.Tensor | None = None,
                            generator: torch.Generator | None = None) -> list[torch.Tensor]:
        if prior is None:
            prior = self.inference_prior(blur, noise, generator)
        return self.backbone.forward_multiscale(blur, prior)

    # ----- registry protocol ----------------------------------------------------------------------
    def noise_like(self, blur: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Start noise for a whole image batch: (B, prior_dim), one vector per image (CPU)."""
        return torch.randn(blur.shape[0], self.prior_dim, generator=generator)

    def slice_noise(self, noise: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        """Every tile uses the image's one noise vector (the prior is not spatial)."""
        return noise

    @restore_options
    @torch.inference_mode()
    def restore(self, blur: torch.Tensor, steps: int | None = None, sampler: str | None = None,
                noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                callback: bp.StepCallback | None = None, options: SamplingOptions | None = None,
                prior: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> restored (B, 3, H, W) in [0, 1].

        steps / sampler / options: the chain's (T steps of the "dual" sampler; anything else is a ConfigError).
        noise: (B or 1, prior_dim) start noise (drawn from ``generator`` when None).
        prior: (B or 1, prior_dim), the prior to fuse; given, the chain is not run (``noise``, ``generator`` and
        ``callback`` are unused). Tiled inference passes every tile the whole image's
        (:meth:`whole_image_inputs`); None computes it from ``blur`` by the same rule (:meth:`inference_prior`).
        callback: called once per reverse step with the chain's dict (the samplers' protocol, see
        :func:`diffdeblur.diffusion.blur_process.sample_chain`: ``i``, ``t``, latent ``x_t``/``x0``/
        ``x_next`` (B, prior_dim)) plus images decoded by the backbone, (B, 3, H, W) in [0, 1]:
        ``x_t_image`` (restored with prior z_t) and ``x0_image`` (with prior z_{t-1}; at the last
        step the final output), so ``diffdeblur trace`` shows how the prior sharpens step by step.
        Stage-1 models (no diffusion yet) use the zero prior and never call back.
        """
        options = options or SamplingOptions(steps, sampler)
        self.check_sampler(options.sampler or self.default_sampler)
        if options.steps not in (None, self.default_steps) or options.timesteps is not None:
            raise ConfigError(f"BlurDM runs its chain's {self.default_steps} steps (steps={options.steps} given)")
        if prior is not None:
            if prior.ndim != 2 or prior.shape[1] != self.prior_dim or prior.shape[0] not in (1, blur.shape[0]):
                raise ConfigError(f"prior must be ({blur.shape[0]} or 1, {self.prior_dim}), got {tuple(prior.shape)}")
            return self.backbone(blur, prior.to(blur.device)).clamp(0, 1)
        if callback is None or self.blurdm is None:
            prior = self.inference_prior(blur, noise, generator)
            return self.backbone(blur, prior).clamp(0, 1)
        last: dict[str, torch.Tensor | None] = {"z": None, "image": None}

        def decode(z: torch.Tensor) -> torch.Tensor:  # step i's x0 is step i+1's x_t: decode once
            if last["z"] is not z:
                last["z"], last["image"] = z, self.backbone(blur, z).clamp(0, 1)
            return last["image"]

        def on_step(info: dict[str, Any]) -> None:
            x_t_image = decode(info["x_t"])
            callback({**info, "x_t_image": x_t_image, "x0_image": decode(info["x0"]), "sample": 0})

        prior = self.diffusion_prior(blur, noise, generator, on_step)
        return decode(prior)


# ---- the losses of the three stages (docs/methods/blurdm.md section 7) -----------------------------

def _blurdm(model: nn.Module) -> nn.Module:
    """The BlurDMNet behind an optional DDP / compile wrapper."""
    inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None) or model
    if not hasattr(inner, "blurdm") or not hasattr(inner, "sharp_encoder"):
        raise ConfigError(f"the blurdm-stage* objectives need a BlurDM model, got {type(inner).__name__}")
    return inner


def image_loss(model: nn.Module, blur: torch.Tensor, sharp: torch.Tensor,
               prior: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
    """The backbone's own image loss (its preset's objective, ``model.backbone_loss``) for restoring ``blur``
    with ``prior`` (None = no prior): MIMO-UNet's multi-scale loss with the Charbonnier content term of BlurDM's
    stage scripts; a single-output backbone's own pixel loss (:data:`~diffdeblur.methods.regression.PIXEL_DISTANCES`:
    NAFNet's PSNR loss, FFTformer's L1 + FFT, ...), Charbonnier for any other.

    blur, sharp: (B, 3, h, w) in [0, 1] (h, w multiples of 4 for MIMO-UNet); prior (B, D).
    """
    backbone = model.backbone
    if model.backbone_loss == "mimo":
        return mimo_loss(backbone.forward_multiscale(blur, prior), sharp, pixel=charbonnier)
    return PIXEL_DISTANCES.get(model.backbone_loss, charbonnier)(backbone(blur, prior), sharp), {}


def partial_exposure_images(partials: torch.Tensor, timesteps: int) -> dict[int, torch.Tensor]:
    """{k: P_k} for 0 < k < T from cumulative partial exposures (B, K, 3, h, w).

    Assumes ``partials[:, j]`` averages the first (j + 1) / K of the exposure (so the last one is
    the blurred image); P_k is the one nearest to the fraction k / T. The batch does not carry the
    sub-frame counts, so ask for evenly spaced ones, ideally K = T: the ``frames`` source (real 240 fps frames)
    with ``partials: T`` grows the exposure around its sharp middle frame to exactly 1/T, 2/T, ..., 1 of its frames;
    the ``synth`` source with ``subframes: 10``, T = 5 and ``partials: [2, 4, 6, 8, 10]`` gives the first k/T of
    its exposure. Uneven lists (e.g. [1, 3, 6, 11]) are matched by position only, approximately.
    """
    if partials.ndim != 5:
        raise ValueError(f"batch['partials'] must be (B, K, 3, h, w), got {tuple(partials.shape)}")
    K = partials.shape[1]
    return {k: partials[:, min(K - 1, max(0, round(k * K / timesteps) - 1))] for k in range(1, timesteps)}


def partials_residual_loss(model: nn.Module, blur: torch.Tensor, partials: torch.Tensor,
                           z_sharp: torch.Tensor, states: dict) -> torch.Tensor:
    """Mean over t of Charbonnier(e_hat_t, alpha_t z*_t - alpha_{t-1} z*_{t-1}) (see the module docstring)."""
    sched = model.blurdm.schedule
    T = sched.timesteps
    targets = {0: z_sharp.detach(), T: states["z_b"].detach()}
    with torch.no_grad():
        for k, p_k in partial_exposure_images(partials, T).items():
            targets[k] = model.sharp_prior(blur, p_k)
    terms = []
    for idx, t in enumerate(range(T, 0, -1)):  # states["e_hat"][idx] is e_hat at step t
        e_star = sched.alpha(t) * targets[t] - sched.alpha(t - 1) * targets[t - 1]
        terms.append(charbonnier(states["e_hat"][idx], e_star))
    return torch.stack(terms).mean()


@register_objective("blurdm-stage1")
def stage1(model: nn.Module, batch: Batch, generator: torch.Generator | None = None):
    """Backbone + sharp encoder: image loss with prior Z^S = SE(blur, sharp)."""
    m = _blurdm(model)
    prior = m.sharp_prior(batch["input"], batch["target"])
    loss, logs = image_loss(m, batch["input"], batch["target"], prior)
    return loss, {**logs, "prior_norm": float(prior.detach().norm(dim=1).mean())}


@register_objective("blurdm-stage2")
def stage2(model: nn.Module, batch: Batch, generator: torch.Generator | None = None,
           partials_weight: float | None = None):
    """BlurDM alone: Charbonnier(z_0, Z^S) after the full reverse chain; SE frozen (no gradient)."""
    m = _blurdm(model)
    blur = batch["input"]
    with torch.no_grad():
        z_sharp = m.sharp_prior(blur, batch["target"])
    z0, states = m.diffusion_prior(blur, generator=generator, return_states=True)
    loss = charbonnier(z0, z_sharp)
    logs = {"latent": float(loss.detach())}
    weight = m.partials_weight if partials_weight is None else float(partials_weight)
    if weight > 0 and "partials" in batch:
        extra = partials_residual_loss(m, blur, batch["partials"], z_sharp, states)
        loss = loss + weight * extra
        logs["partials"] = float(extra.detach())
    return loss, logs


@register_objective("blurdm-stage3")
def stage3(model: nn.Module, batch: Batch, generator: torch.Generator | None = None):
    """Backbone + BlurDM jointly: image loss with prior z_0 = BlurDM(blur) (fresh start noise)."""
    m = _blurdm(model)
    prior = m.diffusion_prior(batch["input"], generator=generator)
    return image_loss(m, batch["input"], batch["target"], prior)


@register_objective("blurdm")
def blurdm(model: nn.Module, batch: Batch, generator: torch.Generator | None = None):
    """The objective of the model's ``stage`` (:func:`stage1`, :func:`stage2` or :func:`stage3`)."""
    return STAGE_OBJECTIVES[_blurdm(model).stage](model, batch, generator)


STAGE_OBJECTIVES = {1: stage1, 2: stage2, 3: stage3}


# ---- presets ---------------------------------------------------------------------------------------

# Published encoder/estimator sizes are the defaults; tiny ones for tests and CPU studies.
TINY_PRIOR = dict(prior_dim=32, encoder_width=8, encoder_mid_width=16, encoder_blocks=1,
                  estimator_hidden=32, estimator_layers=3)

# Every backbone the prior is fused into (a registered regression preset taking prior_dim) and the recipe its stage
# configs follow (:data:`STAGE_RECIPES`): one table for the presets ``blurdm-<backbone>`` and the configs
# ``blurdm-<backbone>-stage<1|2|3>``.
FUSED_BACKBONES: dict[str, str] = {
    "mimo-unet": "paper", "mimo-unet-plus": "paper", "fftformer": "paper", "stripformer": "paper", "loformer": "paper",
    "nafnet-small": "cpu", "fftformer-small": "cpu", "stripformer-small": "cpu", "loformer-small": "cpu",
    "nafnet-tiny": "tiny", "mimo-unet-tiny": "tiny", "fftformer-tiny": "tiny", "stripformer-tiny": "tiny",
    "loformer-tiny": "tiny",
}

PRESETS = tuple(
    spec(f"blurdm-{backbone}", BlurDMNet, kind="blurdm", composite=True, loss="blurdm", backbone=backbone,
         **(TINY_PRIOR if recipe == "tiny" else {}),
         description=(f"Tiny BlurDM (32-d prior) + {backbone} for tests and quick experiments" if recipe == "tiny"
                      else f"BlurDM prior (T=5, 256-d) fused into {backbone}"))
    for backbone, recipe in FUSED_BACKBONES.items())


# ---- stage configs ----------------------------------------------------------------------------------

# The training recipe of each stage, by family. "paper": BlurDM's train_stage{1,2,3}.py (random 256 crops, global
# batch 20, Adam 1e-4 cosine to 1e-6, ~3.2e5 iterations per stage = 3000 epochs of GoPro's 2103 pairs, seed 2023);
# "cpu": NAFNet's recipe scaled down (AdamW 1e-3, wd 1e-3, betas (0.9, 0.9), cosine to 1e-7; stage 2 BlurDM's Adam
# 1e-4 -> 1e-6, stage 3 at half the learning rate); "tiny": smoke tests of the pipeline on a CPU.
_CPU_OPT = dict(optimizer="adamw", lr=1.0e-3, min_lr=1.0e-7, weight_decay=1.0e-3, betas=[0.9, 0.9], warmup_steps=200,
                ema=0.999)
_PAPER_OPT = dict(optimizer="adam", lr=1.0e-4, min_lr=1.0e-6, weight_decay=0.0, betas=[0.9, 0.999])
STAGE_RECIPES: dict[str, dict[str, Any]] = {
    "paper": dict(data=dict(train_root="data/GoPro/train", val="data/GoPro/test", val_max_images=50, crop=256,
                            batch_size=20, num_workers=4),
                  steps=(320000, 320000, 320000), stage_opt=(_PAPER_OPT, _PAPER_OPT, _PAPER_OPT),
                  every=dict(val_every=10000, save_every=2000), seed=2023),
    "cpu": dict(data=dict(train_root="data/train", val="data/val", val_max_images=10, crop=128, batch_size=8),
                steps=(20000, 10000, 20000),
                stage_opt=(_CPU_OPT, dict(_PAPER_OPT, ema=0.999), dict(_CPU_OPT, lr=5.0e-4)),
                every=dict(val_every=1000, save_every=500), seed=0),
    "tiny": dict(data=dict(train_root="data/train", val="data/val", val_max_images=4, crop=64, batch_size=4),
                 steps=(200, 100, 200),
                 stage_opt=(dict(lr=1.0e-3), dict(optimizer="adam", lr=1.0e-3, weight_decay=0.0), dict(lr=5.0e-4)),
                 every=dict(val_every=100, save_every=100), seed=0),
}
STAGE_CONFIG = re.compile(r"^blurdm-(?P<backbone>.+)-stage(?P<stage>[123])$")


# backbones whose plain training config is generated too (the baseline arm of a study: the stage-1 recipe without
# the prior); NAFNet and MIMO-UNet have their own files in diffdeblur/configs
GENERATED_BASELINES = tuple(b for b in FUSED_BACKBONES if b.split("-")[0] in {t[0] for t in TRANSFORMERS})


def generated_config_names() -> list[str]:
    """The generated configs: ``blurdm-<backbone>-stage<1|2|3>`` and the plain :data:`GENERATED_BASELINES`, sorted."""
    return sorted([f"blurdm-{b}-stage{s}" for b in FUSED_BACKBONES for s in (1, 2, 3)] + list(GENERATED_BASELINES))


def generated_config(name: str) -> dict[str, Any] | None:
    """The raw config of a generated name (:func:`stage_config` or a plain baseline backbone), else None."""
    if name in GENERATED_BASELINES:
        cfg = stage_config(f"blurdm-{name}-stage1")
        recipe = STAGE_RECIPES[FUSED_BACKBONES[name]]
        cfg["model"] = {"type": name}
        cfg["data"]["val"] = recipe["data"]["val"]  # no prior to hide: validate as any regression run
        cfg["train"]["out_dir"] = f"runs/{name}"
        return cfg
    return stage_config(name)


def stage_config(name: str) -> dict[str, Any] | None:
    """The raw config (as a YAML file would hold it) of ``blurdm-<backbone>-stage<N>``, or None for another name.

    Stage 1 has no validation (without the sharp image a stage-1 model only has the neutral zero prior, so its score
    would not measure what stage 3 starts from); stages 2 and 3 start from the previous stage's ``final.safetensors``
    (``train.init_from``). NAFNet backbones get TLC windows of their training crops (``train_size``). Point the data
    at your folders with overrides, e.g. ``diffdeblur train blurdm-fftformer-small-stage1
    data.train.0.root=/data/GoPro/train data.val=/data/GoPro/test``.
    """
    m = STAGE_CONFIG.match(name)
    if m is None or m["backbone"] not in FUSED_BACKBONES:
        return None
    backbone, stage = m["backbone"], int(m["stage"])
    recipe = STAGE_RECIPES[FUSED_BACKBONES[backbone]]
    d = recipe["data"]
    model: dict[str, Any] = {"type": f"blurdm-{backbone}", "stage": stage}
    if backbone.startswith("nafnet"):
        model["backbone_kwargs"] = {"train_size": d["crop"]}
    data = {"train": [{"type": "paired", "root": d["train_root"], "weight": 1.0}],
            "val": "" if stage == 1 else d["val"],
            **{k: v for k, v in d.items() if k not in ("train_root", "val")}}
    train = {"steps": recipe["steps"][stage - 1], **recipe["stage_opt"][stage - 1],
             **({"init_from": f"runs/blurdm-{backbone}-stage{stage - 1}/final.safetensors"} if stage > 1 else {}),
             **recipe["every"], "out_dir": f"runs/blurdm-{backbone}-stage{stage}"}
    return {"model": model, "data": data, "train": train, "seed": recipe["seed"]}
