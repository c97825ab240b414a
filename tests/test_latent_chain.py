"""The latent chain from a regression estimate (methods/latent_chain.py): untrained it is the predictor exactly,
any size runs, training reaches the chain and the head but never the frozen parts."""
from __future__ import annotations

import pytest
import torch

from diffdeblur.objectives import default_objective
from diffdeblur.registry import build_model


def _smooth(h: int, w: int, seed: int = 0) -> torch.Tensor:
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect"), 5, 1)


def _active_predictor(m):
    with torch.no_grad():  # a random predictor whose output differs from its input
        for p in m.predictor.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return m


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_untrained_chain_returns_the_predictors_estimate_exactly(sampler):
    m = _active_predictor(build_model("latent-shift-tiny")).eval()
    x = _smooth(32, 48)
    with torch.no_grad():
        estimate = m.predictor(x).clamp(0, 1)
        out = m.restore(x, sampler=sampler, steps=3, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(estimate, x) and torch.equal(out, estimate)


def test_any_size_and_steps():
    m = build_model("latent-shift-tiny").eval()
    for h, w in ((13, 29), (40, 24), (8, 8)):
        assert m.restore(torch.rand(1, 3, h, w), steps=2).shape == (1, 3, h, w)
    infos = []
    m.restore(torch.rand(1, 3, 16, 16), callback=infos.append)
    assert [i["i"] for i in infos] == [0, 1, 2, 3] and infos[0]["x0_image"].shape == (1, 3, 16, 16)


def test_training_moves_the_chain_and_the_head_only():
    m = _active_predictor(build_model("latent-shift-tiny"))
    m.train()
    frozen = {k: v.clone() for k, v in m.state_dict().items() if k.startswith(("predictor.", "autoencoder."))}
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    objective = default_objective(m)
    g = torch.Generator().manual_seed(0)
    sharp = _smooth(32, 32, 3)
    batch = {"blur": torch.nn.functional.avg_pool2d(sharp, 3, 1, 1), "sharp": sharp}
    for _ in range(3):
        loss, logs = objective(m, batch, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(logs) == {"resshift", "head"}
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in frozen.items())
    assert m.unet.final[-1].weight.abs().sum() > 0 and m.head.body[-1].weight.abs().sum() > 0
    assert not m.predictor.training and not m.autoencoder.training


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_tiled_restore_matches_the_whole_image(sampler):
    """Tiles share one latent noise field (ddpm draws noise at every step) and grow by the tile context, so a
    chain whose UNet and head are active gives the whole image's output up to the latent UNet's reach beyond
    the context: > 60 dB here (a seam from mismatched noise would cost tens of dB)."""
    from diffdeblur.inference import restore_tensor

    m = _active_predictor(build_model("latent-shift-tiny")).eval()
    with torch.no_grad():
        for p in list(m.unet.parameters()) + list(m.head.parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel() + 1)))
    x = _smooth(520, 600, 4)
    whole = restore_tensor(m, x, tile=0, steps=4, sampler=sampler, seed=0)
    tiled = restore_tensor(m, x, tile=96, overlap=16, steps=4, sampler=sampler, seed=0)
    assert not torch.equal(whole, m.predictor(x).clamp(0, 1))  # the chain and the head change the estimate
    mse = float(((tiled - whole) ** 2).mean())
    assert 0 < mse and -10 * torch.log10(torch.tensor(mse)) > 60
