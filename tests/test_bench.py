"""`diffdeblur bench` writes its table, JSON and plot on a tiny model and tiny images."""
from __future__ import annotations

import json

import torch

from diffdeblur import build_model, save_model
from diffdeblur.benchmark import parse_size
from diffdeblur.cli import main

from conftest import make_paired_folder


def test_parse_size():
    assert parse_size("1280x720") == (720, 1280) and parse_size("64") == (64, 64)


def test_bench_writes_its_table(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.safetensors"
    save_model(build_model("nafnet-tiny"), ckpt)
    make_paired_folder(tmp_path / "pairs", n=2, size=(32, 48))
    out = tmp_path / "report" / "bench"
    rc = main(["bench", "--models", str(ckpt), "mimo-unet-tiny", "--sizes", "48x32", "40", "--repeats", "1",
               "--data", str(tmp_path / "pairs"), "--engine", "eager", "-o", str(out)])
    assert rc == 0
    md = out.with_suffix(".md").read_text()
    assert "| model | engine |" in md and "mimo-unet-tiny (untrained)" in md and "48x32" in md
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert len(rows) == 2 and rows[0]["images"] == 2 and rows[0]["sizes"][0]["latency_s"] > 0
    assert rows[0]["sizes"][0]["gmacs"] > 0 and rows[0]["params"] > 0
    assert out.with_suffix(".png").is_file()
