"""Inference engines side by side on the CPU (issue 15): PyTorch eager fp32, bf16 autocast,
channels-last, torch.compile and ONNX Runtime, on the shipped default model and NAFNet width 32.

For each model and engine, in one process: set-up cost (building the runner: export + session for
ONNX, nothing for eager), first-call cost (compilation for torch.compile), the median latency of one
1280x720 REDS validation frame, the PSNR against the sharp frames and its difference to eager fp32,
the max abs difference to eager fp32, and the achieved fraction of the CPU's peak arithmetic
(convolution MACs / latency / peak). Optional parts: the whole ``diffdeblur deblur`` process and
the Python API in fresh processes (``--process``), a 24 MP image in 512-pixel tiles (``--tiled``).

Each run merges its models into OUT.json and rewrites OUT.md with every run's exact command:

    taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/bench_engines.py --models default
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffdeblur.engines import CPU_DEFAULT

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "reds_sample" / "val"
OUT = ROOT / "docs" / "results" / "engines"
ENGINES = ("eager", "bf16", "channels-last", "compile", "onnx")
PSNR_BUDGET_DB = 0.05
# AMD Zen 5 (family 26; this CPU reports avx512_bf16): two full-width 512-bit FMA pipes per core =
# 2 x 16 fp32 lanes = 32 fp32 MACs per cycle; VDPBF16PS does two bf16 MACs per fp32 lane = 64.
MACS_PER_CYCLE = {"fp32": 32, "bf16": 64}


def cpu_ghz() -> float:
    """The clock /proc/cpuinfo reports (the VM's nominal clock; boost is not visible here)."""
    try:
        mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.startswith("cpu MHz")]
        return max(mhz) / 1000.0
    except (OSError, ValueError):
        return float("nan")


def peak_gmacs(precision: str, threads: int) -> float:
    return MACS_PER_CYCLE[precision] * cpu_ghz() * threads


def frames(n: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    from diffdeblur.io import read_image

    names = sorted(p.name for p in (DATA / "blur").iterdir())[:n]
    return [(read_image(DATA / "blur" / f)[0], read_image(DATA / "sharp" / f)[0], f) for f in names]


def load(name: str) -> torch.nn.Module:
    """Shipped weights by name, else an untrained preset (speed only: its PSNR means little)."""
    from diffdeblur import build_model, load_model
    from diffdeblur.inference import NoWeightsError

    try:
        return load_model(name, "cpu")
    except NoWeightsError:
        torch.manual_seed(0)
        model = build_model(name).eval()
        for n, p in model.named_parameters():  # untrained NAFNet's zero beta/gamma would skip every block
            if n.endswith(("beta", "gamma")):
                torch.nn.init.normal_(p, std=0.1)
        return model


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    """(first call seconds, later calls' seconds)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, times


def bench_model(name: str, engines: list[str], images: list, repeats: int) -> dict[str, Any]:
    from diffdeblur.engines import make_runner
    from diffdeblur.evaluate import count_macs, count_parameters
    from diffdeblur.io import to_numpy, to_tensor
    from diffdeblur.metrics import psnr

    base = load(name)
    cpu = torch.device("cpu")
    h, w = images[0][0].shape[:2]
    macs = count_macs(base, (h, w))
    threads = torch.get_num_threads()
    row: dict[str, Any] = {"params": count_parameters(base), "gmacs": macs / 1e9, "size": [w, h], "engines": {}}
    x0 = to_tensor(images[0][0])
    runners, setup, first = {}, {}, {}
    for engine in engines:
        model = copy.deepcopy(base)  # channels-last converts parameters in place; compile wraps
        os.environ["DIFFDEBLUR_CACHE"] = ""  # measure the ONNX export itself, not a cached file
        t0 = time.perf_counter()
        runners[engine] = make_runner(model, engine, cpu)
        setup[engine] = time.perf_counter() - t0
        with torch.inference_mode():
            first[engine] = timed(lambda: runners[engine](x0), 0)[0]
        print(f"{name} {engine}: set-up {setup[engine]:.2f} s, first call {first[engine]:.2f} s", flush=True)
    times: dict[str, list[float]] = {e: [] for e in engines}
    for _ in range(repeats):  # round robin, so that a change of the machine's load hits every engine alike
        for engine in engines:
            with torch.inference_mode():
                times[engine] += timed(lambda: runners[engine](x0), 0)[:1]
    reference: list[np.ndarray] = []
    for engine in engines:
        with torch.inference_mode():
            outs = [to_numpy(runners[engine](to_tensor(b)).float().clamp(0, 1)) for b, _, _ in images]
        if engine == "eager":
            reference = outs
        latency = statistics.median(times[engine])
        scores = [psnr(o, s) for o, (_, s, _) in zip(outs, images)]
        ref_scores = [psnr(o, s) for o, (_, s, _) in zip(reference, images)]
        precision = "bf16" if engine == "bf16" else "fp32"
        row["engines"][engine] = {
            "setup_s": setup[engine], "first_call_s": first[engine], "latency_s": latency, "latencies_s": times[engine],
            "psnr": float(np.mean(scores)), "dpsnr": float(np.mean(scores) - np.mean(ref_scores)),
            "max_abs_vs_eager": float(max(np.abs(o - r).max() for o, r in zip(outs, reference))),
            "gmacs_per_s": macs / latency / 1e9, "peak_fraction": macs / latency / 1e9 / peak_gmacs(precision, threads),
            "peak_precision": precision}
        e = row["engines"][engine]
        print(f"{name} {engine}: {latency:.3f} s, PSNR {e['psnr']:.3f} ({e['dpsnr']:+.4f} dB), max abs "
              f"{e['max_abs_vs_eager']:.2e}, {100 * e['peak_fraction']:.1f}% of {precision} peak", flush=True)
    return row


def bench_tiled(engines: list[str], tile: int = 512) -> dict[str, Any]:
    """A 6000x4000 (24 MP) image built by tiling REDS frames, restored in tiles, once per engine."""
    from diffdeblur.inference import load_model, restore_tensor
    from diffdeblur.io import to_tensor

    blur = frames(1)[0][0]
    big = np.tile(blur, (4000 // blur.shape[0] + 1, 6000 // blur.shape[1] + 1, 1))[:4000, :6000]
    x = to_tensor(np.ascontiguousarray(big))
    model = load_model("default", "cpu")
    out = {}
    for engine in engines:
        restore_tensor(model, x[..., :tile, :tile], engine=engine)  # set-up outside the timing
        t0 = time.perf_counter()
        restore_tensor(model, x, tile=tile, engine=engine)
        out[engine] = time.perf_counter() - t0
        print(f"24 MP, tile {tile}, {engine}: {out[engine]:.1f} s", flush=True)
    return {"size": [6000, 4000], "tile": tile, "seconds": out}


API_SCRIPT = """
import sys, time
t0 = time.perf_counter()
import numpy as np, diffdeblur
from diffdeblur.io import read_image
x = read_image(sys.argv[1])[0]
m = diffdeblur.load_model("default", "cpu")
t1 = time.perf_counter()
diffdeblur.deblur(x, model=m, tile=0, engine=sys.argv[2])
t2 = time.perf_counter()
diffdeblur.deblur(x, model=m, tile=0, engine=sys.argv[2])
print(t1 - t0, t2 - t1, time.perf_counter() - t2)
"""


def bench_process(engines: list[str]) -> dict[str, Any]:
    """Fresh processes: the whole `diffdeblur deblur` on one 720p file, and the Python API's first
    and second call, with and without glibc's default allocator (DIFFDEBLUR_MALLOC=default)."""
    src = DATA / "blur" / sorted(p.name for p in (DATA / "blur").iterdir())[0]
    result: dict[str, Any] = {"deblur_process_s": {}, "api": {}}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DIFFDEBLUR_CACHE": str(Path(tmp) / "cache")}
        for engine in engines:
            cmd = [sys.executable, "-m", "diffdeblur.cli", "deblur", str(src), "-o", str(Path(tmp) / "o.png"),
                   "--quiet", "--tile", "0", "--engine", engine]
            subprocess.run(cmd, env=env, check=True, capture_output=True)  # fills the ONNX cache
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            result["deblur_process_s"][engine] = time.perf_counter() - t0
            print(f"diffdeblur deblur process, {engine}: {result['deblur_process_s'][engine]:.2f} s", flush=True)
            for malloc in ("tuned", "default"):
                e = dict(env, DIFFDEBLUR_MALLOC=malloc)
                done = subprocess.run([sys.executable, "-c", API_SCRIPT, str(src), engine], env=e, check=True,
                                      capture_output=True, text=True)
                load_s, first, second = map(float, done.stdout.split())
                result["api"][f"{engine}/{malloc}"] = {"import_load_s": load_s, "first_s": first, "second_s": second}
                print(f"API {engine} malloc={malloc}: first {first:.2f} s, second {second:.2f} s", flush=True)
    return result


def render(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = ["# Inference engines on the CPU", "",
             f"Written by `benchmarks/bench_engines.py` (issue 15). Machine: {m['cpu']}, {m['cores']} cores, "
             f"torch {m['torch']}, onnxruntime {m['onnxruntime']}. Peak arithmetic assumed: Zen 5 (CPU family "
             f"{m['family']}), 32 fp32 / 64 bf16 MACs per cycle per core (two 512-bit FMA pipes; VDPBF16PS) at "
             f"the reported {m['ghz']:.2f} GHz = {m['peak_fp32_gmacs_1t']:.0f} fp32 / {m['peak_bf16_gmacs_1t']:.0f} "
             "bf16 GMAC/s per thread. MACs are the convolutions' (PyTorch's flop counter); depthwise convolutions, "
             "layer norms and gates are memory-bound, so 100% is not reachable.", "",
             "All runs pinned to one core (`taskset -c 1`, 1 thread) that other jobs shared; the 2-thread numbers "
             "could not be measured on an idle machine and are not reported. Ratios within one run are meaningful; "
             "absolute times carry ±20%.", ""]
    for run in data["runs"]:
        lines += [f"- `{run['command']}` ({run['date']})"]
    lines += [""] + [f"Note: {n}" for n in data.get("notes", [])]
    for name, row in data["models"].items():
        lines += ["", f"## {name}: {row['params'] / 1e6:.2f} M parameters, {row['gmacs']:.1f} GMACs at "
                  f"{row['size'][0]}x{row['size'][1]}", "",
                  "| engine | latency (s) | speed-up | set-up (s) | first call (s) | PSNR (dB) | ΔPSNR vs fp32 | "
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
            lines += ["", f"Fastest within {PSNR_BUDGET_DB} dB of eager fp32 in this run: **{min(ok)[1]}**."]
    lines += ["", "`--engine auto` on the CPU: " + CPU_DEFAULT + " (diffdeblur.engines.CPU_DEFAULT; fp32 on CPUs "
              "without native bf16). ONNX Runtime ran within 5% of bf16 but costs its export once per model and "
              "weights (the set-up column); torch.compile was slower than eager after minutes of compilation."]
    if "tiled" in data:
        t = data["tiled"]
        lines += ["", f"## 24 MP ({t['size'][0]}x{t['size'][1]}), default model, tile {t['tile']}", "",
                  "| engine | seconds |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in t["seconds"].items()]
    if "process" in data:
        p = data["process"]
        lines += ["", "## Whole process and Python API (fresh processes, default model, one 720p frame, whole image)",
                  "", "| engine | `diffdeblur deblur` process (s) |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in p["deblur_process_s"].items()]
        lines += ["", "| engine / allocator | import + load (s) | first `deblur()` (s) | second (s) |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['import_load_s']:.2f} | {v['first_s']:.2f} | {v['second_s']:.2f} |"
                  for k, v in p["api"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["default"], help="shipped weights or registered names")
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--frames", type=int, default=2, help="REDS val frames scored per engine")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after the first")
    ap.add_argument("--tiled", nargs="*", default=None, help="also time a 24 MP image in tiles with these engines")
    ap.add_argument("--process", nargs="*", default=None, help="also time whole processes with these engines")
    ap.add_argument("--out", default=str(OUT), help="output path without extension (.json and .md)")
    ap.add_argument("--note", action="append", default=[], help="a line for the report's notes (kept across runs)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    data = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {"runs": [], "models": {}}
    import onnxruntime

    data["machine"] = {"cpu": platform.processor() or "AMD EPYC", "cores": os.cpu_count(), "torch": torch.__version__,
                       "onnxruntime": onnxruntime.__version__, "ghz": cpu_ghz(),
                       "family": next((line.split(":")[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                                       if line.startswith("cpu family")), "?"),
                       "peak_fp32_gmacs_1t": peak_gmacs("fp32", 1), "peak_bf16_gmacs_1t": peak_gmacs("bf16", 1)}
    from diffdeblur.runtime import tune_allocator_once

    tune_allocator_once()  # what the product's first restore call does (engines here run below restore_tensor)
    images = frames(args.frames)
    engines = ["eager"] + [e for e in args.engines if e != "eager"]  # eager: the reference
    for name in args.models:
        data["models"][name] = bench_model(name, engines, images, args.repeats)
    if args.tiled:
        data["tiled"] = bench_tiled(args.tiled)
    if args.process:
        data["process"] = bench_process(args.process)
    command = "taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/bench_engines.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    data.setdefault("notes", []).extend(args.note)
    data["runs"].append({"command": command.strip(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(data))
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
