"""LoFormer (models/loformer.py): published size, any-size forward, prior fusion, restore, DCT, training."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import active_fusions, fit_losses
from diffdeblur.errors import ConfigError
from diffdeblur.models.loformer import PUBLISHED, TINY, FreqLC, LoFormer, dct2, dct_matrix, idct2

# LoFormer-S (the size BlurDM's code builds): 16.4 M parameters in the LoFormer paper's Table 1, a figure
# recalled rather than read (the table was not reachable here; see the module docstring)
PAPER_PARAMS = 16.4e6


def tiny(**kwargs) -> LoFormer:
    torch.manual_seed(0)
    return LoFormer(**TINY, **kwargs)


def test_published_parameter_count_matches_the_paper_and_is_the_default():
    with torch.device("meta"):
        model = LoFormer(**PUBLISHED)
        default = LoFormer()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(PAPER_PARAMS, rel=0.02)
    assert default.hparams == model.hparams


@pytest.mark.parametrize("size", [(29, 37), (8, 8)])
def test_any_size_keeps_shape_and_is_finite(size):
    model = tiny().eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_zero_prior_is_the_plain_network_and_a_prior_changes_the_output():
    plain, fused = tiny().eval(), active_fusions(tiny(prior_dim=6).eval())
    fused.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        base = plain(x)
        assert torch.equal(fused(x), base)
        assert torch.equal(fused(x, torch.zeros(2, 6)), base)
        assert (fused(x, torch.randn(2, 6)) - base).abs().max() > 1e-3


def test_restore_is_clamped_and_rejects_unknown_options():
    model = tiny().eval()
    with torch.no_grad():
        model.output.bias.fill_(0.8)  # pushes the residual output above 1 for bright pixels
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert model(x).max() > 1
        out = model.restore(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ConfigError, match="stpes"):
        model.restore(x, stpes=2)


@pytest.mark.parametrize("n", [1, 7, 8, 64, 257])
def test_dct_matrix_is_orthonormal_dct_ii(n):
    scipy_fft = pytest.importorskip("scipy.fft")
    d = dct_matrix(n).double()
    assert torch.allclose(d @ d.T, torch.eye(n, dtype=torch.float64), atol=1e-5)
    reference = torch.from_numpy(scipy_fft.dct(torch.eye(n).numpy().astype("float64"), axis=0, norm="ortho"))
    assert torch.allclose(d, reference, atol=1e-5)


def test_idct_inverts_dct_on_feature_maps():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 13, 40)
    z = dct2(x)
    assert torch.allclose(z.pow(2).sum(), x.pow(2).sum(), rtol=1e-5)  # orthonormal: energy is kept
    assert torch.allclose(idct2(z), x, atol=1e-5)


def test_window_attention_matches_a_per_window_loop():
    torch.manual_seed(0)
    attn = FreqLC(dim=8, heads=2, window=4, bias=True).eval()
    x = torch.randn(1, 8, 8, 12)
    qkv = attn.qkv_dwconv(attn.qkv(x))
    out = torch.empty_like(x)
    for i in range(0, 8, 4):
        for j in range(0, 12, 4):
            q, k, v = qkv[0, :, i:i + 4, j:j + 4].reshape(3, 2, 4, 16)  # (q/k/v, head, c, positions)
            a = (q @ k.transpose(-2, -1) * attn.temperature).softmax(-1)
            out[0, :, i:i + 4, j:j + 4] = ((a @ v) * attn.gate(v)).reshape(8, 4, 4)
    with torch.no_grad():
        assert torch.allclose(attn(x), attn.project_out(out), atol=1e-5)


def test_a_few_adam_steps_reduce_l1_on_a_fixed_batch():
    model = tiny()
    torch.manual_seed(1)
    sharp = torch.rand(2, 3, 16, 16)
    blur = F.avg_pool2d(F.pad(sharp, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    losses = fit_losses(model, blur, sharp, lr=2e-3)
    assert losses[-1] < 0.8 * losses[0]
