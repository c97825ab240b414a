"""What a new user trips over: output names, export paths, argument order, help texts, empty folders,
the `models` table. (Ctrl-C during training: test_train.py; the demo's steps slider: test_demo.py.)"""
import re
from pathlib import Path

import pytest
import torch
import yaml

import diffdeblur
from diffdeblur import build_model, save_model
from diffdeblur.cli import main, parse_command_line
from diffdeblur.errors import OutputError
from diffdeblur.example import example_pair
from diffdeblur.io import IMAGE_EXTENSIONS, names_image_file, output_folder, write_image

from conftest import make_paired_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def blurry(tmp_path) -> Path:
    path = tmp_path / "in.png"
    write_image(path, example_pair(32, 48)[0])
    return path


def _one_line_error(err: str, *parts: str) -> None:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err


# ---- 3. deblur -o with an extension it cannot write ----------------------------------------------

@pytest.mark.parametrize("name", ["out.gif", "out.xyz"])
def test_deblur_output_with_an_unwritable_extension_is_an_error(tmp_path, ckpt, blurry, capsys, name):
    rc = main(["deblur", str(blurry), "-o", str(tmp_path / name), "--model", ckpt, "--quiet"])
    _one_line_error(capsys.readouterr().err, name, "cannot write", ".png", ".tiff")
    assert rc == 1 and not (tmp_path / name).exists()


def test_output_names_without_extension_are_folders(tmp_path, ckpt, blurry):
    assert not names_image_file(tmp_path / "out") and not names_image_file(f"{tmp_path}/out.d/")
    assert all(names_image_file(tmp_path / f"o{ext}") for ext in IMAGE_EXTENSIONS)
    with pytest.raises(OutputError, match="'.gif'"):
        names_image_file("o.gif")
    assert main(["deblur", str(blurry), "-o", str(tmp_path / "folder"), "--model", ckpt, "--quiet"]) == 0
    assert (tmp_path / "folder" / "in.png").is_file()


# ---- 1. export: the output path is checked before the work ----------------------------------------

@pytest.fixture
def no_export_work(monkeypatch):
    """Loading or exporting a model fails the test: a bad output must be refused before that."""
    def work(*args, **kwargs):
        raise AssertionError("the export started before its output was checked")

    monkeypatch.setattr("diffdeblur.inference.load_model", work)
    monkeypatch.setattr("diffdeblur.export.export_onnx", work)


@pytest.mark.parametrize("output, message", [("afile/m.onnx", "a file of that name is in the way"),
                                             ("afile/sub/m.onnx", "cannot create output folder"),
                                             ("m.txt", "must end in .onnx"),
                                             (".", "is a folder")])
def test_export_refuses_a_bad_output_before_the_work(tmp_path, monkeypatch, capsys, no_export_work, output, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert main(["export", "-o", output]) == 1
    _one_line_error(capsys.readouterr().err, message)


def test_export_into_a_new_folder(tmp_path, monkeypatch, capsys):
    written = []

    def fake_export(model, path):  # the real export takes ~a minute: its writing is tested in test_engines
        Path(path).write_bytes(b"onnx")
        written.append(Path(path))
        return Path(path)

    monkeypatch.setattr("diffdeblur.export.export_onnx", fake_export)
    out = tmp_path / "new" / "deeper" / "m.onnx"
    assert main(["export", "--untrained", "--model", "nafnet-tiny", "-o", str(out)]) == 0
    assert written == [out] and out.is_file()


def test_a_failed_export_leaves_no_folder(tmp_path, monkeypatch, capsys):
    def failing_export(model, path):
        raise OutputError(f"{path}: cannot write (disk full)")

    monkeypatch.setattr("diffdeblur.export.export_onnx", failing_export)
    assert main(["export", "--untrained", "--model", "nafnet-tiny", "-o", str(tmp_path / "new" / "m.onnx")]) == 1
    _one_line_error(capsys.readouterr().err, "disk full")
    assert list(tmp_path.iterdir()) == []


# ---- 2. argument order and usage errors ------------------------------------------------------------

def test_train_overrides_may_follow_the_options():
    _, args = parse_command_line(["train", "my.yaml", "--resume", "train.steps=50", "--device", "cpu", "seed=2"])
    assert args.config == "my.yaml" and args.overrides == ["train.steps=50", "seed=2"] and args.resume
    _, args = parse_command_line(["deblur", "a.png", "-o", "out", "b.png"])
    assert args.inputs == ["a.png", "b.png"] and args.output == "out"


def _train_cfg(tmp_path: Path, crop: int = 32, data: Path | None = None, **train_kw) -> Path:
    data = data or make_paired_folder(tmp_path / "d", n=2, size=(40, 40))
    t = {"steps": 1, "log_every": 1, "val_every": 100, "save_every": 100, "out_dir": str(tmp_path / "run"),
         "threads": 1, **train_kw}
    raw = {"model": {"type": "nafnet-tiny", "width": 4},
           "data": {"train": [{"type": "paired", "root": str(data)}], "crop": crop, "batch_size": 2},
           "train": t, "seed": 1}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_resume_then_overrides_runs(tmp_path, capsys):
    cfg = _train_cfg(tmp_path)
    assert main(["train", str(cfg), "--device", "cpu", "--no-progress"]) == 0
    assert main(["train", str(cfg), "--resume", "train.steps=2", "--device", "cpu", "--no-progress"]) == 0
    assert '"steps": 2' in capsys.readouterr().out


@pytest.mark.parametrize("argv, command", [(["train", "c.yaml", "--bogus"], "train"),
                                           (["deblur", "--tile"], "deblur"),
                                           (["models", "extra"], "models")])
def test_usage_errors_name_the_subcommand(capsys, argv, command):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"diffdeblur {command}: error:" in err and f"usage: diffdeblur {command}" in err


# ---- 8. small things ---------------------------------------------------------------------------------

def test_readme_names_the_bench_option_as_it_is():
    text = (REPO / "README.md").read_text()
    assert "bench --models" in text and not re.search(r"bench --model\b(?!s)", text)


@pytest.mark.parametrize("command", ["bench", "export", "models", "demo"])
def test_help_shows_each_default_once(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: [])" not in text
    assert not re.search(r"\(default[^()]*(\([^()]*\))?[^()]*\) \(default", text)


def test_out_of_range_steps_fail_before_any_progress_bar(tmp_path, blurry, capsys):
    chain = tmp_path / "chain.safetensors"
    save_model(build_model("resshift-nafnet-tiny"), chain)  # T = 4: at most 4 steps
    assert main(["deblur", str(blurry), "-o", str(tmp_path / "o.png"), "--model", str(chain), "--steps", "9",
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    _one_line_error(err, "steps must be in [1, 4], got 9")
    assert "sampling" not in err and not (tmp_path / "o.png").exists()


def test_the_package_namespace_holds_the_api_only():
    names = set(dir(diffdeblur))
    assert not names & {"Any", "TYPE_CHECKING", "annotations", "typing"}
    assert {"deblur", "load_model", "build_model", "__version__"} <= names


def test_the_example_output_folder_is_ignored_by_git():
    lines = (REPO / ".gitignore").read_text().split()
    assert "deblurred/" in lines or "/deblurred/" in lines


def test_models_says_per_step_for_chains(monkeypatch, capsys):
    from diffdeblur.catalog import model_table

    rows = {r["name"]: r for r in model_table(with_macs=False)}
    assert rows["indi-nafnet-small"]["per_step"] and rows["resshift-nafnet-small-refine"]["per_step"]
    assert not rows["nafnet-small"]["per_step"] and not rows["blurdm-nafnet-tiny"]["per_step"]
    table = [dict(rows["indi-nafnet-small"], gmacs_256=1.69), dict(rows["nafnet-small"], gmacs_256=1.51)]
    monkeypatch.setattr("diffdeblur.commands.models.cached_table", lambda with_macs, use_cache: table)
    assert main(["models", "--macs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "1.69 per step" in out[1] and "1.51" in out[2] and "per step" not in out[2]


# ---- 5. no empty folders left behind -----------------------------------------------------------------

def test_deblur_where_every_input_failed_leaves_no_folder(tmp_path, ckpt, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "new" / "out"
    assert main(["deblur", str(bad), str(tmp_path / "missing.png"), "-o", str(out), "--model", ckpt, "--quiet"]) == 1
    assert not (tmp_path / "new").exists()
    assert "no image deblurred; 2 failed" in capsys.readouterr().out
    existing = tmp_path / "existing"
    existing.mkdir()
    assert main(["deblur", str(bad), "-o", str(existing), "--model", ckpt, "--quiet"]) == 1
    assert existing.is_dir()  # a folder the run did not create is never removed


@pytest.mark.parametrize("case", ["crop too large", "no data"])
def test_a_failed_training_leaves_no_folder(tmp_path, capsys, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "runs" / "r1"
    cfg = _train_cfg(tmp_path, crop=128, out_dir=str(out)) if case == "crop too large" else \
        _train_cfg(tmp_path, data=empty, out_dir=str(out))
    assert main(["train", str(cfg), "--device", "cpu", "--no-progress"]) == 1
    _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()
    out.mkdir(parents=True)
    assert main(["train", str(cfg), "--device", "cpu", "--no-progress"]) == 1
    assert out.is_dir()  # it was there before the run


def test_output_folder_removes_only_what_it_created_and_left_empty(tmp_path):
    with output_folder(tmp_path / "a" / "b"):
        pass
    assert not (tmp_path / "a").exists()
    with output_folder(tmp_path / "c" / "d") as d:
        (d / "f.txt").write_text("x")
    assert (tmp_path / "c" / "d" / "f.txt").is_file()


# ---- 6. `models` builds no network -----------------------------------------------------------------

def test_models_lists_without_building_a_network(monkeypatch, capsys):
    def no_network(self, *args, **kwargs):
        raise AssertionError("a network was built to list the models")

    monkeypatch.setattr(torch.nn.Module, "__init__", no_network)
    assert main(["models", "--no-cache"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["nafnet-width32"][1:3] == ["regression", "17.112"]
    assert rows["default"][1:4] == rows["nafnet-small"][1:4] == ["regression", "1.723", "yes"]


def test_the_stored_model_counts_are_current():
    """catalog_stats.py holds the counts of the presets as registered now (rewrite it with
    `python -m diffdeblur.catalog` after changing a preset or an architecture)."""
    from diffdeblur.catalog import count_macs_of, preset_fingerprint
    from diffdeblur.catalog_stats import STATS
    from diffdeblur.evaluate import build_on_meta, count_parameters
    from diffdeblur.registry import get_entry, list_models

    assert set(STATS) == {e.name for e in list_models()}
    for entry in list_models():
        assert STATS[entry.name]["config"] == preset_fingerprint(entry), entry.name
        assert STATS[entry.name]["params"] == count_parameters(build_on_meta(entry.name)), entry.name
    for name in ("nafnet-tiny", "mimo-unet-tiny", "indi-nafnet-tiny", "resshift-nafnet-tiny"):
        real = count_macs_of(get_entry(name), build_model(name))
        assert STATS[name]["gmacs_256"] == real / 1e9, name
