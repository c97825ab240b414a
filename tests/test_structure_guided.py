"""Multiscale structure guided diffusion (issue 25): the guidance module, the guided encoder blocks of the SR3 UNet
and the time-conditioned NAFNet, the wrappers on both bases, their objective, init_from from an unguided twin,
tiling, and the multi-domain evaluation of ``diffdeblur eval``."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch

from conftest import make_paired_folder

from diffdeblur.checkpoint import save_model
from diffdeblur.cli import main
from diffdeblur.errors import ConfigError
from diffdeblur.example import example_pair
from diffdeblur.inference import load_model, restore_tensor, tile_context
from diffdeblur.models.guidance import StructureGuidance, guidance_target, to_gray
from diffdeblur.objectives import default_objective
from diffdeblur.registry import build_model

GUIDED = {"sg-sr3-tiny": "sr3-tiny", "sg-indi-nafnet-tiny": "indi-nafnet-tiny",
          "sg-resshift-nafnet-tiny": "resshift-nafnet-tiny"}
# three encoder levels (factors 1, 2, 4) so that guidance can enter two of them
THREE_LEVELS = {"sg-sr3-tiny": dict(channel_mults=(1, 2, 2)),
                "sg-indi-nafnet-tiny": dict(enc_blk_nums=(1, 1, 1), dec_blk_nums=(1, 1, 1)),
                "sg-resshift-nafnet-tiny": dict(enc_blk_nums=(1, 1, 1), dec_blk_nums=(1, 1, 1))}


def perturbed(name: str, scale: float = 0.02, **overrides) -> torch.nn.Module:
    """A registered model with every tensor moved off its (partly zero) initialisation, seeded."""
    torch.manual_seed(0)
    model = build_model(name, **overrides).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def restore(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.restore(x, steps=2, generator=torch.Generator().manual_seed(3))


# ---- the unguided presets are unchanged ----------------------------------------------------------

# measured with the unmodified sr3_unet.py / time_nafnet.py (before issue 25): sha256[:16] of the state-dict names,
# sum and absolute sum of a network call, and four of its values (a copy of the old files gave bit-identical outputs)
UNGUIDED_REFERENCE = {
    "sr3-tiny": ("fe63afcff349c8f5", -49.694326, 96.956996, [0.022925, -0.226633, 0.021338, 0.025832]),
    "indi-nafnet-tiny": ("0fb948be85f10262", -623.033748, 793.556386, [0.059643, -0.815091, -0.789425, -1.25643]),
    "resshift-nafnet-tiny": ("455a1357014842eb", -619.567483, 799.13241, [0.070244, -0.851747, -0.716468, -1.298545]),
}


@pytest.mark.parametrize("name", sorted(UNGUIDED_REFERENCE))
def test_unguided_presets_are_unchanged(name):
    keys, total, absolute, values = UNGUIDED_REFERENCE[name]
    model = perturbed(name)
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(2))
    y = x * 2 - 1
    t, cond = {"sr3-tiny": (torch.tensor([10.0]), y), "indi-nafnet-tiny": (torch.tensor([0.5]), None),
               "resshift-nafnet-tiny": (torch.tensor([1.0]), x)}[name]
    with torch.no_grad():
        out = model.net(y, t, cond).double()
    assert hashlib.sha256("|".join(model.state_dict()).encode()).hexdigest()[:16] == keys
    assert float(out.sum()) == pytest.approx(total, abs=1e-3) and float(out.abs().sum()) == pytest.approx(absolute, abs=1e-3)
    assert [float(v) for v in out.flatten()[::301][:4]] == pytest.approx(values, abs=1e-5)


# ---- the guidance module and the guided blocks -------------------------------------------------------

def test_guidance_predicts_gray_downsampled_images_and_returns_its_features():
    guide = StructureGuidance((2, 4, 8), width=6, blocks=1, enabled=(True, False, True))
    blur = torch.rand(2, 3, 32, 40)
    features, predictions = guide(blur)
    assert set(features) == set(predictions) == {2, 8}  # the disabled scale does not run
    assert features[2].shape == (2, 6, 16, 20) and features[8].shape == (2, 6, 4, 5)
    assert predictions[2].shape == (2, 1, 16, 20)
    gray = to_gray(blur)
    assert torch.allclose(gray, 0.299 * blur[:, :1] + 0.587 * blur[:, 1:2] + 0.114 * blur[:, 2:])
    assert torch.allclose(guidance_target(blur, 4), torch.nn.functional.avg_pool2d(gray, 4), atol=1e-6)
    loss, logs = guide.loss(predictions, blur)
    assert set(logs) == {"guide_2", "guide_8"} and float(loss.detach()) == pytest.approx(sum(logs.values()), rel=1e-5)


@pytest.mark.parametrize("name", sorted(GUIDED))
def test_guidance_features_have_the_scales_and_channels_of_the_encoder_levels_they_enter(name):
    model = build_model(name, guidance_scales=(2, 4), guidance_width=6, **THREE_LEVELS[name])
    blur = torch.rand(1, 3, 32, 48)
    features, _ = model.guidance_features(blur)
    assert sorted(features) == [2, 4]
    for s, f in features.items():
        assert f.shape == (1, 6, 32 // s, 48 // s)
        level = s.bit_length() - 1
        if hasattr(model.unet, "guide"):  # SR3 UNet: one projection per encoder block of the level
            projections = list(model.unet.guide[str(s)])
            assert [p.out_channels for p in projections] == model.unet.encoder_inputs[level]
        else:  # time-conditioned NAFNet: the level's blocks, width * 2^level channels
            projections = [b.guide for b in model.unet.encoders[level]]
            assert all(p.out_channels == model.unet.intro.out_channels * s for p in projections)
        assert projections and all(p.in_channels == 6 and not p.weight.any() for p in projections)


@pytest.mark.parametrize("name", sorted(GUIDED))
def test_a_fresh_guided_model_is_its_unguided_twin(name):
    """Same seed: the twin's tensors are drawn first and equal; the guidance enters through zero projections."""
    torch.manual_seed(0)
    plain = build_model(GUIDED[name]).eval()
    torch.manual_seed(0)
    guided = build_model(name).eval()
    own = guided.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in plain.state_dict().items())
    with torch.no_grad():
        for p in plain.parameters():  # move the shared weights off their zero initialisation, in both
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    guided.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(2))
    assert torch.equal(restore(plain, x), restore(guided, x))


@pytest.mark.parametrize("name", sorted(GUIDED))
def test_any_subset_of_scales_runs_and_none_equals_the_unguided_model(name):
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(2))
    outs = {}
    for enabled in ((True, True), (True, False), (False, True), (False, False)):
        model = perturbed(name, guidance_scales=(2, 4), guidance_enabled=enabled, **THREE_LEVELS[name])
        outs[enabled] = restore(model, x)
        assert outs[enabled].shape == x.shape and torch.isfinite(outs[enabled]).all()
    assert len({hashlib.sha256(o.numpy().tobytes()).hexdigest() for o in outs.values()}) == 4  # each scale matters
    unguided = build_model(GUIDED[name], **THREE_LEVELS[name]).eval()
    unguided.load_state_dict(model.state_dict(), strict=False)  # the same weights; the guided ones are extra
    assert set(unguided.state_dict()) < set(model.state_dict())
    assert torch.equal(restore(unguided, x), outs[(False, False)])


def test_the_guidance_runs_once_per_image_not_once_per_step():
    model = perturbed("sg-indi-nafnet-tiny")
    calls = []
    model.guidance.register_forward_hook(lambda *_: calls.append(1))
    model.restore(torch.rand(1, 3, 16, 16), steps=4, num_samples=2)
    assert len(calls) == 1


@pytest.mark.parametrize("overrides, key", [
    (dict(guidance_scales=(2, 16)), "guidance_scales"),
    (dict(guidance_scales=(3,)), "guidance_scales"),
    (dict(guidance_width=0), "guidance_width"),
    (dict(guidance_lambda=-0.5), "guidance_lambda"),
    (dict(guidance_blocks=-1), "guidance_blocks"),
    (dict(guidance_enabled=(True, False, True)), "guidance_enabled"),
])
def test_bad_guidance_config_is_a_one_line_error_naming_the_key(overrides, key):
    for name in ("sg-sr3-tiny", "sg-indi-nafnet-tiny"):
        with pytest.raises(ConfigError) as exc:
            build_model(name, **overrides)
        assert key in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="guidance_scales"):  # a type error names the key too
        build_model("sg-indi-nafnet-tiny", guidance_scales="2")


def test_calling_the_network_without_its_guidance_is_an_error():
    model = build_model("sg-indi-nafnet-tiny")
    with pytest.raises(ConfigError, match="structure-guided"):
        model.net(torch.rand(1, 3, 8, 8), torch.ones(1), None)


# ---- training -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sg-indi-nafnet-tiny", "sg-sr3-tiny"])
def test_the_auxiliary_loss_falls_on_a_tiny_overfit(name):
    torch.manual_seed(0)
    model = build_model(name).train()
    objective = default_objective(model)
    pairs = [example_pair(32, 32, seed=i) for i in range(2)]
    blur, sharp = (torch.stack([torch.from_numpy(p[k]).permute(2, 0, 1).float() for p in pairs]) for k in (0, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    guide = []
    for step in range(30):
        loss, logs = objective(model, {"input": blur, "target": sharp}, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        guide.append(logs["guide"])
        assert torch.isfinite(loss) and set(logs) >= {"guide", "guide_2", model.base_objective}
    assert guide[-1] < 0.6 * guide[0], guide


def test_init_from_loads_an_unguided_checkpoint_into_the_guided_twin(tmp_path, paired_folder):
    """Only the guidance is new: every tensor of the unguided run fills the guided model, which then restores
    exactly as the unguided one until trained; train() runs the structure-guided objective from it."""
    from diffdeblur.config import config_from_dict
    from diffdeblur.train import train
    from diffdeblur.train_setup import load_matching_weights

    plain = perturbed("indi-nafnet-tiny")
    save_model(plain, tmp_path / "plain.safetensors")
    guided = build_model("sg-indi-nafnet-tiny").eval()
    loaded, total = load_matching_weights(guided, str(tmp_path / "plain.safetensors"))
    assert loaded == len(plain.state_dict()) and total == len(guided.state_dict())
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(2))
    assert torch.equal(restore(plain, x), restore(guided, x))
    cfg = config_from_dict({"model": {"type": "sg-indi-nafnet-tiny"},
                            "data": {"train": [{"type": "paired", "root": str(paired_folder)}], "crop": 32,
                                     "batch_size": 1, "val": str(paired_folder), "val_max_images": 1, "val_crop": 32},
                            "train": {"steps": 2, "out_dir": str(tmp_path / "run"), "log_every": 1, "val_every": 2,
                                      "val_options": {"steps": 2}, "init_from": str(tmp_path / "plain.safetensors")}})
    train(cfg, show_progress=False)
    assert "guide" in (tmp_path / "run" / "log.csv").read_text().splitlines()[0]
    assert (tmp_path / "run" / "val.csv").exists()
    loaded = load_model(str(tmp_path / "run" / "final.safetensors"), "cpu")  # the checkpoint rebuilds the guided model
    assert type(loaded) is type(guided) and loaded.guidance.enabled == (2,)
    assert restore(loaded, x).shape == x.shape


# ---- tiling -------------------------------------------------------------------------------------

def test_tiled_equals_whole_for_a_guided_chain(monkeypatch):
    """The guided chain's tile context adds the guidance's reach to the denoiser's: tiles see what the whole image
    sees (up to float rounding), and less context would not do."""
    from diffdeblur.methods.structure_guided import StructureGuidedInDI

    model = perturbed("sg-indi-nafnet-tiny", scale=0.05, train_size=16)  # TLC windows of 24 px: a 12-px context
    reach = model.guidance.reach
    assert reach > 0 and tile_context(model) == tile_context(model.unet) + reach
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    whole = restore_tensor(model, x, tile=0, engine="eager", steps=2)
    tiled = restore_tensor(model, x, tile=32, overlap=8, engine="eager", steps=2)
    assert float((whole - tiled).abs().max()) < 2e-6
    monkeypatch.setattr(StructureGuidedInDI, "tile_context", tile_context(model.unet))  # the denoiser's alone
    short = restore_tensor(model, x, tile=32, overlap=8, engine="eager", steps=2)
    assert float((whole - short).abs().max()) > 10 * float((whole - tiled).abs().max())


# ---- multi-domain evaluation ------------------------------------------------------------------------

def read_table(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {r["domain"]: r for r in csv.DictReader(f)}


def test_eval_on_several_domains_writes_one_table_and_reports_a_failed_domain(tmp_path, ckpt, capsys):
    good = make_paired_folder(tmp_path / "good", n=2)
    blurry = make_paired_folder(tmp_path / "blurry_only", n=2)
    for p in (blurry / "sharp").iterdir():
        p.unlink()
    (blurry / "sharp").rmdir()
    out = tmp_path / "ev"
    rc = main(["eval", "--model", ckpt, "--data", f"indomain={good}", "--data", f"gone={tmp_path / 'nope'}",
               "--data", f"noref={blurry}", "--nr-metrics", "blur-effect", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1 and "gone: error:" in captured.err and "| indomain |" in captured.out
    rows = read_table(out / "domains.csv")
    assert list(rows) == ["indomain", "gone", "noref"]  # one table, domain by domain, in the given order
    assert rows["indomain"]["status"] == "ok" and rows["indomain"]["reference"] == "yes"
    assert float(rows["indomain"]["psnr"]) > 0 and rows["indomain"]["blur_effect"] == ""
    assert rows["gone"]["status"] == "failed" and "not found" in rows["gone"]["reason"]
    assert rows["noref"]["status"] == "ok" and rows["noref"]["reference"] == "no" and rows["noref"]["psnr"] == ""
    assert 0 <= float(rows["noref"]["blur_effect"]) <= 1 and rows["noref"]["images"] == "2"
    assert "failed" in (out / "domains.md").read_text()
    assert json.loads((out / "indomain" / "summary.json").read_text())["images"] == 2


def test_eval_reads_a_domains_file_and_succeeds_when_every_domain_runs(tmp_path, ckpt):
    make_paired_folder(tmp_path / "a", n=1)
    make_paired_folder(tmp_path / "b", n=1, seed=5)
    spec = tmp_path / "domains.yaml"
    spec.write_text("domains:\n  - {name: first, path: a, reference: true}\n  - {name: second, path: b}\n")
    assert main(["eval", "--model", ckpt, "--data", str(spec), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert list(read_table(tmp_path / "o" / "domains.csv")) == ["first", "second"]
    spec.write_text("domains:\n  - {name: first, path: a, colour: red}\n")
    assert main(["eval", "--model", ckpt, "--data", str(spec), "--quiet"]) == 1  # a one-line config error
    # one plain --data keeps the single-folder evaluation (per_image.csv, summary.json)
    assert main(["eval", "--model", ckpt, "--data", str(tmp_path / "a"), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    assert (tmp_path / "s" / "summary.json").exists() and not (tmp_path / "s" / "domains.csv").exists()
