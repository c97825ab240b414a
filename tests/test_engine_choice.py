"""``engine="auto"`` on the CPU: the measured choice (diffdeblur.engines.choose_engine), its cache and its bypasses.

The timing function is replaced by fixed times per engine where a test checks which engine wins, so
that the outcome does not depend on this machine's load; the probe is tiny (PROBE pixels square)."""
from __future__ import annotations

import gc
import json
import math
import weakref

import pytest
import torch
from conftest import active_tiny_model

from diffdeblur import build_model, save_model
from diffdeblur import engines
from diffdeblur.cli import main
from diffdeblur.engines import MIN_AGREEMENT_DB, choose_engine
from diffdeblur.example import example_pair
from diffdeblur.inference import restore_tensor
from diffdeblur.io import to_tensor, write_image

CPU = torch.device("cpu")
PROBE = 32
TORCH_ENGINES = ("eager", "channels-last", "bf16", "bf16-channels-last")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """A fresh cache folder, and the real chooser (conftest pins auto to eager for the other tests)."""
    monkeypatch.setenv("DIFFDEBLUR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFDEBLUR_ENGINE_CACHE", raising=False)
    monkeypatch.setattr(engines, "choose_engine", choose_engine)
    return tmp_path / "cache"


tiny = active_tiny_model


class FixedTimes:
    """Stands in for engines.time_run: a fixed number of seconds per engine (no run), counting the calls."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds, self.calls = seconds, []

    def __call__(self, engine, run, blur, options) -> float:
        self.calls.append(engine)
        return self.seconds[engine]


@pytest.fixture
def fixed_times(monkeypatch):
    """install(seconds) -> the FixedTimes in use; real first runs never rule a candidate out here."""
    monkeypatch.setattr(engines, "SLOW_FIRST_FACTOR", math.inf)

    def install(seconds: dict[str, float]) -> FixedTimes:
        clock = FixedTimes(seconds)
        monkeypatch.setattr(engines, "time_run", clock)
        return clock

    return install


def cached_records(cache) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cache.glob("engine-*.json"))]


@pytest.mark.parametrize("seconds, winner", [
    ({"eager": 3.0, "channels-last": 2.0, "bf16": 1.0, "bf16-channels-last": 1.5}, "bf16"),
    ({"eager": 3.0, "channels-last": 0.9, "bf16": 1.0, "bf16-channels-last": 1.5}, "channels-last"),
    ({"eager": 1.0, "channels-last": 1.1, "bf16": 2.5, "bf16-channels-last": 2.2}, "eager"),
])
def test_the_fastest_measured_candidate_wins(fixed_times, private_cache, seconds, winner):
    clock = fixed_times(seconds)
    assert choose_engine(tiny(), CPU, candidates=TORCH_ENGINES, probe_size=PROBE) == winner
    assert set(clock.calls) == set(TORCH_ENGINES)
    record, = cached_records(private_cache)
    assert record["engine"] == winner and record["key"]["candidates"] == list(TORCH_ENGINES)
    assert all(r["agreement_db"] is None or r["agreement_db"] >= MIN_AGREEMENT_DB for r in record["results"].values())


@pytest.mark.parametrize("amplitude, kept", [(1e-2, False), (1e-4, True)])
def test_a_candidate_outside_the_tolerance_is_dropped(fixed_times, private_cache, monkeypatch, amplitude, kept):
    """channels-last is made the fastest, then its output is perturbed: by 1e-2 (about 40 dB from fp32:
    out) or by 1e-4 (about 80 dB: kept, and it wins)."""
    fixed_times({"eager": 2.0, "channels-last": 1.0, "bf16": 1.6, "bf16-channels-last": 1.8})
    real = engines.make_runner

    def perturbed(model, engine, device):
        run = real(model, engine, device)
        if engine != "channels-last":
            return run
        noise = amplitude * torch.randn(1, 3, PROBE, PROBE, generator=torch.Generator().manual_seed(1))
        return lambda blur, **o: run(blur, **o) + noise

    monkeypatch.setattr(engines, "make_runner", perturbed)
    choice = choose_engine(tiny(), CPU, candidates=TORCH_ENGINES, probe_size=PROBE)
    result = cached_records(private_cache)[0]["results"]["channels-last"]
    assert (choice == "channels-last") is kept
    if kept:
        assert result["agreement_db"] >= MIN_AGREEMENT_DB
    else:
        assert choice == "bf16" and "dB from fp32" in result["dropped"] and "seconds" not in result
        assert result["agreement_db"] < MIN_AGREEMENT_DB


def test_the_choice_is_cached_once_and_a_second_call_times_nothing(fixed_times, private_cache, monkeypatch, capsys):
    clock = fixed_times({"eager": 2.0, "channels-last": 1.0, "bf16": 1.5, "bf16-channels-last": 1.2})
    writes = []
    real_write = engines.write_cached
    monkeypatch.setattr(engines, "write_cached", lambda name, data: (writes.append(name), real_write(name, data)))
    model = tiny()
    assert choose_engine(model, CPU, probe_size=PROBE) == "channels-last"
    err = capsys.readouterr().err
    assert len(writes) == 1 and writes[0].startswith("engine-") and (private_cache / writes[0]).is_file()
    assert len(err.strip().splitlines()) == 1 and "engine auto = channels-last" in err
    assert str(private_cache / writes[0]) in err
    measured = len(clock.calls)
    assert measured > 0
    # the same model again (this process's memo) and a new model of the same architecture (the file): no timing
    assert choose_engine(model, CPU, probe_size=PROBE) == "channels-last"
    other = build_model("nafnet-tiny")  # other weights, same architecture
    assert choose_engine(other, CPU, probe_size=PROBE) == "channels-last"
    assert len(clock.calls) == measured and len(writes) == 1 and capsys.readouterr().err == ""


def test_auto_in_restore_tensor_measures_once_per_process_and_network(fixed_times, monkeypatch):
    """With the file cache off, only this process's memo keeps the later calls from measuring again."""
    monkeypatch.setenv("DIFFDEBLUR_ENGINE_CACHE", "off")
    clock = fixed_times({"eager": 2.0, "channels-last": 1.0, "bf16": 1.5, "bf16-channels-last": 1.2})
    model, x = tiny(), to_tensor(example_pair(24, 40, seed=3)[0])
    out = restore_tensor(model, x)
    measured = len(clock.calls)
    assert measured > 0 and out.shape == x.shape
    restore_tensor(model, x, tile=16, overlap=4)
    assert len(clock.calls) == measured
    assert torch.allclose(out, restore_tensor(model, x, engine="channels-last"), atol=1e-5)


def test_another_torch_version_or_cpu_misses_the_cache(fixed_times, private_cache, monkeypatch):
    clock = fixed_times({"eager": 2.0, "channels-last": 1.0, "bf16": 1.5, "bf16-channels-last": 1.2})
    choose_engine(tiny(), CPU, probe_size=PROBE)
    first = len(clock.calls)
    choose_engine(tiny(), CPU, probe_size=PROBE)
    assert len(clock.calls) == first  # same key: read from the cache
    real_version = torch.__version__
    monkeypatch.setattr(torch, "__version__", "9.9.9+test")
    choose_engine(tiny(), CPU, probe_size=PROBE)
    assert len(clock.calls) == 2 * first
    monkeypatch.setattr(torch, "__version__", real_version)
    monkeypatch.setattr(engines, "cpu_model", lambda: "Another CPU (x86_64, AVX512)")
    choose_engine(tiny(), CPU, probe_size=PROBE)
    assert len(clock.calls) == 3 * first
    keys = [r["key"] for r in cached_records(private_cache)]
    assert len(keys) == 3 and {k["torch"] for k in keys} == {torch.__version__, "9.9.9+test"}
    assert "Another CPU (x86_64, AVX512)" in {k["cpu"] for k in keys}


def test_the_cache_can_be_turned_off(fixed_times, private_cache, monkeypatch):
    clock = fixed_times({"eager": 2.0, "channels-last": 1.0, "bf16": 1.5, "bf16-channels-last": 1.2})
    monkeypatch.setenv("DIFFDEBLUR_ENGINE_CACHE", "off")
    choose_engine(tiny(), CPU, probe_size=PROBE)
    first = len(clock.calls)
    choose_engine(tiny(), CPU, probe_size=PROBE)  # a new network object: measured again
    assert len(clock.calls) == 2 * first and not cached_records(private_cache)


def test_a_named_engine_skips_the_measuring(tmp_path, private_cache, monkeypatch, ckpt):
    def refuse(*args, **kwargs):
        raise AssertionError("measured although an engine was named")

    monkeypatch.setattr(engines, "measure_engines", refuse)
    monkeypatch.setattr(engines, "time_run", refuse)
    x = to_tensor(example_pair(24, 32, seed=2)[0])
    assert restore_tensor(tiny(), x, engine="channels-last").shape == x.shape
    src = tmp_path / "in.png"
    write_image(src, example_pair(24, 32, seed=2)[0])
    assert main(["deblur", str(src), "-o", str(tmp_path / "out.png"), "--model", ckpt, "--engine", "channels-last",
                 "--quiet"]) == 0
    assert (tmp_path / "out.png").is_file() and not list(private_cache.glob("engine-*.json"))


def test_cuda_keeps_bf16_autocast_without_measuring(monkeypatch):
    monkeypatch.setattr(engines, "measure_engines", lambda *a, **k: pytest.fail("measured on CUDA"))
    assert choose_engine(tiny(), torch.device("cuda")) == "bf16"


def test_choosing_leaves_the_callers_model_as_it_was(private_cache):
    """Real timing on the tiny probe: the candidates run on private copies (NHWC conversion included)."""
    model = tiny()
    x = to_tensor(example_pair(16, 16, seed=0)[0])
    restore_tensor(model, x, engine="channels-last")  # a runner kept for the model (not on it), as after real use
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    keys, runners = list(model.__dict__), dict(engines._RUNNERS[model])
    assert choose_engine(model, CPU, candidates=TORCH_ENGINES, probe_size=PROBE) in TORCH_ENGINES
    assert model.training and list(model.__dict__) == keys and engines._RUNNERS[model] == runners
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], v) for k, v in state.items())
    assert all(p.is_contiguous() for p in model.parameters())  # not converted to channels-last
    assert model in engines._CHOSEN
    alive = weakref.ref(model)
    del model, after, runners
    gc.collect()
    assert alive() is None  # the memo holds no model alive


def test_unknown_candidates_are_refused():
    from diffdeblur.errors import ConfigError

    with pytest.raises(ConfigError, match="not measurable"):
        choose_engine(tiny(), CPU, candidates=("eager", "fast"), probe_size=PROBE)


def test_onnx_joins_the_candidates_once_its_graph_is_cached(private_cache, monkeypatch):
    """The export takes about a minute, so auto measures onnx / openvino only for a model whose graph
    an explicit --engine onnx run has already cached; a diffusion model never."""
    monkeypatch.setattr(engines, "runtime_installed", lambda engine: True)  # onnxruntime and openvino "installed"
    model = tiny()
    assert engines.default_candidates(model) == engines.CPU_CANDIDATES
    graph = private_cache / engines.onnx_graph_name(model)
    graph.parent.mkdir(parents=True)
    graph.write_bytes(b"graph")
    assert engines.default_candidates(model) == engines.CPU_CANDIDATES + ("onnx", "openvino")
    assert engines.default_candidates(build_model("sr3-tiny")) == engines.CPU_CANDIDATES


def test_a_saved_checkpoint_shares_the_architecture_key(tmp_path):
    from diffdeblur.checkpoint import load_model_file

    model = tiny()
    save_model(model, tmp_path / "m.safetensors")
    loaded = load_model_file(tmp_path / "m.safetensors", CPU)
    assert engines.network_fingerprint(loaded) == engines.network_fingerprint(model)
    assert engines.network_fingerprint(build_model("mimo-unet-tiny")) != engines.network_fingerprint(model)


def test_a_candidate_far_slower_than_eager_is_not_timed_further(fixed_times, private_cache):
    """Emulated bf16 (AVX2 CPUs) is 10-40x slower: one timed run shows it, the rounds skip it."""
    clock = fixed_times({"eager": 1.0, "channels-last": 0.8, "bf16": 20.0, "bf16-channels-last": 0.9})
    assert choose_engine(tiny(), CPU, candidates=TORCH_ENGINES, probe_size=PROBE) == "channels-last"
    assert clock.calls.count("bf16") == 2  # the small screen (passed: first runs never rule out here) and one run
    assert "eager's time" in cached_records(private_cache)[0]["results"]["bf16"]["dropped"]


def test_a_candidate_slow_on_the_small_screen_is_out_before_the_probe(monkeypatch, private_cache):
    """Emulated bf16 is out after one run on a SCREEN_SIDE-pixel image, never run on the probe (that run cost
    minutes on a wide network)."""
    clock = FixedTimes({"eager": 1.0, "channels-last": 1.2, "bf16": 10.0})
    monkeypatch.setattr(engines, "time_run", clock)
    probed = []
    real = engines.make_runner

    def spy(model, engine, device):
        run = real(model, engine, device)

        def wrapped(blur, **options):
            if blur.shape[-1] == engines.PROBE_SIDE:
                probed.append(engine)
            return run(blur, **options)
        return wrapped

    monkeypatch.setattr(engines, "make_runner", spy)
    model = build_model("nafnet-tiny").eval()
    results = engines.measure_engines(model, torch.device("cpu"), ("eager", "channels-last", "bf16"))
    assert results["bf16"]["dropped"].startswith(f"first run on a {engines.SCREEN_SIDE}-pixel image")
    assert clock.calls.count("bf16") == 1 and "bf16" not in probed
    assert "dropped" not in results["channels-last"] and "channels-last" in probed
