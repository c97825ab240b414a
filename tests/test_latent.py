"""Latent diffusion: autoencoders (TAEF2 loading, project AE), the latent model and its objective."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from diffdeblur import build_model
from diffdeblur.checkpoint import load_model_file, save_model
from diffdeblur.inference import restore_tensor
from diffdeblur.objectives import default_objective, default_objective_name, objective_names
from diffdeblur.metrics import psnr
from diffdeblur.models.autoencoder import (TAEF2, TAEF2_ENV, TAEF2_FILES, AutoencoderWeightsError, TinyAutoencoder,
                                           taef2_decoder, taef2_encoder)

TAEF2_DIR = Path(os.environ.get(TAEF2_ENV, "/work/shared/data/weights/taef2"))
BSDS = Path("/work/shared/data/bsds500/train")
needs_taef2 = pytest.mark.skipif(not all((TAEF2_DIR / f).is_file() for f in TAEF2_FILES),
                                 reason="TAEF2 weights not available")


def _tiny(**kw):
    torch.manual_seed(0)
    return build_model("latent-tiny", autoencoder_weights="random", **kw)


# ---- autoencoders --------------------------------------------------------------------------------

def test_tiny_autoencoder_round_trip_shapes():
    ae = TinyAutoencoder().eval()
    x = torch.rand(2, 3, 64, 48)
    z = ae.encode(x)
    assert z.shape == (2, 32, 8, 6)
    assert ae.decode(z).shape == x.shape
    out = ae.restore(torch.rand(1, 3, 37, 50))  # any size: padded to 8 and cropped back
    assert out.shape == (1, 3, 37, 50) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="multiples of 8"):
        ae.encode(torch.rand(1, 3, 30, 32))


def test_autoencoder_objective_trains_and_tracks_latent_std():
    torch.manual_seed(0)
    ae = build_model("ae-tiny", widths=(8, 16, 32)).train()
    objective = default_objective(ae)
    batch = {"blur": torch.rand(2, 3, 32, 32), "sharp": torch.rand(2, 3, 32, 32)}
    opt = torch.optim.Adam(ae.parameters(), 1e-3)
    before = float(ae.latent_std)
    losses = []
    for step in range(3):
        loss, logs = objective(ae, batch, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and "l1" in logs
    assert float(ae.latent_std) != before  # running latent-std estimate moves in training mode
    ae.eval()
    with torch.no_grad():
        std = float(ae.latent_std)
        ae.encode(batch["sharp"])
    assert float(ae.latent_std) == std  # ...and is frozen in eval mode


def test_taef2_architecture_shapes_random_weights():
    ae = TAEF2(pretrained=False).eval()
    with torch.no_grad():
        z = ae.encode(torch.rand(1, 3, 32, 40))
        assert z.shape == (1, 32, 4, 5)
        assert ae.decode(z).shape == (1, 3, 32, 40)


def test_taef2_missing_folder_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv(TAEF2_ENV, raising=False)
    ae = TAEF2()  # no folder given: builds, weights are read at first use
    with pytest.raises(AutoencoderWeightsError, match=TAEF2_ENV):
        ae.encode(torch.rand(1, 3, 8, 8))
    with pytest.raises(AutoencoderWeightsError, match=TAEF2_ENV):  # still deferred: fails again, clearly
        ae.decode(torch.rand(1, 32, 1, 1))
    with pytest.raises(AutoencoderWeightsError, match="taef2_encoder.pth: TAEF2 encoder weights file not found"):
        TAEF2(weights_dir=str(tmp_path))  # an explicit folder is read at once
    monkeypatch.setenv(TAEF2_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(AutoencoderWeightsError, match="nowhere"):
        TAEF2().restore(torch.rand(1, 3, 8, 8))
    # a latent model over deferred TAEF2 builds (registry listing), fails clearly when used
    model = build_model("latent-taef2-small", base_channels=8, norm_groups=8, refiner_width=4)
    with pytest.raises(AutoencoderWeightsError, match="nowhere"):
        model.restore(torch.rand(1, 3, 32, 32), steps=1)


def test_every_latent_preset_builds_without_weights(monkeypatch):
    monkeypatch.delenv(TAEF2_ENV, raising=False)
    for name in ("taef2", "ae-tiny", "latent-tiny", "latent-small", "latent-taef2-small"):
        model = build_model(name)
        assert model.size_multiple % 8 == 0 and default_objective_name(model) in objective_names()


def test_taef2_corrupt_and_mismatched_files(tmp_path):
    torch.save(taef2_encoder().half().state_dict(), tmp_path / TAEF2_FILES[0])
    (tmp_path / TAEF2_FILES[1]).write_bytes(b"PK\x03\x04 definitely not a torch file")
    with pytest.raises(AutoencoderWeightsError) as err:
        TAEF2(weights_dir=str(tmp_path))
    msg = str(err.value)
    assert "taef2_decoder.pth" in msg and "corrupt" in msg and "\n" not in msg
    # a valid torch file with the wrong layer layout (the encoder's weights as the decoder's)
    torch.save(taef2_encoder().half().state_dict(), tmp_path / TAEF2_FILES[1])
    with pytest.raises(AutoencoderWeightsError, match="not a TAEF2 decoder state dict"):
        TAEF2(weights_dir=str(tmp_path))
    # right layout, loads and converts fp16 -> fp32
    torch.save(taef2_decoder().half().state_dict(), tmp_path / TAEF2_FILES[1])
    ae = TAEF2(weights_dir=str(tmp_path))
    assert next(ae.parameters()).dtype == torch.float32


@needs_taef2
def test_taef2_pretrained_reconstructs_natural_image():
    from diffdeblur.io import read_image, to_tensor

    files = sorted(BSDS.glob("*.jpg"))
    if not files:
        pytest.skip("BSDS500 sample not available")
    img, _ = read_image(files[0])
    x = to_tensor(img)[:, :, 64:192, 64:192]
    ae = TAEF2(weights_dir=str(TAEF2_DIR)).eval()
    assert psnr(ae.restore(x), x) > 25.0


# ---- latent diffusion model ----------------------------------------------------------------------

def test_latent_tiny_trains_and_samples():
    model = _tiny()
    objective = default_objective(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in model.autoencoder.parameters())
    opt = torch.optim.AdamW(trainable, 1e-3)
    ae_before = {k: v.clone() for k, v in model.autoencoder.state_dict().items()}
    unet_before = [p.detach().clone() for p in model.unet.parameters()]
    g = torch.Generator().manual_seed(0)
    batch = {"blur": torch.rand(2, 3, 32, 32, generator=g), "sharp": torch.rand(2, 3, 32, 32, generator=g)}
    model.train()
    assert not model.autoencoder.training
    for step in range(3):
        loss, logs = objective(model, batch, torch.Generator().manual_seed(step))
        assert torch.isfinite(loss) and {"diffusion", "refine"} <= set(logs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(unet_before, model.unet.parameters()))
    assert all(torch.equal(v, model.autoencoder.state_dict()[k]) for k, v in ae_before.items())
    out = model.restore(torch.rand(1, 3, 40, 56), steps=3, generator=torch.Generator().manual_seed(1))
    assert out.shape == (1, 3, 40, 56)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_latent_restore_options_seed_callback_and_samplers():
    model = _tiny().eval()
    blur = torch.rand(1, 3, 32, 32)
    a = model.restore(blur, steps=4, generator=torch.Generator().manual_seed(3))
    b = model.restore(blur, steps=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    infos = []
    model.restore(blur, steps=4, sampler="ddpm", generator=torch.Generator().manual_seed(3), callback=infos.append)
    assert [i["i"] for i in infos] == [0, 1, 2, 3]
    assert infos[0]["x0"].shape == (1, 32, 4, 4) and infos[0]["x0_image"].shape == (1, 3, 32, 32)
    plain = model.restore(blur, steps=2, sampler="sde", refine=False, num_samples=2)
    assert plain.shape == blur.shape and torch.isfinite(plain).all()


def test_latent_noise_slices_match_full_field():
    model = _tiny()
    field = model.noise_like(torch.zeros(1, 3, 64, 96), torch.Generator().manual_seed(0))
    full = field.sample(0, 2, 8, 12)  # the whole 64x96 image -> 8x12 latent
    assert full.shape == (1, 32, 8, 12)
    tile = model.slice_noise(field, (16, 48, 40, 96)).sample(0, 2, 4, 7)
    assert torch.equal(tile, full[:, :, 2:6, 5:12])


def test_latent_tiled_restore_runs_on_any_size():
    model = _tiny().eval()
    out = restore_tensor(model, torch.rand(1, 3, 72, 104), tile=48, overlap=16, steps=2)
    assert out.shape == (1, 3, 72, 104) and torch.isfinite(out).all()


def test_latent_checkpoint_round_trip_embeds_project_autoencoder(tmp_path):
    model = _tiny().eval()
    with torch.no_grad():
        for p in model.autoencoder.parameters():
            p.add_(0.01)  # differ from any fresh init: the checkpoint must carry the AE weights
    path = tmp_path / "latent.safetensors"
    save_model(model, path)
    loaded = load_model_file(path)
    blur = torch.rand(1, 3, 32, 32)
    a = model.restore(blur, steps=3, generator=torch.Generator().manual_seed(0))
    b = loaded.restore(blur, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a, b, atol=1e-6)


@needs_taef2
def test_latent_taef2_checkpoint_excludes_pretrained_weights(tmp_path):
    model = build_model("latent-taef2-small", autoencoder_weights=str(TAEF2_DIR), refiner_width=8,
                        base_channels=16, norm_groups=8)
    keys = model.state_dict().keys()
    assert keys and not any(k.startswith("autoencoder.") for k in keys)
    path = tmp_path / "latent_taef2.safetensors"
    save_model(model, path)
    loaded = load_model_file(path)
    assert torch.equal(loaded.autoencoder.encoder[0].weight, model.autoencoder.encoder[0].weight)
    assert torch.equal(loaded.unet.init_conv.weight, model.unet.init_conv.weight)


def test_latent_model_missing_project_ae_weights_is_clear(tmp_path):
    with pytest.raises(AutoencoderWeightsError, match="missing.safetensors"):
        build_model("latent-tiny", autoencoder_weights=str(tmp_path / "missing.safetensors"))


def test_unshipped_project_ae_is_deferred_until_a_state_supplies_it(monkeypatch):
    from diffdeblur.models import autoencoder
    from diffdeblur.models.autoencoder import build_autoencoder

    monkeypatch.setattr(autoencoder, "shipped_weights", lambda name: None)
    ae = build_autoencoder("tiny", "")
    with pytest.raises(AutoencoderWeightsError, match="no trained weights ship"):
        ae.encode(torch.rand(1, 3, 8, 8))
    ae.load_state_dict(TinyAutoencoder().state_dict())  # e.g. a latent checkpoint embedding the AE
    assert ae.encode(torch.rand(1, 3, 8, 8)).shape == (1, 32, 1, 1)


@pytest.mark.parametrize("unshuffle", [1, 2])
def test_refiner_residual_keeps_decoded_channels(unshuffle):
    from diffdeblur.methods.latent import PixelRefiner

    refiner = PixelRefiner(width=4, enc_blk_nums=(1,), dec_blk_nums=(1,), train_size=32, unshuffle=unshuffle).eval()
    assert refiner.size_multiple == 2 * unshuffle
    with torch.no_grad():
        refiner.net.ending.weight.zero_()  # no correction: the output must be exactly the decoded image
        refiner.net.ending.bias.zero_()
        d, y = torch.rand(2, 3, 16, 24), torch.rand(2, 3, 16, 24)
        assert torch.equal(refiner(d, y), d)
