import pytest
import torch
from conftest import active_fusions

from diffdeblur import build_model
from diffdeblur.models.nafnet import NAFNet, local_avg_pool
from diffdeblur.registry import get_entry, list_models
from diffdeblur.objectives import default_objective_name, objective_names

# Published / recomputed parameter counts (design notes: NAFNet 17.1 M / 67.9 M, MIMO-UNet 6.8 M / 16.1 M)
PUBLISHED_PARAMS_M = {"nafnet-width32": 17.1, "nafnet-width64": 67.9, "mimo-unet": 6.8, "mimo-unet-plus": 16.1}


@pytest.mark.parametrize("name,expected", sorted(PUBLISHED_PARAMS_M.items()))
def test_parameter_counts_match_papers(name, expected):
    model = build_model(name)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - expected) < 0.05


@pytest.mark.parametrize("name", ["nafnet-tiny", "mimo-unet-tiny", "nafnet-small"])
def test_any_size_forward(name):
    model = build_model(name).eval()
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        y = model.restore(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert model.size_multiple >= 1 and default_objective_name(model) in objective_names()


def test_mimo_multiscale_outputs():
    model = build_model("mimo-unet-tiny")
    outs = model.forward_multiscale(torch.rand(2, 3, 32, 48))
    assert [tuple(o.shape[-2:]) for o in outs] == [(8, 12), (16, 24), (32, 48)]


def test_every_registered_model_has_the_protocol():
    for entry in list_models():
        assert entry.kind and entry.description, entry.name
        assert callable(getattr(entry.builder, "restore", None)), entry.name
        if "tiny" in entry.name:  # building the big presets is slow; the tiny ones share their classes
            model = build_model(entry.name)
            assert isinstance(model.size_multiple, int) and default_objective_name(model) in objective_names(), entry.name


def test_unknown_model_lists_known_names():
    with pytest.raises(KeyError, match="nafnet-tiny"):
        get_entry("no-such-model")


def test_local_avg_pool_matches_direct_mean():
    x = torch.randn(1, 2, 20, 24)
    out = local_avg_pool(x, 5, 7)
    # interior pixel (10, 12): window rows 8..12, cols 9..15 (centred, even sizes lean left)
    assert torch.allclose(out[0, :, 10, 12], x[0, :, 8:13, 9:16].mean(dim=(1, 2)), atol=1e-5)
    assert torch.allclose(local_avg_pool(x, 40, 40), x.mean(dim=(2, 3), keepdim=True).expand_as(x))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shape, window", [((2, 3, 37, 70), (9, 33)), ((1, 4, 40, 64), (40, 1))])
def test_local_avg_pool_matches_every_window_mean_in_both_layouts(layout, shape, window):
    """The eager box sums (running rows; blocked columns on NHWC maps, W = 70 not a multiple of the block)
    against a direct mean per pixel in float64; the map keeps the input's memory format."""
    torch.manual_seed(0)
    x = (torch.randn(shape) + 5).contiguous(memory_format=layout)
    kh, kw = window
    out = local_avg_pool(x, kh, kw)
    h, w = shape[2:]
    ref = torch.empty(shape, dtype=torch.float64)
    for i in range(h):
        for j in range(w):  # the window around (i, j), centred as the padding, clamped inside the map
            top = min(max(i - (kh - 1) // 2, 0), h - kh)
            left = min(max(j - (kw - 1) // 2, 0), w - kw)
            ref[:, :, i, j] = x.double()[:, :, top:top + kh, left:left + kw].mean(dim=(2, 3))
    assert float((out.double() - ref).abs().max()) < 1e-5
    assert out.is_contiguous(memory_format=layout)


def test_tlc_only_changes_large_inputs_in_eval():
    torch.manual_seed(0)
    kw = dict(width=8, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1), train_size=32)
    a, b = NAFNet(tlc=True, **kw), NAFNet(tlc=False, **kw)
    for p in a.parameters():
        torch.nn.init.normal_(p, std=0.2)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    small, big = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(a(small), b(small), atol=1e-5)  # window 48 covers a 32 crop: global pool
        assert not torch.allclose(a(big), b(big), atol=1e-3)


def test_prior_fusion_neutral_prior_is_identity():
    torch.manual_seed(0)
    plain = build_model("nafnet-tiny")
    fused = build_model("nafnet-tiny", prior_dim=16)
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.1)
    fused.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        # the fusions start at zero: the fused network given plain weights is the plain one, whatever the prior
        assert torch.equal(plain(x), fused(x, torch.randn(2, 16)))
        active_fusions(fused)
        assert torch.allclose(plain(x), fused(x, torch.zeros(2, 16)), atol=1e-6)
        assert not torch.allclose(plain(x), fused(x, torch.randn(2, 16)), atol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_layernorm2d_is_layer_norm_over_channels_in_both_memory_formats(channels_last):
    from diffdeblur.models.blocks import LayerNorm2d

    torch.manual_seed(0)
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    ref = torch.nn.functional.layer_norm(x.detach().permute(0, 2, 3, 1), (6,), norm.weight, norm.bias,
                                         1e-6).permute(0, 3, 1, 2)
    y = norm(x)
    assert torch.allclose(y, ref, atol=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    y.square().sum().backward()  # both paths train
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
