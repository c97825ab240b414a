"""The default model's recipe: the recipe file validates, blur-focused crops, the FFT-augmented losses."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffdeblur.config import load_config
from diffdeblur.data.datasets import PairedSource, blur_focused_box
from diffdeblur.io import write_image
from diffdeblur.losses import charbonnier
from diffdeblur.objectives import get_objective

ROOT = Path(__file__).resolve().parents[1]


def test_default_recipe_validates():
    cfg = load_config(ROOT / "recipes" / "default-nafnet-small.yaml")
    assert cfg.model_name == "nafnet-small"
    assert cfg.data.val  # validated on a held-out folder
    assert cfg.train.steps > 0


def test_blur_focused_box_finds_the_blurred_region(rng):
    sharp = np.zeros((64, 256, 3), np.uint8)
    blur = sharp.copy()
    blur[:, 200:] = 255  # only the right edge differs
    hits = [blur_focused_box(rng, blur, sharp, 32, 16)[1] + 32 > 200 for _ in range(50)]
    uniform = [int(rng.integers(0, 256 - 32 + 1)) + 32 > 200 for _ in range(50)]
    assert np.mean(hits) > 0.9 > np.mean(uniform) + 0.4


def test_paired_source_focus_share(tmp_path: Path):
    for sub in ("blur", "sharp"):
        (tmp_path / sub).mkdir()
    sharp = np.full((64, 256, 3), 0.5, np.float32)
    blur = sharp.copy()
    blur[:, :40] = 1.0
    write_image(tmp_path / "blur" / "a.png", blur)
    write_image(tmp_path / "sharp" / "a.png", sharp)

    def degraded_share(focus: float) -> float:
        src = PairedSource(str(tmp_path), focus=focus)
        rngs = [np.random.default_rng([1, i]) for i in range(60)]
        return float(np.mean([np.abs(s["blur"] - s["sharp"]).mean() > 0
                              for s in (src.sample(r, 32) for r in rngs)]))

    assert degraded_share(1.0) > degraded_share(0.0) + 0.3
    # deterministic given the generator
    a = PairedSource(str(tmp_path), focus=0.5).sample(np.random.default_rng(7), 32)
    b = PairedSource(str(tmp_path), focus=0.5).sample(np.random.default_rng(7), 32)
    assert np.array_equal(a["blur"], b["blur"])


def test_fft_losses_add_the_frequency_term():
    torch.manual_seed(0)
    sharp = torch.rand(2, 3, 16, 16)
    blur = (sharp + 0.1 * torch.randn_like(sharp)).clamp(0, 1)
    identity = torch.nn.Identity()
    batch = {"blur": blur, "sharp": sharp}
    plain, _ = get_objective("charbonnier")(identity, batch, None)
    with_fft, _ = get_objective("charbonnier-fft")(identity, batch, None)
    assert torch.isclose(plain, charbonnier(blur, sharp))
    assert with_fft > plain
    perfect, _ = get_objective("l1-fft")(identity, {"blur": sharp, "sharp": sharp}, None)
    assert float(perfect) < 1e-6


REDS_VAL = ROOT.parent / "shared" / "data" / "reds_sample" / "val"


@pytest.mark.skipif(not REDS_VAL.is_dir(), reason="needs ../shared/data/reds_sample/val (real blur pairs)")
def test_shipped_default_deblurs_real_blur_of_an_unseen_scene():
    """The packaged default gains clearly on real blur it never trained on (REDS val is held out)."""
    from diffdeblur.data.pairs import find_pairs
    from diffdeblur.inference import load_model, restore_tensor
    from diffdeblur.io import read_image, to_numpy, to_tensor
    from diffdeblur.metrics import psnr

    model = load_model()
    gains = []
    for pair in find_pairs(REDS_VAL)[0][:2]:
        blur, sharp = (read_image(p)[0][232:488, 512:768] for p in (pair.blur, pair.sharp))  # centre 256² crop
        out = to_numpy(restore_tensor(model, to_tensor(blur)))
        gains.append(psnr(out, sharp) - psnr(blur, sharp))
    assert min(gains) > 0.5, gains
