"""Issue 16: the rough edges a new user hits (lost results, refused inputs, silent options, messages)."""
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from diffdeblur import build_model, deblur, save_model
from diffdeblur.cli import main
from diffdeblur.config import load_config
from diffdeblur.errors import ConfigError, ImageError, TrainingError
from diffdeblur.example import example_pair, procedural_scene
from diffdeblur.inference import load_model, weights_for
from diffdeblur.io import read_image, write_image
from diffdeblur.tiling import pad_reflect
from diffdeblur.train import train

from conftest import make_paired_folder


@pytest.fixture
def diffusion_ckpt(tmp_path) -> str:
    torch.manual_seed(0)
    path = tmp_path / "sr3.safetensors"
    save_model(build_model("sr3-tiny"), path)
    return str(path)


@pytest.fixture
def blurry(tmp_path) -> Path:
    path = tmp_path / "in.png"
    write_image(path, example_pair(32, 48)[0])
    return path


# ---- lost or mixed results -----------------------------------------------------------------------

def _train_cfg(tmp_path: Path, **train_kw):
    data = make_paired_folder(tmp_path / "d", n=2, size=(40, 40))
    t = {"steps": 2, "log_every": 1, "val_every": 2, "save_every": 2, "out_dir": str(tmp_path / "run"), "threads": 1}
    t.update(train_kw)
    raw = {"model": {"type": "nafnet-tiny", "width": 4},
           "data": {"train": [{"type": "paired", "root": str(data)}], "val": str(data), "crop": 32, "batch_size": 2},
           "train": t, "seed": 1}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_refuses_an_earlier_run_unless_resume_or_overwrite(tmp_path, capsys):
    cfg_path = _train_cfg(tmp_path)
    assert main(["train", str(cfg_path), "--device", "cpu", "--no-progress"]) == 0
    run = tmp_path / "run"
    best = (run / "best.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train", str(cfg_path), "--device", "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "holds an earlier training run" in err and "--resume" in err and "--overwrite" in err
    assert (run / "best.safetensors").read_bytes() == best
    assert main(["train", str(cfg_path), "--device", "cpu", "--no-progress", "--overwrite"]) == 0
    rows = list(csv.DictReader((run / "val.csv").open()))
    assert [r["step"] for r in rows] == ["2"]  # the old run's rows are gone, not mixed in
    with pytest.raises(TrainingError):
        train(load_config(cfg_path), device="cpu", show_progress=False)


def test_train_summary_only_on_rank_zero(tmp_path, capsys, monkeypatch):
    cfg_path = _train_cfg(tmp_path, out_dir=str(tmp_path / "r1"))
    monkeypatch.setenv("RANK", "1")
    assert main(["train", str(cfg_path), "--device", "cpu", "--no-progress"]) == 0
    assert "best_val_psnr" not in capsys.readouterr().out


def test_synth_folder_and_meta_always_agree(tmp_path, capsys):
    src = tmp_path / "sharp"
    src.mkdir()
    write_image(src / "a.png", procedural_scene(48, 48, seed=0))
    out = tmp_path / "out"
    assert main(["synth", str(src), "-o", str(out), "--count", "3", "--quiet"]) == 0
    assert main(["synth", str(src), "-o", str(out), "--count", "2", "--quiet"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", str(src), "-o", str(out), "--count", "2", "--quiet", "--overwrite"]) == 0
    names = {json.loads(line)["name"] for line in (out / "meta.jsonl").read_text().splitlines()}
    for sub in ("blur", "sharp"):
        assert {p.stem for p in (out / sub).iterdir()} == names
    assert len(names) == 2


def test_deblur_several_inputs_into_a_file_name_is_an_error(tmp_path, ckpt, blurry, capsys):
    other = tmp_path / "b.png"
    write_image(other, example_pair(32, 48, seed=1)[0])
    rc = main(["deblur", str(blurry), str(other), "-o", str(tmp_path / "multi.png"), "--model", ckpt, "--quiet"])
    assert rc == 1 and "give an output folder" in capsys.readouterr().err
    assert not (tmp_path / "multi.png").exists()


def test_deblur_reports_the_output_file(tmp_path, ckpt, blurry, capsys):
    dest = tmp_path / "res" / "out.jpg"
    assert main(["deblur", str(blurry), "-o", str(dest), "--model", ckpt, "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"deblurred 1 image(s) into {dest}"


# ---- inputs users have ---------------------------------------------------------------------------

@pytest.mark.parametrize("h, w", [(5, 7), (15, 200), (12, 6000), (1, 1)])
def test_tiny_and_strip_images_are_padded_and_cropped_back(tmp_path, h, w):
    src = tmp_path / "small.png"  # the shipped default model's multiple is 16
    write_image(src, np.random.default_rng(0).random((h, w, 3)).astype(np.float32))
    assert main(["deblur", str(src), "-o", str(tmp_path / "o.png"), "--quiet", "--device", "cpu"]) == 0
    assert read_image(tmp_path / "o.png")[0].shape == (h, w, 3)


def test_only_zero_size_images_are_errors(ckpt):
    with pytest.raises(ImageError, match="empty"):
        deblur(np.zeros((0, 5, 3), np.float32), ckpt)


def test_pad_reflect_mirrors_any_amount():
    x = torch.arange(3.0).view(1, 1, 1, 3)
    assert pad_reflect(x, 1, 8).flatten().tolist() == [0, 1, 2, 1, 0, 1, 2, 1]


# ---- options -------------------------------------------------------------------------------------

@pytest.mark.parametrize("opts, message", [(["--tile", "16"], "twice the overlap"),
                                           (["--tile", "-5"], "positive size"),
                                           (["--tile", "3", "--overlap", "1"], "size multiple"),
                                           (["--steps", "5"], "--steps does not apply to model")])
def test_deblur_options_are_validated(ckpt, blurry, tmp_path, capsys, opts, message):
    assert main(["deblur", str(blurry), "-o", str(tmp_path / "o"), "--model", ckpt, "--quiet", *opts]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_steps_must_be_positive(blurry, capsys):
    with pytest.raises(SystemExit):
        main(["deblur", str(blurry), "--steps", "0"])
    assert "must be >= 1" in capsys.readouterr().err


def test_misspelt_api_option_is_refused(ckpt):
    with pytest.raises(ConfigError, match="stepz"):
        deblur(np.zeros((16, 16, 3), np.float32), ckpt, stepz=5)


# ---- diffusion usability -------------------------------------------------------------------------

def test_trace_needs_a_model(blurry, capsys):
    with pytest.raises(SystemExit):
        main(["trace", str(blurry)])
    assert "--model" in capsys.readouterr().err


def test_trace_without_reference_writes_no_nan_columns(tmp_path, diffusion_ckpt, blurry):
    out = tmp_path / "tr"
    assert main(["trace", str(blurry), "--model", diffusion_ckpt, "--steps", "3", "-o", str(out),
                 "--device", "cpu"]) == 0
    rows = list(csv.DictReader((out / "steps.csv").open()))
    assert len(rows) == 3 and "psnr_x0" not in rows[0]
    assert all(v != "nan" for r in rows[1:] for v in r.values())
    curves = np.asarray(Image.open(out / "curves.png").convert("L"))
    assert (curves < 250).mean() > 0.01  # something is drawn


def test_progress_bar_while_a_diffusion_model_samples(tmp_path, diffusion_ckpt, blurry, capsys):
    assert main(["deblur", str(blurry), "-o", str(tmp_path / "o.png"), "--model", diffusion_ckpt,
                 "--steps", "3", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "sampling" in err and "0/3" in err  # total = steps x tiles


# ---- smaller things ------------------------------------------------------------------------------

def test_registered_name_of_the_default_loads_the_shipped_weights(capsys):
    assert weights_for("nafnet-small") == weights_for("default")
    assert type(load_model("nafnet-small", "cpu")).__name__ == "NAFNet"
    assert main(["deblur", "--model", "nafnet-tiny", "-o", "unused"]) == 1
    err = capsys.readouterr().err
    assert "build_model" not in err and "()" not in err and "diffdeblur train nafnet-tiny" in err


@pytest.mark.parametrize("command", ["deblur", "eval", "synth", "trace", "train"])
def test_help_shows_each_default_once(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text
    assert not re.search(r"\(default[^()]*(\([^()]*\))?[^()]*\) \(default", text)


def test_eval_unwritable_output_is_one_line(tmp_path, ckpt, paired_folder, capsys):
    (tmp_path / "afile").write_text("x")
    rc = main(["eval", "--model", ckpt, "--data", str(paired_folder), "--out", str(tmp_path / "afile" / "sub"),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot create output folder" in err
    assert len(err.strip().splitlines()) == 1 and "Errno" not in err


def test_config_errors_name_the_override_and_list_presets():
    with pytest.raises(ConfigError, match=r"^command-line override 'train.stpes=3': unknown key 'train.stpes'"):
        load_config("nafnet-small", ["train.stpes=3"])
    with pytest.raises(ConfigError, match="presets: .*nafnet-small"):
        load_config("nafnet-smal")


def test_models_lists_a_default_row(capsys):
    assert main(["models", "--no-cache"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    default = next(r for r in rows if r[0] == "default")
    small = next(r for r in rows if r[0] == "nafnet-small")
    assert default[1:4] == small[1:4] == ["regression", "1.723", "yes"]
