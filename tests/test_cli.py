"""End-to-end CLI tests on generated images with a tiny checkpoint."""
from pathlib import Path

import numpy as np
from PIL import Image

from diffdeblur.cli import main
from diffdeblur.example import example_pair
from diffdeblur.io import read_image, write_image

from conftest import make_paired_folder


def _inputs(folder: Path) -> Path:
    folder.mkdir()
    for i in range(2):
        write_image(folder / f"img{i}.png", example_pair(40, 56, seed=i)[0])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(folder / "tiny.png")
    return folder


def test_deblur_batch_continues_past_bad_files(tmp_path, ckpt, capsys):
    src = _inputs(tmp_path / "in")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    rc = main(["deblur", str(src), "-o", str(tmp_path / "out"), "--model", ckpt, "--tile", "32", "--overlap", "8", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0.png", "img1.png", "tiny.png"]
    assert "corrupt.png: truncated or corrupt" in err  # a 2x2 image is padded to the model's multiple
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # inputs untouched
    out, _ = read_image(tmp_path / "out" / "img0.png")
    assert out.shape == (40, 56, 3)


def test_deblur_never_overwrites_inputs(tmp_path, ckpt, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", example_pair(32, 32)[0])
    before = (src / "a.png").read_bytes()
    rc = main(["deblur", str(src), "-o", str(src), "--model", ckpt, "--quiet"])
    assert rc == 1 and "would overwrite an input" in capsys.readouterr().err
    assert (src / "a.png").read_bytes() == before


def test_deblur_single_file_glob_and_unwritable_output(tmp_path, ckpt, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.jpg", example_pair(32, 48)[0])
    assert main(["deblur", str(src / "a.jpg"), "-o", str(tmp_path / "res.png"), "--model", ckpt, "--quiet"]) == 0
    assert (tmp_path / "res.png").is_file()
    assert main(["deblur", str(src / "*.jpg"), "-o", str(tmp_path / "g"), "--model", ckpt, "--quiet"]) == 0
    assert (tmp_path / "g" / "a.jpg").is_file()
    (tmp_path / "afile").write_text("x")
    rc = main(["deblur", str(src), "-o", str(tmp_path / "afile" / "sub"), "--model", ckpt, "--quiet"])
    assert rc == 1 and "cannot create output folder" in capsys.readouterr().err


def test_deblur_builtin_example_and_missing_default(tmp_path, ckpt, capsys):
    assert main(["deblur", "-o", str(tmp_path / "ex"), "--model", ckpt]) == 0
    assert {p.name for p in (tmp_path / "ex").iterdir()} == {"example_blurry.png", "example_sharp.png", "example_deblurred.png",
                                                        "example_side_by_side.png"}
    assert "built-in example" in capsys.readouterr().out
    rc = main(["deblur", "-o", str(tmp_path / "x"), "--model", str(tmp_path / "nope.safetensors")])
    assert rc == 1 and "checkpoint not found" in capsys.readouterr().err


def test_eval_writes_csv_and_summary(tmp_path, ckpt, capsys):
    data = make_paired_folder(tmp_path / "data", n=3, size=(32, 40))
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(data / "blur" / "0009.png")
    Image.fromarray(np.zeros((24, 20, 3), np.uint8)).save(data / "sharp" / "0009.png")
    rc = main(["eval", "--model", ckpt, "--data", str(data), "--out", str(tmp_path / "ev"), "--save", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1 and "differs from" in captured.err  # the mismatched pair is reported, the rest evaluated
    import json

    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["images"] == 3 and summary["failed"] == 1 and summary["params"] > 0 and summary["macs_256"] > 0
    rows = (tmp_path / "ev" / "per_image.csv").read_text().splitlines()
    assert rows[0].startswith("image,psnr,ssim") and len(rows) == 4
    assert len(list((tmp_path / "ev" / "images").iterdir())) == 3


def test_eval_gopro_layout(tmp_path, ckpt):
    make_paired_folder(tmp_path / "g" / "SCENE_A", n=1, size=(32, 32))
    make_paired_folder(tmp_path / "g" / "SCENE_B", n=2, size=(32, 32), layout=("input", "target"))
    assert main(["eval", "--model", ckpt, "--data", str(tmp_path / "g"), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    names = [r.split(",")[0] for r in (tmp_path / "o" / "per_image.csv").read_text().splitlines()[1:]]
    assert names == ["SCENE_A/0000", "SCENE_B/0000", "SCENE_B/0001"]


def test_models_table(capsys):
    assert main(["models", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "nafnet-width32" in out and "17.112" in out and "mimo-unet-plus" in out
