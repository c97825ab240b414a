"""The evaluation domains of the structure-guidance study (issue 25): GoPro in-domain and out-of-domain blur, as
one domains file for ``diffdeblur eval --data domains.yaml`` (:mod:`diffdeblur.domains`).

Real folders of ``../shared/data`` are listed where they are (not copied); the synthetic ones are written under
``--out`` (default ``data_cache/ood/``, git-ignored), each a paired folder ``blur/`` + ``sharp/`` with a
``meta.json`` naming every image's kernel:

==================  =========  ==============================================================================
domain              reference  what
==================  =========  ==============================================================================
``gopro``           yes        GoPro sample ``val/`` (30 frames of the training scene: in-domain)
``reds-val``        yes        REDS sample ``val/`` (10 frames of an unseen scene, another camera)
``reds-small``      yes        REDS sample ``small/`` (30 frames, 320x180: blur about 4x shorter)
``bsds-levin``      yes        BSDS500 photos x the 8 Levin et al. 2009 camera-shake kernels (uniform blur)
``bsds-kernels12``  yes        BSDS500 photos x the 12-kernel set of USRNet / DPIR (Gaussian-like and motion)
``bsds-defocus``    yes        BSDS500 photos x isotropic Gaussian blur, sigma 1-3 px (defocus-like)
``reds-blurry``     no         REDS sample ``train/`` blurry frames scored without references (NIQE, blur effect)
==================  =========  ==============================================================================

Synthetic blur: the kernel applied to the whole 8-bit photo in sRGB (reflect borders,
:func:`diffdeblur.data.kernels.convolve`, as the ``blur-kernels`` training source does), plus Gaussian noise of
standard deviation ``--noise`` (seeded per image), clipped and stored as PNG; the photo is the reference.

    python -m benchmarks.studies.sg_domains [--out data_cache/ood] [--photos 24] [--noise 0.01] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from benchmarks.common import BSDS, DATA, GOPRO_VAL, REDS_TRAIN, REDS_VAL, ROOT, portable

OUT = ROOT / "data_cache" / "ood"
KERNELS = DATA / "kernels" / "kernels_npy.npz"
REDS_SMALL = DATA / "reds_sample" / "small"
DEFOCUS_SIGMAS = (1.0, 2.0, 3.0)  # Gaussian sigma in pixels, cycled over the photos
NOISE = 0.01  # std of the added Gaussian noise, images in [0, 1]
YAML_NAME = "domains.yaml"


def load_kernels(npz: Path, prefix: str) -> list[tuple[str, np.ndarray]]:
    """(name, kernel normalised to sum 1) of every array of ``npz`` whose key starts with ``prefix``, by key."""
    with np.load(npz) as z:
        return [(k, np.asarray(z[k], np.float32) / float(np.sum(z[k]))) for k in sorted(z.files) if k.startswith(prefix)]


def gaussian_kernel(sigma: float) -> np.ndarray:
    """An isotropic Gaussian kernel of side 2 ceil(3 sigma) + 1, summing to 1."""
    r = int(math.ceil(3 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def pick_photos(folder: Path, count: int) -> list[Path]:
    """``count`` photos spread evenly over the sorted image files of ``folder``."""
    from diffdeblur.io import is_image_file

    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    step = max(1, len(files) // max(1, count))
    return files[::step][:count]


def synth_domain(photos: Sequence[Path], kernels: Sequence[tuple[str, np.ndarray]], out: Path, *, noise: float,
                 seed: int, overwrite: bool = False) -> dict[str, Any]:
    """Blur photo i with kernel i mod K (+ noise, seeded by (seed, i)) into the paired folder ``out``; an existing
    complete folder is kept unless ``overwrite``. Returns its record (name, count, kernels per image)."""
    from diffdeblur.data.kernels import convolve
    from diffdeblur.io import read_image, write_image

    meta_path = out / "meta.json"
    if meta_path.exists() and not overwrite:
        meta = json.loads(meta_path.read_text())
        if meta.get("count") == len(photos) and meta.get("noise") == noise and meta.get("seed") == seed:
            return meta
    if out.exists():
        shutil.rmtree(out)
    (out / "blur").mkdir(parents=True)
    (out / "sharp").mkdir()
    images = {}
    for i, photo in enumerate(photos):
        name, kernel = kernels[i % len(kernels)]
        sharp = read_image(photo)[0]
        rng = np.random.default_rng([seed, i])
        blur = convolve(sharp, kernel) + rng.normal(0.0, noise, sharp.shape).astype(np.float32)
        stem = f"{photo.stem}_{name}"
        write_image(out / "blur" / f"{stem}.png", np.clip(blur, 0, 1))
        write_image(out / "sharp" / f"{stem}.png", sharp)
        images[stem] = {"photo": portable(photo), "kernel": name}
    meta = {"count": len(photos), "noise": noise, "seed": seed, "images": images}
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def build_domains(out: Path = OUT, photos: int = 24, noise: float = NOISE, seed: int = 0, overwrite: bool = False,
                  sharp_dir: Path = BSDS, kernels: Path | None = KERNELS,
                  real: dict[str, tuple[Path, bool]] | None = None) -> Path:
    """Write the synthetic domains under ``out`` and ``out/domains.yaml`` listing every domain (the real folders
    of ``real``, name -> (folder, has references), by their absolute paths; default: GoPro val, REDS val, REDS
    small, REDS train blurry frames). ``kernels`` None: the defocus domain only. Returns the YAML's path."""
    real = real if real is not None else {"gopro": (GOPRO_VAL, True), "reds-val": (REDS_VAL, True),
                                          "reds-small": (REDS_SMALL, True), "reds-blurry": (REDS_TRAIN, False)}
    chosen = pick_photos(sharp_dir, photos)
    synthetic = {} if kernels is None else {"bsds-levin": load_kernels(kernels, "levin09_"),
                                            "bsds-kernels12": load_kernels(kernels, "kernels12_")}
    synthetic["bsds-defocus"] = [(f"gauss{s:g}", gaussian_kernel(s)) for s in DEFOCUS_SIGMAS]
    entries = [{"name": n, "path": str(Path(p).resolve()), "reference": ref} for n, (p, ref) in real.items() if ref]
    for i, (name, ks) in enumerate(synthetic.items()):
        synth_domain(chosen, ks, out / name, noise=noise, seed=seed + i, overwrite=overwrite)
        entries.append({"name": name, "path": name, "reference": True})
    entries += [{"name": n, "path": str(Path(p).resolve()), "reference": ref} for n, (p, ref) in real.items() if not ref]
    out.mkdir(parents=True, exist_ok=True)
    path = out / YAML_NAME
    header = ("# Domains of the structure-guidance study, written by `python -m benchmarks.studies.sg_domains`.\n"
              "# Relative paths are relative to this file. Add a domain: one more entry {name, path, reference}.\n")
    path.write_text(header + yaml.safe_dump({"domains": entries}, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT, help="folder of the synthetic domains and domains.yaml")
    ap.add_argument("--photos", type=int, default=24, help="BSDS500 photos per synthetic domain")
    ap.add_argument("--noise", type=float, default=NOISE, help="std of the added Gaussian noise ([0, 1] images)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true", help="rewrite the synthetic domains even if complete")
    args = ap.parse_args(argv)
    from diffdeblur.domains import read_domains_file

    path = build_domains(args.out, args.photos, args.noise, args.seed, args.overwrite)
    for d in read_domains_file(path):
        print(f"{d.name:16s} reference={'yes' if d.reference else 'no ':3s} {portable(d.path)}")
    print(f"wrote {portable(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
