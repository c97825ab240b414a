"""Stripformer (models/stripformer.py): published size, any-size forward, BlurDM prior fusion, restore, training."""
import pytest
import torch
import torch.nn.functional as F
from conftest import active_fusions, fit_losses
from diffdeblur.errors import ConfigError
from diffdeblur.models.blocks import PriorFusion
from diffdeblur.models.stripformer import (PUBLISHED, SMALL, TINY, InterStripBlock, IntraStripBlock, StripBlock,
                                           Stripformer)

PAPER_PARAMS = 20e6  # Tsai et al., ECCV 2022, Table 1: "20M"
REFERENCE_PARAMS = 19_708_611  # pp00704831/Stripformer models/Stripformer.py, counted


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_published_parameter_count_matches_paper_and_reference():
    with torch.device("meta"):
        model = Stripformer(**PUBLISHED)
    assert n_params(model) == REFERENCE_PARAMS
    assert abs(n_params(model) - PAPER_PARAMS) / PAPER_PARAMS < 0.02
    assert len(model.blocks) == 12 and len(model.decoder_blocks) == 6
    assert [type(b) for b in model.blocks[:2]] == [IntraStripBlock, InterStripBlock]
    with torch.device("meta"):
        assert n_params(Stripformer(**SMALL)) < 1_000_000


def test_heads_must_divide_half_the_width():
    with pytest.raises(ConfigError, match="decoder_dim"):
        Stripformer(**{**TINY, "decoder_dim": 18, "decoder_heads": 2})


@pytest.mark.parametrize("shape", [(1, 3, 29, 37), (1, 3, 8, 8), (2, 3, 16, 40)])
def test_tiny_runs_at_any_size(shape):
    torch.manual_seed(0)
    model = Stripformer(**TINY).eval()
    x = torch.rand(*shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("kind, rows_only", [(IntraStripBlock, True), (InterStripBlock, False)])
def test_strip_attention_reach(kind, rows_only):
    """Changing row 0: the horizontal half of intra-strip attention changes in row 0 only (a row attends
    within itself); inter-strip attention lets every row see it."""
    torch.manual_seed(0)
    block = kind(16, 2)
    x = torch.randn(1, 16, 6, 7)
    x2 = x.clone()
    x2[:, :, 0] += 1
    with torch.no_grad():
        diff = (block.attention(x2) - block.attention(x))[:, :8].abs().amax(dim=(0, 1, 3))  # per row
    assert diff[0] > 1e-3
    assert (diff[1:].max() < 1e-6) if rows_only else (diff[1:].min() > 1e-6)


def test_prior_fusion_in_every_attention_block():
    torch.manual_seed(0)
    model = active_fusions(Stripformer(**TINY, prior_dim=6).eval())
    blocks = [m for m in model.modules() if isinstance(m, StripBlock)]
    assert sum(isinstance(m, PriorFusion) for m in model.modules()) == len(blocks) == 4
    with torch.device("meta"):
        published = Stripformer(**PUBLISHED, prior_dim=256)
    assert sum(isinstance(m, PriorFusion) for m in published.modules()) == 18
    x = torch.rand(2, 3, 24, 16)
    with torch.no_grad():
        plain = model(x)
        assert torch.equal(model(x, torch.zeros(2, 6)), plain)
        assert (model(x, torch.randn(2, 6)) - plain).abs().max() > 1e-4
    assert Stripformer(**TINY).prior_dim == 0


def test_restore_clamps_and_rejects_unknown_options():
    torch.manual_seed(0)
    model = Stripformer(**TINY).eval()
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        raw = model(torch.ones_like(x))
        out = model.restore(x)
    assert raw.max() > 1  # the residual pushes a white image out of range: the clamp is needed
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ConfigError):
        model.restore(x, strength=2)


def test_few_adam_steps_reduce_l1():
    torch.manual_seed(0)
    model = Stripformer(**TINY)
    sharp = F.interpolate(torch.rand(2, 3, 4, 4), size=(16, 16), mode="bilinear", align_corners=False)
    blur = F.avg_pool2d(F.pad(sharp, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    losses = fit_losses(model, blur, sharp, lr=2e-3)
    assert losses[-1] < 0.6 * losses[0]
