"""The deblurring backbones of BlurDM (issue 27): their published sizes, what the BlurDM prior adds, 720p latency.

1. **Published configurations.** Every preset that claims a paper's configuration (NAFNet width 32 / 64,
   MIMO-UNet(+), FFTformer, Stripformer, LoFormer-S) and LoFormer-L (no preset: the class with the reference's
   sizes, for the abstract's FLOPs figure), built on PyTorch's meta device (shapes, no storage): parameters beside
   the paper's figure as the model files' docstrings state it, the relative difference and whether it is within
   2 %; MACs of one ``restore`` at 256x256 (``torch.utils.flop_counter.FlopCounterMode``, MACs = FLOPs / 2, on the
   meta device). Each figure says where it comes from: read (in the paper or a listing of its results), design
   notes (the project's notes, not checked against the paper here) or recalled (not read).
2. **The cost of the BlurDM prior.** For every backbone of :data:`diffdeblur.methods.blurdm.FUSED_BACKBONES` (not
   the tiny ones): parameters of the plain backbone and of ``blurdm-<backbone>`` at stage 3 (backbone with its
   prior-fusion layers + the prior chain: blur encoder and the two residual estimators; the sharp encoder exists
   in stages 1-2 only, for training, and is shown apart), and MACs at 256x256 of the plain restore and of the
   stage-3 restore (the T-step prior chain + the fused backbone), on the meta device. The meta-built prior chain
   never samples (its schedule holds no numbers there), so its schedule is rebuilt on the CPU before counting.
3. **720p CPU latency** (``--latency``; slow, off by default): for the CPU-sized backbones (recipe "cpu":
   ``nafnet-small`` and the ``-small`` presets) seconds of one 1280x720 ``restore_tensor`` (whole image, engine
   eager, fp32) of the plain backbone and of the fused one (stage 3, random weights: the cost does not depend on
   them), each preset in a fresh process (:func:`benchmarks.common.run_worker`) that warms up on 64x64 and then
   times ``--repeats`` calls (the median is reported); the issue's target is fused / plain <= 1.3x.

``--tiny`` (the smoke test, seconds): the tiny presets, MACs at 64x64 and latency at 64x64.

    python -m benchmarks.bench.backbones [--threads 2]                       # parts 1-2 (meta device, seconds)
    python -m benchmarks.bench.backbones --threads 2 --latency [PRESET ...]  # + part 3 (minutes)
    python -m benchmarks.bench.backbones --tiny --latency --results DIR      # the smoke test
    python -m benchmarks.bench.backbones --report                            # the markdown from the JSON only
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (command, load_average, machine, md_table, measure_main, run_worker, save_json, today,
                               write_report, worker_call)

NAME = "backbones"
LATENCY_TARGET = 1.3  # issue 27: the fused model at most 1.3x the plain backbone's 720p CPU time
WITHIN = 2.0  # per cent: a parameter count "matches" its paper's figure within this
ALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}  # as latent_chain_cost.py
LOFORMER_L = dict(dim=48, enc_blk_nums=(1, 2, 6), middle_blk_num=9, dec_blk_nums=(6, 2, 2))  # loformer.py docstring

# The published configurations and the figures their papers give, as the model files (and the design notes) state
# them. status: "read" (seen in the paper or a listing of its results), "notes" (the project's design notes, not
# checked against the paper here), "recalled" (remembered, not read).
PUBLISHED: list[dict[str, Any]] = [
    dict(label="NAFNet width 32", preset="nafnet-width32",
         params_m=17.1, params_status="notes", params_source="design notes (tests/test_models.py, core.md)",
         gmacs=16.0, gmacs_status="notes", gmacs_source="design notes (core.md)"),
    dict(label="NAFNet width 64", preset="nafnet-width64",
         params_m=67.9, params_status="notes", params_source="design notes (tests/test_models.py, core.md)",
         gmacs=65.0, gmacs_status="notes", gmacs_source="design notes (core.md: 'paper ~65 G')"),
    dict(label="MIMO-UNet", preset="mimo-unet",
         params_m=6.8, params_status="notes", params_source="design notes (tests/test_models.py, core.md)"),
    dict(label="MIMO-UNet+", preset="mimo-unet-plus",
         params_m=16.1, params_status="notes", params_source="BlurDM design notes (tests/test_models.py, core.md)"),
    dict(label="FFTformer", preset="fftformer",
         params_m=16.6, params_status="read", params_source="paperswithcode.com listing of its GoPro results "
         "(models/fftformer.py); FLOPs figure not found"),
    dict(label="Stripformer", preset="stripformer",
         params_m=20.0, params_status="read", params_source="paper, Table 1: '20M' (models/stripformer.py)"),
    dict(label="LoFormer-S", preset="loformer",
         params_m=16.4, params_status="recalled", params_source="paper, Table 1, recalled: the table was not "
         "reachable (models/loformer.py)"),
    dict(label="LoFormer-L (no preset)", preset="", loformer_kwargs=LOFORMER_L,
         gmacs=126.0, gmacs_status="read", gmacs_source="abstract: '34.09 dB on GoPro with 126G FLOPs' "
         "(models/loformer.py)"),
]
STATUS_WORDS = {"read": "read", "notes": "design notes", "recalled": "recalled, not read"}


# ---- meta-device counts ------------------------------------------------------------------------

def on_meta(preset: str = "", loformer_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> torch.nn.Module:
    """A registered preset (with ``kwargs``), or LoFormer with ``loformer_kwargs``, built on the meta device; a
    BlurDM prior chain gets a CPU schedule, so that it can run (on meta tensors) for the MAC count."""
    from diffdeblur.diffusion import blur_process as bp
    from diffdeblur.models.loformer import LoFormer
    from diffdeblur.registry import build_model

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", UserWarning)  # "copying to a meta tensor is a no-op"
        model = LoFormer(**loformer_kwargs) if loformer_kwargs else build_model(preset, **kwargs)
    chain = getattr(model, "blurdm", None)
    if chain is not None:  # built on meta, the schedule has no numbers to read: the same schedule on the CPU
        s = chain.schedule
        chain.schedule = bp.make_schedule(s.timesteps, parameterization=s.parameterization)
    return model.eval()


def params(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


@torch.inference_mode()
def macs(fn, *args: Any, **kwargs: Any) -> float:
    """MACs (FLOPs / 2 of ``FlopCounterMode``) of one call ``fn(*args, **kwargs)``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with warnings.catch_warnings(), counter:
        warnings.simplefilter("ignore", UserWarning)
        fn(*args, **kwargs)
    return counter.get_total_flops() / 2


def image(size: int) -> torch.Tensor:
    return torch.rand(1, 3, size, size, device="meta")


def published_row(entry: dict[str, Any], size: int) -> dict[str, Any]:
    model = on_meta(entry["preset"], entry.get("loformer_kwargs"))
    n = params(model)
    row = {k: v for k, v in entry.items() if k != "loformer_kwargs"}
    row.update(params=n, macs=macs(model.restore, image(size)))
    if entry.get("params_m"):
        row["params_rel_pct"] = 100 * (n / 1e6 - entry["params_m"]) / entry["params_m"]
        row["params_within"] = abs(row["params_rel_pct"]) <= WITHIN
    if entry.get("gmacs"):
        row["macs_rel_pct"] = 100 * (row["macs"] / 1e9 - entry["gmacs"]) / entry["gmacs"]
    if entry.get("loformer_kwargs"):
        row["config"] = {k: list(v) if isinstance(v, tuple) else v for k, v in entry["loformer_kwargs"].items()}
    return row


def prior_row(backbone: str, recipe: str, size: int) -> dict[str, Any]:
    """Parameters and MACs of ``backbone`` against ``blurdm-<backbone>`` at stage 3 (and its stage-1 sharp encoder)."""
    plain = on_meta(backbone)
    fused = on_meta(f"blurdm-{backbone}", stage=3)
    stage1 = on_meta(f"blurdm-{backbone}", stage=1)
    x = image(size)
    fused_total = macs(fused.restore, x)
    chain = macs(fused.diffusion_prior, x)
    row = {"backbone": backbone, "fused": f"blurdm-{backbone}", "recipe": recipe, "prior_dim": fused.prior_dim,
           "timesteps": fused.blurdm.schedule.timesteps,
           "params_backbone": params(plain), "params_fused": params(fused),
           "params_prior_chain": params(fused.blurdm), "params_blur_encoder": params(fused.blurdm.condition_encoder),
           "params_estimators": params(fused.blurdm.blur_residual) + params(fused.blurdm.noise_residual),
           "params_fusion": params(fused.backbone) - params(plain),
           "params_sharp_encoder": params(stage1.sharp_encoder),
           "macs_backbone": macs(plain.restore, x), "macs_fused": fused_total, "macs_prior_chain": chain,
           "macs_fused_backbone": fused_total - chain}
    assert row["params_fused"] == row["params_backbone"] + row["params_fusion"] + row["params_prior_chain"]
    return row


# ---- latency (one process per preset) ------------------------------------------------------------

def worker(job: dict[str, Any]) -> None:
    """Build ``job["preset"]`` (seeded random weights; stage 3 for a BlurDM one), warm up on 64x64, time
    ``job["repeats"]`` whole-image eager ``restore_tensor`` calls at (h, w); print the JSON of the result."""
    from diffdeblur.inference import restore_tensor
    from diffdeblur.registry import build_model

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    kwargs = {"stage": 3} if job["preset"].startswith("blurdm-") else {}
    model = build_model(job["preset"], **kwargs).eval()
    restore_tensor(model, torch.rand(1, 3, 64, 64), tile=0, engine="eager")  # warm-up
    x = torch.rand(1, 3, job["h"], job["w"], generator=torch.Generator().manual_seed(0))
    seconds = []
    for _ in range(job["repeats"]):
        t0 = time.perf_counter()
        out = restore_tensor(model, x, tile=0, engine="eager", seed=0)
        seconds.append(time.perf_counter() - t0)
        assert out.shape == x.shape and bool(torch.isfinite(out).all())
        del out
    print(json.dumps({"seconds": seconds, "median_s": statistics.median(seconds),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def latency(backbones: list[str], args: argparse.Namespace, h: int, w: int, path: Path,
            out: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), **ALLOC_ENV)
    result: dict[str, Any] = {"height": h, "width": w, "repeats": args.repeats, "threads": args.threads, "rows": []}
    for backbone in backbones:
        row: dict[str, Any] = {"backbone": backbone}
        for key, preset in (("plain", backbone), ("fused", f"blurdm-{backbone}")):
            job = {"preset": preset, "h": h, "w": w, "threads": args.threads, "repeats": args.repeats}
            row[key] = run_worker(__spec__.name, job, env, args.timeout)
            print(preset, json.dumps(row[key]), flush=True)
        if "error" not in row["plain"] and "error" not in row["fused"]:
            row["ratio"] = row["fused"]["median_s"] / row["plain"]["median_s"]
        result["rows"].append(row)
        save_json(path, {**out, "latency": result, "complete": False})
    return result


# ---- the run and the report ----------------------------------------------------------------------

def measure(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    from diffdeblur.methods.blurdm import FUSED_BACKBONES

    torch.set_num_threads(args.threads)
    size = 64 if args.tiny else 256
    out: dict[str, Any] = {"tiny": args.tiny, "mac_size": size, "threads": args.threads, "machine": machine(),
                           "date": today(), "load_average_start": load_average(),
                           "command": command(f"benchmarks.bench.{NAME}", argv)}
    if args.tiny:  # the tiny presets in place of the published ones (no paper figures)
        entries = [dict(label=b, preset=b) for b, r in FUSED_BACKBONES.items() if r == "tiny"]
    else:
        entries = PUBLISHED
    out["published"] = [published_row(e, size) for e in entries]
    for r in out["published"]:
        print(r["label"], f"{r['params'] / 1e6:.3f} M", f"{r['macs'] / 1e9:.2f} GMACs", flush=True)
    wanted = ("tiny",) if args.tiny else ("paper", "cpu")
    out["prior_cost"] = [prior_row(b, r, size) for b, r in FUSED_BACKBONES.items() if r in wanted]
    out["latency"] = None
    if args.latency is not None:
        backbones = args.latency or [b for b, r in FUSED_BACKBONES.items() if r == ("tiny" if args.tiny else "cpu")]
        h, w = (64, 64) if args.tiny else (720, 1280)
        out["latency"] = latency(backbones, args, h, w, args.results / f"{NAME}.json", out)
    return {**out, "load_average_end": load_average(), "complete": True}


def _m(n: int) -> str:
    return f"{n / 1e6:.3f}"


def _g(n: float, digits: int = 2) -> str:
    return f"{n / 1e9:.{digits}f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:+.1f} %"


def report(data: dict[str, Any], results: Path) -> None:
    size = data["mac_size"]
    tiny = data.get("tiny")
    g = (lambda n: _g(n, 4)) if tiny else _g  # noqa: E731 - the tiny presets' counts need more digits
    strip = next((r for r in data["published"] if r["preset"] == "stripformer"), None)
    sdpa = (f" (Stripformer {strip['macs'] / 1e9:.1f} G here; its docstring gives 154.7 G counted on the "
            "reference's explicit attention)" if strip else "")
    lines = ["# Deblurring backbones: published sizes, the cost of the BlurDM prior" +
             (" (tiny test presets)" if tiny else ""), "",
             f"`{data['command']}` on {data['machine']}, {data['date']}, {data['threads']} thread(s), load average "
             f"{data['load_average_start']:.2f} at start, {data['load_average_end']:.2f} at the end.", "",
             f"Parameters and MACs are counted on PyTorch's meta device (shapes, no storage): MACs = FLOPs / 2 of "
             f"`torch.utils.flop_counter.FlopCounterMode` for one `restore` of a 1x3x{size}x{size} image. The counter "
             "sees convolutions and matrix products only: FFTs (FFTformer's patch spectra), elementwise products, "
             "norms and softmax are not counted; scaled-dot-product attention is counted on the meta device"
             f"{sdpa}, but a count on real CPU tensors may miss the fused CPU attention kernel. LoFormer's DCTs are "
             "dense matrix products here and are counted as such.", ""]
    rows = data["published"]
    if tiny:
        lines += ["## Tiny presets", "", *md_table(["preset", "params (M)", f"GMACs @ {size}"],
                                                   [[r["label"], _m(r["params"]), g(r["macs"])] for r in rows]), ""]
    else:
        table = []
        for r in rows:
            has_p, has_g = r.get("params_m") is not None, r.get("gmacs") is not None
            table.append([r["label"], f"`{r['preset']}`" if r["preset"] else "class `LoFormer`", _m(r["params"]),
                          f"{r['params_m']:g}" if has_p else "–", _pct(r.get("params_rel_pct")),
                          ("yes" if r["params_within"] else "no") if has_p else "–",
                          STATUS_WORDS[r["params_status"]] if has_p else "–",
                          _g(r["macs"]), f"{r['gmacs']:g}" if has_g else "–", _pct(r.get("macs_rel_pct")),
                          STATUS_WORDS[r["gmacs_status"]] if has_g else "–"])
        lines += ["## 1. Published configurations", "",
                  *md_table(["backbone", "built as", "params (M)", "paper (M)", "difference", f"within {WITHIN:g} %",
                             "paper figure", f"GMACs @ {size}", "paper G(M)ACs", "difference", "paper figure"], table),
                  "", "Where each paper figure comes from (\"read\": seen in the paper or a listing of its results; "
                  "\"design notes\": the project's notes, not checked against the paper here; \"recalled\": not "
                  "read):", ""]
        for r in rows:
            for key in ("params", "gmacs"):
                if r.get(f"{key}_source"):
                    lines.append(f"- {r['label']}, {'parameters' if key == 'params' else 'FLOPs/MACs'}: "
                                 f"{r[f'{key}_source']}.")
        lines += ["", "The papers' \"FLOPs\" are multiply-accumulates counted by their own tools, not comparable to "
                  "this counter one for one: LoFormer's reference `flops()` counts each DCT as a fast transform "
                  "(C·H·W·log2(H·W)) and some convolutions loosely; applied to these sizes it gives 126.4 G for "
                  "LoFormer-L, the abstract's figure (models/loformer.py), where this count, with dense DCT matrix "
                  "products, gives more. FFTformer's count leaves out its FFTs.", ""]
    prior = data["prior_cost"]
    lines += [f"## {'' if tiny else '2. '}The cost of the BlurDM prior (stage 3)", "",
              "`blurdm-<backbone>` at stage 3 = the backbone with its prior-fusion layers (a bias-free Linear to a "
              "per-channel scale and shift per fused level) + the prior chain (blur encoder + blur-residual and "
              "noise-residual estimators, T steps on a vector of prior_dim). The sharp encoder exists only in stages "
              "1-2 (training) and is not part of the deployed model. MACs of the stage-3 restore = the prior chain "
              f"(the blur encoder once on the image, 2T estimator calls) + the fused backbone, at {size}x{size}.", "",
              *md_table(["backbone", "recipe", "params (M)", "blurdm params (M)", "prior chain (M)", "fusion (M)",
                         "params ratio", "sharp encoder, training only (M)", f"GMACs @ {size}", "blurdm GMACs",
                         "of which prior chain", "MACs ratio"],
                        [[f"`{r['backbone']}`", r["recipe"], _m(r["params_backbone"]), _m(r["params_fused"]),
                          _m(r["params_prior_chain"]), _m(r["params_fusion"]),
                          f"{r['params_fused'] / r['params_backbone']:.2f}x", _m(r["params_sharp_encoder"]),
                          g(r["macs_backbone"]), g(r["macs_fused"]), g(r["macs_prior_chain"]),
                          f"{r['macs_fused'] / r['macs_backbone']:.2f}x"] for r in prior]), ""]
    if prior:
        r0 = prior[0]
        lines += [f"Prior chain: blur encoder {_m(r0['params_blur_encoder'])} M + estimators "
                  f"{_m(r0['params_estimators'])} M, prior_dim {r0['prior_dim']}, T = {r0['timesteps']}"
                  + (" (the same for every backbone of this table)." if len({(r['params_prior_chain'], r['prior_dim'])
                                                                            for r in prior}) == 1 else "."), ""]
    lat = data.get("latency")
    if lat:
        lines += [f"## {'' if tiny else '3. '}{lat['width']}x{lat['height']} CPU latency, plain vs fused", "",
                  f"One whole-image `restore_tensor` (engine eager, fp32, random weights) per call, median of "
                  f"{lat['repeats']} after a 64x64 warm-up, {lat['threads']} thread(s); each preset in a fresh process "
                  f"(peak RSS = its `ru_maxrss`). Target: fused / plain <= {LATENCY_TARGET:g}x.", ""]
        table, errors = [], []
        for r in lat["rows"]:
            if "ratio" not in r:
                errors += [f"- `{r['backbone']}` {k}: failed: {r[k]['error']}" for k in ("plain", "fused")
                           if "error" in r[k]]
                continue
            p, f = r["plain"], r["fused"]
            table.append([f"`{r['backbone']}`", f"{p['median_s']:.3f}", f"{f['median_s']:.3f}", f"{r['ratio']:.2f}x",
                          "yes" if r["ratio"] <= LATENCY_TARGET else "no", f"{p['peak_rss_mb']:.0f}",
                          f"{f['peak_rss_mb']:.0f}"])
        lines += [*md_table(["backbone", "plain (s)", "blurdm stage 3 (s)", "ratio", f"<= {LATENCY_TARGET:g}x",
                             "plain peak RSS (MB)", "fused peak RSS (MB)"], table), "", *errors]
    elif not tiny:
        lines += ["720p latency not measured in this run (`--latency`)."]
    write_report(NAME, lines, data, results)


def main(argv: list[str] | None = None) -> int:
    if worker_call(argv, worker):
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", nargs="*", default=None, metavar="BACKBONE",
                    help="also time 720p restores, plain vs blurdm-<BACKBONE> (default backbones: the CPU-sized ones)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per process (latency)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (latency processes and counting)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds allowed per latency process")
    ap.add_argument("--tiny", action="store_true", help="the tiny presets at 64x64 (the smoke test; seconds)")
    return measure_main(ap, NAME, measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
