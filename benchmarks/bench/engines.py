"""Inference options side by side on the CPU (issue 15), all in one run at one thread count.

Parts (each optional, all measured in the same run so that their ratios compare):
- **engines**: for each model (shipped weights by name, else an untrained preset) and engine (PyTorch eager
  fp32, bf16 autocast, channels-last, torch.compile, ONNX Runtime): set-up cost (export + session for ONNX,
  compilation for torch.compile happens in the first call), first call, median latency of one 1280x720 REDS
  val frame (round robin over the engines), PSNR against the sharp frames and its difference to eager fp32,
  max abs difference to eager fp32, and the achieved fraction of the CPU's peak arithmetic (convolution MACs
  / latency / peak);
- **threads**: the default model's eager and bf16 latency at 1 thread and at ``--threads``;
- **tiles**: the default model on the frame with tiles of 256, 512 and the whole image (``auto`` runs 720p whole);
- **api**: in a fresh process, as a plain PyTorch user: ``model(x)`` in fp32 eager with glibc's allocator as
  it is, then ``diffdeblur.deblur(x, model=model)`` with nothing set up first, then ``model(x)`` again (the
  API's first call tuned the allocator for the whole process);
- **process**: the whole ``diffdeblur deblur frame.png -o out.png`` command, against a baseline source tree
  (``--baseline-src``: the ``src`` folder of an older checkout, e.g. the commit before issue 15), alternated;
- **tiled**: a 24 MP image in 512-pixel tiles with each engine of ``--tiled``.

Writes docs/results/engines.{md,json}; ``--report`` renders the markdown from the JSON alone.

    git worktree add runs/baseline-tree 044d874~1    # the tree before issue 15 (runs/ is ignored by git)
    python -m benchmarks.bench.engines --threads 2 --baseline-src runs/baseline-tree/src
    python -m benchmarks.bench.engines --report
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (REDS_VAL, RESULTS, command, cpu_name, load_average, machine, read_results, today,
                               vector_isa)
from benchmarks.common import write_report

NAME = "engines"
ENGINES = ("eager", "bf16", "channels-last", "bf16-channels-last", "compile", "onnx")
PSNR_BUDGET_DB = 0.05
# Peak MACs per cycle and core by the vector extensions the CPU reports. AVX-512 (AMD Zen 5, family 26, with
# avx512_bf16): two full-width 512-bit FMA pipes = 2 x 16 fp32 lanes = 32 fp32 MACs per cycle; VDPBF16PS does
# two bf16 MACs per fp32 lane = 64. AVX2 + FMA only: two 256-bit FMA pipes = 16 fp32 MACs per cycle, and bf16
# is emulated in fp32 (its peak is the fp32 one).
MACS_PER_CYCLE = {"avx512": {"fp32": 32, "bf16": 64}, "avx512-no-bf16": {"fp32": 32, "bf16": 32},
                  "avx2": {"fp32": 16, "bf16": 16}}
PEAK_TEXT = {"avx512": "Zen 5 (CPU family {family}), 32 fp32 / 64 bf16 MACs per cycle per core (two 512-bit FMA "
                       "pipes; VDPBF16PS)",
             "avx512-no-bf16": "AVX-512 without bf16 (CPU family {family}), 32 fp32 MACs per cycle per core (two "
                               "512-bit FMA pipes; bf16 emulated)",
             "avx2": "AVX2 + FMA only (CPU family {family}), 16 fp32 MACs per cycle per core (two 256-bit FMA pipes; "
                     "bf16 emulated)"}
PROCESS_REPEATS = 3


def cpu_ghz() -> float:
    """The clock /proc/cpuinfo reports (the VM's nominal clock; boost is not visible here)."""
    try:
        mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.startswith("cpu MHz")]
        return max(mhz) / 1000.0
    except (OSError, ValueError):
        return float("nan")


def cpu_family() -> str:
    try:
        return next((line.split(":")[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("cpu family")), "?")
    except OSError:
        return "?"


def peak_gmacs(precision: str, threads: int, ghz: float) -> float:
    return MACS_PER_CYCLE[vector_isa()][precision] * ghz * threads


def frames(folder: Path, n: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """The first ``n`` pairs of a paired folder: (blur, sharp, name)."""
    from diffdeblur.data.pairs import find_pairs
    from diffdeblur.io import read_image

    pairs = find_pairs(folder)[0][:n]
    return [(read_image(p.blur)[0], read_image(p.sharp)[0], p.blur.name) for p in pairs]


def load(name: str) -> tuple[torch.nn.Module, bool]:
    """(model, trained): shipped weights by name, else an untrained preset (speed only)."""
    from diffdeblur import build_model, load_model
    from diffdeblur.inference import NoWeightsError

    try:
        return load_model(name, "cpu"), True
    except NoWeightsError:
        torch.manual_seed(0)
        model = build_model(name).eval()
        for n, p in model.named_parameters():  # untrained NAFNet's zero beta/gamma would skip every block
            if n.endswith(("beta", "gamma")):
                torch.nn.init.normal_(p, std=0.1)
        return model, False


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_model(name: str, engines: list[str], images: list, repeats: int, threads: int, ghz: float) -> dict[str, Any]:
    """One model: every engine's set-up, first call, latency, accuracy against eager fp32 and peak fraction."""
    from diffdeblur.engines import make_runner
    from diffdeblur.evaluate import count_macs, count_parameters
    from diffdeblur.io import to_numpy, to_tensor
    from diffdeblur.metrics import psnr

    base, trained = load(name)
    cpu = torch.device("cpu")
    h, w = images[0][0].shape[:2]
    macs = count_macs(base, (h, w))
    row: dict[str, Any] = {"params": count_parameters(base), "gmacs": macs / 1e9, "size": [w, h],
                           "trained": trained, "engines": {}}
    x0 = to_tensor(images[0][0])
    runners, setup, first = {}, {}, {}
    for engine in engines:
        model = copy.deepcopy(base)  # channels-last converts parameters in place; compile wraps
        os.environ["DIFFDEBLUR_CACHE"] = ""  # measure the ONNX export itself, not a cached file
        t0 = time.perf_counter()
        runners[engine] = make_runner(model, engine, cpu)
        setup[engine] = time.perf_counter() - t0
        with torch.inference_mode():
            first[engine] = seconds(lambda: runners[engine](x0))
        print(f"{name} {engine}: set-up {setup[engine]:.2f} s, first call {first[engine]:.2f} s", flush=True)
    times: dict[str, list[float]] = {e: [] for e in engines}
    for r in range(repeats):  # round robin, so that a change of the machine's load hits every engine alike;
        for engine in engines[r % len(engines):] + engines[:r % len(engines)]:  # rotated: no engine always follows another
            with torch.inference_mode():
                times[engine].append(seconds(lambda: runners[engine](x0)))
    reference: list[np.ndarray] = []
    for engine in engines:
        with torch.inference_mode():
            outs = [to_numpy(runners[engine](to_tensor(b)).float().clamp(0, 1)) for b, _, _ in images]
        if engine == "eager":
            reference = outs
        latency = statistics.median(times[engine])
        scores = [psnr(o, s) for o, (_, s, _) in zip(outs, images)]
        ref_scores = [psnr(o, s) for o, (_, s, _) in zip(reference, images)]
        precision = "bf16" if engine.startswith("bf16") else "fp32"
        row["engines"][engine] = {
            "setup_s": setup[engine], "first_call_s": first[engine], "latency_s": latency, "latencies_s": times[engine],
            "psnr": float(np.mean(scores)), "dpsnr": float(np.mean(scores) - np.mean(ref_scores)),
            "max_abs_vs_eager": float(max(np.abs(o - r).max() for o, r in zip(outs, reference))),
            "gmacs_per_s": macs / latency / 1e9,
            "peak_fraction": macs / latency / 1e9 / peak_gmacs(precision, threads, ghz), "peak_precision": precision}
        e = row["engines"][engine]
        print(f"{name} {engine}: {latency:.3f} s, PSNR {e['psnr']:.3f} ({e['dpsnr']:+.4f} dB), max abs "
              f"{e['max_abs_vs_eager']:.2e}, {100 * e['peak_fraction']:.1f}% of {precision} peak", flush=True)
    return row


def bench_threads(image: np.ndarray, threads: int, repeats: int) -> dict[str, Any]:
    """The default model's 720p latency with eager and with the engine ``auto`` picks on this CPU, at 1 thread
    and at ``threads``."""
    from diffdeblur.engines import resolve_engine
    from diffdeblur.inference import load_model, restore_tensor
    from diffdeblur.io import to_tensor

    model, x = load_model("default", "cpu"), to_tensor(image)
    engines = list(dict.fromkeys(["eager", resolve_engine("auto", model, torch.device("cpu"))]))
    out: dict[str, Any] = {"engines": engines}
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        for engine in engines:
            restore_tensor(model, x, engine=engine)
            out[f"{engine}@{n}"] = statistics.median(seconds(lambda: restore_tensor(model, x, engine=engine))
                                                     for _ in range(repeats))
            print(f"threads {n}, {engine}: {out[f'{engine}@{n}']:.3f} s", flush=True)
    torch.set_num_threads(threads)
    return out


def bench_tiles(image: np.ndarray, repeats: int, tiles: tuple[int, ...] = (256, 512, 0)) -> dict[str, float]:
    """The default model (engine auto) at 720p with each tile size (0 = whole image)."""
    from diffdeblur.inference import load_model, restore_tensor
    from diffdeblur.io import to_tensor

    model, x = load_model("default", "cpu"), to_tensor(image)
    out = {}
    for tile in tiles:
        restore_tensor(model, x, tile=tile)
        out[str(tile)] = statistics.median(seconds(lambda: restore_tensor(model, x, tile=tile)) for _ in range(repeats))
        print(f"tile {tile}: {out[str(tile)]:.3f} s", flush=True)
    return out


def bench_tiled(image: np.ndarray, engines: list[str], tile: int = 512) -> dict[str, Any]:
    """A 6000x4000 (24 MP) image built by tiling a frame, restored in tiles, once per engine."""
    from diffdeblur.inference import load_model, restore_tensor
    from diffdeblur.io import to_tensor

    big = np.tile(image, (4000 // image.shape[0] + 1, 6000 // image.shape[1] + 1, 1))[:4000, :6000]
    x = to_tensor(np.ascontiguousarray(big))
    model = load_model("default", "cpu")
    out = {}
    for engine in engines:
        restore_tensor(model, x[..., :tile, :tile], engine=engine)  # set-up outside the timing
        out[engine] = seconds(lambda: restore_tensor(model, x, tile=tile, engine=engine))
        print(f"24 MP, tile {tile}, {engine}: {out[engine]:.1f} s", flush=True)
    return {"size": [6000, 4000], "tile": tile, "seconds": out}


API_SCRIPT = """
import json, statistics, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
import diffdeblur
from diffdeblur.io import read_image, to_numpy, to_tensor
from diffdeblur.metrics import psnr
blur, sharp = read_image(sys.argv[1])[0], read_image(sys.argv[2])[0]
model = diffdeblur.load_model("default", "cpu")
x = to_tensor(blur)
def median_s(fn, n=3):
    fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); out.append(time.perf_counter() - t0)
    return statistics.median(out)
with torch.inference_mode():
    plain = median_s(lambda: model(x))
    plain_out = to_numpy(model(x).clamp(0, 1))
api = median_s(lambda: diffdeblur.deblur(blur, model=model))
api_out = diffdeblur.deblur(blur, model=model)
with torch.inference_mode():
    plain_tuned = median_s(lambda: model(x))
print(json.dumps({"plain_fp32_s": plain, "api_s": api, "plain_fp32_after_api_s": plain_tuned,
                  "plain_psnr": psnr(plain_out, sharp), "api_psnr": psnr(api_out, sharp)}))
"""


def bench_api(blur: Path, sharp: Path, threads: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", API_SCRIPT, str(blur), str(sharp), str(threads)], check=True,
                          capture_output=True, text=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["speedup"] = out["plain_fp32_s"] / out["api_s"]
    out["dpsnr"] = out["api_psnr"] - out["plain_psnr"]
    print(f"API: plain fp32 forward {out['plain_fp32_s']:.3f} s, deblur() {out['api_s']:.3f} s "
          f"({out['speedup']:.2f}x, {out['dpsnr']:+.4f} dB)", flush=True)
    return out


def bench_process(src: Path, threads: int, baseline_src: Path | None) -> dict[str, Any]:
    """The whole `diffdeblur deblur` command on one file: this tree and (if given) a baseline tree, alternated."""
    trees = {"current": Path(__file__).resolve().parents[2] / "src"}
    if baseline_src is not None:
        trees["baseline"] = baseline_src.resolve()
    times: dict[str, list[float]] = {k: [] for k in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(PROCESS_REPEATS + 1):  # the first round warms the page cache, untimed
            for label, tree in trees.items():
                env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads),
                       "DIFFDEBLUR_CACHE": str(Path(tmp) / "cache")}
                cmd = [sys.executable, "-m", "diffdeblur.cli", "deblur", str(src), "-o",
                       str(Path(tmp) / f"{label}_{i}.png"), "--quiet"]
                t = seconds(lambda: subprocess.run(cmd, env=env, check=True, capture_output=True))
                if i:
                    times[label].append(t)
    out: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    out["all_s"] = times
    if "baseline" in out:
        out["speedup"] = out["baseline"] / out["current"]
    print("process: " + ", ".join(f"{k} {out[k]:.2f} s" for k in trees), flush=True)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime

    torch.set_num_threads(args.threads)
    ghz = cpu_ghz()
    data: dict[str, Any] = {
        "machine": {"cpu": cpu_name(), "summary": machine(), "onnxruntime": onnxruntime.__version__, "ghz": ghz,
                    "family": cpu_family(), "vector_isa": vector_isa(), "peak_fp32_gmacs_1t": peak_gmacs("fp32", 1, ghz),
                    "peak_bf16_gmacs_1t": peak_gmacs("bf16", 1, ghz)},
        "threads": args.threads, "load_average_start": load_average(), "date": today(), "models": {}}
    from diffdeblur.runtime import tune_allocator_once

    images = frames(args.data, args.frames)
    first = first_pair(args.data)
    data["frame"] = {"name": first.blur.name, "size": list(images[0][0].shape[1::-1])}
    if args.api:  # fresh processes first, while this one has not tuned the allocator (nothing is inherited)
        data["api"] = bench_api(first.blur, first.sharp, args.threads)
    if args.process:
        data["process"] = bench_process(first.blur, args.threads, args.baseline_src)
    tune_allocator_once()  # what the product's first restore call does (engines here run below restore_tensor)
    engines = ["eager"] + [e for e in args.engines if e != "eager"]  # eager: the reference
    for name in args.models:
        data["models"][name] = bench_model(name, engines, images, args.repeats, args.threads, ghz)
    if args.threads_part:
        data["threads_part"] = bench_threads(images[0][0], args.threads, args.repeats)
    if args.tiles:
        data["tiles"] = bench_tiles(images[0][0], args.repeats)
    if args.tiled:
        data["tiled"] = bench_tiled(images[0][0], args.tiled)
    data["load_average_end"] = load_average()
    return data


def first_pair(folder: Path):
    from diffdeblur.data.pairs import find_pairs

    return find_pairs(folder)[0][0]


def render(data: dict[str, Any]) -> list[str]:
    m, th = data["machine"], data["threads"]
    size = "x".join(map(str, data["frame"]["size"]))
    lines = ["# Inference options on the CPU", "",
             f"Written by `{data['command']}` on {data['date']}. Machine: {m['cpu']} ({m['summary']}), onnxruntime "
             f"{m['onnxruntime']}; **{th} thread(s)**; load average {data['load_average_start']:.2f} at the start, "
             f"{data['load_average_end']:.2f} at the end. Every table comes from this one run.", "",
             "Peak arithmetic assumed: " + PEAK_TEXT[m.get("vector_isa", "avx512")].format(**m) +
             f" at the reported {m['ghz']:.2f} GHz = {m['peak_fp32_gmacs_1t']:.0f} "
             f"fp32 / {m['peak_bf16_gmacs_1t']:.0f} bf16 GMAC/s per thread. MACs are the convolutions' (PyTorch's "
             "flop counter); depthwise convolutions, layer norms and gates are memory-bound, so 100% is not "
             "reachable."]
    if "api" in data:
        a = data["api"]
        lines += ["", f"## Python API against a plain fp32 forward (default model, one {size} frame)", "",
                  "A fresh process, as a plain PyTorch user: `model(x)` (fp32 eager, glibc's allocator as it is), then "
                  "`diffdeblur.deblur(x, model=model)` with nothing set up first (engine and tile `auto`; its first "
                  "call tunes the allocator), then `model(x)` again in the now tuned process. Median of 3 after a "
                  "warm-up.", "",
                  "| `model(x)` fp32 (s) | `deblur()` (s) | speed-up | `model(x)` after (s) | PSNR fp32 / API (dB) | ΔPSNR |",
                  "|---|---|---|---|---|---|",
                  f"| {a['plain_fp32_s']:.3f} | {a['api_s']:.3f} | **{a['speedup']:.2f}x** | "
                  f"{a['plain_fp32_after_api_s']:.3f} | {a['plain_psnr']:.3f} / {a['api_psnr']:.3f} | {a['dpsnr']:+.4f} |"]
    if "process" in data:
        p = data["process"]
        lines += ["", f"## The whole `diffdeblur deblur frame.png -o out.png` process (one {size} file)", "",
                  f"Fresh processes, median of {PROCESS_REPEATS} after one untimed round, alternated. `baseline`: the "
                  "source tree given as `--baseline-src` (its own shipped weights, same architecture).", "",
                  "| tree | seconds |", "|---|---|"] + [f"| {k} | {p[k]:.2f} |" for k in ("baseline", "current") if k in p]
        if "speedup" in p:
            lines += ["", f"Speed-up of the whole process: **{p['speedup']:.2f}x**."]
    for name, row in data["models"].items():
        lines += ["", f"## {name}: {row['params'] / 1e6:.2f} M parameters, {row['gmacs']:.1f} GMACs at "
                  f"{row['size'][0]}x{row['size'][1]}" + ("" if row["trained"] else " (untrained: its PSNR means "
                                                           "nothing, its ΔPSNR shows only the engines' differences)"),
                  "", "| engine | latency (s) | speed-up | set-up (s) | first call (s) | PSNR (dB) | ΔPSNR vs fp32 | "
                  "max abs vs fp32 | GMAC/s | % of peak | within 0.05 dB |", "|---" * 11 + "|"]
        eager = row["engines"].get("eager", {}).get("latency_s")
        for engine, e in row["engines"].items():
            speed = f"{eager / e['latency_s']:.2f}x" if eager else ""
            lines.append(f"| {engine} | {e['latency_s']:.3f} | {speed} | {e['setup_s']:.2f} | {e['first_call_s']:.2f} | "
                         f"{e['psnr']:.3f} | {e['dpsnr']:+.4f} | {e['max_abs_vs_eager']:.1e} | {e['gmacs_per_s']:.1f} | "
                         f"{100 * e['peak_fraction']:.1f} ({e['peak_precision']}) | "
                         f"{'yes' if abs(e['dpsnr']) <= PSNR_BUDGET_DB else 'no'} |")
        ok = [(e["latency_s"], k) for k, e in row["engines"].items() if abs(e["dpsnr"]) <= PSNR_BUDGET_DB]
        if ok:
            lines += ["", f"Fastest within {PSNR_BUDGET_DB} dB of eager fp32: **{min(ok)[1]}**."]
    if "threads_part" in data:
        t = data["threads_part"]
        lines += ["", f"## Threads (default model, {size}, whole image)", "", "| engine | " +
                  " | ".join(f"{n} thread(s) (s)" for n in sorted({1, th})) + " |", "|---" * (1 + len({1, th})) + "|"]
        lines += [f"| {e} | " + " | ".join(f"{t[f'{e}@{n}']:.3f}" for n in sorted({1, th})) + " |"
                  for e in t.get("engines", ("eager", "bf16"))]
    if "tiles" in data:
        lines += ["", f"## Tile size (default model, {size}, engine auto)", "", "| tile | seconds |", "|---|---|"]
        lines += [f"| {'whole image' if k == '0' else k} | {v:.3f} |" for k, v in data["tiles"].items()]
    if "tiled" in data:
        t = data["tiled"]
        lines += ["", f"## 24 MP ({t['size'][0]}x{t['size'][1]}), default model, tile {t['tile']}", "",
                  "| engine | seconds |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in t["seconds"].items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["default", "nafnet-width32"],
                    help="shipped weights or registered names (untrained presets time as well)")
    ap.add_argument("--engines", nargs="+", default=["eager", "bf16", "channels-last", "bf16-channels-last", "onnx"],
                    choices=ENGINES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=REDS_VAL, help="paired folder of the frames")
    ap.add_argument("--frames", type=int, default=2, help="frames scored per engine")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per engine (median)")
    ap.add_argument("--no-api", dest="api", action="store_false", help="skip the API part")
    ap.add_argument("--no-process", dest="process", action="store_false", help="skip the process part")
    ap.add_argument("--baseline-src", type=Path, default=None, help="src folder of an older tree for the process part")
    ap.add_argument("--no-threads", dest="threads_part", action="store_false", help="skip the 1-thread comparison")
    ap.add_argument("--no-tiles", dest="tiles", action="store_false", help="skip the tile-size comparison")
    ap.add_argument("--tiled", nargs="*", default=["eager", "bf16"], help="engines for the 24 MP part (none: skip)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--report", action="store_true", help="rewrite the markdown from the committed JSON")
    args = ap.parse_args(argv)
    if args.report:
        data = read_results(NAME, args.results)
    else:
        data = run(args)
        data["command"] = command("benchmarks.bench.engines", argv)
    write_report(NAME, render(data), data, args.results, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
