"""The library owns the work; the command line is thin: folder synthesis, input expansion and output
naming are library functions that the commands call, shared option helpers live in
``diffdeblur.commands``, eval tiles as deblur does, and loading data does not load the networks."""
from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffdeblur.cli import build_parser, command_parser, main
from diffdeblur.data import BUILTIN_SOURCES, SynthFolder, synthesize_folder
from diffdeblur.data.pairs import find_pairs
from diffdeblur.errors import ConfigError, OutputError
from diffdeblur.io import expand_inputs, plan_outputs, write_image
from diffdeblur.options import DEFAULT_OVERLAP, DEFAULT_TILE

from test_layering import import_graph


def sharp_folder(root: Path, n: int = 3) -> Path:
    """n tiny smooth colour images (40x52) in root."""
    root.mkdir(parents=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        y, x = np.mgrid[0:40, 0:52] / 52.0
        img = 0.5 + 0.4 * np.sin(2 * np.pi * (rng.uniform(1, 4) * x + rng.uniform(1, 4) * y))[..., None] * rng.uniform(0.3, 1, 3)
        write_image(root / f"photo{i}.png", img.astype(np.float32))
    return root


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- synthesize_folder ------------------------------------------------------------------------------

def test_synthesize_folder_writes_what_the_command_writes(tmp_path):
    src = sharp_folder(tmp_path / "sharp")
    options = dict(seed=3, partials=(1, 11), motion=True, size=32)
    done = synthesize_folder(src, tmp_path / "lib", 4, **options)
    assert isinstance(done, SynthFolder) and not done.skipped
    assert [r["index"] for r in done.records] == [0, 1, 2, 3] and done.records[0]["seed"] == [3, 0]
    assert main(["synth", str(src), "-o", str(tmp_path / "cli"), "--count", "4", "--seed", "3", "--partials", "1,11",
                 "--motion", "--size", "32", "--quiet"]) == 0
    lib, cli = tree(tmp_path / "lib"), tree(tmp_path / "cli")
    assert lib == cli
    assert {p.split("/")[0] for p in lib} == {"blur", "sharp", "partials", "motion", "kernels", "meta.jsonl"}
    pairs, unmatched = find_pairs(tmp_path / "lib")
    assert len(pairs) == 4 and not unmatched
    meta = [json.loads(line) for line in (tmp_path / "lib" / "meta.jsonl").read_text().splitlines()]
    assert meta == done.records
    assert not list(tmp_path.glob(".*partial*"))  # the temporary folder is gone


def test_synthesize_folder_never_replaces_an_earlier_run_silently(tmp_path):
    src = sharp_folder(tmp_path / "sharp", n=2)
    out = tmp_path / "out"
    synthesize_folder(src, out, 2, size=24)
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    with pytest.raises(ConfigError, match="earlier run") as info:
        synthesize_folder(src, out, 3, size=24, seed=1)
    assert len(str(info.value).splitlines()) == 1 and str(out) in str(info.value)
    assert tree(out) == before
    done = synthesize_folder(src, out, 3, size=24, seed=1, overwrite=True)
    names = {r["name"] for r in done.records}
    assert {p.stem for p in (out / "blur").iterdir()} == {p.stem for p in (out / "sharp").iterdir()} == names
    assert len(names) == 3 and (out / "notes.txt").read_text() == "mine"  # other files are left alone


def test_a_failed_synthesis_leaves_the_output_as_it_was(tmp_path, monkeypatch):
    from diffdeblur.data import folders

    src = sharp_folder(tmp_path / "sharp", n=2)
    out = tmp_path / "out"
    synthesize_folder(src, out, 2, size=24)
    before = tree(out)
    real = folders._make_samples

    def fail_on_the_second(job, files):
        if job.file_index == 1:
            raise RuntimeError("boom")
        return real(job, files)

    monkeypatch.setattr(folders, "_make_samples", fail_on_the_second)
    with pytest.raises(RuntimeError, match="boom"):
        synthesize_folder(src, out, 2, size=24, seed=5, overwrite=True)
    assert tree(out) == before
    with pytest.raises(RuntimeError, match="boom"):
        synthesize_folder(src, tmp_path / "new" / "deeper", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "sharp"]  # nothing made, nothing left


def test_moving_a_run_in_is_undone_when_it_fails_halfway(tmp_path, monkeypatch):
    import os

    src = sharp_folder(tmp_path / "sharp", n=2)
    out = tmp_path / "out"
    synthesize_folder(src, out, 2, size=24)
    before = tree(out)
    real = os.replace

    def full_disk_at_sharp(a, b):
        if Path(a).parent.name.startswith(".out.partial-") and Path(a).name == "sharp" and Path(b).parent == out:
            raise OSError(28, "No space left on device")
        return real(a, b)

    monkeypatch.setattr(os, "replace", full_disk_at_sharp)
    with pytest.raises(OSError, match="No space"):
        synthesize_folder(src, out, 2, size=24, seed=9, partials=(1,), overwrite=True)
    monkeypatch.setattr(os, "replace", real)
    assert tree(out) == before and not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("kwargs, message", [({"count": 0}, "count must be"), ({"workers": 0}, "workers must be"),
                                             ({"partials": (12,)}, "k=12 is outside 1..11"),
                                             ({"preset": "nope"}, "unknown synth preset")])
def test_synthesize_folder_bad_options_are_one_line_and_write_nothing(tmp_path, kwargs, message):
    src = sharp_folder(tmp_path / "sharp", n=1)
    with pytest.raises(ConfigError, match=message) as info:
        synthesize_folder(src, tmp_path / "out", **{"count": 1, **kwargs})
    assert len(str(info.value).splitlines()) == 1 and not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="input folder not found"):
        synthesize_folder(tmp_path / "missing", tmp_path / "out", 1)


def test_synth_from_frames_shares_the_earlier_run_rule(tmp_path):
    from PIL import Image

    from diffdeblur.data import synthesize_from_frames

    clip = tmp_path / "clip"
    clip.mkdir()
    for i in range(6):
        f = np.zeros((8, 12, 3), np.uint8)
        f[:, i] = 255
        Image.fromarray(f).save(clip / f"{i:04d}.png")
    out = tmp_path / "out"
    synthesize_folder(sharp_folder(tmp_path / "sharp", n=1), out, 1, size=8)
    with pytest.raises(ConfigError, match="earlier run"):
        synthesize_from_frames(clip, out, "3")
    records = synthesize_from_frames(clip, out, "3", overwrite=True)
    assert {p.stem for p in (out / "blur").iterdir()} == {r["name"] for r in records}
    assert not (out / "partials").exists()  # the earlier run's parts are all gone, so folder and meta agree


# ---- inputs and outputs -----------------------------------------------------------------------------

def test_expand_inputs_folders_globs_and_missing_files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("b.png", "a.jpg"):
        write_image(folder / name, np.zeros((4, 4, 3), np.float32))
    (folder / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    items = [str(folder), str(folder / "*.png"), str(tmp_path / "nope.png"), str(tmp_path / "*.webp"),
             str(tmp_path / "empty")]
    paths, errors = expand_inputs(items)
    assert paths == [folder / "a.jpg", folder / "b.png", folder / "b.png"]
    assert len(errors) == 3 and all(len(e.splitlines()) == 1 for e in errors)
    assert errors[0] == f"{tmp_path / 'nope.png'}: file not found"
    assert errors[1].startswith(f"{tmp_path / '*.webp'}: no file matches")
    assert errors[2].startswith(f"{tmp_path / 'empty'}: folder has no images")


def test_plan_outputs_names_each_output_and_refuses_collisions(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write_image(tmp_path / sub / "x.png", np.zeros((4, 4, 3), np.float32))
    a, b = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    plan = plan_outputs([str(a), str(b), str(a)], tmp_path / "out")
    assert plan.jobs == ((a, tmp_path / "out" / "x.png"),) and plan.folder == tmp_path / "out" and not plan.to_file
    assert len(plan.errors) == 1 and "also the output of" in plan.errors[0]  # the repeated input is done once
    onto_input = plan_outputs([str(tmp_path / "a")], tmp_path / "a")
    assert not onto_input.jobs and "would overwrite an input" in onto_input.errors[0]
    single = plan_outputs([str(a)], tmp_path / "res" / "y.jpg")
    assert single.to_file and single.jobs == ((a, tmp_path / "res" / "y.jpg"),) and single.folder == tmp_path / "res"
    with pytest.raises(OutputError, match="give an output folder"):
        plan_outputs([str(a), str(b)], tmp_path / "y.png")
    with pytest.raises(OutputError, match="cannot write '.gif' images"):
        plan_outputs([str(a)], tmp_path / "y.gif")
    assert not (tmp_path / "out").exists() and not (tmp_path / "res").exists()  # planning creates nothing


# ---- the commands are thin and agree --------------------------------------------------------------

def defaults(command: str) -> dict:
    parser = command_parser(build_parser(command), command)
    return {a.dest: a.default for a in parser._actions}


def test_eval_and_bench_tile_as_deblur_does():
    from diffdeblur.benchmark import bench_model
    from diffdeblur.evaluate import evaluate, timing_method
    from diffdeblur.inference import deblur

    deblur_cli, eval_cli, bench_cli = defaults("deblur"), defaults("eval"), defaults("bench")
    assert deblur_cli["tile"] == eval_cli["tile"] == bench_cli["tile"] == DEFAULT_TILE
    assert deblur_cli["overlap"] == eval_cli["overlap"] == DEFAULT_OVERLAP
    tile = {f: inspect.signature(f).parameters["tile"].default for f in (deblur, evaluate, bench_model)}
    assert set(tile.values()) == {DEFAULT_TILE}, tile
    assert "tile 0 (whole image)" in timing_method("eager", "auto", sizes=[(720, 1280), (32, 48)])
    assert "tile 512" in timing_method("eager", "auto", sizes=[(2160, 3840)])
    assert "tile auto (whole image up to" in timing_method("eager", "auto", sizes=[(32, 48), (2160, 3840)])


def test_commands_share_option_helpers_from_the_commands_package():
    graph = import_graph()
    for command in ("eval", "trace", "bench", "sr", "remove"):
        assert "diffdeblur.commands.deblur" not in graph[f"diffdeblur.commands.{command}"], command
    assert "diffdeblur.data" in graph["diffdeblur.commands.synth"]  # synthesize_folder, synthesize_from_frames
    from diffdeblur.commands import synth

    assert "multiprocessing" not in inspect.getsource(synth) and not hasattr(synth, "make_samples")


# ---- data sources -----------------------------------------------------------------------------------

def test_importing_the_data_package_loads_no_network():
    code = ("import sys, diffdeblur.data, diffdeblur.data.sources; "
            "print(sorted(m for m in sys.modules if m.startswith(('diffdeblur.models', 'diffdeblur.methods')) "
            "or m in ('diffdeblur.registry', 'diffdeblur.config')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_data_modules_do_not_import_the_model_registry():
    """By the import graph (function-local imports included): only data.datasets, which builds sources from
    a config, may reach the registry; everything data/__init__ pulls in stays below it."""
    graph = import_graph()

    def reach(module: str) -> set[str]:
        seen, todo = set(), [module]
        while todo:
            for dep in graph[todo.pop()] - seen:
                seen.add(dep)
                todo.append(dep)
        return seen

    heavy = ("diffdeblur.registry", "diffdeblur.models", "diffdeblur.methods", "diffdeblur.config")
    for module in graph:
        if module.startswith("diffdeblur.data") and module != "diffdeblur.data.datasets":
            assert not {d for d in reach(module) if d.startswith(heavy)}, module


def test_the_builtin_sources_are_registered_from_the_table():
    from diffdeblur.data.sources import _SOURCES

    assert set(BUILTIN_SOURCES) <= set(_SOURCES)
    assert all(_SOURCES[name] is builder for name, builder in BUILTIN_SOURCES.items())
    assert set(BUILTIN_SOURCES) == {"paired", "blur-kernels", "frames", "synth", "uniform-kernel", "sr", "inpaint"}
