"""`diffdeblur bench` writes its table, JSON and plot on a tiny model and tiny images."""
from __future__ import annotations

import json

import pytest
import torch

from diffdeblur import build_model, save_model
from diffdeblur.benchmark import parse_size
from diffdeblur.cli import main
from diffdeblur.engines import choose_engine  # the real one, imported before conftest pins auto to eager

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


def test_bench_and_eval_time_the_same_way(tmp_path, ckpt, monkeypatch):
    """Both resolve the engine once (auto: the same cached, measured choice), warm up once untimed, time
    the restore only, and state the same method; eval restores its first image once more, untimed."""
    from diffdeblur import engines, evaluate

    monkeypatch.setattr(engines, "choose_engine", choose_engine)  # the real chooser (conftest pins auto to eager)
    monkeypatch.setenv("DIFFDEBLUR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFDEBLUR_ENGINE_CACHE", raising=False)
    monkeypatch.setattr(engines, "SLOW_FIRST_FACTOR", float("inf"))
    fixed = {"eager": 2.0, "channels-last": 1.0, "bf16": 1.5, "bf16-channels-last": 1.8}
    monkeypatch.setattr(engines, "time_run", lambda engine, run, blur, options: fixed[engine])
    restores = []
    real_restore = evaluate.restore_tensor
    monkeypatch.setattr(evaluate, "restore_tensor", lambda *a, **k: (restores.append(1), real_restore(*a, **k))[1])
    make_paired_folder(tmp_path / "pairs", n=2, size=(32, 48))
    out = tmp_path / "bench"
    assert main(["bench", "--models", ckpt, "--sizes", "48x32", "--repeats", "2", "-o", str(out)]) == 0
    row = json.loads(out.with_suffix(".json").read_text())["rows"][0]
    assert main(["eval", "--model", ckpt, "--data", str(tmp_path / "pairs"), "--out", str(tmp_path / "ev"),
                 "--quiet"]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert row["timing"] == summary["timing"]
    assert row["engine"] == summary["engine"] == "channels-last" and "engine channels-last" in row["timing"]
    assert "1 untimed warm-up" in row["timing"] and f"{torch.get_num_threads()} thread" in row["timing"]
    assert "tile 0 (whole image)" in row["timing"] and "Latency: " + row["timing"] in out.with_suffix(".md").read_text()
    assert summary["images"] == 2 and len(restores) == 3  # one untimed warm-up, then one timed restore per image


def test_bench_scores_the_measures_of_metrics(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.safetensors"
    save_model(build_model("nafnet-tiny"), ckpt)
    make_paired_folder(tmp_path / "pairs", n=2, size=(64, 64))
    out = tmp_path / "bench"
    assert main(["bench", "--models", str(ckpt), "--sizes", "32", "--repeats", "1", "--data", str(tmp_path / "pairs"),
                 "--metrics", "psnr,gmsd,haarpsi", "--engine", "eager", "-o", str(out)]) == 0
    row = json.loads(out.with_suffix(".json").read_text())["rows"][0]
    assert row["metrics"] == ["psnr", "gmsd", "haarpsi"]
    assert {"psnr", "gmsd", "haarpsi", "input_gmsd", "input_haarpsi"} <= set(row) and "ssim" not in row
    assert 0 <= row["gmsd"] and 0 < row["haarpsi"] <= 1
    assert "| PSNR | GMSD | HAARPSI |" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit) as exc:  # a usage error, before any model is loaded
        main(["bench", "--models", str(ckpt), "--metrics", "sharpness", "-o", str(out)])
    assert exc.value.code == 2
