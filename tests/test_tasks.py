"""Tasks whose output is not the input's shape, through the tiled path: a super-resolution restorer
(``scale``) and a mask-conditioned one (``extra_inputs``), with tiny test-only networks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from diffdeblur.errors import ConfigError, ImageError
from diffdeblur.inference import restore_tensor, tile_context
from diffdeblur.models.protocol import restore_options
from diffdeblur.tiling import tiled_apply


class Upscale2(nn.Module):
    """conv 3x3 -> ReLU -> conv 3x3 -> PixelShuffle(2): an output pixel depends on input pixels at most
    2 away (two 3x3 convs), its declared tile context. restore: (B, 3, H, W) -> (B, 3, 2H, 2W) in (0, 1)."""

    scale = 2
    tile_context = 2

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1),
                                  nn.PixelShuffle(2))

    @restore_options
    def restore(self, blur: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(blur))


class Upscale2NoContext(Upscale2):
    tile_context = 0


class MaskedFill(nn.Module):
    """output = mask * net(x) + (1 - mask) * x with mask in {0, 1}: pixels outside the mask come out
    bit-exact (0 * net + 1 * x). net is two 3x3 convs (tile context 2)."""

    extra_inputs = ("mask",)
    tile_context = 2

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    @restore_options
    def restore(self, blur: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones_like(blur[:, :1])
        return mask * torch.sigmoid(self.net(blur)) + (1 - mask) * blur


@pytest.mark.parametrize("size", [(37, 53), (50, 41), (64, 64)])
@pytest.mark.parametrize("tile, overlap", [(16, 4), (24, 8), (33, 0), (20, 9)])
def test_a_scale_2_network_run_tiled_equals_the_whole_image(size, tile, overlap):
    model = Upscale2().eval()
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(2))
    whole = restore_tensor(model, x, tile=0, engine="eager")
    tiled = restore_tensor(model, x, tile=tile, overlap=overlap, engine="eager")
    assert whole.shape == tiled.shape == (1, 3, 2 * size[0], 2 * size[1])
    assert float((tiled - whole).abs().max()) < 1e-5


def test_without_its_context_margin_the_scale_2_network_shows_seams():
    """The margin is what makes the tiles exact: with none the tile borders differ (a check on the test)."""
    x = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(2))
    whole = restore_tensor(Upscale2().eval(), x, tile=0, engine="eager")
    assert float((restore_tensor(Upscale2NoContext().eval(), x, tile=16, overlap=4) - whole).abs().max()) > 1e-3


def test_tiled_apply_maps_input_boxes_to_output_boxes_scale_times_larger():
    x = torch.rand(1, 2, 21, 30)
    boxes = []

    def nearest(t: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        boxes.append(box)
        return t.repeat_interleave(3, dim=-2).repeat_interleave(3, dim=-1)

    out = tiled_apply(nearest, x, tile=8, overlap=2, scale=3, context=2)
    assert torch.equal(out, x.repeat_interleave(3, dim=-2).repeat_interleave(3, dim=-1))
    assert (0, 10, 0, 10) in boxes and all(0 <= y0 < y1 <= 21 and 0 <= x0 < x1 <= 30 for y0, y1, x0, x1 in boxes)
    with pytest.raises(ConfigError, match="scale 2"):
        tiled_apply(lambda t, box: t, x, tile=8, overlap=2, scale=2)  # a model that does not upscale


def test_a_scale_model_smaller_than_its_size_multiple_is_padded_and_cropped_on_the_output_grid():
    model = Upscale2().eval()
    model.size_multiple = 8
    assert restore_tensor(model, torch.rand(1, 3, 5, 7), engine="eager").shape == (1, 3, 10, 14)


def random_mask(h: int, w: int, seed: int) -> torch.Tensor:
    """(1, 1, h, w) in {0, 1}: a few rectangles (pixels inside tile overlaps included)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, 1, h, w)
    for _ in range(4):
        y, x = int(torch.randint(0, h - 8, (1,), generator=g)), int(torch.randint(0, w - 8, (1,), generator=g))
        mask[..., y:y + 9, x:x + 13] = 1.0
    return mask


@pytest.mark.parametrize("tile, overlap", [(0, 32), (16, 4), (24, 8), (20, 9)])
def test_a_mask_conditioned_network_keeps_unmasked_pixels_bit_exact_when_tiled(tile, overlap):
    model = MaskedFill().eval()
    x = torch.rand(1, 3, 45, 61, generator=torch.Generator().manual_seed(3))
    mask = random_mask(45, 61, seed=4)
    whole = restore_tensor(model, x, tile=0, mask=mask, engine="eager")
    out = restore_tensor(model, x, tile=tile, overlap=overlap, mask=mask, engine="eager")
    keep = (mask == 0).expand_as(x)
    assert 0 < int(keep.sum()) < keep.numel()
    assert torch.equal(out[keep], x[keep])  # untouched, bit for bit (overlaps of tiles included)
    assert float((out[~keep] - whole[~keep]).abs().max()) < 1e-5
    assert float((out[~keep] - x[~keep]).abs().max()) > 1e-2  # the masked pixels really are changed


def test_the_mask_tile_reaches_restore_sliced_with_the_image_tile():
    seen = []

    class Recording(MaskedFill):
        @restore_options
        def restore(self, blur: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            seen.append((tuple(blur.shape[-2:]), tuple(mask.shape[-2:])))
            return MaskedFill.restore(self, blur, mask=mask)

    x = torch.rand(1, 3, 40, 50)
    restore_tensor(Recording().eval(), x, tile=16, overlap=4, mask=random_mask(40, 50, seed=5), engine="eager")
    assert len(seen) > 1 and all(image == mask for image, mask in seen)


def test_a_mask_of_another_size_is_a_one_line_image_error():
    x = torch.rand(1, 3, 32, 48)
    for bad in (torch.zeros(1, 1, 30, 48), torch.zeros(1, 1, 48, 32)):
        with pytest.raises(ImageError, match="mask is") as info:
            restore_tensor(MaskedFill().eval(), x, tile=16, overlap=4, mask=bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ImageError, match=r"mask must be a \(1, K, H, W\) tensor") as info:
        restore_tensor(MaskedFill().eval(), x, mask=torch.zeros(32, 48))
    assert "\n" not in str(info.value)


def test_a_mask_for_a_model_without_extra_inputs_is_a_one_line_config_error():
    class Undeclared(nn.Module):  # a restorer whose options are not declared with @restore_options
        def restore(self, blur: torch.Tensor, **options) -> torch.Tensor:
            return blur

    x = torch.rand(1, 3, 32, 48)
    for model in (Upscale2().eval(), Undeclared()):
        with pytest.raises(ConfigError, match="per-pixel input 'mask'") as info:
            restore_tensor(model, x, mask=torch.zeros(1, 1, 32, 48))
        assert "\n" not in str(info.value) and "extra_inputs: none" in str(info.value)


def test_tile_context_is_read_from_the_model_or_the_network_it_wraps():
    from diffdeblur import build_model
    from diffdeblur.models.nafnet import NAFNet

    class Wrapper(nn.Module):
        def __init__(self, name: str, net: nn.Module) -> None:
            super().__init__()
            setattr(self, name, net)

    net = NAFNet(width=8, middle_blk_num=1, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1), train_size=128)
    assert net.tile_context == 80  # 5/12 of the 192-pixel TLC window, a multiple of size_multiple
    assert NAFNet(width=8, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1), tlc=False).tile_context == 0
    for name in ("unet", "backbone", "predictor"):
        assert tile_context(Wrapper(name, net)) == 80
    assert tile_context(Wrapper("other", net)) == 0 and tile_context(Upscale2()) == 2
    assert tile_context(build_model("mimo-unet-tiny")) == 0
