import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from diffdeblur import build_model, restore_tensor
from diffdeblur.metrics import psnr, ssim
from diffdeblur.errors import ConfigError
from diffdeblur.tiling import AUTO_TILE, check_tile, resolve_tile, tile_starts, tiled_apply


@pytest.mark.parametrize("size,tile,overlap", [(100, 32, 8), (64, 64, 8), (65, 64, 16), (1000, 256, 32)])
def test_tile_starts_cover(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s:s + tile] = True
    assert covered.all() and starts[0] == 0 and starts[-1] + min(tile, size) == size


def test_tiled_identity_is_exact():
    x = torch.rand(1, 3, 70, 90)
    y = tiled_apply(lambda t, box: t * 2, x, tile=32, overlap=8)
    assert torch.allclose(y, x * 2, atol=1e-6)


def test_auto_tile_runs_frames_up_to_a_megapixel_whole():
    assert resolve_tile("auto", 720, 1280) == 0 and resolve_tile("auto", 1024, 1024) == 0
    assert resolve_tile("auto", 1080, 1920) == AUTO_TILE and resolve_tile("auto", 4000, 6000) == AUTO_TILE
    assert resolve_tile(96, 720, 1280) == 96 and resolve_tile(0, 4000, 6000) == 0
    check_tile("auto", 32)
    with pytest.raises(ConfigError, match="'auto'"):
        check_tile("big", 32)
    calls = []
    model = build_model("mimo-unet-tiny").eval()
    fn = model.forward
    model.forward = lambda x, *a, **kw: calls.append(tuple(x.shape[-2:])) or fn(x, *a, **kw)
    restore_tensor(model, torch.rand(1, 3, 40, 56), tile="auto")
    assert calls == [(40, 56)]  # one whole-image call


def test_tiled_matches_untiled_on_1mp_image():
    """Tiled and untiled restoration of a ~1-megapixel image agree to >= 50 dB PSNR."""
    torch.manual_seed(0)
    model = build_model("mimo-unet-tiny").eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 1000, 1000, generator=g), 5, 1, 2)
    full = restore_tensor(model, x, tile=0)
    tiled = restore_tensor(model, x, tile=384, overlap=96)
    assert psnr(tiled, full) >= 50.0


def test_psnr_and_ssim_match_scikit_image(rng):
    a = rng.random((40, 50, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
    a8, b8 = np.round(a * 255).astype(np.uint8), np.round(b * 255).astype(np.uint8)
    assert psnr(b, a) == pytest.approx(peak_signal_noise_ratio(a8, b8, data_range=255), abs=1e-9)
    ref = structural_similarity(a8, b8, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=255, channel_axis=2)
    assert ssim(b, a) == pytest.approx(ref, abs=1e-6)
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
