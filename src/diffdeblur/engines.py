"""Inference engines: how ``model.restore`` runs on one image or tile, and which one ``auto`` picks.

- ``eager``: PyTorch eager, float32 (the reference every other engine is checked against);
- ``bf16``: bfloat16 autocast (CUDA's default; on the CPU native with AVX-512 BF16 or AMX, emulated,
  and then slower than fp32, elsewhere);
- ``channels-last``: eager float32 on NHWC tensors (on a private copy of the model converted to
  channels-last: the caller's model keeps its memory format);
- ``bf16-channels-last``: both (bf16 autocast on NHWC tensors);
- ``compile``: ``torch.compile`` of a private copy's restore (minutes of compilation per process and input shape);
- ``onnx``: the network exported to ONNX (:mod:`diffdeblur.export`) and run by ONNX Runtime's
  CPU execution provider with all graph optimisations. The exported graph is cached in the user's
  cache folder (:mod:`diffdeblur.cache`), keyed by a hash of the weights and config, so only the
  first use of a model pays for the export (about a minute on the project's machines);
- ``openvino``: the same cached ONNX graph compiled by OpenVINO's CPU plugin. Optional: it runs only
  where ``import openvino`` works (OpenVINO is not a dependency of diffdeblur). OpenVINO picks its own
  inference precision (bf16 on CPUs with native bf16), so it is checked against fp32 like the bf16 engines.

``auto`` is :data:`CUDA_DEFAULT` (bf16 autocast) on CUDA. On the CPU it is a measured choice
(:func:`choose_engine`): no instruction-set test predicts the fastest engine across the CPUs this runs
on (AMD with AVX-512 BF16, AMD with AVX2 only, Intel with AVX-512 but no BF16, where oneDNN reports bf16
support, emulates it, and the flag-chosen ``bf16-channels-last`` was slower than ``channels-last``).
The first ``auto`` run of a network on a machine times the candidate engines on a small probe image
(:data:`PROBE_SIDE` pixels square, a few seconds for the default model), keeps those whose output
stays within :data:`TOLERANCE_DB` of eager fp32 (:data:`MIN_AGREEMENT_DB`), picks the fastest, prints
one line saying so on stderr and caches the choice in the user's cache folder, keyed by CPU model,
torch version, thread count and network architecture (not its weights): later runs read it and time
nothing. ``--engine NAME`` (``engine=`` in the API) bypasses all of it; ``DIFFDEBLUR_ENGINE_CACHE=off``
keeps the cache out (measured once per process and network instead).

Nothing is stored on the caller's model and nothing of it is converted: prepared runners (copies,
compiled functions, ONNX sessions) and engine choices are kept in weak maps keyed by the model object
(:data:`_RUNNERS`, :data:`_CHOSEN`), so they go with it; :func:`eval_mode` puts a model in eval mode for
one call and its own ``training`` flags back after.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cache import cache_dir, cache_path, read_cached, write_cached
from .errors import ConfigError
from .example import example_pair
from .export import ExportError, OnnxModel, check_exportable
from .io import to_tensor
from .models.protocol import extra_inputs
from .options import ENGINES
from .runners import (_RUNNERS, PREPARED_ENGINES, Runner, config_of, eval_mode, make_runner,  # noqa: F401
                      onnx_graph_name, private_copy, require_openvino, runner_for)  # re-exported: engines is the public face
from .version import __version__

CUDA_DEFAULT = "bf16"

# the measured choice (choose_engine)
CPU_CANDIDATES = ("eager", "channels-last", "bf16", "bf16-channels-last")  # no set-up cost: always measured
EXPORTED_ENGINES = ("onnx", "openvino")  # measured once the model's ONNX graph is in the cache (see default_candidates)
RUNTIME_PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino"}
PROBE_SIDE = 256  # probe image side: ~7% of a 720p frame, tens of milliseconds per run for the default model
TIMED_ROUNDS = 4  # timed runs per candidate, taken round-robin so that a load change hits every candidate alike
DROP_FACTOR = 2.0  # after the first round, a candidate this many times slower than the best stops being timed
# too slow to win, not timed further: a PyTorch engine whose first run (set-up included) takes this many
# times eager's first run, or any candidate whose second run takes SLOW_START_FACTOR times eager's second.
# Emulated bf16 (AVX2 CPUs) runs 10-40x slower than fp32; timing it would cost most of the measurement.
SLOW_FIRST_FACTOR = 3.0
SLOW_START_FACTOR = 4.0
# Before its first run on the probe, a PyTorch engine runs once on a SCREEN_SIDE-pixel image, eager too: one
# SLOW_FIRST_FACTOR times eager's there is out without the probe run (emulated bf16 on a wide network such as sr-x2
# took 37x eager's 14 s first run on the 256-pixel probe: 9 minutes before it could be dropped).
SCREEN_SIDE = 64
TOLERANCE_DB = 0.05  # how far below eager fp32's PSNR an engine may score (docs/results/engines.md)
REFERENCE_PSNR_DB = 35.0  # a restoration better than any shipped model's (GoPro's best published are ~34 dB)
# The probe has no sharp image, so the check is on the outputs: PSNR(candidate, eager fp32) >= this.
# Added as independent noise to a restoration of REFERENCE_PSNR_DB (MSE m), a difference of MSE d
# costs 10 log10(1 + d/m) dB; that stays <= TOLERANCE_DB while d/m <= 10^(TOLERANCE_DB/10) - 1,
# i.e. while the agreement is >= REFERENCE_PSNR_DB + 19.36 dB = 54.36 dB (bf16 on the default model: ~58 dB).
MIN_AGREEMENT_DB = REFERENCE_PSNR_DB - 10 * math.log10(10 ** (TOLERANCE_DB / 10) - 1)
ENGINE_CACHE_ENV = "DIFFDEBLUR_ENGINE_CACHE"  # "off": neither read nor write the cached choices
# the choices made in this process, per network object (weak: a model's entry goes with the model;
# nothing is stored on the caller's model): model -> {(candidates, probe side, threads, device): engine}
_CHOSEN: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()


def resolve_engine(engine: str, model: nn.Module, device: torch.device) -> str:
    """The concrete engine for ``engine`` (``auto`` included: :func:`choose_engine`) on ``device``;
    ConfigError if unknown or impossible (ONNX / OpenVINO on CUDA, for a model that cannot be exported,
    or OpenVINO not installed)."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine '{engine}' (choose from {', '.join(ENGINES)})")
    if isinstance(model, OnnxModel):
        if engine not in ("auto", "onnx"):
            raise ConfigError(f"an ONNX file runs with the onnx engine only, not '{engine}'")
        return "onnx"
    if engine == "auto":
        return choose_engine(model, device)
    if engine in EXPORTED_ENGINES:
        if device.type != "cpu":
            raise ConfigError(f"the {engine} engine runs on the CPU (use --device cpu)")
        check_exportable(model)
        if engine == "openvino":
            require_openvino()
    return engine


def training_engine(device: torch.device) -> str:
    """The engine for a model whose weights keep changing (validation during training): never an
    export (it would be redone at every validation); bf16 autocast on CUDA as before, fp32 on the CPU."""
    return CUDA_DEFAULT if device.type == "cuda" else "eager"


# -- the measured choice ------------------------------------------------------------------------------

def choose_engine(model: nn.Module, device: torch.device, *, candidates: tuple[str, ...] | None = None,
                  probe_size: int = PROBE_SIDE, cache: bool = True) -> str:
    """The engine ``auto`` runs ``model`` with on ``device``: bf16 autocast on CUDA; on the CPU the
    fastest of ``candidates`` (default: :func:`default_candidates`) whose output stays within
    :data:`TOLERANCE_DB` of eager fp32, measured by :func:`measure_engines` on a ``probe_size`` square.

    The choice is remembered for this model object in this process, and (``cache`` and unless
    ``DIFFDEBLUR_ENGINE_CACHE=off``) in the user's cache folder under the key of :func:`choice_key`
    (CPU, torch version, threads, network architecture, candidates): a cached choice is read, not
    measured. A measurement prints one line on stderr (the winner, the times, where it was cached).
    ``model`` is left as it was (the candidates run on private copies).
    """
    if device.type == "cuda":
        return CUDA_DEFAULT
    memo = _CHOSEN.setdefault(model, {})
    memo_key = (None if candidates is None else tuple(candidates), probe_size, torch.get_num_threads(), str(device))
    if memo_key in memo:
        return memo[memo_key]
    names = default_candidates(model) if candidates is None else tuple(candidates)
    bad = [n for n in names if n not in ENGINES or n == "auto"]
    if bad or not names:
        raise ConfigError(f"engine candidates: {', '.join(repr(n) for n in bad) or 'none given'}: not measurable "
                          f"(choose from {', '.join(e for e in ENGINES if e != 'auto')})")
    key = choice_key(model, names, probe_size)
    name = f"engine-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}.json"
    use_cache = cache and os.environ.get(ENGINE_CACHE_ENV, "").lower() not in ("off", "0", "no", "false")
    record = read_choice(name, key) if use_cache else None
    if record is None:
        t0 = time.perf_counter()
        results = measure_engines(model, device, names, probe_size)
        record = {"key": key, "engine": fastest(results), "results": results, "probe": f"{probe_size}x{probe_size}",
                  "min_agreement_db": round(MIN_AGREEMENT_DB, 2), "seconds": round(time.perf_counter() - t0, 2),
                  "diffdeblur": __version__, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        where = None
        if use_cache:
            write_cached(name, (json.dumps(record, indent=1) + "\n").encode())
            where = cache_path(name)
        print(choice_line(record, where, use_cache), file=sys.stderr, flush=True)
    memo[memo_key] = record["engine"]
    return record["engine"]


def default_candidates(model: nn.Module) -> tuple[str, ...]:
    """:data:`CPU_CANDIDATES`, plus ``onnx`` / ``openvino`` where their runtime is installed, the model
    exports (:func:`diffdeblur.export.check_exportable`) and its ONNX graph is already in the cache
    (from an ``--engine onnx`` or ``openvino`` run): the export costs about a minute per set of
    weights, which an automatic choice meant to take seconds never spends on its own."""
    exported = tuple(e for e in EXPORTED_ENGINES if runtime_installed(e))
    if not exported or cache_dir() is None:
        return CPU_CANDIDATES
    try:
        check_exportable(model)
    except ExportError:
        return CPU_CANDIDATES
    graph = cache_path(onnx_graph_name(model))
    return CPU_CANDIDATES + exported if graph is not None and graph.is_file() else CPU_CANDIDATES


def runtime_installed(engine: str) -> bool:
    """Whether the package that ``engine`` (onnx, openvino) runs on can be imported (without importing it)."""
    return importlib.util.find_spec(RUNTIME_PACKAGES[engine]) is not None


def choice_key(model: nn.Module, candidates: tuple[str, ...], probe_size: int = PROBE_SIDE) -> dict[str, Any]:
    """What a cached choice is valid for: this CPU (:func:`cpu_model`), the torch version, the thread
    count, the network's architecture (:func:`network_fingerprint`), the candidates (with the versions of
    the runtimes they need) and the probe size."""
    runtimes = {}
    for engine in candidates:
        if engine in RUNTIME_PACKAGES:
            try:
                runtimes[engine] = importlib.metadata.version(RUNTIME_PACKAGES[engine])
            except importlib.metadata.PackageNotFoundError:
                runtimes[engine] = None
    config = getattr(model, "diffdeblur_config", None)
    return {"cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "network": network_fingerprint(model),
            "network_name": config.get("model") if isinstance(config, dict) else type(model).__name__,
            "candidates": list(candidates), "runtimes": runtimes, "probe": probe_size}


def cpu_model() -> str:
    """This CPU's model name (``/proc/cpuinfo``, else the platform's processor name), with its
    architecture, PyTorch's kernel level and a digest of the instruction-set flags: virtual machines
    often report one name ("AMD EPYC") for CPUs with and without AVX-512 or BF16."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            k, _, v = line.partition(":")
            fields.setdefault(k.strip(), v.strip())
    name = (fields.get("model name") or fields.get("Model") or fields.get("Hardware")
            or platform.processor() or "unknown CPU")
    flags = fields.get("flags") or fields.get("Features") or ""
    digest = f", flags {hashlib.sha256(' '.join(sorted(flags.split())).encode()).hexdigest()[:8]}" if flags else ""
    return f"{name} ({platform.machine()}, {torch.backends.cpu.get_cpu_capability()}{digest})"


def network_fingerprint(model: nn.Module) -> str:
    """A digest of the network's architecture: its class, its diffdeblur config and the name, shape
    and dtype of every parameter and buffer (not their values: new weights keep the choice)."""
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    h.update(json.dumps(config_of(model), sort_keys=True, default=str).encode())
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        h.update(f"|{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
    return h.hexdigest()[:16]


def read_choice(name: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached record ``name`` if it holds a choice for exactly ``key``; None otherwise (absent,
    unreadable, another key, an engine no longer among the candidates)."""
    data = read_cached(name)
    try:
        record = json.loads(data) if data is not None else None
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("key") != key or record.get("engine") not in key["candidates"]:
        return None
    return record


def probe_inputs(model: nn.Module, side: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """The probe: the blurry half of the built-in procedural pair (side x side, a natural-looking image:
    bf16's rounding shows as it does on photos), and restore options for one network call of a
    diffusion model (``steps=1`` unless its steps are fixed, a fixed noise draw) so that every candidate computes the same thing.
    A model with per-pixel ``extra_inputs`` (an object-removal ``mask``) gets each as an all-ones
    (1, 1, side, side) plane: for a mask, the whole probe is the hole, so every output pixel is computed."""
    blur = to_tensor(example_pair(side, side, seed=0)[0])
    options: dict[str, Any] = {name: torch.ones(1, 1, side, side) for name in extra_inputs(model)}
    if "steps" in getattr(type(model).restore, "options", ()) and not getattr(model, "fixed_steps", False):
        options["steps"] = 1  # a chain that is not respaced (BlurDM's T steps) runs its own
    if getattr(model, "stochastic", False):
        options["noise"] = model.noise_like(blur, torch.Generator().manual_seed(0))
    return blur, options


def agreement_db(out: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR in dB (peak 1, float64, not 8-bit quantised) of ``out`` against ``ref``; inf when equal."""
    mse = float(((out.detach().double().cpu() - ref.detach().double().cpu()) ** 2).mean())
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def time_run(engine: str, run: Runner, blur: torch.Tensor, options: dict[str, Any]) -> float:
    """Wall seconds of one ``run(blur, **options)`` of candidate ``engine``."""
    t0 = time.perf_counter()
    run(blur, **options)
    return time.perf_counter() - t0


@torch.inference_mode()
def measure_engines(model: nn.Module, device: torch.device, candidates: tuple[str, ...],
                    probe_size: int = PROBE_SIDE) -> dict[str, dict[str, Any]]:
    """Per candidate engine: ``agreement_db`` (PSNR of its output against eager fp32's on the probe,
    None when identical), ``first_s`` (making its runner and its first run), and ``seconds`` (median of
    up to :data:`TIMED_ROUNDS` runs after two warm-up runs) and ``runs``, or ``dropped`` (why it is
    out: outside the tolerance, a failed set-up, or too slow to win, which stops its timing early).

    Every candidate runs on a private copy of ``model`` (NHWC and compiled ones on their own). Its first run gives the
    output checked against eager's, and :data:`SLOW_FIRST_FACTOR` times eager's first run is out (not
    for onnx / openvino, whose first run compiles), on a :data:`SCREEN_SIDE`-pixel image first (so that an emulated
    bf16 is out in a second, not after minutes on the probe), then on the probe (set-up excluded there); its second (warm-up, timed) is compared with eager's
    second run: :data:`SLOW_START_FACTOR` times slower is out. The timed runs go in rounds, one run of
    each candidate per round, so that a change of load on the machine slows every candidate alike;
    after the first round a candidate :data:`DROP_FACTOR` times slower than the best is out."""
    blur, options = probe_inputs(model, probe_size)
    blur = blur.to(device)
    clone = private_copy(model)  # converting and compiling engines copy it again (make_runner)
    t0 = time.perf_counter()
    eager = make_runner(clone, "eager", device)
    ref = eager(blur, **options).float()
    eager_first = time.perf_counter() - t0
    baseline = time_run("eager", eager, blur, options)  # eager's second run
    small, small_options = probe_inputs(model, SCREEN_SIDE)
    small = small.to(device)
    eager_small = time_run("eager", make_runner(clone, "eager", device), small, small_options)  # a fresh runner: first run
    results: dict[str, dict[str, Any]] = {}
    runners: dict[str, Runner] = {}
    for engine in candidates:
        if engine == "eager":
            results[engine], runners[engine] = {"agreement_db": None, "first_s": round(eager_first, 4)}, eager
            continue
        try:
            run = make_runner(clone, engine, device)
            if engine not in EXPORTED_ENGINES:  # screened on a small image first (exports: compiling is set-up)
                screen = time_run(engine, run, small, small_options)
                if screen > SLOW_FIRST_FACTOR * eager_small:
                    results[engine] = {"dropped": f"first run on a {SCREEN_SIDE}-pixel image {screen / eager_small:.1f}x "
                                                  "eager's"}
                    continue
            t0 = time.perf_counter()
            out = run(blur, **options).float()
        except Exception as exc:  # noqa: BLE001 - a runtime that fails here (export, compiler, op) is out, not fatal
            why = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            results[engine] = {"dropped": f"failed: {why}"}
            continue
        first, agree = time.perf_counter() - t0, agreement_db(out, ref)
        results[engine] = {"agreement_db": round(agree, 2) if math.isfinite(agree) else None,
                           "first_s": round(first, 4)}
        if not agree >= MIN_AGREEMENT_DB:  # NaN (a broken output) is out too
            results[engine]["dropped"] = f"{agree:.1f} dB from fp32 < {MIN_AGREEMENT_DB:.2f}"
            continue
        if engine not in EXPORTED_ENGINES and first > SLOW_FIRST_FACTOR * eager_first:  # exports: compiling is set-up
            results[engine]["dropped"] = f"first run {first / eager_first:.1f}x eager's"
            continue
        second = time_run(engine, run, blur, options)
        if second > SLOW_START_FACTOR * baseline:
            results[engine]["dropped"] = f"{second / baseline:.1f}x eager's time"
            continue
        runners[engine] = run
    times: dict[str, list[float]] = {e: [] for e in runners}
    for round_ in range(TIMED_ROUNDS):
        for engine, run in runners.items():
            times[engine].append(time_run(engine, run, blur, options))
        if round_ == 0 and runners:
            best = min(t[0] for t in times.values())
            for engine in [e for e in runners if times[e][0] > DROP_FACTOR * best]:
                results[engine]["dropped"] = f"{times[engine][0] / best:.1f}x the fastest in the first round"
                del runners[engine]
    for engine, t in times.items():
        results[engine].update(seconds=statistics.median(t), runs=len(t))
    return results


def fastest(results: dict[str, dict[str, Any]]) -> str:
    """The candidate with the lowest median among those kept; eager (the reference) when none was."""
    timed = {e: r["seconds"] for e, r in results.items() if r.get("seconds") is not None and "dropped" not in r}
    return min(timed, key=timed.get) if timed else "eager"


def choice_line(record: dict[str, Any], where: Path | None, use_cache: bool) -> str:
    """The one line a measurement prints: the winner, each candidate's time or why it is out, where it is kept."""
    parts = []
    for engine, r in record["results"].items():
        parts.append(f"{engine} {1000 * r['seconds']:.1f} ms" if r.get("seconds") is not None
                     else f"{engine} out ({r.get('dropped', '?')})")
    kept = (f"cached in {where} ({ENGINE_CACHE_ENV}=off to measure in each process)" if where is not None
            else "not cached (" + (f"{ENGINE_CACHE_ENV}=off)" if not use_cache else "no cache folder)"))
    key = record["key"]
    threads = f"{key['threads']} thread{'' if key['threads'] == 1 else 's'}"
    return (f"diffdeblur: engine auto = {record['engine']}, measured on this CPU ({key['cpu']}, {threads}) "
            f"for {key['network_name']} at {record['probe']} in {record['seconds']:.1f} s: {', '.join(parts)}; {kept}")
