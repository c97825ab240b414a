"""Where does the latent chain from the default's estimate stand, and what holds it back?

For a trained ``latent-shift`` checkpoint (``--run``: its training folder), on centre crops of real frames the
model never trained on (REDS val, ``--crop`` pixels, every ``--every``-th frame): PSNR of the blurry input, of the
shipped default, of the chain at each of ``--steps`` sampling steps (start noise from seed 0, ddim), and of the
pixel head alone with the chain's proposal set to zero (out = d + h([0; d; y])), which separates what the head
learnt from what the latent proposals add. Per-image rows and means, plus the run's validation curve
(``val.csv``: whole REDS val frames during training).

Where the limit lies, per frame, in the latent space: the anchor's error mean |z_d - z_x| (z_d = E(default(y)),
z_x = E(sharp)) beside the chain's first x0 estimate's error mean |x0_hat - z_x| (the UNet at t = T-1 from the
prior with seed-0 noise): the chain can only help where x0_hat is closer to z_x than z_d is. And two PSNRs in
pixels: the autoencoder's ceiling D(E(sharp)) and the decoded anchor D(z_d), what the latent space keeps of the
sharp frame and of the default's estimate.

    python -m benchmarks.studies.latent_chain --run RUN_DIR [--steps 1 2 4] [--crop 256] [--every 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (measure_main, DATA, command, load_average, machine, md_table, portable,
                               today, write_report)

NAME = "latent_chain"
REDS_VAL = DATA / "reds_sample" / "val"


def centre(x: torch.Tensor, crop: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if crop <= 0 or crop >= min(h, w):
        return x
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[..., top:top + crop, left:left + crop]


def latent_errors(chain: torch.nn.Module, x: torch.Tensor, sharp: torch.Tensor, z_y: torch.Tensor,
                  z_d: torch.Tensor, score) -> dict[str, float]:
    """The latent diagnostics of one frame x / sharp (1, 3, H, W) in [0, 1] with H, W multiples of 8 (see the
    module docstring): anchor and first-step latent L1 errors, and PSNRs of D(E(sharp)) and D(z_d)."""
    from diffdeblur.diffusion.resshift import resshift_prior

    ae = chain.autoencoder
    z_x = ae.encode(sharp)
    noise = torch.randn(z_d.shape, generator=torch.Generator().manual_seed(0))
    x_T = resshift_prior(z_d, float(chain.sqrt_etas[-1]), chain.kappa, noise)
    t = torch.full((1,), chain.num_train_steps - 1)
    x0_hat = chain.net(x_T, t, torch.cat([z_y, z_d], dim=1))
    return {"latent_err_anchor": float((z_d - z_x).abs().mean()), "latent_err_chain": float((x0_hat - z_x).abs().mean()),
            "ae_ceiling": score(ae.decode(z_x)), "anchor_decoded": score(ae.decode(z_d))}


def measure(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    from diffdeblur.inference import load_model
    from diffdeblur.io import read_image, to_numpy, to_tensor
    from diffdeblur.metrics import psnr

    if args.run is None:
        raise SystemExit("latent_chain: --run RUN_DIR is required (or --report)")
    torch.set_num_threads(args.threads)
    chain = load_model(str(args.run / args.weights), "cpu")
    default = load_model("default", "cpu")
    blurs = sorted((args.data / "blur").rglob("*.png"))[::args.every]
    rows, load_start = [], load_average()
    for path in blurs:
        sharp = to_numpy(centre(to_tensor(read_image(Path(str(path).replace("/blur/", "/sharp/")))[0]), args.crop))
        x = centre(to_tensor(read_image(path)[0]), args.crop)
        score = lambda out: psnr(to_numpy(out.clamp(0, 1)), sharp)  # noqa: E731
        with torch.no_grad():
            row = {"frame": portable(path), "input": score(x), "default": score(default.restore(x))}
            for k in args.steps:
                row[f"chain_{k}"] = score(chain.restore(x, steps=k, generator=torch.Generator().manual_seed(0)))
            estimate, z_y, z_d = chain.anchors(x)
            row["head_only"] = score(estimate + chain.head(torch.zeros_like(estimate), estimate, x))
            row.update(latent_errors(chain, x, to_tensor(sharp), z_y, z_d, score))
        rows.append(row)
        print(path.name, {k: round(v, 2) for k, v in row.items() if k != "frame"}, flush=True)
    curve = []
    val = args.run / "val.csv"
    if val.is_file():
        with open(val) as f:
            curve = [{"step": int(r["step"]), "psnr": float(r["psnr"])} for r in csv.DictReader(f)]
    return {"rows": rows, "curve": curve, "steps": args.steps, "crop": args.crop, "run": args.run.name,
            "weights": args.weights, "threads": args.threads, "machine": machine(), "date": today(),
            "load_average_start": load_start, "command": command(f"benchmarks.studies.{NAME}", argv)}


def report(data: dict[str, Any], results: Path) -> None:
    rows = data["rows"]
    cols = ["input", "default"] + [f"chain_{k}" for k in data["steps"]] + ["head_only"]
    titles = ["input", "default"] + [f"chain, {k} step{'s' if k > 1 else ''}" for k in data["steps"]] + \
        ["head alone (proposal 0)"]
    table = [[Path(r["frame"]).name] + [f"{r[c]:.2f}" for c in cols] for r in rows]
    table.append(["**mean**"] + [f"**{statistics.fmean(r[c] for r in rows):.2f}**" for c in cols])
    diffs = {c: statistics.fmean(r[c] - r["default"] for r in rows) for c in cols[2:]}
    lines = [f"# The latent chain from the default's estimate ({data['run']}/{data['weights']})", "",
             f"`{data['command']}` on {data['machine']}, {data['date']}, {data['threads']} threads (load average at "
             f"start {data['load_average_start']:.2f}).", "",
             f"PSNR (dB) on {data['crop']}-pixel centre crops of REDS val frames (never trained on): the input, the "
             "shipped default, the chain at each number of steps (ddim, start noise seed 0), and the pixel head "
             "with the chain's proposal set to zero.", "",
             *md_table(["frame"] + titles, table), "",
             "Mean difference to the default: " + ", ".join(f"{t} {diffs[c]:+.2f} dB" for c, t in
                                                            zip(cols[2:], titles[2:])) + "."]
    if data["curve"]:
        lines += ["", "Validation during training (whole REDS val frames, the run's `val.csv`): " +
                  ", ".join(f"step {c['step']}: {c['psnr']:.2f} dB" for c in data["curve"]) + "."]
    if rows and "latent_err_anchor" in rows[0]:
        mean = lambda k: statistics.fmean(r[k] for r in rows)  # noqa: E731
        better = sum(r["latent_err_chain"] < r["latent_err_anchor"] for r in rows)
        lines += ["", "In the latent space (means over the frames): the anchor's error |z_d - z_x| "
                  f"{mean('latent_err_anchor'):.4f}, the chain's first x0 estimate's |x0_hat - z_x| "
                  f"{mean('latent_err_chain'):.4f} (closer to E(sharp) than the anchor on {better} of {len(rows)} "
                  f"frames). In pixels: the autoencoder's ceiling D(E(sharp)) {mean('ae_ceiling'):.2f} dB, the "
                  f"decoded anchor D(z_d) {mean('anchor_decoded'):.2f} dB, the default itself {mean('default'):.2f} dB."]
    write_report(NAME, lines, data, results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="the training folder of a latent-shift run")
    ap.add_argument("--weights", default="best.safetensors")
    ap.add_argument("--data", type=Path, default=REDS_VAL)
    ap.add_argument("--steps", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    return measure_main(ap, NAME, measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
