import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import fit_losses
from diffdeblur.errors import ConfigError
from diffdeblur.models.fftformer import PUBLISHED, TINY, FFTformer

PAPER_PARAMS_M = 16.6  # Kong et al., CVPR 2023 (GoPro results table)


def tiny(**kwargs) -> FFTformer:
    torch.manual_seed(0)
    return FFTformer(**TINY, **kwargs)


def test_published_parameter_count_matches_paper():
    with torch.device("meta"):
        model = FFTformer(**PUBLISHED)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - PAPER_PARAMS_M) / PAPER_PARAMS_M < 0.02


@pytest.mark.parametrize("size", [(29, 37), (8, 8), (64, 32)])
def test_any_size(size):
    model = tiny().eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_channels_last_copy_gives_the_same_output():
    """The channels-last engines convert a copy with ``.to(memory_format=torch.channels_last)``."""
    model = tiny().eval()
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x.contiguous(memory_format=torch.channels_last)), model(x))


def test_num_blocks_needs_three_levels():
    with pytest.raises(ConfigError, match="num_blocks"):
        FFTformer(dim=8, num_blocks=(1, 1))


def test_prior_fusion_zero_is_identity_random_is_not():
    model = tiny(prior_dim=4).eval()
    for p in model.fusions.parameters():  # Linear init is small: make the random-prior difference clear
        torch.nn.init.normal_(p, std=0.5)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        zero = model(x, torch.zeros(2, 4))
        rand = model(x, torch.randn(2, 4))
    torch.testing.assert_close(zero, plain)
    assert (rand - plain).abs().max() > 1e-3
    assert model.prior_dim == 4 and tiny().fusions is None


def test_restore_range_and_unknown_option():
    model = tiny().eval()
    x = torch.rand(1, 3, 24, 40) * 1.2 - 0.1  # leave [0, 1] so that the clamp matters
    with torch.no_grad():
        y = model.restore(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    with pytest.raises(ConfigError, match="stpes"):
        model.restore(x, stpes=3)


def test_overfits_a_fixed_batch():
    model = tiny()
    torch.manual_seed(1)
    sharp = F.interpolate(torch.rand(2, 3, 8, 8), size=32, mode="bilinear", align_corners=False)
    blur = F.avg_pool2d(sharp, 5, stride=1, padding=2, count_include_pad=False)
    losses = fit_losses(model, blur, sharp, lr=1e-3)
    assert losses[-1] < 0.5 * losses[0]
