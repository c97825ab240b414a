"""`diffdeblur synth SHARP_DIR -o OUT --count N --seed S`: synthetic dynamic-scene blur pairs;
`diffdeblur synth --from-frames DIR --frames 7:13 -o OUT`: real blur pairs from high-speed frames
(the GoPro protocol, :func:`diffdeblur.data.frames.synthesize_from_frames`).

Writes a paired folder that ``train`` and ``eval`` read directly: OUT/blur/NAME.png,
OUT/sharp/NAME.png, optionally OUT/partials/NAME_kXX.png (partial exposures), OUT/motion/NAME.npy
((H, W, 2) float32 displacement over the exposure) and OUT/kernels/NAME.{npy,png} (the camera
kernel), plus OUT/meta.jsonl with every sample's parameters. Sample i uses input image i mod M
(sorted names) and the generator seeded by (seed, i), so the output does not depend on the number
of workers. Unreadable inputs are reported (one line each) and skipped; the exit code is then 1.
"""
from __future__ import annotations

import argparse
import io as _io
import json
import multiprocessing
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from ..data.synth import PRESETS, get_preset, random_box, render, sample_params, sample_seed
from ..errors import ConfigError
from ..io import ImageError, atomic_write_bytes, is_image_file, read_image, write_image
from . import HelpFormatter


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("synth", help="make blur pairs: synthetic from sharp photos, or real from high-speed frames",
                       formatter_class=HelpFormatter)
    p.add_argument("sharp_dir", metavar="SHARP_DIR", nargs="?", default="",
                   help="folder of sharp images (synthetic blur; not with --from-frames)")
    p.add_argument("-o", "--out", required=True, help="output folder (blur/, sharp/, meta.jsonl, ...)")
    p.add_argument("--from-frames", default="", metavar="DIR",
                   help="folder of consecutive high-speed frames (e.g. 240 fps): average N of them in linear light "
                        "and pair the result with the middle frame (GoPro / REDS protocol)")
    p.add_argument("--frames", default="7:13", metavar="N|LO:HI",
                   help="with --from-frames: frames per exposure, fixed or drawn per exposure from LO..HI")
    p.add_argument("--gamma", type=float, default=2.2, help="with --from-frames: frames are linearised as x^gamma")
    p.add_argument("--stride", type=int, default=0,
                   help="with --from-frames: start an exposure every STRIDE frames (0 = back to back)")
    p.add_argument("--count", type=int, default=0, help="number of synthetic pairs to make (inputs are cycled)")
    p.add_argument("--seed", type=int, default=0, help="run seed; sample i is seeded by (seed, i)")
    p.add_argument("--preset", default="gopro-like", choices=sorted(PRESETS), help="blur / noise preset")
    p.add_argument("--subframes", type=int, default=0, help="sub-frames per exposure (0 = the preset's)")
    p.add_argument("--integration", default="linear", choices=["linear", "srgb"],
                   help="average sub-frames in linear light (physical) or as sRGB values (the common shortcut)")
    p.add_argument("--partials", default="", help="comma-separated k values: also write the mean of the first "
                   "k sub-frames as OUT/partials/NAME_kXX.png")
    p.add_argument("--motion", action="store_true", help="also write the motion field (OUT/motion/NAME.npy) and "
                   "the camera kernel (OUT/kernels/NAME.npy and .png)")
    p.add_argument("--size", type=int, default=0, help="output a random SIZE x SIZE window of each image "
                   "(clamped to the image; 0 = whole image)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (each uses one thread)")
    p.add_argument("--overwrite", action="store_true", help="replace the pairs of an earlier run in OUT "
                   "(without it such an OUT is refused, so that the folder and meta.jsonl always agree)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


@dataclass(frozen=True)
class Job:
    """What one worker task needs: input image ``file_index`` (into the run's sorted input list)
    and the sample indices made from it."""

    file_index: int
    indices: tuple[int, ...]
    out: str
    seed: int
    preset: str
    subframes: int
    integration: str
    partials: tuple[int, ...]
    motion: bool
    size: int


def parse_partials(text: str) -> tuple[int, ...]:
    if not text.strip():
        return ()
    try:
        return tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise ConfigError(f"--partials must be comma-separated integers, got '{text}'") from None


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = _io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def sample_name(index: int, path: str) -> str:
    return f"{index:06d}_{Path(path).stem}"


def make_samples(job: Job, files: Sequence[str]) -> tuple[list[dict[str, Any]], str | None]:
    """Make and write every sample of one input image -> (meta records, error line or None).

    files: every input path (sorted); another one may supply foreground textures."""
    path = files[job.file_index]
    try:
        image, _ = read_image(path)
    except ImageError as exc:
        return [], str(exc)
    preset = get_preset(job.preset, integration=job.integration,
                        **({"subframes": job.subframes} if job.subframes else {}))
    others: dict[int, np.ndarray | None] = {}
    records = []
    for i in job.indices:
        rng = sample_seed(job.seed, i)
        box = random_box(rng, image.shape[0], image.shape[1], job.size or None)
        params = sample_params(rng, preset, box[2], box[3], allow_other=len(files) > 1)
        other, other_path = None, None
        if any(lp.source == "other" for lp in params.layers):
            j = min(int(params.other_pick * (len(files) - 1)), len(files) - 2)
            j += j >= job.file_index
            if j not in others:
                try:
                    others[j] = read_image(files[j])[0]
                except ImageError:
                    others[j] = None  # reported by its own job; textures fall back to this image
            other, other_path = others[j], files[j] if others[j] is not None else None
        res = render(image, params, box, other=other, partials=job.partials, motion=job.motion)
        name = sample_name(i, path)
        write_image(os.path.join(job.out, "blur", name + ".png"), res.blur)
        write_image(os.path.join(job.out, "sharp", name + ".png"), res.sharp)
        for k, im in zip(res.partial_ks, res.partials if res.partials is not None else []):
            write_image(os.path.join(job.out, "partials", f"{name}_k{k:02d}.png"), im)
        if job.motion:
            atomic_write_bytes(os.path.join(job.out, "motion", name + ".npy"), _npy_bytes(res.motion))
            kernel = res.kernel.astype(np.float32)
            atomic_write_bytes(os.path.join(job.out, "kernels", name + ".npy"), _npy_bytes(kernel))
            vis = np.repeat((res.kernel / res.kernel.max())[:, :, None], 3, axis=2)
            write_image(os.path.join(job.out, "kernels", name + ".png"), vis)
        records.append({"index": i, "name": name, "source": path, "other": other_path, "seed": [job.seed, i],
                        "preset": preset.name, "box": list(box), "margin": res.margin,
                        "substeps": list(res.substeps), "partials": list(res.partial_ks), "params": params.to_dict()})
    return records, None


# Input list of a worker process, set once by the pool initializer so that it is not pickled
# with every task (tasks carry only an index into it).
_WORKER_FILES: list[tuple[str, ...]] = []


def _init_worker(files: tuple[str, ...]) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER_FILES.append(files)


def _worker_job(job: Job) -> tuple[list[dict[str, Any]], str | None]:
    return make_samples(job, _WORKER_FILES[-1])


def list_inputs(folder: str) -> list[str]:
    d = Path(folder)
    if not d.is_dir():
        raise ConfigError(f"{d}: input folder not found")
    files = sorted(str(p) for p in d.iterdir() if p.is_file() and is_image_file(p))
    if not files:
        raise ConfigError(f"{d}: no images found")
    return files


def check_args(args: argparse.Namespace) -> tuple[tuple[int, ...], list[str]]:
    """Validate the command line; returns (partial exposures k, input files). ConfigError otherwise."""
    if args.count < 1:
        raise ConfigError("--count must be >= 1")
    if args.workers < 1:
        raise ConfigError("--workers must be >= 1")
    if args.size < 0 or args.subframes < 0:
        raise ConfigError("--size and --subframes must be >= 0")
    from ..data.synth_source import synth_preset  # imports torch (the training sources): only when it runs

    preset = synth_preset(args.preset, {"integration": args.integration,
                                        **({"subframes": args.subframes} if args.subframes else {})})
    partials = parse_partials(args.partials)
    bad = [k for k in partials if not 1 <= k <= preset.subframes]
    if bad:
        raise ConfigError(f"--partials: k={bad[0]} is outside 1..{preset.subframes} (sub-frames of preset "
                          f"'{preset.name}'; see --subframes)")
    return partials, list_inputs(args.sharp_dir)


def make_jobs(args: argparse.Namespace, partials: tuple[int, ...], files: list[str]) -> list[Job]:
    """Sample i uses input i mod M; one job per input file, holding all of its sample indices."""
    by_file: dict[int, list[int]] = {}
    for i in range(args.count):
        by_file.setdefault(i % len(files), []).append(i)
    return [Job(f, tuple(idx), args.out, args.seed, args.preset, args.subframes, args.integration, partials,
                args.motion, args.size) for f, idx in sorted(by_file.items())]


def run_jobs(jobs: list[Job], files: list[str], workers: int, bar: tqdm) -> tuple[list[dict[str, Any]], list[str]]:
    """Run the jobs here (workers = 1) or in a spawned process pool; returns (records, skipped-file errors)."""
    records: list[dict[str, Any]] = []
    errors: list[str] = []
    if workers == 1:
        results = (make_samples(job, files) for job in jobs)
        pool = None
    else:
        # spawn, not fork: a forked child may inherit a locked OpenMP / torch thread pool
        pool = multiprocessing.get_context("spawn").Pool(min(workers, len(jobs)), initializer=_init_worker,
                                                         initargs=(tuple(files),))
        results = pool.imap_unordered(_worker_job, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
    try:
        for job_records, error in results:
            records += job_records
            if error:
                errors.append(error)
            bar.update(len(job_records))
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return records, errors


OUTPUT_FOLDERS = ("blur", "sharp", "partials", "motion", "kernels")
META_FILE = "meta.jsonl"


def clear_output(out: str, overwrite: bool) -> None:
    """Make OUT hold no pairs of an earlier run: refuse it (ConfigError) unless ``overwrite``, which
    deletes the earlier run's folders and meta.jsonl. A run writes meta.jsonl last, so a folder
    without it holds an interrupted run."""
    root = Path(out)
    found = [root / name for name in OUTPUT_FOLDERS if (root / name).is_dir() and any((root / name).iterdir())]
    found += [root / META_FILE] if (root / META_FILE).exists() else []
    if not found:
        return
    if not overwrite:
        raise ConfigError(f"{out}: holds pairs of an earlier run ({', '.join(p.name for p in found)}); "
                          f"pass --overwrite to replace them, or choose another -o")
    (root / META_FILE).unlink(missing_ok=True)
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)


def run_from_frames(args: argparse.Namespace) -> int:
    from ..data.frames import synthesize_from_frames

    if args.sharp_dir:
        raise ConfigError("give either SHARP_DIR (synthetic blur) or --from-frames DIR, not both")
    records = synthesize_from_frames(args.from_frames, args.out, args.frames, args.gamma, args.seed, args.stride,
                                     args.overwrite)
    ns = sorted({r["n"] for r in records})
    print(f"wrote {len(records)} pairs to {args.out} from {args.from_frames} "
          f"(N = {', '.join(map(str, ns))} frames, gamma {args.gamma:g})")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.from_frames:
        return run_from_frames(args)
    if not args.sharp_dir:
        raise ConfigError("give SHARP_DIR (synthetic blur from sharp photos) or --from-frames DIR (real blur)")
    partials, files = check_args(args)
    clear_output(args.out, args.overwrite)
    folders = ["blur", "sharp"] + (["partials"] if partials else []) + (["motion", "kernels"] if args.motion else [])
    for sub in folders:
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    bar = tqdm(total=args.count, unit="pair", desc="synth", disable=True if args.quiet else None)
    try:
        records, errors = run_jobs(make_jobs(args, partials, files), files, args.workers, bar)
    finally:
        bar.close()
    records.sort(key=lambda r: r["index"])
    meta = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    atomic_write_bytes(os.path.join(args.out, META_FILE), meta.encode())
    for e in sorted(errors):
        print(f"diffdeblur synth: skipped: {e}", file=sys.stderr)
    print(f"wrote {len(records)} pairs to {args.out} ({len(errors)} input file(s) skipped)")
    return 1 if errors else 0
