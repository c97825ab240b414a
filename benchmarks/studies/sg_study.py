"""Does multiscale structure guidance (Ren et al., ICCV 2023) help out of domain? The same model with and without
guidance, trained on GoPro only, evaluated on every domain.

For a base (``--base``): sr3 (``sr3-small`` vs ``sg-sr3-small``), indi (``indi-nafnet-small`` vs
``sg-indi-nafnet-small``) or resshift (``resshift-nafnet-small-refine`` vs ``sg-resshift-nafnet-small-refine``),
both runs use the unguided preset's shipped config (the guided one differs only in its type and the
``structure-guided`` objective: equal steps, seeds, data, crops and learning rates; ``init_from: default`` where
the config has it, or ``--init``: the shipped default also saw REDS train frames, so the paper's protocol wants a
GoPro-only regression there), GoPro data only: ``gopro_sample/train``, ``gopro_more`` (paired) and the ``frames`` source on
``gopro_frames240/GOPR0477_11_00``; validation on GoPro val; no REDS. Training goes through
:func:`diffdeblur.train.train` (resumable), into ``--runs`` (default ``~/diffdeblur-runs/sg``, outside the checkout).
Both models are then evaluated on every domain of ``--domains`` (``python -m benchmarks.studies.sg_domains``
writes them) through :func:`diffdeblur.domains.evaluate_domains`; per domain, the per-image paired differences
guided - unguided (PSNR and SSIM with references; NIQE and blur effect without) with a 95 % bootstrap interval
(:mod:`benchmarks.studies.paired_compare`). ``--ablation DOMAIN`` also trains guided variants with fewer scales
(coarsest first) and other ``guidance_lambda`` and scores them on that domain. The cost of the guidance against
one denoiser call is measured at ``--cost-size`` (720p). Writes ``docs/results/sg_study.{md,json,png}`` and
``sg_study_example_<base>.png`` (blurry | unguided | guided | sharp on an out-of-domain crop).

    python -m benchmarks.studies.sg_domains
    python -m benchmarks.studies.sg_study run --base indi --steps 2000 [--ablation reds-val] [--device auto]
    python -m benchmarks.studies.sg_study report
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (DATA, GOPRO_TRAIN, GOPRO_VAL, RESULTS, command, machine, md_table, missing_data,
                               portable, read_results, save_json, load_json, today, train_or_load,
                               write_example_pairs, write_report)
from benchmarks.studies.paired_compare import RESAMPLES, bootstrap_ci, compare

NAME = "sg_study"
RUNS = Path("~/diffdeblur-runs/sg").expanduser()
BASES = {"sr3": ("sr3-small", "sg-sr3-small"), "indi": ("indi-nafnet-small", "sg-indi-nafnet-small"),
         "resshift": ("resshift-nafnet-small-refine", "sg-resshift-nafnet-small-refine")}
SMOKE_BASES = {"sr3": ("sr3-tiny", "sg-sr3-tiny"), "indi": ("indi-nafnet-tiny", "sg-indi-nafnet-tiny"),
               "resshift": ("resshift-nafnet-tiny", "sg-resshift-nafnet-tiny")}
GOPRO_MORE = DATA / "gopro_more"
GOPRO_FRAMES = DATA / "gopro_frames240" / "GOPR0477_11_00"
DOMAINS = Path(__file__).resolve().parents[2] / "data_cache" / "ood" / "domains.yaml"
ABLATION_LAMBDAS = (0.0, 0.1, 10.0)  # besides the preset's 1.0
# the measures compared per domain, with the direction of "better"
MEASURES = {"psnr": True, "ssim": True, "niqe": False, "blur_effect": False}


# ---- configs and training ------------------------------------------------------------------------------

def gopro_sources(smoke_data: Path | None = None) -> list[dict[str, Any]]:
    """The GoPro-only training sources (or one generated paired folder for the smoke run)."""
    if smoke_data is not None:
        return [{"type": "paired", "root": str(smoke_data)}]
    return [{"type": "paired", "root": str(GOPRO_TRAIN)}, {"type": "paired", "root": str(GOPRO_MORE)},
            {"type": "frames", "root": str(GOPRO_FRAMES)}]


def run_config(unguided: str, model: str, out_dir: Path, args: argparse.Namespace, sources: list[dict[str, Any]],
               val: Path, **model_kwargs: Any) -> dict[str, Any]:
    """The unguided preset's shipped config with ``model`` (its guided twin or itself), the study's data, steps,
    seed and out_dir; the guided models train the ``structure-guided`` objective."""
    from diffdeblur.config import config_to_dict, load_config

    cfg = config_to_dict(load_config(unguided))
    cfg["model"] = {**cfg["model"], "type": model, **model_kwargs}
    cfg["data"].update(train=sources, val=str(val), val_max_images=args.val_images, val_crop=args.val_crop)
    for key in ("crop", "batch_size"):
        if getattr(args, key) > 0:
            cfg["data"][key] = getattr(args, key)
    cfg["train"].update(steps=args.steps, out_dir=str(out_dir), val_every=max(1, args.steps // 4),
                        save_every=max(1, min(500, args.steps)), threads=0)
    if model != unguided:
        cfg["train"]["loss"] = "structure-guided"
    if args.init and cfg["train"].get("init_from"):
        cfg["train"]["init_from"] = args.init
    if args.smoke:
        cfg["train"]["init_from"] = ""  # the tiny presets have no shipped weights to start from
        cfg["data"]["val_crop"] = 0
    cfg["seed"] = args.seed
    return cfg


def variants(guided: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """label -> guided model kwargs: the main run, then (with ``--ablation``) fewer scales and other lambdas."""
    from diffdeblur.registry import get_entry

    scales = tuple(get_entry(guided).defaults.get("guidance_scales") or ())
    out: dict[str, dict[str, Any]] = {"guided": {}}
    if args.ablation:
        for n in range(1, len(scales)):
            out[f"scales-{'-'.join(map(str, scales[-n:]))}"] = {"guidance_scales": list(scales[-n:])}
        for lam in ABLATION_LAMBDAS:
            out[f"lambda-{lam:g}"] = {"guidance_lambda": lam}
    return out


# ---- evaluation and statistics ------------------------------------------------------------------------------

def paired(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """Per-image B - A of ``key`` over the images both scored: mean, 95 % bootstrap interval, images B is better
    on (by the measure's direction); PSNR through :func:`paired_compare.compare`. None without such scores."""
    a = {r["image"]: float(r[key]) for r in rows_a if key in r and np.isfinite(float(r[key]))}
    b = {r["image"]: float(r[key]) for r in rows_b if key in r and np.isfinite(float(r[key]))}
    names = sorted(set(a) & set(b))
    if not names:
        return None
    if key == "psnr":
        res = compare([{"image": n, "psnr": a[n]} for n in names], [{"image": n, "psnr": b[n]} for n in names])
        res.pop("per_image")
        return {**res, "a": res.pop("psnr_a"), "b": res.pop("psnr_b")}
    d = np.array([b[n] - a[n] for n in names])
    lo, hi = bootstrap_ci(d)
    better = (d > 0) if MEASURES[key] else (d < 0)
    return {"images": len(names), "a": float(np.mean([a[n] for n in names])), "b": float(np.mean([b[n] for n in names])),
            "mean_diff": float(d.mean()), "ci95": [lo, hi], "b_better": int(better.sum())}


def evaluate_on(model: torch.nn.Module, domain: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One model on one domain through the product: status, reason, summary and per-image rows."""
    from diffdeblur.domains import evaluate_domains

    opts = {"steps": args.sample_steps} if args.sample_steps else {}
    res = evaluate_domains(model, [domain], nr_metrics=args.nr_metrics.split(","), tile=args.tile, overlap=32,
                           crop=args.eval_crop, max_images=args.max_images, seed=0, engine="eager", **opts).results[0]
    rep = res.report
    return {"status": res.status, "reason": res.reason, "reference": res.reference,
            "summary": {k: v for k, v in (rep.summary if rep else {}).items() if isinstance(v, (int, float, str))},
            "rows": rep.rows if rep else []}


def paired_table(ev_a: dict[str, Any], ev_b: dict[str, Any]) -> dict[str, Any]:
    return {k: p for k in MEASURES if (p := paired(ev_a.get("rows", []), ev_b.get("rows", []), k)) is not None}


# ---- cost and example -------------------------------------------------------------------------------------------

def guidance_cost(model: torch.nn.Module, size: tuple[int, int], repeats: int) -> dict[str, Any]:
    """Seconds (median of ``repeats``) and GMACs of the guidance of one (1, 3, H, W) image against one call of the
    guided denoiser at the first timestep of a one-step chain."""
    from torch.utils.flop_counter import FlopCounterMode

    from diffdeblur.diffusion.process import to_signed
    from diffdeblur.methods.base import SamplingOptions
    from diffdeblur.methods.resshift import ResShiftDeblur

    device = next(model.parameters()).device
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    model.eval()
    with torch.inference_mode():
        features, _ = model.guidance_features(x)
        cond, _, _ = model.sampling_context(x)
        cond = x if isinstance(model, ResShiftDeblur) else cond  # ResShift's network sees the blurry image
        t = torch.full((1,), float(model.timesteps(SamplingOptions(steps=1))[0]), device=device)

        def denoise() -> Any:
            with model.guided_by(features):
                return model.net(to_signed(x), t, cond)

        out: dict[str, Any] = {"size": list(size)}
        for label, fn in (("guidance", lambda: model.guidance_features(x)), ("denoiser_step", denoise)):
            fn()  # warm-up
            times = []
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            counter = FlopCounterMode(display=False)
            with counter:
                fn()
            out[label] = {"seconds": statistics.median(times), "gmacs": counter.get_total_flops() / 2e9}
    out["ratio"] = out["guidance"]["seconds"] / max(out["denoiser_step"]["seconds"], 1e-12)
    return out


def example_figure(models: dict[str, torch.nn.Module], folder: Path, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """blurry | unguided | guided | sharp on the most degraded crop of the first pair of ``folder``."""
    from benchmarks.cards.default_model import figure_panels
    from diffdeblur.data.image_sources import blur_focused_box
    from diffdeblur.data.pairs import find_pairs, pair_name
    from diffdeblur.inference import restore_tensor
    from diffdeblur.io import read_image, to_numpy, to_tensor
    from diffdeblur.metrics import psnr

    pair = find_pairs(folder)[0][0]
    blur, sharp = read_image(pair.blur)[0], read_image(pair.sharp)[0]
    size = min(256, *blur.shape[:2])
    to8 = lambda a: np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)  # noqa: E731
    y, x = blur_focused_box(np.random.default_rng(0), to8(blur), to8(sharp), size, 32)
    opts = {"steps": args.sample_steps} if args.sample_steps else {}
    outs = [to_numpy(restore_tensor(m, to_tensor(blur), tile=args.tile, engine="eager", **opts)) for m in models.values()]
    crops = [a[y:y + size, x:x + size] for a in (blur, *outs, sharp)]
    scores = [psnr(c, crops[-1]) for c in crops[:-1]]
    titles = [f"{t} ({s:.2f} dB)" for t, s in zip(["blurry", *models], scores)] + ["sharp"]
    figure_panels(crops, titles, path)
    return {"image": pair_name(pair, folder), "data": portable(folder), "box_yx": [int(y), int(x)], "size": size,
            "psnr": dict(zip(["blurry", *models], scores)), "file": path.name}


# ---- the run -------------------------------------------------------------------------------------------

def smoke_domains(root: Path) -> Path:
    """Generated domains for the smoke run: paired, Gaussian-kernel synthetic (the builder's code) and reference-free."""
    from benchmarks.studies.sg_domains import build_domains

    write_example_pairs(root / "pairs", 2, 48, 64)
    noref = write_example_pairs(root / "noref", 2, 48, 64, first_seed=7)
    for p in (noref / "sharp").iterdir():
        p.unlink()
    write_example_pairs(root / "photos", 2, 48, 64, first_seed=3)
    return build_domains(root / "ood", photos=2, sharp_dir=root / "photos" / "sharp",
                         kernels=None,
                         real={"smoke-ref": (root / "pairs", True), "smoke-noref": (noref, False)})


def run(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    from diffdeblur.domains import read_domains_file

    torch.set_num_threads(args.threads)
    bases = SMOKE_BASES if args.smoke else BASES
    unguided, guided = bases[args.base]
    runs = Path(args.runs).expanduser() / args.base
    if args.smoke:
        data = write_example_pairs(runs / "train_pairs", 3, 48, 64)
        domains_file, sources, val = smoke_domains(runs / "domains"), gopro_sources(data), data
    else:
        message = missing_data([GOPRO_TRAIN, GOPRO_VAL, GOPRO_MORE, GOPRO_FRAMES, args.domains])
        if message:
            raise SystemExit(f"{message}; the domains come from python -m benchmarks.studies.sg_domains")
        domains_file, sources, val = args.domains, gopro_sources(), GOPRO_VAL
    domains = read_domains_file(domains_file)
    results_path = Path(args.results) / f"{NAME}.json"
    everything = load_json(results_path)
    entry = everything.setdefault("bases", {}).setdefault(args.base, {})
    if args.reeval:
        entry.pop("eval", None)
    entry.update(unguided=unguided, guided=guided, steps=args.steps, seed=args.seed, device=args.device,
                 sources=[portable(s["root"]) + f" ({s['type']})" for s in sources], domains=[
                     {"name": d.name, "path": portable(d.path), "reference": d.reference} for d in domains],
                 machine=machine(), date=today(), command=command(f"benchmarks.studies.{NAME}", argv),
                 ablation_domain=args.ablation or None)
    evals = entry.setdefault("eval", {})
    save = lambda: save_json(results_path, everything)  # noqa: E731
    labels = {"unguided": (unguided, {}), **{k: (guided, v) for k, v in variants(guided, args).items()}}
    models, train_info = {}, entry.setdefault("train", {})
    for label, (name, kwargs) in labels.items():
        cfg = run_config(unguided, name, runs / label, args, sources, val, **kwargs)
        models[label], train_info[label] = train_or_load(cfg, args.device)
        train_info[label].update(model=name, kwargs=kwargs, run=portable(runs / label))
        todo = domains if label in ("unguided", "guided") else [d for d in domains if d.name == args.ablation]
        for d in todo:
            if d.name not in evals.setdefault(label, {}):
                evals[label][d.name] = evaluate_on(models[label], d, args)
                save()
                print(label, d.name, evals[label][d.name]["status"], evals[label][d.name]["summary"].get("psnr"), flush=True)
    entry["paired"] = {label: {d: paired_table(evals["unguided"][d], ev) for d, ev in evals[label].items()
                               if d in evals["unguided"]} for label in evals if label != "unguided"}
    entry["cost"] = guidance_cost(models["guided"], tuple(args.cost_size), args.cost_repeats)
    ood = next((d for d in domains if d.reference and d.name not in ("gopro", "smoke-ref")), domains[0])
    entry["example"] = example_figure({"unguided": models["unguided"], "guided": models["guided"]}, Path(ood.path),
                                      Path(args.results) / f"{NAME}_example_{args.base}.png", args)
    save()
    return everything


# ---- the report ------------------------------------------------------------------------------------------------

def fmt_diff(p: dict[str, Any] | None, digits: int = 2) -> str:
    if not p:
        return "–"
    lo, hi = p["ci95"]
    return f"{p['mean_diff']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] ({p['b_better']}/{p['images']})"


def render_base(base: str, e: dict[str, Any]) -> list[str]:
    ev, paired_all = e.get("eval", {}), e.get("paired", {})
    lines = [f"## Base `{base}`: `{e['unguided']}` (unguided) against `{e['guided']}` (guided)", "",
             f"`{e['command']}` on {e['machine']}, {e['date']}; {e['steps']} training steps each, seed {e['seed']}, "
             f"device {e['device']}. Training data (GoPro only): {', '.join(e['sources'])}.", ""]
    rows = []
    for d in e["domains"]:
        a, b = ev.get("unguided", {}).get(d["name"], {}), ev.get("guided", {}).get(d["name"], {})
        p = paired_all.get("guided", {}).get(d["name"], {})
        status = a.get("status", "–") if a.get("status") == b.get("status") else f"{a.get('status')}/{b.get('status')}"
        key = "psnr" if d["reference"] else "niqe"
        s_a, s_b = a.get("summary", {}), b.get("summary", {})
        shown = lambda s, k: f"{s[k]:.2f}" if isinstance(s.get(k), float) and np.isfinite(s[k]) else "–"  # noqa: E731
        rows.append([d["name"], "yes" if d["reference"] else "no", status or "–", s_a.get("images", 0),
                     f"{'PSNR' if key == 'psnr' else 'NIQE'} {shown(s_a, 'input_' + key)}", shown(s_a, key), shown(s_b, key),
                     fmt_diff(p.get(key)), fmt_diff(p.get("ssim" if d["reference"] else "blur_effect"), 4),
                     a.get("reason") or b.get("reason") or ""])
    lines += md_table(["domain", "reference", "status", "images", "input", "unguided", "guided",
                       "guided - unguided (PSNR dB or NIQE; 95 % CI; images better)",
                       "guided - unguided (SSIM or blur effect)", "reason"], rows)
    lines += ["", f"Per image, guided - unguided; 95 % percentile bootstrap over the images ({RESAMPLES} resamples, "
              "seed 0); 'images better' counts higher PSNR / SSIM, lower NIQE / blur effect."]
    abl = {k: v for k, v in paired_all.items() if k != "guided"}
    if abl and e.get("ablation_domain"):
        dom = e["ablation_domain"]
        main_p = paired_all.get("guided", {}).get(dom, {})
        arows = [["guided (preset)", fmt_diff(main_p.get("psnr") or main_p.get("niqe"))]]
        arows += [[k, fmt_diff(v.get(dom, {}).get("psnr") or v.get(dom, {}).get("niqe"))] for k, v in abl.items()]
        lines += ["", f"Ablation on `{dom}` (each variant trained as the guided run; difference to the unguided model):",
                  "", *md_table(["variant", "minus unguided (95 % CI; images better)"], arows)]
    c = e.get("cost")
    if c:
        lines += ["", f"Cost at {c['size'][1]}x{c['size'][0]} (median wall seconds, GMACs): guidance "
                  f"{c['guidance']['seconds']:.3f} s / {c['guidance']['gmacs']:.2f}; one denoiser call "
                  f"{c['denoiser_step']['seconds']:.3f} s / {c['denoiser_step']['gmacs']:.2f}; ratio "
                  f"{c['ratio']:.2f}. The guidance runs once per image, the denoiser once per step."]
    x = e.get("example")
    if x:
        lines += ["", f"![blurry, unguided, guided, sharp]({x['file']})", "",
                  f"Crop of `{x['image']}` ({x['data']}): " + ", ".join(f"{k} {v:.2f} dB" for k, v in x["psnr"].items()) + "."]
    return lines


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bases = data.get("bases", {})
    fig, axes = plt.subplots(1, max(1, len(bases)), figsize=(5.5 * max(1, len(bases)), 3.6), dpi=100, squeeze=False)
    for ax, (base, e) in zip(axes[0], bases.items()):
        names, means, errs = [], [], []
        for d in e["domains"]:
            p = e.get("paired", {}).get("guided", {}).get(d["name"], {}).get("psnr" if d["reference"] else "niqe")
            if p:
                names.append(d["name"] + ("" if d["reference"] else " (NIQE)"))
                means.append(p["mean_diff"])
                errs.append([[p["mean_diff"] - p["ci95"][0]], [p["ci95"][1] - p["mean_diff"]]])
        if names:
            ax.errorbar(range(len(names)), means, yerr=np.concatenate(errs, axis=1), fmt="o", capsize=4)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("guided - unguided (PSNR dB; NIQE)")
        ax.set_title(f"{base}: per-image mean, 95 % CI", fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(data: dict[str, Any], results: Path) -> None:
    lines = ["# Multiscale structure guidance (issue 25): guided against unguided, trained on GoPro only", "",
             "Each base: the same model with and without the guidance of docs/methods/structure_guided.md, equal "
             "steps and seeds, evaluated on GoPro (in-domain) and out-of-domain blur "
             "(benchmarks/studies/sg_domains.py).", ""]
    for base, e in data.get("bases", {}).items():
        lines += render_base(base, e) + [""]
    lines += [f"![per-domain differences]({NAME}.png)"]
    write_report(NAME, lines, data, results, quiet=True)
    plot(data, Path(results) / f"{NAME}.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("action", choices=["run", "report"])
    ap.add_argument("--base", choices=sorted(BASES), default="indi", help="the unguided method and its guided twin")
    ap.add_argument("--steps", type=int, default=2000, help="training steps of every run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", default="",
                    help="the regression weights a few-step base starts from ('' = its config's init_from, the shipped "
                         "default, which also saw REDS train frames: for the paper's GoPro-only protocol give a "
                         "regression checkpoint trained on GoPro data only)")
    ap.add_argument("--crop", type=int, default=0, help="training crop (0: the config's)")
    ap.add_argument("--batch-size", type=int, default=0, help="training batch (0: the config's)")
    ap.add_argument("--val-images", type=int, default=4, help="GoPro val images at each validation")
    ap.add_argument("--val-crop", type=int, default=256, help="centre crop of the validation images")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--domains", type=Path, default=DOMAINS, help="domains file of sg_domains.py")
    ap.add_argument("--eval-crop", type=int, default=0, help="centre crop of the evaluated images (0: whole)")
    ap.add_argument("--max-images", type=int, default=10, help="images per domain (0: all)")
    ap.add_argument("--tile", type=int, default=0, help="evaluation tile (0: whole image)")
    ap.add_argument("--sample-steps", type=int, default=0, help="sampling steps (0: the model's default)")
    ap.add_argument("--nr-metrics", default="niqe,blur-effect", help="measures of the domains without references")
    ap.add_argument("--ablation", default="", metavar="DOMAIN", help="also train and score the ablation variants there")
    ap.add_argument("--cost-size", type=int, nargs=2, default=[720, 1280], metavar=("H", "W"))
    ap.add_argument("--cost-repeats", type=int, default=3)
    ap.add_argument("--reeval", action="store_true", help="discard the stored evaluations of this base")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=Path, default=RUNS, help="training runs (outside the checkout)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--smoke", action="store_true", help="tiny presets, generated images, a few steps")
    args = ap.parse_args(argv)
    if args.smoke:
        args.cost_size, args.cost_repeats, args.max_images = [48, 64], 1, 2
        args.val_images, args.crop, args.batch_size = min(args.val_images, 1), args.crop or 32, args.batch_size or 2
        args.nr_metrics = "blur-effect"  # NIQE needs 96x192 pixels at least
    report(read_results(NAME, args.results) if args.action == "report" else run(args, argv), args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
