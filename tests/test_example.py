"""The built-in example: a real blurry crop shipped with its credit, which the shipped default improves."""
from __future__ import annotations

from importlib import resources

import pytest

from diffdeblur.cli import main
from diffdeblur.example import builtin_example
from diffdeblur.inference import deblur, load_model, weights_for
from diffdeblur.metrics import psnr


def test_shipped_example_is_real_credited_and_paired():
    blur, sharp, source = builtin_example()
    assert blur.shape == sharp.shape == (256, 384, 3)
    assert source["dataset"] in ("GoPro", "REDS") and len(source["crop_xywh"]) == 4
    credits = (resources.files("diffdeblur") / "examples" / "CREDITS.md").read_text()
    assert "CC BY 4.0" in credits and source["frame"] in credits
    assert psnr(blur, sharp) < 25  # visibly blurred


@pytest.mark.skipif(weights_for("default") is None, reason="shipped default weights not present")
def test_default_gains_at_least_2_db_on_the_example():
    blur, sharp, _ = builtin_example()
    restored = deblur(blur, load_model("default", "cpu"), tile=0)
    assert psnr(restored, sharp) - psnr(blur, sharp) >= 2.0


@pytest.mark.skipif(weights_for("default") is None, reason="shipped default weights not present")
def test_deblur_command_prints_the_gain_and_writes_the_side_by_side(tmp_path, capsys):
    assert main(["deblur", "-o", str(tmp_path / "ex"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "a real blurry crop" in out and "dB" in out and "side by side" in out
    names = {p.name for p in (tmp_path / "ex").iterdir()}
    assert "example_side_by_side.png" in names and "example_deblurred.png" in names
