"""Diffusion core (schedules, process, samplers), the SR3/DvSR model, tiling-consistent noise and trace."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffdeblur.checkpoint import load_model_file, save_model
from diffdeblur.diffusion.process import (Prediction, eps_from_v, eps_from_x0, prediction_from_output, q_sample,
                                          to_signed, to_unit, training_target, v_from_x0_eps, x0_from_eps, x0_from_v)
from diffdeblur.diffusion.samplers import (average_samples, ddim_sample, ddim_step, ddpm_sample, ddpm_step,
                                           run_sampler, sde_sample)
from diffdeblur.diffusion.schedules import (alpha_bar_at, alpha_bar_from_betas, cosine_beta_schedule,
                                            linear_beta_schedule, make_beta_schedule, make_timesteps)
from diffdeblur.inference import restore_tensor
from diffdeblur.objectives import default_objective, get_objective
from diffdeblur.metrics import psnr
from diffdeblur.diffusion.noise import new_noise_field
from diffdeblur.registry import build_model

SAMPLERS = {"ddpm": ddpm_sample, "ddim": ddim_sample, "sde": sde_sample}
MU, S = 0.3, 0.5  # data distribution N(MU, S^2) per pixel for the analytic denoiser


def gaussian_denoiser(alpha_bar: torch.Tensor):
    """The exact posterior-mean denoiser for data ~ N(MU, S^2): E[x0 | x_t] is linear in x_t."""
    def denoise(x_t, t, cond):
        ab = alpha_bar_at(alpha_bar, t).view(-1, 1, 1, 1)
        x0 = MU + (ab.sqrt() * S ** 2 / (ab * S ** 2 + 1 - ab)) * (x_t - ab.sqrt() * MU)
        return Prediction(x0, eps_from_x0(x_t, x0, ab))
    return denoise


# ---- schedules ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [10, 400, 1000, 2000])
def test_schedules_are_valid(name, T):
    betas = make_beta_schedule(name, T)
    assert betas.shape == (T,) and betas.dtype == torch.float32
    assert torch.all(betas > 0) and torch.all(betas < 1)
    ab = alpha_bar_from_betas(betas)
    assert torch.all(ab > 0) and torch.all(ab <= 1)
    assert torch.all(ab[1:] < ab[:-1])  # strictly decreasing alpha_bar
    assert ab[-1] < 1e-3  # ends near pure noise
    alphas = 1 - betas
    assert torch.all(alphas[1:] <= alphas[:-1] + 1e-7)  # alphas monotone (non-increasing)


def test_linear_schedule_scaling_and_explicit_range():
    assert torch.allclose(linear_beta_schedule(1000)[[0, -1]], torch.tensor([1e-4, 0.02]))
    assert torch.allclose(linear_beta_schedule(2000, 1e-6, 1e-2)[[0, -1]], torch.tensor([1e-6, 1e-2]))
    # scaled by 1000/T: alpha_bar at the same fraction of the chain is about the same for any T
    ab1, ab2 = alpha_bar_from_betas(linear_beta_schedule(1000)), alpha_bar_from_betas(linear_beta_schedule(400))
    assert abs(float(ab1[499]) - float(ab2[199])) < 0.01
    ab = alpha_bar_from_betas(cosine_beta_schedule(1000))
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert abs(float(ab[499]) - f(500) / f(0)) < 1e-5  # Nichol & Dhariwal eq. 17


def test_closed_form_q_matches_iterated_forward_process():
    T = 50
    betas = make_beta_schedule("linear", T)
    ab = alpha_bar_from_betas(betas)
    # analytic: iterate the mean coefficient and variance of q(x_t | x_{t-1}) (DDPM eq. 2)
    coef, var = 1.0, 0.0
    for t in range(T):
        coef, var = coef * math.sqrt(1 - betas[t].item()), (1 - betas[t].item()) * var + betas[t].item()
        assert abs(coef - math.sqrt(ab[t].item())) < 1e-5 and abs(var - (1 - ab[t].item())) < 1e-5
    # statistical: simulate the chain from x0 = 0.7 and compare with q(x_t | x0) at a few t
    g = torch.Generator().manual_seed(0)
    x = torch.full((200_000,), 0.7)
    for t in range(T):
        x = (1 - betas[t]).sqrt() * x + betas[t].sqrt() * torch.randn(x.shape, generator=g)
        if t in (0, 10, T - 1):
            closed = q_sample(torch.full((200_000,), 0.7), ab[t], torch.randn(x.shape, generator=g))
            assert abs(x.mean() - closed.mean()) < 0.01 and abs(x.std() - closed.std()) < 0.01


def test_alpha_bar_at_interpolates_and_clean_end():
    ab = alpha_bar_from_betas(make_beta_schedule("linear", 100))
    got = alpha_bar_at(ab, torch.tensor([-1.0, 0.0, 3.0, 3.5, 99.0]))
    assert got[0] == 1 and torch.allclose(got[[1, 2, 4]], ab[[0, 3, 99]])
    assert ab[4] < got[3] < ab[3]


def test_timesteps_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for spacing in ("trailing", "leading", "linspace"):
        s = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing, steps_offset=0)
        for k in (2, 7, 10, 50, 1000):
            s.set_timesteps(k)
            assert torch.equal(s.timesteps, make_timesteps(1000, k, spacing)), (spacing, k)
    assert make_timesteps(1000, 1).tolist() == [999]
    with pytest.raises(ValueError):
        make_timesteps(100, 101)


# ---- parameterisations ----------------------------------------------------------------------------

def test_eps_x0_v_round_trip():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    ab = torch.tensor([0.999, 0.5, 0.1, 1e-3])
    x_t = q_sample(x0, ab, eps)
    assert torch.allclose(x0_from_eps(x_t, eps, ab), x0, atol=1e-3)
    assert torch.allclose(eps_from_x0(x_t, x0, ab), eps, atol=1e-3)
    v = v_from_x0_eps(x0, eps, ab)
    assert torch.allclose(x0_from_v(x_t, v, ab), x0, atol=1e-5)
    assert torch.allclose(eps_from_v(x_t, v, ab), eps, atol=1e-5)
    for obj in ("eps", "x0", "v", "x0-precond"):
        pred = prediction_from_output(training_target(x0, eps, ab, obj), x_t, ab, obj, clip=None)
        assert torch.allclose(pred.x0, x0, atol=1e-3) and torch.allclose(pred.eps, eps, atol=1e-3)
    clipped = prediction_from_output(x0 * 10, x_t, ab, "x0", clip=1.0)
    assert clipped.x0.abs().max() <= 1 and torch.allclose(q_sample(clipped.x0, ab, clipped.eps), x_t, atol=1e-4)
    img = torch.rand(2, 3, 4, 4)
    assert torch.allclose(to_unit(to_signed(img)), img) and to_signed(img).min() >= -1



def test_x0_precond_defaults_to_x_t_at_low_noise_and_has_unit_scale_targets():
    g = torch.Generator().manual_seed(1)
    x0, eps = 0.5 * torch.randn(64, 3, 16, 16, generator=g), torch.randn(64, 3, 16, 16, generator=g)
    low = torch.full((64,), 1 - 1e-6)
    x_t = q_sample(x0, low, eps)
    zero_out = prediction_from_output(torch.zeros_like(x0), x_t, low, "x0-precond", clip=None)
    assert torch.allclose(zero_out.x0, x0, atol=1e-2)  # a network that outputs 0 already denoises low noise
    plain = prediction_from_output(torch.zeros_like(x0), x_t, low, "x0", clip=None)
    assert not torch.allclose(plain.x0, x0, atol=1e-2)  # plain x0 prediction must learn that copy
    for ab in (1 - 1e-4, 0.5, 1e-4):
        target = training_target(x0, eps, torch.full((64,), ab), "x0-precond")
        assert 0.8 < float(target.std()) < 1.25, ab

# ---- samplers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ddpm", "ddim", "sde"])
def test_sampler_calls_back_once_per_step_and_returns_data_distribution(name):
    ab = alpha_bar_from_betas(make_beta_schedule("linear", 1000))
    steps = {"ddpm": 1000, "ddim": 200, "sde": 1000}[name]
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(1, 1, 64, 64, generator=g)
    seen = []
    out = SAMPLERS[name](gaussian_denoiser(ab), x_T, make_timesteps(1000, steps), alpha_bar=ab, generator=g,
                         callback=lambda d: seen.append((d["i"], d["t"], d["x0"].shape)))
    assert [s[0] for s in seen] == list(range(steps))
    assert seen[0][1] == 999 and seen[-1][2] == x_T.shape
    assert abs(out.mean().item() - MU) < 0.03 and abs(out.std().item() - S) < 0.03


@pytest.mark.parametrize("name", ["ddpm", "ddim", "sde"])
def test_sampler_respects_small_step_count(name):
    ab = alpha_bar_from_betas(make_beta_schedule("cosine", 100))
    calls = []
    out = run_sampler(name, gaussian_denoiser(ab), torch.randn(2, 3, 8, 8), make_timesteps(100, 7), alpha_bar=ab,
                      callback=lambda d: calls.append(d["i"]), generator=torch.Generator().manual_seed(1))
    assert calls == list(range(7)) and out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()


def test_ddim_eta0_is_deterministic_and_eta1_is_not():
    ab = alpha_bar_from_betas(make_beta_schedule("linear", 1000))
    x_T = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ts = make_timesteps(1000, 20)
    runs = [ddim_sample(gaussian_denoiser(ab), x_T, ts, alpha_bar=ab, generator=torch.Generator().manual_seed(s))
            for s in (1, 2)]
    assert torch.equal(runs[0], runs[1])
    noisy = [ddim_sample(gaussian_denoiser(ab), x_T, ts, alpha_bar=ab, eta=1.0,
                         generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    assert not torch.allclose(noisy[0], noisy[1])


def test_ddim_loop_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                    set_alpha_to_one=True, timestep_spacing="trailing")
    sched.set_timesteps(25)
    ab = alpha_bar_from_betas(make_beta_schedule("linear", 1000))

    def eps_model(x, t):  # an arbitrary smooth "network"
        return torch.tanh(x) * (0.3 + float(t) / 2000)

    x_T = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = x_T.clone()
    for t in sched.timesteps:
        ref = sched.step(eps_model(ref, t), t, ref, eta=0.0).prev_sample
    ours = ddim_sample(lambda x, t, c: prediction_from_output(eps_model(x, t[0]), x, alpha_bar_at(ab, t), "eps"),
                       x_T, sched.timesteps, alpha_bar=ab)
    assert torch.allclose(ours, ref, atol=1e-4)


def test_ddpm_step_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                    variance_type="fixed_small")
    sched.set_timesteps(1000)
    ab = alpha_bar_from_betas(make_beta_schedule("linear", 1000))
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 3, 8, 8, generator=g), torch.randn(1, 3, 8, 8, generator=g)
    for t in (999, 500, 1):
        ref = sched.step(eps, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
        pred = prediction_from_output(eps, x, ab[t], "eps")
        ours = ddpm_step(x, pred, float(ab[t]), float(ab[t - 1]), z)
        assert torch.allclose(ours, ref, rtol=1e-4, atol=2e-4), (t, (ours - ref).abs().max())
        # DDIM with eta = 1 has the same mean and variance as the DDPM posterior
        assert torch.allclose(ddim_step(x, pred, float(ab[t]), float(ab[t - 1]), 1.0, z), ours, atol=1e-4)


def test_average_samples():
    assert torch.allclose(average_samples(lambda k: torch.full((2,), float(k)), 4), torch.full((2,), 1.5))
    with pytest.raises(ValueError):
        average_samples(lambda k: torch.zeros(1), 0)


# ---- model: noise field, shapes, residual mode, checkpoints --------------------------------------

def test_noise_field_is_crop_consistent():
    field = new_noise_field(2, torch.Generator().manual_seed(0))
    full = field.sample(0, 3, 150, 200)
    assert full.shape == (2, 3, 150, 200) and abs(full.std().item() - 1) < 0.05
    tile = field.crop((37, 150, 101, 200)).crop((5, 60, 7, 50))
    assert torch.equal(tile.sample(0, 3, 55, 43), full[:, :, 42:97, 108:151])
    assert not torch.allclose(field.sample(0, 4, 150, 200), full)  # another step
    assert not torch.allclose(field.sample(1, 3, 150, 200), full)  # another sample
    assert not torch.allclose(full[0], full[1])  # another image of the batch


@pytest.mark.parametrize("name, kwargs", [("sr3-tiny", {}), ("dvsr-tiny", {}),
                                          ("sr3-tiny", {"mode": "residual", "predictor": "identity"})])
def test_model_restore_shape_range_and_seed(name, kwargs):
    m = build_model(name, **kwargs).eval()
    x = torch.rand(2, 3, 30, 37)
    steps = []
    out = m.restore(x, steps=4, generator=torch.Generator().manual_seed(0), callback=lambda d: steps.append(d))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert [d["i"] for d in steps] == [0, 1, 2, 3] and steps[0]["x0_image"].shape == x.shape
    again = m.restore(x, steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    for sampler in ("ddpm", "sde"):
        assert m.restore(x, steps=3, sampler=sampler, num_samples=2).shape == x.shape
    m.train()
    loss, logs = default_objective(m)(m, {"blur": x[..., :16, :16], "sharp": x[..., :16, :16]},
                                           torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and "diffusion" in logs


def test_residual_mode_adds_diffusion_residual_to_predictor():
    m = build_model("dvsr-tiny", objective="x0").eval()
    blur, sharp = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    # the UNet's last conv starts at zero, so an x0-objective model predicts a zero residual:
    # the output must then be exactly the predictor's estimate
    out = m.restore(blur, steps=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(out, m.predictor(blur).clamp(0, 1), atol=1e-6)
        x0, cond, aux = m.diffusion_inputs(blur, sharp)
        assert torch.allclose(x0, to_signed(sharp) - to_signed(m.predictor(blur)), atol=1e-6)
        assert cond.shape == (1, 6, 16, 16) and aux is None
    # joint training: the single diffusion loss reaches the predictor's weights
    m.train()
    loss, _ = get_objective("diffusion")(m, {"blur": blur, "sharp": sharp}, torch.Generator().manual_seed(0))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.predictor.parameters())


def test_chunked_attention_equals_full_attention(monkeypatch):
    from diffdeblur.models import sr3_unet

    torch.manual_seed(0)
    attn = sr3_unet.SelfAttention(16, norm_groups=8, heads=2).eval()
    torch.nn.init.normal_(attn.out.weight, 0, 0.2)
    x = torch.randn(2, 16, 9, 11)
    monkeypatch.setattr(sr3_unet, "ATTN_QUERY_CHUNK", 7)  # 99 positions in 15 chunks
    chunked = attn(x)
    q, k, v = attn.qkv(attn.norm(x)).reshape(2, 3, 2, 8, 99).unbind(1)  # (B, heads, c/heads, HW)
    w = torch.softmax(q.transpose(-1, -2) @ k / math.sqrt(8), dim=-1)  # (B, heads, HW, HW)
    full = x + attn.out((w @ v.transpose(-1, -2)).transpose(-1, -2).reshape(2, 16, 9, 11))
    assert torch.allclose(chunked, full, atol=1e-5)
    # a UNet with attention at every level runs at odd sizes
    m = build_model("sr3-tiny", attn_levels=[0, 1], mid_attn=True).eval()
    assert m.restore(torch.rand(1, 3, 13, 17), steps=2).shape == (1, 3, 13, 17)


def test_checkpoint_round_trip(tmp_path):
    m = build_model("sr3-tiny", objective="v", schedule="cosine", num_train_steps=50).eval()
    with torch.no_grad():
        m.unet.final[-1].weight.normal_(0, 0.1)
    save_model(m, tmp_path / "m.safetensors")
    m2 = load_model_file(tmp_path / "m.safetensors")
    x = torch.rand(1, 3, 20, 20)
    a = m.restore(x, steps=5, generator=torch.Generator().manual_seed(3))
    b = m2.restore(x, steps=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(m2.alpha_bar, m.alpha_bar)


# ---- behaviour: overfitting, tiling, trace --------------------------------------------------------

def _smooth_pair(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    sharp = torch.stack([yy, xx, (torch.sin(8 * yy) * torch.cos(6 * xx) + 1) / 2])[None]
    blur = F.avg_pool2d(F.pad(sharp, (2, 2, 2, 2), mode="replicate"), 5, 1)
    return blur, sharp


@pytest.fixture(scope="module")
def overfit_model():
    """sr3-tiny (x0 objective) trained on a single 16x16 pair for 150 steps (~3 s on one core)."""
    torch.manual_seed(0)
    blur, sharp = _smooth_pair()
    m = build_model("sr3-tiny", objective="x0")
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g, objective = torch.Generator().manual_seed(0), get_objective("diffusion")
    batch = {"blur": blur.expand(4, -1, -1, -1), "sharp": sharp.expand(4, -1, -1, -1)}
    for _ in range(150):
        loss, _ = objective(m, batch, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), blur, sharp


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "sde"])
def test_tiny_model_overfits_one_image(overfit_model, sampler):
    m, blur, sharp = overfit_model
    out = m.restore(blur, steps=10, sampler=sampler, generator=torch.Generator().manual_seed(1))
    assert psnr(out, sharp) > max(32.0, psnr(blur, sharp) + 5)


def test_tiled_sampling_has_no_seams():
    torch.manual_seed(0)
    m = build_model("sr3-tiny", objective="eps").eval()
    with torch.no_grad():  # a non-trivial, untrained network
        for p in m.unet.final.parameters():
            p.normal_(0, 0.05)
    blur = torch.rand(1, 3, 48, 72, generator=torch.Generator().manual_seed(0))
    opts = dict(steps=4, sampler="ddpm")
    whole = restore_tensor(m, blur, tile=0, seed=5, **opts)
    tiled = restore_tensor(m, blur, tile=32, overlap=12, seed=5, **opts)
    diff = (whole - tiled).abs()

    class Independent(torch.nn.Module):  # same model, but every tile draws its own noise
        def __init__(self, inner):
            super().__init__()
            self.inner, self.stochastic = inner, False

        def restore(self, x, **kw):
            return self.inner.restore(x, generator=torch.Generator().manual_seed(x.shape[-1] * 7 + x.shape[-2]), **kw)

    independent = restore_tensor(Independent(m), blur, tile=32, overlap=12, seed=5, **opts)
    assert diff.mean() < 0.2 * (whole - independent).abs().mean()
    assert diff.max() < 0.15
    # no seam: the error along tile borders is not larger than elsewhere
    col = diff.mean(dim=(0, 1, 2))
    assert col[14:20].mean() < 2 * col.mean() + 0.01


def test_trace_writes_files(overfit_model, tmp_path):
    from diffdeblur.trace import record_trace, write_trace
    from diffdeblur.io import to_numpy

    m, blur, sharp = overfit_model
    tr = record_trace(m, to_numpy(blur), to_numpy(sharp), steps=6, sampler="ddim", seed=0)
    paths = write_trace(tr, tmp_path / "trace", frames=4)
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    rows = list(csv.DictReader(open(paths["steps.csv"])))
    assert len(rows) == 6 and [int(r["step"]) for r in rows] == list(range(6))
    assert float(rows[-1]["psnr_x0"]) > float(rows[0]["psnr_x0"])  # the estimate improves along the chain
    from PIL import Image

    with Image.open(paths["trace.gif"]) as gif:
        assert gif.n_frames == 6
    no_gif = write_trace(tr, tmp_path / "no_gif", frames=4, gif_frames=0)
    assert "trace.gif" not in no_gif and not (tmp_path / "no_gif" / "trace.gif").exists()
    assert all(p.is_file() for p in no_gif.values())


def test_trace_command(overfit_model, tmp_path):
    from diffdeblur.cli import main
    from diffdeblur.io import to_numpy, write_image

    m, blur, sharp = overfit_model
    save_model(m, tmp_path / "m.safetensors")
    write_image(tmp_path / "b.png", to_numpy(blur))
    write_image(tmp_path / "s.png", to_numpy(sharp))
    rc = main(["trace", str(tmp_path / "b.png"), "--reference", str(tmp_path / "s.png"), "--model",
               str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "out"), "--steps", "5", "--device", "cpu"])
    assert rc == 0 and (tmp_path / "out" / "grid.png").is_file()
    assert np.isfinite(float(list(csv.DictReader(open(tmp_path / "out" / "steps.csv")))[-1]["psnr_x0"]))
    # a regression model reports no steps: a one-line error, exit code 1
    reg = build_model("nafnet-tiny")
    save_model(reg, tmp_path / "r.safetensors")
    assert main(["trace", str(tmp_path / "b.png"), "--model", str(tmp_path / "r.safetensors"),
                 "-o", str(tmp_path / "out2"), "--device", "cpu"]) == 1


def test_curve_plot_falls_back_to_pillow(tmp_path, monkeypatch):
    import sys

    from PIL import Image

    from diffdeblur.trace import plot_curves

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    backend = plot_curves({"psnr_x0": [20.0, 21.0, 23.0], "ssim_x0": [0.5, 0.6, float("nan")]}, tmp_path / "c.png",
                          hlines={"input PSNR": 21.5})
    assert backend == "pillow"
    with Image.open(tmp_path / "c.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100
