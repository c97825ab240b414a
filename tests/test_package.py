"""`diffdeblur package`: a training run folder -> one shipped-weights file (float16, config, provenance)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffdeblur import load_model
from diffdeblur.checkpoint import read_metadata
from diffdeblur.cli import build_parser, command_parser, main
from diffdeblur.config import config_from_dict
from diffdeblur.errors import CheckpointError, OutputError
from diffdeblur.packaging import (SELECTION_RULE, STORAGE_DTYPES, WEIGHT_CHOICES, choose_weights, package_run,
                                  portable_config)
from diffdeblur.version import __version__

from conftest import make_paired_folder


def _train(root: Path, validate: bool) -> Path:
    from diffdeblur.train import train

    data = make_paired_folder(root / "data", n=2, size=(32, 32))
    run = root / "my-run"
    raw = {"model": {"type": "nafnet-tiny", "width": 4},
           "data": {"train": [{"type": "paired", "root": str(data)}], "crop": 16, "batch_size": 2,
                    "val": str(data) if validate else ""},
           "train": {"steps": 3, "lr": 3e-3, "log_every": 1, "val_every": 1, "save_every": 3, "sample_images": 0,
                     "out_dir": str(run)}, "seed": 0}
    train(config_from_dict(raw), device="cpu", show_progress=False)
    return run


@pytest.fixture(scope="module")
def validated_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("validated"), validate=True)


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    return model.restore(x)


def test_package_ships_the_best_checkpoint_as_float16_with_its_provenance(validated_run, tmp_path):
    out = tmp_path / "shipped" / "toy.safetensors"
    done = package_run(validated_run, out)
    assert done.path == out and done.weights == "best" and "the run validated" in done.reason
    best = read_metadata(validated_run / "best.safetensors")
    meta = read_metadata(out)
    assert meta["model"] == "nafnet-tiny" and meta["kwargs"]["width"] == 4  # the one model config shape
    info = meta["info"]
    assert info["run"] == "my-run" and info["weights"] == "best" and info["weights_step"] == best["info"]["step"]
    assert info["val"] == best["info"]["val"] and info["val"]["psnr"] > 0  # the chosen checkpoint's validation
    assert info["steps"] == 3 and info["storage_dtype"] == "float16" and info["diffdeblur_version"] == __version__
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", info["date"]) and info["selection"] == done.reason
    assert info["config"]["model"] == {"type": "nafnet-tiny", "width": 4} and info["config"]["train"]["steps"] == 3
    assert info["config"]["train"]["out_dir"] == "my-run" and info["config"]["data"]["train"][0]["root"] == "data"
    assert str(validated_run.parent) not in json.dumps(meta)  # no absolute path of this machine
    # the shipped file is the best checkpoint rounded to float16: same outputs up to that rounding
    shipped, chosen = load_model(out, device="cpu"), load_model(validated_run / "best.safetensors", device="cpu")
    ref = dict(chosen.state_dict())
    assert all(torch.equal(v, ref[k].half().float()) for k, v in shipped.state_dict().items() if v.is_floating_point())
    assert torch.allclose(_outputs(shipped), _outputs(chosen), atol=2e-3)
    stored = load_file(str(out))
    assert stored and all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())


def test_final_weights_in_float32_are_the_run_s_exactly(validated_run, tmp_path):
    out = tmp_path / "final32.safetensors"
    done = package_run(validated_run, out, weights="final", dtype="float32")
    assert done.weights == "final" and done.reason == "final: asked for" and done.step == 3
    assert done.val is not None and done.val["psnr"] > 0  # final was validated at its step (val.csv)
    shipped, final = load_model(out, device="cpu"), load_model(validated_run / "final.safetensors", device="cpu")
    assert torch.equal(_outputs(shipped), _outputs(final))


def test_an_existing_output_is_refused_unless_overwrite(validated_run, tmp_path):
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError) as exc:
        package_run(validated_run, out)
    assert "already exists" in str(exc.value) and "--overwrite" in str(exc.value) and "\n" not in str(exc.value)
    assert out.read_bytes() == b"keep me"
    package_run(validated_run, out, overwrite=True)
    assert read_metadata(out)["model"] == "nafnet-tiny"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # written atomically


def test_a_run_without_validation_ships_final(tmp_path):
    run = _train(tmp_path, validate=False)
    assert not (run / "best.safetensors").exists()
    name, reason = choose_weights(run)
    assert name == "final" and "did not validate" in reason
    done = package_run(run, tmp_path / "w.safetensors")
    assert done.weights == "final" and done.val is None and read_metadata(done.path)["info"]["val"] is None
    with pytest.raises(CheckpointError, match="no best.safetensors .*use --weights final or auto"):
        package_run(run, tmp_path / "w2.safetensors", weights="best")


def test_bad_run_folders_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="training run folder not found"):
        package_run(tmp_path / "missing", tmp_path / "w.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no best.safetensors or final.safetensors \(not a diffdeblur"):
        package_run(tmp_path / "empty", tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()


def test_portable_config_keeps_no_absolute_path():
    cfg = {"train": {"out_dir": "/home/u/runs/r1", "init_from": "/w/default.safetensors", "steps": 3},
           "data": {"train": [{"root": "/data/gopro/train"}, {"root": "rel/dir"}]}}
    assert portable_config(cfg, "r1") == {"train": {"out_dir": "r1", "init_from": "default.safetensors", "steps": 3},
                                          "data": {"train": [{"root": "train"}, {"root": "rel/dir"}]}}


def test_cli_package_and_its_one_line_errors(validated_run, tmp_path, capsys):
    out = tmp_path / "cli.safetensors"
    assert main(["package", str(validated_run), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "weights: best" in printed and "rule: auto: the run validated" in printed and f"wrote {out}" in printed
    assert read_metadata(out)["info"]["weights"] == "best"
    cases = [([str(tmp_path / "nope"), "-o", str(tmp_path / "x.safetensors")], "training run folder not found"),
             ([str(validated_run), "-o", str(out)], "already exists"),
             ([str(validated_run), "-o", str(tmp_path / "x.onnx")], "must end in .safetensors")]
    (tmp_path / "afile").write_text("")
    cases.append(([str(validated_run), "-o", str(tmp_path / "afile" / "x.safetensors")], "cannot create output folder"))
    for argv, needle in cases:
        assert main(["package", *argv]) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("diffdeblur package: error: ") and needle in err
        assert "Traceback" not in err


def test_the_command_offers_the_library_choices():
    from diffdeblur.commands import package as command

    assert (command.WEIGHT_CHOICES, command.STORAGE_DTYPES, command.SELECTION_RULE) == \
        (WEIGHT_CHOICES, STORAGE_DTYPES, SELECTION_RULE)
    parser = command_parser(build_parser("package"), "package")
    args = parser.parse_args(["run", "-o", "w.safetensors"])
    assert (args.weights, args.dtype, args.overwrite) == ("auto", "float16", False)
