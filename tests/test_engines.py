"""Inference engines against PyTorch eager fp32, ONNX export and parity, and ONNX files on the command line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import active_fusions, active_tiny_model

from diffdeblur import build_model, save_model
from diffdeblur.cli import main
from diffdeblur.engines import ENGINES, make_runner, resolve_engine
from diffdeblur.errors import ConfigError
from diffdeblur.example import example_pair
from diffdeblur.inference import restore_tensor
from diffdeblur.io import read_image, to_tensor, write_image

try:
    import onnxruntime  # noqa: F401
    HAVE_ORT = True
except ImportError:
    HAVE_ORT = False
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime not installed (pip install 'diffdeblur[onnx]')")
try:
    import openvino  # noqa: F401  (optional, never a dependency: the openvino engine runs where it is installed)
    HAVE_OPENVINO = True
except ImportError:
    HAVE_OPENVINO = False

# max abs difference to eager fp32 on [0, 1] images: float32 reorderings vs bf16's 8-bit mantissa
# (OpenVINO runs bf16 on CPUs with native bf16)
TOLERANCE = {"channels-last": 1e-5, "compile": 1e-4, "onnx": 1e-4, "bf16": 3e-2, "bf16-channels-last": 3e-2,
             "openvino": 3e-2}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFDEBLUR_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tiny() -> torch.nn.Module:
    return active_tiny_model()


@pytest.mark.parametrize("engine", [e for e in ENGINES if e not in ("auto", "eager")])
def test_each_engine_matches_eager_fp32(tiny, engine):
    if engine in ("onnx", "openvino") and not HAVE_ORT:
        pytest.skip("onnxruntime not installed (pip install 'diffdeblur[onnx]')")
    if engine == "openvino" and not HAVE_OPENVINO:
        pytest.skip("openvino not installed (optional: pip install openvino)")
    x = to_tensor(example_pair(48, 72, seed=1)[0])
    cpu = torch.device("cpu")
    with torch.inference_mode():
        ref = make_runner(tiny, "eager", cpu)(x)
        out = make_runner(tiny, engine, cpu)(x).float()
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) <= TOLERANCE[engine]


def test_restore_tensor_takes_an_engine_and_refuses_unknown_ones(tiny):
    x = to_tensor(example_pair(40, 40, seed=2)[0])
    ref = restore_tensor(tiny, x, engine="eager")
    assert torch.allclose(restore_tensor(tiny, x, engine="bf16"), ref, atol=TOLERANCE["bf16"])
    with pytest.raises(ConfigError, match="unknown engine 'fast'"):
        restore_tensor(tiny, x, engine="fast")


def test_auto_is_a_measured_candidate_and_onnx_is_refused_for_diffusion_models(tiny):
    """auto on the CPU: one of the measured engines (which one, tests/test_engine_choice.py); no export."""
    from diffdeblur.engines import CPU_CANDIDATES
    from diffdeblur.export import ExportError

    cpu = torch.device("cpu")
    assert resolve_engine("auto", tiny, cpu) in CPU_CANDIDATES
    model = build_model("sr3-tiny")
    for engine in ("onnx", "openvino"):
        with pytest.raises(ExportError, match="only regression and BlurDM-enhanced models"):
            resolve_engine(engine, model, torch.device("cpu"))


@pytest.mark.skipif(HAVE_OPENVINO, reason="checks the message shown without OpenVINO")
def test_openvino_without_the_package_is_a_one_line_error(tiny):
    with pytest.raises(ConfigError, match="pip install openvino"):
        resolve_engine("openvino", tiny, torch.device("cpu"))


@needs_ort
def test_export_parity_and_deblur_an_onnx_file(tmp_path, tiny, capsys):
    ckpt = tmp_path / "tiny.safetensors"
    save_model(tiny, ckpt)
    onnx_path = tmp_path / "tiny.onnx"
    assert main(["export", "--model", str(ckpt), "--format", "onnx", "-o", str(onnx_path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "parity vs PyTorch fp32: max abs" in out and onnx_path.is_file()
    # any size (not a multiple of the stride) and tiles through the ONNX file, as with the checkpoint
    src = tmp_path / "in.png"
    write_image(src, example_pair(50, 70, seed=3)[0])
    for model, dest in ((str(onnx_path), "a.png"), (str(ckpt), "b.png")):
        assert main(["deblur", str(src), "-o", str(tmp_path / dest), "--model", model, "--tile", "32",
                     "--overlap", "8", "--quiet", "--engine", "auto" if model.endswith("onnx") else "eager"]) == 0
    a, b = read_image(tmp_path / "a.png")[0], read_image(tmp_path / "b.png")[0]
    assert a.shape == (50, 70, 3) and np.abs(a - b).max() <= 1 / 255 + 1e-6


@needs_ort
def test_blurdm_exports_with_its_noise_as_an_input(tmp_path):
    """BlurDM draws one start-noise vector per image for its latent prior: the graph takes it as a second
    input, so the ONNX file reproduces the network for the same seed, whole and tiled."""
    from diffdeblur.export import OnnxModel, export_onnx, parity

    torch.manual_seed(0)
    model = active_fusions(build_model("blurdm-nafnet-tiny").eval())
    for n, p in model.named_parameters():  # untrained NAFNet's zero beta/gamma would skip every block
        if n.endswith(("beta", "gamma")):
            torch.nn.init.normal_(p, std=0.1)
    onnx_model = OnnxModel(export_onnx(model, tmp_path / "b.onnx"))
    assert onnx_model.stochastic and onnx_model.noise_shape == (1, model.prior_dim)
    result = parity(model, onnx_model, sizes=((48, 64),))
    assert result["max_abs"] <= 1e-4 and result["psnr"] >= 60
    x = torch.from_numpy(example_pair(40, 56, seed=4)[0]).permute(2, 0, 1)[None].contiguous()
    for tile in (0, 32):
        ref = restore_tensor(model, x, tile=tile, overlap=8, seed=7, engine="eager")
        out = restore_tensor(onnx_model, x, tile=tile, overlap=8, seed=7)
        assert (out - ref).abs().max() <= 1e-4
    other_seed = restore_tensor(onnx_model, x, seed=8)
    assert (other_seed - restore_tensor(onnx_model, x, seed=7)).abs().max() > 0  # the noise is really used


@needs_ort
def test_parity_failure_is_one_line():
    from diffdeblur.export import ExportError, check_parity

    with pytest.raises(ExportError) as info:
        check_parity({"max_abs": 1e-2, "psnr": 40.0}, "m.onnx")
    assert "\n" not in str(info.value) and "max abs 1.00e-02" in str(info.value)


def test_diffusion_models_are_refused_by_export(tmp_path, capsys):
    assert main(["export", "--model", "sr3-tiny", "--untrained", "-o", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert "only regression and BlurDM-enhanced models export" in err and len(err.strip().splitlines()) == 1
