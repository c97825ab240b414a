"""BlurDM: the dual noise-and-blur process, the latent prior, its fusion and the three training stages."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import active_fusions

from diffdeblur.checkpoint import load_model_file, save_model
from diffdeblur.config import load_config
from diffdeblur.diffusion import blur_process as bp
from diffdeblur.errors import ConfigError
from diffdeblur.inference import restore_tensor
from diffdeblur.objectives import default_objective, default_objective_name, get_objective
from diffdeblur.methods.blurdm import FUSED_BACKBONES, partial_exposure_images
from diffdeblur.models.protocol import tile_context
from diffdeblur.tiling import count_tiles
from diffdeblur.registry import build_model, get_entry

torch.set_num_threads(1)
SLOT = 0.2  # the default exposure grid alpha = 1, 1.2, ..., 2 in slots of 0.2


def scene(generator: torch.Generator, shape=(2, 3, 8, 8), T: int = 5) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A piecewise-constant scene H over [0, alpha_T] in slots of 0.2 and the exposure averages B_0..B_T."""
    n0 = round(1.0 / SLOT)  # slots in the sharp exposure [0, alpha_0]
    H = torch.rand((n0 + T, *shape), generator=generator)
    return H, [H[:n0 + t].mean(0) for t in range(T + 1)]


# ----- schedules (BLURDM.md sections 3-4) -------------------------------------------------------
def test_schedule_matches_reference_numbers():
    s = bp.make_schedule()
    assert s.timesteps == 5
    torch.testing.assert_close(s.alphas, torch.tensor([1.0, 1.2, 1.4, 1.6, 1.8, 2.0]))
    torch.testing.assert_close(s.betas, torch.tensor([0.0, 0.005, 0.01, 0.015, 0.02]))
    torch.testing.assert_close(s.beta_bars[1:], torch.tensor([0.0, 0.0606, 0.1023, 0.1419, 0.1803]),
                               atol=6e-5, rtol=0)
    torch.testing.assert_close(s.c, torch.tensor([0.0, 0.0707, 0.0563, 0.0573, 0.0585]), atol=6e-5, rtol=0)
    assert s.beta_bar(0) == 0.0


def test_paper_parameterization_uses_betas_as_std():
    s = bp.make_schedule(parameterization="paper")
    torch.testing.assert_close(s.sigmas, s.betas)
    expected = torch.sqrt(sum((s.alphas[i] / s.alphas[5]) ** 2 * s.betas[i - 1] ** 2 for i in range(1, 6)))
    torch.testing.assert_close(s.beta_bars[5], expected)
    with pytest.raises(ValueError):
        bp.make_schedule(parameterization="other")


def test_schedule_is_configurable():
    s = bp.make_schedule(timesteps=8)
    assert len(s.alphas) == 9 and len(s.betas) == 8 and len(s.c) == 8
    assert s.alpha(0) == 1.0 and abs(s.alpha(8) - 2.0) < 1e-6


# ----- forward process (section 2) -------------------------------------------------------------
def test_blur_residual_is_the_light_of_the_added_slice():
    g = torch.Generator().manual_seed(0)
    s = bp.make_schedule()
    H, B = scene(g)
    for t in range(1, 6):
        e = bp.blur_residual(B[t - 1], B[t], t, s)
        torch.testing.assert_close(e, SLOT * H[4 + t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("parameterization", bp.PARAMETERIZATIONS)
def test_forward_iterated_equals_closed_form_and_reaches_blur_plus_noise(parameterization):
    g = torch.Generator().manual_seed(1)
    s = bp.make_schedule(parameterization=parameterization)
    H, B = scene(g)
    x, eps_steps = B[0], []
    for t in range(1, 6):
        eps = torch.randn(B[0].shape, generator=g)
        eps_steps.append(eps)
        x = bp.forward_step(x, bp.blur_residual(B[t - 1], B[t], t, s), t, s, eps)
        torch.testing.assert_close(x, bp.q_sample(B[t], t, s, bp.equivalent_noise(eps_steps, s))
                                   if s.beta_bar(t) > 0 else B[t], atol=1e-5, rtol=0)
    # without noise the chain ends exactly at the fully exposed (blurred) image
    x0 = B[0]
    for t in range(1, 6):
        x0 = bp.forward_step(x0, bp.blur_residual(B[t - 1], B[t], t, s), t, s, torch.zeros_like(x0))
    torch.testing.assert_close(x0, B[5], atol=1e-6, rtol=0)
    # with noise, I_T - B has mean 0 and std beta_bar_T (many samples)
    n = 200_000
    xs = torch.zeros(n, dtype=torch.float64)
    for t in range(1, 6):
        xs = (s.alpha(t - 1) / s.alpha(t)) * xs + s.sigma(t) * torch.randn(n, generator=g, dtype=torch.float64)
    assert abs(float(xs.mean())) < 3 * s.beta_bar(5) / n ** 0.5 + 1e-9
    assert abs(float(xs.std()) / s.beta_bar(5) - 1) < 0.01


# ----- reverse step (section 4) ----------------------------------------------------------------
@pytest.mark.parametrize("parameterization", bp.PARAMETERIZATIONS)
def test_reverse_step_inverts_forward_given_true_residuals(parameterization):
    g = torch.Generator().manual_seed(2)
    s = bp.make_schedule(parameterization=parameterization)
    _, B = scene(g)
    eps = torch.randn(B[0].shape, generator=g)
    states = [bp.q_sample(B[t], t, s, eps) for t in range(6)]
    for t in range(5, 0, -1):
        e_t = bp.blur_residual(B[t - 1], B[t], t, s)
        torch.testing.assert_close(bp.reverse_step(states[t], e_t, eps, t, s), states[t - 1], atol=1e-5, rtol=0)
    seen = []

    def oracle(z_t, t):  # the true residuals: e_t and the state's noise
        return bp.blur_residual(B[t - 1], B[t], t, s), eps

    z_T = bp.start_state(B[5], s, eps)
    z0 = bp.sample_chain(oracle, z_T, s, callback=seen.append)
    torch.testing.assert_close(z0, B[0], atol=1e-5, rtol=0)  # the sharp image, noise and blur removed
    assert [d["t"] for d in seen] == [5, 4, 3, 2, 1] and [d["i"] for d in seen] == list(range(5))
    assert {"i", "num_steps", "t", "t_next", "x_t", "x0", "eps", "x_next"} <= set(seen[0])
    torch.testing.assert_close(seen[-1]["x0"], z0)
    torch.testing.assert_close(seen[2]["denoised"], B[2], atol=1e-5, rtol=0)


# ----- model -----------------------------------------------------------------------------------
def _batch(g, b=2, size=32, partials=0):
    sharp = torch.rand(b, 3, size, size, generator=g)
    blur = (sharp + torch.roll(sharp, 2, dims=3) + torch.roll(sharp, 4, dims=3)) / 3
    out = {"blur": blur, "sharp": sharp}
    if partials:
        out["partials"] = torch.stack([blur] * partials, dim=1)
    return out


TINY_BACKBONES = [b for b, recipe in FUSED_BACKBONES.items() if recipe == "tiny"]


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_zero_prior_leaves_backbone_unchanged(backbone):
    name = f"blurdm-{backbone}"
    torch.manual_seed(0)
    model = active_fusions(build_model(name).eval())
    plain = build_model(backbone).eval()
    missing, unexpected = plain.load_state_dict(model.backbone.state_dict(), strict=False)
    assert not missing and all("fusion" in k for k in unexpected)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    zero = torch.zeros(1, model.prior_dim)
    with torch.no_grad():
        torch.testing.assert_close(model(x, prior=zero), plain(x))
        assert not torch.allclose(model(x, prior=torch.ones(1, model.prior_dim)), plain(x))


@pytest.mark.parametrize("stage", [1, 3])
def test_init_from_plain_weights_starts_as_the_plain_backbone(tmp_path, stage):
    """train.init_from with a plain backbone's file (e.g. the shipped default) fills the fused model's backbone
    (init_prefixes) and its fusions start at zero: whatever the prior, it restores exactly as the plain network."""
    from diffdeblur.train_setup import load_matching_weights

    torch.manual_seed(0)
    plain = build_model("nafnet-tiny").eval()
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.1)
    save_model(plain, tmp_path / "plain.safetensors")
    fused = build_model("blurdm-nafnet-tiny", stage=stage).eval()
    loaded, total = load_matching_weights(fused, str(tmp_path / "plain.safetensors"))
    assert loaded == len(plain.state_dict()) < total
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fused.backbone(x, torch.randn(1, fused.prior_dim) * 5), plain(x))
        torch.testing.assert_close(restore_tensor(fused, x, seed=0, engine="eager"), restore_tensor(plain, x, engine="eager"))


def test_registry_entries_and_protocol():
    assert get_entry("blurdm-nafnet-small").kind == "blurdm"
    for name in ("blurdm-nafnet-small", "blurdm-mimo-unet", "blurdm-mimo-unet-plus", "blurdm-nafnet-tiny",
                 "blurdm-mimo-unet-tiny"):
        get_entry(name)
    m = build_model("blurdm-mimo-unet-tiny")
    assert m.size_multiple == 8 and default_objective_name(m) == "blurdm" and m.stage == 3 and m.stochastic
    assert hasattr(m, "forward_multiscale")
    n = build_model("blurdm-nafnet-tiny", stage=1)
    assert not hasattr(n, "forward_multiscale") and default_objective_name(n) == "blurdm" and n.stage == 1 and not n.stochastic
    assert n.size_multiple == 4
    with pytest.raises(ValueError):
        build_model("blurdm-nafnet-tiny", stage=4)
    with pytest.raises(ValueError):
        build_model("blurdm-nafnet-tiny", backbone="blurdm-nafnet-tiny")


def test_published_sizes():
    m = build_model("blurdm-mimo-unet-plus")
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert abs(count(m.blurdm) - 2.07e6) < 0.01e6  # BE + 2 estimators (BLURDM.md section 5)
    assert abs(count(m.blurdm.blur_residual) - 0.46e6) < 0.005e6


def test_restore_noise_protocol_and_tiling():
    torch.manual_seed(0)
    m = active_fusions(build_model("blurdm-nafnet-tiny").eval())
    x = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(4))
    noise = m.noise_like(x, torch.Generator().manual_seed(0))
    assert noise.shape == (1, m.prior_dim)
    assert m.slice_noise(noise, (0, 20, 0, 20)) is noise
    a, b = m.restore(x, noise=noise), m.restore(x, noise=noise)
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and 0 <= float(a.min()) and float(a.max()) <= 1
    assert not torch.equal(a, m.restore(x, noise=torch.randn(1, m.prior_dim) * 50))
    full = restore_tensor(m, x, seed=1)
    torch.testing.assert_close(full, restore_tensor(m, x, seed=1))
    # the prior is a whole-image condition: restore(x, noise=n) fuses whole_image_inputs(x, n)'s prior
    prior = m.whole_image_inputs(x, noise)["prior"]
    assert prior.shape == (1, m.prior_dim)
    torch.testing.assert_close(m.restore(x, prior=prior), a)
    torch.testing.assert_close(m.restore(x, prior=prior, noise=torch.randn(1, m.prior_dim) * 50), a)  # chain not run
    with torch.inference_mode():
        torch.testing.assert_close(prior, m.diffusion_prior(x, noise))  # BlurDM(blur) itself, up to encoder_block
    with pytest.raises(ConfigError, match="prior must be"):
        m.restore(x, prior=torch.zeros(1, m.prior_dim + 1))


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else -10 * math.log10(mse)


def _textured_half(h: int = 96, w: int = 136) -> torch.Tensor:
    """Flat on the left, noise on the right: tiles that computed their own prior would each get another one."""
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(4))
    x[..., : w // 2] = x[..., : w // 2].mean()
    return x


def _with_blocks(model):
    """An untrained NAFNet's zero beta/gamma skip every block (TLC included): give them weight."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(("beta", "gamma")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _encoder_calls(m):
    """Counts the blur encoder's runs: its final MLP runs once per prior, whole or block by block (blur_code)."""
    calls = []
    handle = m.blurdm.condition_encoder.mlp.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


# TLC windows of 24 pixels (train_size 16), so that tiles of 48 see finite windows and tile_context (12) matters
TILE, OVERLAP, TLC = 48, 8, {"train_size": 16}


@pytest.mark.parametrize("encoder_block", [1024, 32])
def test_blurdm_tiled_equals_whole_as_its_backbone(encoder_block):
    """issue: BlurDM-fused variants run tiled = whole. The prior is computed once from the whole image
    (one blur-encoder call) and passed to every tile, so tiled output is as close to whole as the plain
    backbone's (the backbone's own tiling error, bounded by its tile_context). encoder_block 32: the blur
    encoder runs block by block (blur_code) on both paths, with the same result."""
    torch.manual_seed(0)
    m = active_fusions(_with_blocks(build_model("blurdm-nafnet-tiny", backbone_kwargs=TLC)).eval())
    m.encoder_block = encoder_block
    plain = build_model("nafnet-tiny", **TLC).eval()
    missing, unexpected = plain.load_state_dict(m.backbone.state_dict(), strict=False)
    assert not missing and all("fusion" in k for k in unexpected)
    assert tile_context(m) == tile_context(plain) > 0
    x = _textured_half()
    plain_db = _psnr(restore_tensor(plain, x, tile=TILE, overlap=OVERLAP, engine="eager"),
                     restore_tensor(plain, x, engine="eager"))
    assert plain_db >= 40  # the settings make the plain backbone tile exactly enough
    calls, handle = _encoder_calls(m)
    try:
        whole = restore_tensor(m, x, seed=1, engine="eager")
        assert len(calls) == 1
        tiled = restore_tensor(m, x, tile=TILE, overlap=OVERLAP, seed=1, engine="eager")
        assert len(calls) == 2  # once for the whole image of the tiled run, not once per tile
    finally:
        handle.remove()
    fused_db = _psnr(tiled, whole)
    assert fused_db >= max(40.0, plain_db - 1.0), (fused_db, plain_db)
    # the prior matters: the zero prior gives another image
    with torch.inference_mode():
        assert _psnr(whole, m.backbone(x, torch.zeros(1, m.prior_dim)).clamp(0, 1)) < 40
    torch.testing.assert_close(whole, m.restore(x, noise=m.noise_like(x, torch.Generator().manual_seed(1))))


def test_blur_code_by_blocks_equals_the_encoder():
    torch.manual_seed(0)
    m = build_model("blurdm-nafnet-tiny").eval()
    x = torch.rand(2, 3, 42, 70, generator=torch.Generator().manual_seed(2))  # not multiples of 4: padded as BE pads
    noise = torch.randn(2, m.prior_dim, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref, ref_prior = m.blurdm.encode(x), m.inference_prior(x, noise)
        for block in (8, 16, 36):
            m.encoder_block = block
            torch.testing.assert_close(m.blur_code(x), ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(m.inference_prior(x, noise), ref_prior, atol=1e-5, rtol=1e-5)


def test_blurdm_mimo_unet_computes_its_prior_once_when_tiled():
    """MIMO-UNet declares no tile_context (0: tiles are not grown), so its tiled output has seams of its own and
    tiled = whole cannot be asked of it (the fused model's seams are larger than the plain backbone's: the
    prior's per-channel shift meets the tiles' zero padding). What the prior owes it is checked: one
    blur-encoder call, the whole image's prior in every tile."""
    torch.manual_seed(0)
    m = build_model("blurdm-mimo-unet-tiny").eval()
    assert tile_context(m) == 0
    x = _textured_half()
    priors = []
    calls, handle = _encoder_calls(m)
    fused = m.backbone.register_forward_hook(lambda mod, args, out: priors.append(args[1]))
    try:
        out = restore_tensor(m, x, tile=TILE, overlap=OVERLAP, seed=1, engine="eager")
    finally:
        handle.remove()
        fused.remove()
    assert out.shape == x.shape and len(calls) == 1 and len(priors) == count_tiles(96, 136, TILE, OVERLAP) > 1
    expected = m.whole_image_inputs(x, m.noise_like(x, torch.Generator().manual_seed(1)))["prior"]
    for prior in priors:
        torch.testing.assert_close(prior, expected)


def test_trace_callback_gives_every_reverse_step():
    torch.manual_seed(0)
    m = build_model("blurdm-mimo-unet-tiny").eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    steps = []
    out = m.restore(x, noise=torch.zeros(1, m.prior_dim), callback=steps.append)
    assert [s["t"] for s in steps] == [5, 4, 3, 2, 1]
    assert steps[0]["x_t"].shape == (1, m.prior_dim) and steps[0]["x0_image"].shape == x.shape
    assert steps[0]["x_t_image"].shape == x.shape
    torch.testing.assert_close(steps[-1]["x0_image"], out)
    torch.testing.assert_close(out, m.restore(x, noise=torch.zeros(1, m.prior_dim)))


def test_checkpoint_roundtrip_and_stage_transitions(tmp_path):
    torch.manual_seed(0)
    s1 = build_model("blurdm-nafnet-tiny", stage=1)
    s2 = build_model("blurdm-nafnet-tiny", stage=2)
    s3 = build_model("blurdm-nafnet-tiny", stage=3)
    # stage 2 holds everything stage 1 trained; stage 3 drops only the sharp encoder
    assert set(s1.state_dict()) <= set(s2.state_dict())
    assert set(s3.state_dict()) <= set(s2.state_dict())
    assert set(s2.state_dict()) - set(s3.state_dict()) == {k for k in s2.state_dict() if k.startswith("sharp_encoder.")}
    path = tmp_path / "s3.safetensors"
    save_model(s3, path)
    loaded = load_model_file(path)
    x = torch.rand(1, 3, 16, 16)
    noise = torch.randn(1, s3.prior_dim)
    torch.testing.assert_close(loaded.restore(x, noise=noise), s3.eval().restore(x, noise=noise))


# ----- training stages -------------------------------------------------------------------------
def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    after = module.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


def _train_steps(model, objective, steps=3, partials=0):
    g = torch.Generator().manual_seed(7)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    model.train()
    losses = []
    for step in range(steps):
        loss, logs = objective(model, _batch(g, partials=partials), torch.Generator().manual_seed(step))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses, logs


@pytest.mark.parametrize("name", [f"blurdm-{b}" for b in TINY_BACKBONES])
def test_stage1_trains_backbone_and_sharp_encoder(name):
    torch.manual_seed(0)
    m = build_model(name, stage=1)
    assert m.blurdm is None and m.sharp_encoder is not None
    bb, se = _snapshot(m.backbone), _snapshot(m.sharp_encoder)
    _, logs = _train_steps(m, default_objective(m))
    assert _changed(bb, m.backbone) and _changed(se, m.sharp_encoder)
    assert "prior_norm" in logs
    # the prior reaches the backbone: the fusion layers received gradient and moved
    assert any(not torch.equal(bb[k], v) for k, v in m.backbone.state_dict().items() if "fusion" in k)


@pytest.mark.parametrize("name", ["blurdm-nafnet-tiny", "blurdm-mimo-unet-tiny"])
def test_stage2_trains_only_blurdm(name):
    torch.manual_seed(0)
    m = build_model(name, stage=2)
    bb, se, dm = _snapshot(m.backbone), _snapshot(m.sharp_encoder), _snapshot(m.blurdm)
    losses, logs = _train_steps(m, default_objective(m), steps=4)
    assert not _changed(bb, m.backbone)
    assert not _changed(se, m.sharp_encoder)  # weights and BN running statistics
    assert _changed(dm, m.blurdm)
    assert not m.sharp_encoder.training and m.blurdm.training
    assert "latent" in logs and "partials" not in logs


def test_stage2_partial_exposure_supervision_extension():
    torch.manual_seed(0)
    m = build_model("blurdm-nafnet-tiny", stage=2, partials_weight=0.5)
    est = _snapshot(m.blurdm.blur_residual)
    _, logs = _train_steps(m, get_objective("blurdm-stage2"), steps=2, partials=4)
    assert "partials" in logs and logs["partials"] >= 0
    assert _changed(est, m.blurdm.blur_residual)
    p = torch.arange(4.0).view(1, 4, 1, 1, 1).expand(1, 4, 3, 2, 2)
    picked = partial_exposure_images(p, 5)
    assert sorted(picked) == [1, 2, 3, 4] and [float(picked[k][0, 0, 0, 0]) for k in (1, 2, 3, 4)] == [0, 1, 1, 2]


@pytest.mark.parametrize("name", [f"blurdm-{b}" for b in TINY_BACKBONES])
def test_stage3_trains_backbone_and_blurdm(name):
    torch.manual_seed(0)
    m = build_model(name, stage=3)
    assert m.sharp_encoder is None
    bb, dm = _snapshot(m.backbone), _snapshot(m.blurdm)
    _train_steps(m, default_objective(m))
    assert _changed(bb, m.backbone) and _changed(dm, m.blurdm)


def test_wrong_stage_objective_is_a_clear_error():
    m = build_model("blurdm-nafnet-tiny", stage=3)
    with pytest.raises(ValueError, match="sharp encoder"):
        get_objective("blurdm-stage1")(m, _batch(torch.Generator().manual_seed(0)), None)
    with pytest.raises(ValueError, match="BlurDM model"):
        get_objective("blurdm-stage1")(build_model("nafnet-tiny"), _batch(torch.Generator().manual_seed(0)), None)


@pytest.mark.parametrize("backbone", list(FUSED_BACKBONES))
def test_shipped_configs_validate(backbone):
    for stage in (1, 2, 3):
        cfg = load_config(f"blurdm-{backbone}-stage{stage}")
        assert cfg.model["stage"] == stage
        assert (cfg.train.loss or f"blurdm-stage{stage}") == f"blurdm-stage{stage}"
        assert bool(cfg.train.init_from) == (stage > 1)
        if stage > 1:
            assert f"stage{stage - 1}" in cfg.train.init_from
    kwargs = copy.deepcopy(load_config(f"blurdm-{backbone}-stage1").model_kwargs)
    assert kwargs.pop("stage") == 1


def test_engine_auto_probes_a_fixed_step_chain():
    """The engine probe runs BlurDM with its own T steps (steps=1 was a ConfigError for a chain not respaced)."""
    from diffdeblur.engines import probe_inputs

    m = build_model("blurdm-nafnet-tiny").eval()
    blur, options = probe_inputs(m, 32)
    assert "steps" not in options
    assert m.restore(blur, **options).shape == blur.shape
