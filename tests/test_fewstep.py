"""Few-step chains from the degraded image (issue 14): ResShift and InDI maths, the time-conditioned
NAFNet initialised from the shipped default, the registered models, objectives and commands."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffdeblur import build_model, load_model, save_model
from diffdeblur.cli import main
from diffdeblur.config import load_config
from diffdeblur.diffusion.indi import T_MIN, indi_loss, indi_path, indi_sample, indi_times
from diffdeblur.diffusion.resshift import (resshift_marginal, resshift_posterior, resshift_prior, resshift_sample,
                                           resshift_sqrt_etas, resshift_transition)
from diffdeblur.diffusion.shifting import shift_posterior, shift_step
from diffdeblur.errors import ConfigError, TrainingError
from diffdeblur.example import example_pair
from diffdeblur.io import to_tensor, write_image
from diffdeblur.metrics import psnr
from diffdeblur.models.nafnet import NAFNet
from diffdeblur.models.time_nafnet import is_conditioning
from diffdeblur.objectives import default_objective
from diffdeblur.tensorfile import read_tensors, shipped_weights
from diffdeblur.trace import record_trace
from diffdeblur.train import build_run, init_from_path, load_matching_weights

from conftest import make_paired_folder

TINY = ("indi-nafnet-tiny", "resshift-nafnet-tiny")


def gaussian_product_posterior(x_t, x0, y, s_t, v_t, s_p, v_p):
    """q(x_p | x_t) from the prior N(x0 + s_p e0, v_p) and the transition N(x_p + (s_t - s_p) e0, v_t - v_p),
    by completing the square (precisions add, precision-weighted means add)."""
    e0 = y - x0
    prec = 1 / v_p + 1 / (v_t - v_p)
    mean = ((x0 + s_p * e0) / v_p + (x_t - (s_t - s_p) * e0) / (v_t - v_p)) / prec
    return mean, 1 / prec


# ---- ResShift -----------------------------------------------------------------------------------

def test_resshift_schedule_is_the_papers_geometric_power_schedule():
    T, kappa, p = 15, 2.0, 0.3
    sq = resshift_sqrt_etas(T, kappa=kappa, power=p, min_noise_level=0.04, sqrt_eta_end=0.99).double()
    assert sq.shape == (T,) and torch.all(sq[1:] > sq[:-1])
    assert math.isclose(sq[0], min(0.04 / kappa, 0.04), rel_tol=1e-6) and math.isclose(sq[-1], 0.99, rel_tol=1e-6)
    b0 = math.exp(math.log(0.99 ** 2 / 0.02 ** 2) / (2 * (T - 1)))  # sqrt(eta_t) = sqrt(eta_1) b0^beta_t
    for t in range(1, T + 1):
        beta = ((t - 1) / (T - 1)) ** p * (T - 1)
        assert math.isclose(sq[t - 1], 0.02 * b0 ** beta, rel_tol=1e-5)
    with pytest.raises(ConfigError):
        resshift_sqrt_etas(1)


def test_resshift_marginal_is_the_composition_of_its_one_step_transitions():
    kappa = 2.0
    eta = (resshift_sqrt_etas(6, kappa=kappa).double() ** 2).tolist()
    x0, y = torch.tensor([0.3], dtype=torch.float64), torch.tensor([-0.4], dtype=torch.float64)
    # exact Gaussian composition: the means add the shifts, the variances add
    mean, var = x0.clone(), 0.0
    # sample statistics: iterate x_t = x_{t-1} + alpha_t e0 + kappa sqrt(alpha_t) z
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x = x0.expand(n).clone()
    prev = 0.0
    for t, e in enumerate(eta):
        alpha = e - prev
        mean, v = resshift_transition(mean, x0, y, alpha, kappa)
        var += v
        m_x, _ = resshift_transition(x, x0, y, alpha, kappa)
        x = m_x + math.sqrt(v) * torch.randn(n, generator=g, dtype=torch.float64)
        marginal_mean = resshift_marginal(x0, y, e, kappa, torch.zeros(1, dtype=torch.float64))
        assert torch.allclose(mean, marginal_mean, atol=1e-12) and math.isclose(var, kappa ** 2 * e, rel_tol=1e-12)
        se = math.sqrt(var / n)
        assert abs(float(x.mean()) - float(marginal_mean)) < 5 * se, t
        assert abs(float(x.var()) / (kappa ** 2 * e) - 1) < 0.02, t
        prev = e


@pytest.mark.parametrize("t, p", [(3, 2), (3, 0), (5, 1)])  # one step, and respaced jumps
def test_resshift_posterior_matches_gaussian_algebra(t, p):
    kappa = 1.5
    eta = (resshift_sqrt_etas(6, kappa=kappa).double() ** 2).tolist()
    gen = torch.Generator().manual_seed(1)
    x_t, x0, y = (torch.randn(4, generator=gen, dtype=torch.float64) for _ in range(3))
    mean, var = resshift_posterior(x_t, x0, eta[t], eta[p], kappa)
    ref_mean, ref_var = gaussian_product_posterior(x_t, x0, y, eta[t], kappa ** 2 * eta[t], eta[p], kappa ** 2 * eta[p])
    assert torch.allclose(mean, ref_mean, atol=1e-12) and math.isclose(var, ref_var, rel_tol=1e-12)
    shared_mean, shared_var = shift_posterior(x_t, x0, y, eta[t], kappa * math.sqrt(eta[t]), eta[p],
                                              kappa * math.sqrt(eta[p]))
    assert torch.allclose(shared_mean, ref_mean, atol=1e-12) and math.isclose(shared_var, ref_var, rel_tol=1e-12)


def test_the_eta_one_step_samples_the_posterior_and_eta_zero_is_deterministic():
    kappa, gen = 2.0, torch.Generator().manual_seed(2)
    eta_t, eta_p = 0.5, 0.1
    x_t, x0, y, z = (torch.randn(8, generator=gen, dtype=torch.float64) for _ in range(4))
    mean, var = resshift_posterior(x_t, x0, eta_t, eta_p, kappa)
    nu_t, nu_p = math.sqrt(eta_t), math.sqrt(eta_p)
    x_p, _ = shift_step(x_t, x0, y, eta_t, eta_p, nu_t, nu_p, kappa, 1.0, z)
    assert torch.allclose(x_p, mean + math.sqrt(var) * z, atol=1e-12)
    det, eps_hat = shift_step(x_t, x0, y, eta_t, eta_p, nu_t, nu_p, kappa, 0.0, z)
    # eta = 0 keeps the implied noise: x_p = x0 + eta_p e0 + kappa sqrt(eta_p) eps_hat
    assert torch.allclose(det, x0 + eta_p * (y - x0) + kappa * nu_p * eps_hat, atol=1e-12)
    assert torch.allclose(resshift_marginal(x0, y, eta_t, kappa, eps_hat), x_t, atol=1e-12)


def test_resshift_sampler_with_an_oracle_returns_x0_and_reports_every_step():
    x0, y = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    sq = resshift_sqrt_etas(4)
    x_T = resshift_prior(y, float(sq[-1]), 2.0, torch.randn(2, 3, 8, 8))
    infos = []
    out = resshift_sample(lambda x, t, c: x0, x_T, [3, 2, 1, 0], sqrt_etas=sq, kappa=2.0, y=y,
                          generator=torch.Generator().manual_seed(0), callback=infos.append)
    assert torch.allclose(out, x0)
    assert [i["i"] for i in infos] == [0, 1, 2, 3] and [i["t"] for i in infos] == [3, 2, 1, 0]
    assert infos[-1]["t_next"] == -1.0 and set(infos[0]) >= {"x_t", "x0", "eps", "x_next", "num_steps"}
    with pytest.raises(ConfigError):
        resshift_sample(lambda x, t, c: x0, x_T, [3, 3], sqrt_etas=sq, kappa=2.0, y=y)


# ---- InDI ---------------------------------------------------------------------------------------

def test_indi_one_step_from_t1_is_the_networks_estimate():
    y = torch.rand(1, 3, 8, 8)
    net = lambda x, t, c: 0.5 * x + t[:, None, None, None]  # noqa: E731
    out = indi_sample(net, y, indi_times(1), y=y)
    assert torch.equal(out, net(y, torch.ones(1), None))


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_indi_step_is_the_published_iteration(sigma):
    gen = torch.Generator().manual_seed(3)
    x_t, f, y = (torch.randn(2, 3, 4, 4, generator=gen) for _ in range(3))
    t, d = 0.75, 0.25
    x_p, _ = shift_step(x_t, f, y, t, t - d, t, t - d, sigma, 0.0, None)
    assert torch.allclose(x_p, (d / t) * f + (1 - d / t) * x_t, atol=1e-6)
    seen = []
    indi_sample(lambda x, tt, c: f, x_t, [1.0, 0.5], y=y, callback=seen.append)
    assert [s["t"] for s in seen] == [1.0, 0.5] and torch.allclose(seen[0]["x_next"], 0.5 * f + 0.5 * x_t)


def test_indi_path_and_noisy_posterior():
    x, y, eps = torch.zeros(3), torch.ones(3), torch.full((3,), 2.0)
    assert torch.allclose(indi_path(x, y, 0.25), torch.full((3,), 0.25))
    assert torch.allclose(indi_path(x, y, 0.25, sigma=0.1, eps=eps), torch.full((3,), 0.25 + 0.1 * 0.25 * 2))
    s_t, s_p, sigma = 0.8, 0.3, 0.2  # InDI with noise: s_t / n_t^2 is not constant, the posterior keeps a y term
    gen = torch.Generator().manual_seed(4)
    x_t, x0, yy = (torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(3))
    mean, var = shift_posterior(x_t, x0, yy, s_t, sigma * s_t, s_p, sigma * s_p)
    ref_mean, ref_var = gaussian_product_posterior(x_t, x0, yy, s_t, (sigma * s_t) ** 2, s_p, (sigma * s_p) ** 2)
    assert torch.allclose(mean, ref_mean, atol=1e-12) and math.isclose(var, ref_var, rel_tol=1e-12)



@pytest.mark.parametrize("endpoint_prob", [0.0, 0.25, 1.0])
def test_indi_loss_draws_t_uniformly_with_the_asked_share_at_t1(endpoint_prob):
    seen = []

    def net(x_t, t, c):
        seen.append(t.clone())
        return x_t

    x, y = torch.zeros(4000, 1, 1, 1), torch.ones(4000, 1, 1, 1)
    loss, _ = indi_loss(net, x, y, endpoint_prob=endpoint_prob, loss_type="l1",
                        generator=torch.Generator().manual_seed(0))
    t = seen[0]
    assert t.min() >= T_MIN and t.max() <= 1
    at_end = float((t == 1).float().mean())
    assert abs(at_end - endpoint_prob) < 0.03  # uniform draws hit 1.0 exactly with probability ~0
    assert math.isclose(float(loss), float(t.mean()), rel_tol=1e-5)  # x_t = t y with x = 0, y = 1
    rest = t[t < 1]
    if len(rest):
        assert abs(float(rest.mean()) - 0.5) < 0.03  # the others stay U(T_MIN, 1)
    with pytest.raises(ConfigError, match="endpoint_prob"):
        build_model("indi-nafnet-tiny", endpoint_prob=1.5)

# ---- the time-conditioned NAFNet initialised from the shipped default --------------------------

@pytest.fixture(scope="module")
def default_model():
    return load_model("default", device="cpu")


@pytest.mark.parametrize("name, steps, size", [
    ("indi-nafnet-small", 1, 64), ("resshift-nafnet-small", 1, 64), ("resshift-nafnet-small", 4, 64),
    ("resshift-nafnet-small-refine", 4, 64), ("indi-nafnet-small", 1, 416)])  # 416: TLC's local pools act
def test_init_from_default_equals_the_default_regression(default_model, name, steps, size):
    model = build_model(name)
    loaded, total = load_matching_weights(model, init_from_path("default"))
    nafnet_tensors = len(read_tensors(shipped_weights("default")))
    assert loaded == nafnet_tensors * (2 if name.endswith("refine") else 1)
    new = {k for k in model.state_dict() if ".time." in k or k.startswith("unet.time_mlp") or "extra_intro" in k}
    assert new == {k for k in model.state_dict() if k.startswith("unet.") and is_conditioning(k[len("unet."):])}
    assert len(new) == total - loaded  # only the new (time / x_t) tensors keep their initialisation
    blur, _ = example_pair(size, size, seed=1)
    x = to_tensor(blur)
    out = model.eval().restore(x, steps=steps, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, default_model.restore(x), atol=1e-5)


def test_init_from_default_in_a_shipped_config(tmp_path, default_model):
    data = make_paired_folder(tmp_path / "d", n=1, size=(32, 32))
    cfg = load_config("indi-nafnet-small", [f"data.train.0.root={data}", "data.val=''",
                                            f"train.out_dir={tmp_path / 'run'}"])
    assert cfg.train.init_from == "default"
    run = build_run(cfg, device="cpu")
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(run.model.restore(x, steps=1), default_model.restore(x), atol=1e-5)
    with pytest.raises(TrainingError, match="no shipped weights"):
        init_from_path("no-such-weights")


@pytest.mark.parametrize("name", ["indi-nafnet-small", "resshift-nafnet-small-refine"])
def test_a_frozen_trunk_trains_only_the_conditioning_and_keeps_the_default(default_model, name):
    model = build_model(name, freeze_trunk=True)
    load_matching_weights(model, init_from_path("default"))
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(is_conditioning(k[len("unet."):]) for k in trainable)
    assert any(k.startswith("unet.encoders.") and k.endswith(".time.weight") for k in trainable)
    trunk = {k: p.detach().clone() for k, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for i in range(3):
        blur, sharp = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
        loss, _ = default_objective(model)(model, {"blur": blur, "sharp": sharp}, torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(p, trunk[k]) for k, p in model.named_parameters() if k in trunk)
    assert any(model.state_dict()[k].abs().sum() > 0 for k in trainable if k.endswith(".time.weight"))


def test_time_nafnet_names_are_nafnets():
    model = build_model("indi-nafnet-small")
    plain = NAFNet(width=16, middle_blk_num=2, enc_blk_nums=(1, 1, 1, 2), dec_blk_nums=(1, 1, 1, 1)).state_dict()
    own = {k[len("unet."):]: v for k, v in model.state_dict().items()}
    assert all(k in own and own[k].shape == v.shape for k, v in plain.items())


# ---- registered models: objectives, options, trace, command line --------------------------------

@pytest.mark.parametrize("name", TINY + ("resshift-nafnet-small-refine",))
def test_objectives_run_and_are_finite(name):
    model = build_model(name).train()
    blur, sharp = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    loss, logs = default_objective(model)(model, {"blur": blur, "sharp": sharp}, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and logs
    loss.backward()
    assert any(p.grad is not None and torch.isfinite(p.grad).all() for p in model.unet.parameters())
    if model.__dict__.get("_modules", {}).get("predictor") is not None:
        assert all(p.grad is None for p in model.predictor.parameters())  # frozen


@pytest.mark.parametrize("name", TINY)
def test_restore_checks_its_options(name):
    model = build_model(name)
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ConfigError, match=r"unknown restore option 'stpes' \(allowed: .*steps"):
        model.restore(x, stpes=2)
    with pytest.raises(ConfigError, match="sampler 'sde' does not apply"):
        model.restore(x, sampler="sde")
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    a, b = model.restore(x, steps=3, generator=g()), model.restore(x, steps=3, generator=g())
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert model.restore(x, steps=2, sampler="ddim", eta=0.5, num_samples=2, generator=g()).shape == x.shape


def _overfit(name: str, steps: int, lr: float = 3e-3, **kwargs) -> tuple[float, float, float]:
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    blur, sharp = example_pair(32, 32, seed=3)
    batch = {"blur": to_tensor(blur), "sharp": to_tensor(sharp)}
    objective = default_objective(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        loss, _ = objective(model, batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = model.restore(batch["blur"], steps=4, generator=torch.Generator().manual_seed(1))
    restored = out[0].permute(1, 2, 0).numpy()
    return psnr(blur, sharp), psnr(restored, sharp), float(loss.detach())


@pytest.mark.parametrize("name", TINY)
def test_a_tiny_model_overfits_one_image_and_samples_it_back_in_4_steps(name):
    """200 Adam steps on one 32x32 pair (about 12 s on one core), then 4 sampling steps."""
    before, after, _ = _overfit(name, 200, lr=6e-3)
    assert after > before + 5.0, (before, after)


def test_trace_and_the_deblur_command_take_the_steps(tmp_path):
    model = build_model("resshift-nafnet-tiny")
    blur, sharp = example_pair(32, 32, seed=2)
    tr = record_trace(model, blur, sharp, steps=3, seed=0)
    assert len(tr.rows) == 3 and np.isfinite(tr.rows[-1]["psnr_x0"])
    ckpt = tmp_path / "indi.safetensors"
    save_model(build_model("indi-nafnet-tiny"), ckpt)
    write_image(tmp_path / "in.png", blur)
    assert main(["deblur", str(tmp_path / "in.png"), "--model", str(ckpt), "--steps", "4", "-o",
                 str(tmp_path / "out.png"), "--quiet"]) == 0
    assert (tmp_path / "out.png").is_file()
    assert main(["trace", str(tmp_path / "in.png"), "--model", str(ckpt), "--steps", "2", "--reference",
                 str(tmp_path / "in.png"), "-o", str(tmp_path / "trace")]) == 0


@pytest.mark.parametrize("name", TINY)
def test_the_tiny_configs_train_validate_and_load(tmp_path, name):
    from diffdeblur.train import train

    data = make_paired_folder(tmp_path / "d", n=2, size=(32, 32))
    cfg = load_config(name, [f"data.train.0.root={data}", f"data.val={data}", "data.batch_size=2", "data.crop=16",
                             "train.steps=2", "train.val_every=2", "train.threads=1",
                             f"train.out_dir={tmp_path / 'run'}"])
    assert train(cfg, device="cpu", show_progress=False)["steps"] == 2
    model = load_model(tmp_path / "run" / "final.safetensors", device="cpu")
    out = model.restore(torch.rand(1, 3, 16, 16), steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 16, 16)


# ---- the shipped few-step model ------------------------------------------------------------------

SHIPPED_CHAIN = "resshift-nafnet-small-refine"


def test_the_shipped_chain_loads_by_name_and_samples(default_model):
    """The shipped weights (benchmarks/cards/fewstep_model.py) load by the registered name, carry their card,
    and are a trained chain: unlike the untrained one initialised from the default (which ignores x_t, so
    every seed gives the default exactly), two seeds give different samples, their average moves back
    towards the regression estimate, and every sample stays close to it."""
    assert shipped_weights(SHIPPED_CHAIN) is not None
    model = load_model(SHIPPED_CHAIN, device="cpu")
    assert model.checkpoint_info["card"]["rows"] and model.default_steps == 4
    blur, _ = example_pair(96, 96, seed=5)
    x = to_tensor(blur)
    ref = default_model.restore(x)
    a, b = (model.restore(x, steps=4, generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    avg = model.restore(x, steps=4, num_samples=4, generator=torch.Generator().manual_seed(0))
    assert a.shape == x.shape and 0 <= float(a.min()) and float(a.max()) <= 1
    assert float((a - b).abs().max()) > 1e-3  # the trained network uses x_t
    assert psnr(avg, ref) > psnr(a, ref) > 30  # averaging moves towards the regression estimate


def test_the_shipped_indi_chain_keeps_the_defaults_trunk_and_moves_with_steps(default_model):
    """The shipped InDI chain (recipes/indi-nafnet-small.yaml, freeze_trunk) loads by name with its card; its
    NAFNet tensors are the default's (stored as float16), only the conditioning was trained; it is
    deterministic (sigma 0); one step stays near the default's estimate, more steps move away from it. It
    samples 2 steps by default (the study's lowest NIQE; packaged with --default-steps 2)."""
    assert shipped_weights("indi-nafnet-small") is not None
    model = load_model("indi-nafnet-small", device="cpu")
    assert model.checkpoint_info["card"]["rows"] and model.default_steps == 2 and not model.stochastic
    trunk = {k[len("unet."):]: v for k, v in model.state_dict().items() if not is_conditioning(k[len("unet."):])}
    ref_state = default_model.state_dict()
    assert set(trunk) == set(ref_state)
    assert all(torch.allclose(trunk[k], ref_state[k].half().float(), atol=1e-6) for k in trunk)
    assert any(v.abs().sum() > 0 for k, v in model.state_dict().items() if k.endswith(".time.weight"))
    blur, _ = example_pair(96, 96, seed=5)
    x = to_tensor(blur)
    ref = default_model.restore(x)
    one = model.restore(x, steps=1)
    four, again = (model.restore(x, steps=4, generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    assert torch.equal(four, again)
    assert psnr(one, ref) > 35 and psnr(four, ref) < psnr(one, ref)


def test_a_predictor_from_shipped_weights_stays_out_of_the_chains_files(tmp_path, default_model):
    model = build_model("resshift-nafnet-small-refine", predictor_weights="default")
    assert not any(k.startswith("predictor.") for k in model.state_dict())
    assert all(torch.equal(v, default_model.state_dict()[k]) for k, v in model.predictor.state_dict().items())
    save_model(model, tmp_path / "chain.safetensors")
    assert not any(k.startswith("predictor.") for k in read_tensors(tmp_path / "chain.safetensors"))
    again = load_model(tmp_path / "chain.safetensors", device="cpu")
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(again.restore(x, steps=2, generator=torch.Generator().manual_seed(0)),
                       model.eval().restore(x, steps=2, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ConfigError, match="no shipped weights named"):
        build_model("resshift-nafnet-small-refine", predictor_weights="no-such-weights")


def test_a_predictor_from_shipped_weights_is_built_as_they_were_trained(default_model):
    """Its TLC windows are the weights' own (the default was trained on 128 crops; nafnet-small's preset
    says 256): on an image above the windows the anchor must be the default's estimate exactly."""
    model = build_model("resshift-nafnet-small-refine", train_size=256, predictor_weights="default").eval()
    x = torch.rand(1, 3, 224, 224)  # larger than the default's first window (192), smaller than 384
    with torch.no_grad():
        assert torch.equal(model.predictor(x), default_model(x))
    with pytest.raises(ConfigError, match="holds a nafnet-small"):
        build_model("resshift-nafnet-small-refine", predictor="nafnet-tiny", predictor_weights="default")
