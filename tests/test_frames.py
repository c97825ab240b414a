"""Real blur from high-speed frames: the averaging formula, the `frames` training source, and
`diffdeblur synth --from-frames` (outputs, meta.jsonl, bad inputs)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from diffdeblur.cli import main
from diffdeblur.data.datasets import TrainPairs, build_source
from diffdeblur.config import DataSource
from diffdeblur.data.frames import (average_frames, centred_exposures, from_linear, plan_exposures, to_linear)
from diffdeblur.errors import ConfigError


def bar_frames(n: int, h: int = 24, w: int = 40, x0: int = 8) -> list[np.ndarray]:
    """n uint8 frames: a white 1-pixel-wide vertical bar on black, moving one pixel per frame."""
    frames = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, x0 + i] = 255
        frames.append(f)
    return frames


def write_frames(folder, frames, ext=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i + 1:06d}{ext}")
    return folder


def test_constant_scene_gives_back_the_frame():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    out = average_frames([frame] * 9)
    np.testing.assert_allclose(out, frame / 255.0, atol=1e-5)


@pytest.mark.parametrize("gamma", [1.0, 2.2])
def test_moving_bar_gives_the_expected_average(gamma):
    n = 8
    out = average_frames(bar_frames(n), gamma)
    # every column the bar crossed was lit during 1 of the n frames: (1/n)^(1/gamma) in the sRGB-like domain
    expected = (1.0 / n) ** (1.0 / gamma)
    np.testing.assert_allclose(out[:, 8:8 + n], expected, rtol=1e-5)
    assert np.all(out[:, :8] == 0) and np.all(out[:, 8 + n:] == 0)


def test_gamma_round_trip_and_partials():
    x = np.linspace(0, 1, 101, dtype=np.float32)
    np.testing.assert_allclose(from_linear(to_linear(x, 2.2), 2.2), x, atol=1e-6)
    frames = bar_frames(5)
    parts = centred_exposures(frames, 5)
    assert parts.shape == (5, 24, 40, 3)
    # grown around the sharp middle frame (index 2) to the whole exposure: 1, 2, 3, 4, 5 frames
    np.testing.assert_allclose(parts[0], frames[2] / 255.0, atol=1e-6)
    np.testing.assert_allclose(parts[-1], average_frames(frames), atol=1e-6)
    np.testing.assert_allclose(parts[2], average_frames(frames[1:4]), atol=1e-6)
    # closed form of the moving bar: 3 frames lit columns 9..11 (bar at 8 + i), each for 1 of the 3 frames
    np.testing.assert_allclose(parts[2][:, 9:12], (1 / 3) ** (1 / 2.2), rtol=1e-5)
    assert np.all(parts[2][:, :9] == 0) and np.all(parts[2][:, 12:] == 0)
    # 13 frames in 5 parts: 3, 5, 8, 10, 13 frames, each window inside the exposure and the last the whole one
    thirteen = centred_exposures(bar_frames(13), 5)
    np.testing.assert_allclose(thirteen[-1], average_frames(bar_frames(13)), atol=1e-6)
    np.testing.assert_allclose(thirteen[0], average_frames(bar_frames(13)[5:8]), atol=1e-6)


def test_plan_exposures_fit_and_follow_the_range():
    plan = plan_exposures(72, 7, 13, seed=3)
    assert all(7 <= n <= 13 for _, n in plan) and plan[-1][0] + plan[-1][1] <= 72
    assert all(b[0] == a[0] + a[1] for a, b in zip(plan, plan[1:]))  # back to back
    assert plan == plan_exposures(72, 7, 13, seed=3)
    assert [s for s, _ in plan_exposures(30, 8, 8, seed=0, stride=4)] == [0, 4, 8, 12, 16, 20]


def test_frames_source_is_deterministic_and_paired(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    frames = [np.roll(base, i, axis=1) for i in range(16)]  # a scene panning one pixel per frame
    root = write_frames(tmp_path / "frames", frames)
    src = build_source(DataSource("frames", str(root), 1.0, {"min_frames": 3, "max_frames": 5, "focus": 0.5,
                                                               "partials": 3}))
    a = src.sample(np.random.default_rng(7), 24)
    b = src.sample(np.random.default_rng(7), 24)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["blur"].shape == a["sharp"].shape == (24, 24, 3) and a["partials"].shape == (3, 24, 24, 3)
    np.testing.assert_allclose(a["partials"][-1], a["blur"], atol=1e-6)  # the last partial is the whole exposure
    # the sharp crop is one of the frames; the blur differs from it (the scene moved)
    assert any(np.array_equal(a["sharp"], f.astype(np.float32)[y:y + 24, x:x + 24] / 255)
               for f in frames for y in range(17) for x in range(37))
    assert np.abs(a["blur"] - a["sharp"]).mean() > 1e-3
    ds = TrainPairs([src], [1.0], 24, seed=5)
    np.testing.assert_array_equal(ds[3]["blur"].numpy(), TrainPairs([src], [1.0], 24, seed=5)[3]["blur"].numpy())


def test_frames_source_rejects_bad_options(tmp_path):
    root = write_frames(tmp_path / "f", bar_frames(6))
    with pytest.raises(ConfigError, match="min_frames"):
        build_source(DataSource("frames", str(root), 1.0, {"min_frames": 5, "max_frames": 3}))
    with pytest.raises(ConfigError, match="6 frames found, need at least 13"):
        build_source(DataSource("frames", str(root), 1.0, {}))


def test_synth_from_frames_writes_pairs_and_meta(tmp_path, capsys):
    frames = bar_frames(20, w=48)
    root = write_frames(tmp_path / "clip", frames)
    out = tmp_path / "pairs"
    assert main(["synth", "--from-frames", str(root), "--frames", "4:6", "--seed", "1", "-o", str(out)]) == 0
    meta = [json.loads(line) for line in (out / "meta.jsonl").read_text().splitlines()]
    blur = sorted(p.name for p in (out / "blur").iterdir())
    sharp = sorted(p.name for p in (out / "sharp").iterdir())
    assert blur == sharp == sorted(m["name"] + ".png" for m in meta) and len(meta) >= 3
    for m in meta:
        assert set(m) >= {"name", "frames", "n", "gamma", "start", "sharp"} and 4 <= m["n"] <= 6
        assert len(m["frames"]) == m["n"] and m["sharp"] == m["frames"][m["n"] // 2]
        b = np.asarray(Image.open(out / "blur" / f"{m['name']}.png"))
        s = np.asarray(Image.open(out / "sharp" / f"{m['name']}.png"))
        assert b.shape == s.shape == (24, 48, 3)
        np.testing.assert_array_equal(s, frames[m["start"] + m["n"] // 2])
        expected = average_frames(frames[m["start"]:m["start"] + m["n"]], 2.2)
        np.testing.assert_array_equal(b, np.round(expected * 255).astype(np.uint8))
    assert "wrote" in capsys.readouterr().out
    # an earlier run is not replaced silently
    assert main(["synth", "--from-frames", str(root), "-o", str(out), "--frames", "4"]) == 1
    assert "earlier run" in capsys.readouterr().err
    assert len(list((out / "blur").iterdir())) == len(meta)


@pytest.mark.parametrize("case, message", [
    ("few", "2 frames found, need at least 7"),
    ("sizes", "differs from"),
    ("stray", "not an image file among the frames: notes.txt"),
    ("corrupt", "cannot read image"),
])
def test_synth_from_frames_bad_input_writes_nothing(tmp_path, capsys, case, message):
    root = tmp_path / "clip"
    write_frames(root, bar_frames(2 if case == "few" else 9))
    if case == "sizes":
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "000005.png")
    if case == "stray":
        (root / "notes.txt").write_text("x")
    if case == "corrupt":
        (root / "000003.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(["synth", "--from-frames", str(root), "--frames", "7", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["clip"]
