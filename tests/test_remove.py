"""Object removal: the mask-conditioned network and its chain (unmasked pixels bit-exact, whole and tiled; the
untrained chain is the regression), the masks and the ``inpaint`` source, removal pairs on disk and their
evaluation, and a few training steps through ``diffdeblur.train.train``."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from diffdeblur.config import config_from_dict
from diffdeblur.data.datasets import build_train_dataset
from diffdeblur.data.masks import (InpaintSource, blob_silhouette, object_mask, photo_silhouette, random_mask,
                                   read_companion, write_removal_pairs)
from diffdeblur.data.sr_pairs import bsds_holdout
from diffdeblur.errors import ConfigError, OutputError
from diffdeblur.evaluate import count_macs, evaluate
from diffdeblur.example import example_pair
from diffdeblur.inference import restore_tensor
from diffdeblur.io import read_image, write_image
from diffdeblur.objectives import get_objective
from diffdeblur.registry import build_model
from diffdeblur.train_setup import load_matching_weights


def perturbed(name: str, seed: int = 0) -> torch.nn.Module:
    """A registered model with every weight moved off its initialisation (untrained gates would hide the blocks)."""
    torch.manual_seed(seed)
    model = build_model(name).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def holes(h: int, w: int, seed: int) -> torch.Tensor:
    """(1, 1, h, w) in {0, 1}: a random mask of 10-25 % (tile borders crossed)."""
    return torch.from_numpy(random_mask(h, w, np.random.default_rng(seed), (0.10, 0.25)).astype(np.float32))[None, None]


def photos(folder: Path, n: int = 4, size: tuple[int, int] = (48, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_image(folder / f"{i:03d}.png", example_pair(*size, seed=i)[1])
    return folder


# ---- the networks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["remove-tiny", "remove-chain-tiny"])
@pytest.mark.parametrize("size", [(37, 53), (45, 61)])
@pytest.mark.parametrize("tile, overlap", [(0, 0), (16, 4), (24, 9)])
def test_unmasked_pixels_are_the_input_bit_for_bit_whole_and_tiled(name, size, tile, overlap):
    model = perturbed(name)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    mask = holes(*size, seed=2)
    options = {"steps": 2} if name.startswith("remove-chain") else {}
    out = restore_tensor(model, x, tile=tile, overlap=overlap, mask=mask, engine="eager", **options)
    keep = (mask == 0).expand_as(x)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out[keep], x[keep])
    assert float((out[~keep] - x[~keep]).abs().max()) > 1e-2  # the hole is really filled


def test_the_fill_ignores_what_lies_under_the_mask():
    model = perturbed("remove-tiny")
    x = torch.rand(1, 3, 29, 31)
    mask = holes(29, 31, seed=3)
    other = torch.where(mask > 0, torch.rand_like(x), x)
    assert torch.equal(model.restore(x, mask=mask), model.restore(other, mask=mask))


@pytest.mark.parametrize("name", ["remove-tiny", "remove-chain-tiny"])
def test_restore_without_a_mask_is_a_one_line_config_error(name):
    model = build_model(name).eval()
    x = torch.rand(1, 3, 24, 24)
    for call in (lambda: model.restore(x), lambda: restore_tensor(model, x, engine="eager")):
        with pytest.raises(ConfigError, match="a mask is required") as info:
            call()
        assert "\n" not in str(info.value)


def test_the_untrained_chain_is_the_regression_exactly(tmp_path):
    from diffdeblur.checkpoint import save_model
    from diffdeblur.inference import load_model

    chain = build_model("remove-chain-tiny").eval()
    with torch.no_grad():
        for p in chain.predictor.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(1, 3, 37, 45, generator=torch.Generator().manual_seed(4))
    mask = holes(37, 45, seed=5)
    reference = chain.predictor.restore(x, mask=mask)
    for steps in (1, 3):
        assert torch.equal(chain.restore(x, mask=mask, steps=steps), reference)
    # train.init_from with a remove-tiny checkpoint fills the frozen predictor: the chain is that file's model
    regression = perturbed("remove-tiny", seed=7)
    path = tmp_path / "remove.safetensors"
    save_model(regression, path)
    fresh = build_model("remove-chain-tiny").eval()
    loaded, _ = load_matching_weights(fresh, str(path))
    assert loaded == len(regression.state_dict())
    assert torch.equal(fresh.restore(x, mask=mask, steps=2), load_model(path, "cpu").restore(x, mask=mask))


def test_tile_context_covers_the_receptive_field():
    model = build_model("remove")
    assert model.tile_context >= model.receptive_radius() > 100  # a hole needs far context
    assert model.tile_context % model.size_multiple == 0
    chain = build_model("remove-chain-tiny")
    assert chain.tile_context > chain.predictor.tile_context


def test_macs_are_counted_with_a_mask():
    assert count_macs(build_model("remove-tiny"), 32) > 0


# ---- masks and the source --------------------------------------------------------------------------

@pytest.mark.parametrize("area", [(0.05, 0.40), (0.10, 0.25), (0.25, 0.40)])
@pytest.mark.parametrize("size", [(64, 64), (48, 80), (17, 23)])
def test_random_masks_cover_the_requested_area_and_are_reproducible(area, size):
    photo = example_pair(40, 56, seed=3)[1]
    fractions = []
    for seed in range(12):
        mask = random_mask(*size, np.random.default_rng(seed), area, photos=[photo])
        assert mask.shape == size and mask.dtype == bool
        assert area[0] <= mask.mean() <= area[1]
        assert np.array_equal(mask, random_mask(*size, np.random.default_rng(seed), area, photos=[photo]))
        fractions.append(mask.mean())
    assert len(set(fractions)) > 6  # seeds give different masks


def test_object_masks_are_silhouettes_not_rectangles():
    photo = example_pair(64, 96, seed=1)[1]
    for seed in range(6):
        rng = np.random.default_rng(seed)
        for mask in (object_mask(96, 96, rng, 0.15, photo), object_mask(96, 96, rng, 0.15)):
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
            assert 0.03 < mask.mean() < 0.5 and mask.sum() < 0.95 * box
    sil = photo_silhouette(photo, np.random.default_rng(0))
    assert sil is None or (sil.dtype == bool and sil.any())
    assert blob_silhouette(np.random.default_rng(0)).mean() > 0.2
    with pytest.raises(ConfigError, match="unknown mask kind 'circles'"):
        random_mask(32, 32, np.random.default_rng(0), kinds=("circles",))
    with pytest.raises(ConfigError, match="area"):
        random_mask(32, 32, np.random.default_rng(0), area=(0.5, 0.2))


def test_the_inpaint_source_yields_consistent_input_target_and_mask(tmp_path):
    root = photos(tmp_path / "photos" / "a", n=3)
    photos(tmp_path / "photos" / "b" / "deeper", n=2)
    src = InpaintSource(str(tmp_path / "photos"), area=(0.1, 0.3))
    assert len(src.images) == 5  # sub-folders are read
    for seed in range(4):
        s = src.sample(np.random.default_rng(seed), 32)
        assert s["input"].shape == s["target"].shape == (32, 32, 3) and s["mask"].shape == (32, 32, 1)
        hole = s["mask"][..., 0] > 0.5
        assert set(np.unique(s["mask"])) <= {0.0, 1.0} and 0.1 <= hole.mean() <= 0.3
        assert np.array_equal(s["input"][~hole], s["target"][~hole]) and not s["input"][hole].any()
        again = src.sample(np.random.default_rng(seed), 32)
        assert all(np.array_equal(s[k], again[k]) for k in s)
    mean_fill = InpaintSource(str(root), fill="mean").sample(np.random.default_rng(0), 32)
    assert mean_fill["input"][mean_fill["mask"][..., 0] > 0.5].std(axis=0).max() < 1e-6
    bsds = tmp_path / "bsds"
    photos(bsds, n=12)
    kept = InpaintSource(str(bsds), holdout="bsds20").images.paths  # the photos the benchmarks hold out are left out
    assert len(kept) == 11 and not set(kept) & set(bsds_holdout(sorted(bsds.glob("*.png"))))
    with pytest.raises(ConfigError, match="unknown holdout"):
        InpaintSource(str(bsds), holdout="bsds200")
    # through the training dataset: (3 | 1, crop, crop) tensors, augmented together
    cfg = config_from_dict({"model": {"type": "remove-tiny"}, "data": {"train": [
        {"type": "inpaint", "root": str(bsds), "options": {"holdout": "bsds20"}}]}})
    item = build_train_dataset(cfg.data.train, 32, seed=0)[3]
    assert item["mask"].shape == (1, 32, 32) and item["input"].shape == item["target"].shape == (3, 32, 32)
    assert torch.equal(item["input"], item["target"] * (1 - item["mask"]))


def test_removal_pairs_are_written_whole_and_reproducibly(tmp_path):
    src = sorted(photos(tmp_path / "photos", n=3, size=(40, 56)).glob("*.png"))
    a = write_removal_pairs(src, tmp_path / "a", area=(0.1, 0.25), seed=3)
    b = write_removal_pairs(src, tmp_path / "b", area=(0.1, 0.25), seed=3)
    for path in src:
        mask = read_companion(a / "blur" / path.name)
        holed, sharp = read_image(a / "blur" / path.name)[0], read_image(a / "sharp" / path.name)[0]
        assert 0.1 <= mask.mean() <= 0.25 and np.array_equal(mask, read_companion(b / "blur" / path.name))
        assert not holed[mask].any() and np.array_equal(holed[~mask], sharp[~mask])
        assert np.array_equal(sharp, read_image(path)[0])
    with pytest.raises(OutputError, match="already exists"):
        write_removal_pairs(src, a)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "photos"]  # no temporary folder left


def test_evaluate_reads_the_mask_beside_the_holed_image(tmp_path):
    folder = write_removal_pairs(sorted(photos(tmp_path / "p", n=2).glob("*.png")), tmp_path / "val")
    model = perturbed("remove-tiny")
    report = evaluate(model, folder, tile=0, engine="eager")
    assert report.summary["images"] == 2 and not report.errors
    assert all(np.isfinite(r["psnr"]) and np.isfinite(r["input_psnr"]) for r in report.rows)
    plain = tmp_path / "plain"
    for sub in ("blur", "sharp"):
        (plain / sub).mkdir(parents=True)
        for f in (folder / sub).iterdir():
            (plain / sub / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ConfigError, match="no mask/000.png") as info:
        evaluate(model, plain, tile=0, engine="eager")
    assert "\n" not in str(info.value)


# ---- training --------------------------------------------------------------------------------------

def test_the_objectives_need_a_mask_and_weight_the_hole():
    from diffdeblur.methods.inpainting import HOLE_WEIGHT, hole_valid_loss

    model = build_model("remove-tiny")
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ConfigError, match="needs batches with a \"mask\""):
        get_objective("inpaint")(model, {"input": x, "target": x})
    target, mask = torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    pred = target.clone()
    pred[..., :4, :] = 0.5  # wrong in the hole only
    loss, logs = hole_valid_loss(pred, target, mask)
    assert logs["valid"] < 1e-2 and float(loss) == pytest.approx(HOLE_WEIGHT * logs["hole"] + logs["valid"])
    loss_fft, logs_fft = get_objective("inpaint-fft")(model, {"input": x, "target": x, "mask": (x[:, :1] > 0.7).float()})
    assert torch.isfinite(loss_fft) and {"hole", "valid", "fft"} <= set(logs_fft)


def read_log(run: Path, column: str) -> list[float]:
    with open(run / "log.csv") as f:
        return [float(r[column]) for r in csv.DictReader(f)]


def test_a_tiny_removal_model_trains_and_its_hole_loss_falls_then_a_chain_starts_from_it(tmp_path):
    from diffdeblur.train import train

    root = photos(tmp_path / "photos", n=4, size=(48, 48))
    val = write_removal_pairs(sorted(root.glob("*.png"))[:2], tmp_path / "val", area=(0.1, 0.25))
    base = {"data": {"train": [{"type": "inpaint", "root": str(root)}], "val": str(val), "crop": 32,
                     "batch_size": 4},
            "train": {"optimizer": "adam", "lr": 3e-3, "weight_decay": 0.0, "log_every": 1, "sample_images": 0}}
    cfg = config_from_dict({**base, "model": {"type": "remove-tiny"},
                            "train": {**base["train"], "steps": 40, "val_every": 40, "save_every": 40,
                                      "out_dir": str(tmp_path / "remove")}})
    train(cfg, device="cpu", show_progress=False)
    hole = read_log(tmp_path / "remove", "hole")
    assert len(hole) == 40 and np.mean(hole[-5:]) < 0.7 * np.mean(hole[:5])
    assert (tmp_path / "remove" / "val.csv").exists() and (tmp_path / "remove" / "best.safetensors").exists()
    chain_cfg = config_from_dict({**base, "model": {"type": "remove-chain-tiny"},
                                  "train": {**base["train"], "steps": 2, "val_every": 2, "save_every": 2,
                                            "val_options": {"steps": 2},
                                            "init_from": str(tmp_path / "remove" / "final.safetensors"),
                                            "out_dir": str(tmp_path / "chain")}})
    train(chain_cfg, device="cpu", show_progress=False)
    assert all(np.isfinite(read_log(tmp_path / "chain", "indi")))
    with open(tmp_path / "chain" / "val.csv") as f:
        assert float(next(csv.DictReader(f))["psnr"]) > 0
    from diffdeblur.inference import load_model

    chain = load_model(tmp_path / "chain" / "final.safetensors", "cpu")  # the predictor travels inside the file
    x, mask = torch.rand(1, 3, 20, 28), holes(20, 28, seed=8)
    assert torch.equal(restore_tensor(chain, x, mask=mask, engine="eager")[(mask == 0).expand_as(x)],
                       x[(mask == 0).expand_as(x)])


def test_pull_push_fills_a_hole_from_its_surroundings():
    """pull_push keeps the known pixels, fills a constant image's hole with the constant exactly, and a smooth
    ramp's hole close to the ramp (far closer than a blank)."""
    from diffdeblur.models.inpaint_nafnet import pull_push

    mask = torch.zeros(1, 1, 37, 45)
    mask[..., 10:25, 12:30] = 1
    const = torch.full((1, 3, 37, 45), 0.3)
    filled = pull_push(const * (1 - mask), mask)
    torch.testing.assert_close(filled, const)
    ramp = torch.linspace(0, 1, 45).expand(1, 3, 37, 45).contiguous()
    filled = pull_push(ramp * (1 - mask), mask)
    assert torch.equal(filled[mask.expand_as(ramp) == 0], ramp[mask.expand_as(ramp) == 0])
    hole = mask.expand_as(ramp) == 1
    assert float((filled - ramp)[hole].abs().mean()) < 0.05 < float(ramp[hole].abs().mean())
    assert torch.equal(pull_push(ramp, torch.ones(1, 1, 37, 45)), ramp)  # nothing known: unchanged
