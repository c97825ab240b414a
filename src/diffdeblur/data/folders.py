"""Writing paired folders: synthetic blur pairs from a folder of sharp photos (:func:`synthesize_folder`,
what ``diffdeblur synth SHARP_DIR`` runs), and the one output rule every writer of a paired folder
follows (:func:`paired_output`, also used by :func:`diffdeblur.data.frames.synthesize_from_frames`):

- an OUT that holds pairs of an earlier run is refused unless ``overwrite`` (never silently replaced);
- the pairs are written into a temporary folder beside OUT and moved in when the run is done, so a
  failed or interrupted run leaves OUT as it was, and OUT's folders always agree with its meta.jsonl.

The layout is the one ``train`` and ``eval`` read (:func:`diffdeblur.data.pairs.find_pairs`):
OUT/blur/NAME.png, OUT/sharp/NAME.png, optionally OUT/partials/NAME_kXX.png, OUT/motion/NAME.npy,
OUT/kernels/NAME.{npy,png}, and OUT/meta.jsonl (one JSON record per pair).
"""
from __future__ import annotations

import io as _io
import json
import multiprocessing
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError, ImageError, OutputError
from ..io import atomic_write_bytes, is_image_file, missing_folders, read_image, remove_empty_folders, write_image
from .synth import get_preset, random_box, render, sample_params, sample_seed
from .synth_source import synth_preset

__all__ = ["synthesize_folder", "SynthFolder", "paired_output", "earlier_run", "PAIRED_PARTS", "META_FILE"]

META_FILE = "meta.jsonl"
# what a run writes into OUT: an OUT holding any of these (a folder with files, or meta.jsonl) holds an earlier run
PAIRED_PARTS = ("blur", "sharp", "partials", "motion", "kernels", META_FILE)


def earlier_run(out: str | os.PathLike) -> list[Path]:
    """The parts of ``out`` that hold pairs of an earlier run: those of :data:`PAIRED_PARTS` that are a
    folder with anything in it, or a file (meta.jsonl). Empty when ``out`` is free to write into."""
    root = Path(out)
    return [root / name for name in PAIRED_PARTS
            if (root / name).is_file() or ((root / name).is_dir() and any((root / name).iterdir()))]


@contextmanager
def paired_output(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """A ``with`` block that writes a paired folder into ``out``: it yields a temporary folder beside
    ``out`` to write the parts (:data:`PAIRED_PARTS`) into, and when the block ends without an error,
    replaces ``out``'s parts with them (the earlier ones, including empty folders, are removed; other
    files of ``out`` are left alone). When the block fails, the temporary folder is removed and ``out``
    is left as it was (folders made for it are removed again).

    An ``out`` holding an earlier run (:func:`earlier_run`) is a one-line ConfigError before the block
    runs unless ``overwrite``; an ``out`` that is a file, or that cannot be created, is an OutputError."""
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise OutputError(f"{root}: is a file, not an output folder")
    found = earlier_run(root)
    if found and not overwrite:
        raise ConfigError(f"{root}: holds pairs of an earlier run ({', '.join(p.name for p in found)}); "
                          f"replace them with --overwrite (overwrite=True), or choose another output folder")
    created = missing_folders(root)
    place = Path(os.path.abspath(root))  # ("." has no name; its parent is the real one)
    try:
        place.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{place.name}.partial-", dir=place.parent))
    except OSError as exc:
        remove_empty_folders(created)
        raise OutputError(f"{root}: cannot create output folder ({exc.strerror or exc})") from None
    done = False
    try:
        yield tmp
        _move_in(tmp, root)
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            remove_empty_folders(created)


def _move_in(tmp: Path, root: Path) -> None:
    """Replace ``root``'s paired parts by those written into ``tmp`` (the earlier ones are first moved
    aside into ``tmp``, and moved back if the new ones cannot be moved in)."""
    root.mkdir(exist_ok=True)
    aside = tmp / ".earlier"
    aside.mkdir()
    moved_aside: list[str] = []
    moved_in: list[str] = []
    try:
        for name in PAIRED_PARTS:
            if (root / name).exists():
                os.replace(root / name, aside / name)
                moved_aside.append(name)
        for name in PAIRED_PARTS:
            if (tmp / name).exists():
                os.replace(tmp / name, root / name)
                moved_in.append(name)
    except BaseException:
        for name in moved_in:
            shutil.rmtree(root / name) if (root / name).is_dir() else (root / name).unlink()
        for name in moved_aside:
            os.replace(aside / name, root / name)
        raise


@dataclass(frozen=True)
class SynthFolder:
    """What :func:`synthesize_folder` wrote: ``out``, the ``records`` of meta.jsonl (by sample index)
    and one line per input image that could not be read (``skipped``; its samples were not made)."""

    out: Path
    records: list[dict[str, Any]]
    skipped: list[str]


@dataclass(frozen=True)
class _Job:
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


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = _io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def sample_name(index: int, path: str | os.PathLike) -> str:
    """The file stem of sample ``index`` made from input ``path``: ``000007_photo``."""
    return f"{index:06d}_{Path(path).stem}"


def _make_samples(job: _Job, files: Sequence[str]) -> tuple[list[dict[str, Any]], str | None]:
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


# The input list of a worker process, set once by the pool's initializer so that it is not pickled with
# every task (tasks carry only an index into it). Lives in the worker processes only.
_WORKER_FILES: list[tuple[str, ...]] = []


def _init_worker(files: tuple[str, ...]) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER_FILES.append(files)


def _worker_job(job: _Job) -> tuple[list[dict[str, Any]], str | None]:
    return _make_samples(job, _WORKER_FILES[-1])


def list_inputs(folder: str | os.PathLike) -> list[str]:
    """The image files directly in ``folder``, sorted by name; a one-line ConfigError when the folder
    is missing or holds no images."""
    d = Path(folder)
    if not d.is_dir():
        raise ConfigError(f"{d}: input folder not found")
    files = sorted(str(p) for p in d.iterdir() if p.is_file() and is_image_file(p))
    if not files:
        raise ConfigError(f"{d}: no images found")
    return files


def _run_jobs(jobs: list[_Job], files: list[str], workers: int, bar: tqdm) -> tuple[list[dict[str, Any]], list[str]]:
    """Run the jobs here (workers = 1) or in a spawned process pool; returns (records, skipped-file errors)."""
    records: list[dict[str, Any]] = []
    errors: list[str] = []
    if workers == 1:
        results = (_make_samples(job, files) for job in jobs)
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


def check_synth_options(count: int, preset: str, subframes: int, integration: str, partials: Sequence[int],
                        size: int, workers: int) -> tuple[int, ...]:
    """The options of :func:`synthesize_folder` checked (one-line ConfigError naming the first bad one);
    returns ``partials`` as a tuple of ints. ``preset`` and ``integration`` are checked by
    :func:`diffdeblur.data.synth.get_preset`."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"synth count must be an integer >= 1, got {count!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"synth workers must be an integer >= 1, got {workers!r}")
    if size < 0 or subframes < 0:
        raise ConfigError(f"synth size and subframes must be >= 0, got {size} and {subframes}")
    settings = synth_preset(preset, {"integration": integration, **({"subframes": subframes} if subframes else {})})
    ks = tuple(int(k) for k in partials)
    bad = [k for k in ks if not 1 <= k <= settings.subframes]
    if bad:
        raise ConfigError(f"synth partials: k={bad[0]} is outside 1..{settings.subframes} (sub-frames of preset "
                          f"'{settings.name}'; see subframes)")
    return ks


def synthesize_folder(sharp_dir: str | os.PathLike, out: str | os.PathLike, count: int, *, seed: int = 0,
                      preset: str = "gopro-like", subframes: int = 0, integration: str = "linear",
                      partials: Sequence[int] = (), motion: bool = False, size: int = 0, workers: int = 1,
                      overwrite: bool = False, show_progress: bool = False) -> SynthFolder:
    """Write ``count`` synthetic dynamic-scene blur pairs made from the sharp photos of ``sharp_dir``.

    Inputs: the image files directly in ``sharp_dir`` (sorted by name). Sample ``i`` is made from input
    ``i mod M`` with the generator seeded by ``(seed, i)`` (:func:`diffdeblur.data.synth.sample_seed`),
    so the output depends on ``seed`` and ``count`` only, not on ``workers`` (parallel processes, one
    thread each; spawned, not forked). ``preset`` names a :data:`diffdeblur.data.synth.PRESETS` entry;
    ``subframes`` > 0 overrides its sub-frames per exposure; ``integration`` averages them in
    ``"linear"`` light (physical) or as ``"srgb"`` values; ``size`` > 0 renders a random SIZE x SIZE
    window of each photo (clamped to it; 0 = the whole photo).

    Output layout in ``out``: blur/NAME.png and sharp/NAME.png (NAME = ``{i:06d}_{input stem}``);
    partials/NAME_kXX.png (the mean of the first k sub-frames) for each k of ``partials`` (in
    1..subframes); with ``motion``, motion/NAME.npy ((H, W, 2) float32 displacement over the exposure)
    and kernels/NAME.npy / .png (the camera kernel); and meta.jsonl, one record per pair (index, name,
    source, seed, preset, box, every sampled parameter), sorted by index.

    An ``out`` holding pairs of an earlier run is refused (one-line ConfigError) unless ``overwrite``,
    which replaces them; the run is written into a temporary folder and moved in at the end, so ``out``
    is never left half written (:func:`paired_output`). Bad options, a missing or empty ``sharp_dir``
    are one-line ConfigErrors before anything is written. An unreadable input image is not an error:
    its samples are left out and it is listed in the result's ``skipped``."""
    ks = check_synth_options(count, preset, subframes, integration, partials, size, workers)
    files = list_inputs(sharp_dir)
    folders = ["blur", "sharp"] + (["partials"] if ks else []) + (["motion", "kernels"] if motion else [])
    by_file: dict[int, list[int]] = {}
    for i in range(count):
        by_file.setdefault(i % len(files), []).append(i)
    with paired_output(out, overwrite) as tmp:
        for sub in folders:
            (tmp / sub).mkdir()
        jobs = [_Job(f, tuple(idx), str(tmp), seed, preset, subframes, integration, ks, motion, size)
                for f, idx in sorted(by_file.items())]
        with tqdm(total=count, unit="pair", desc="synth", disable=None if show_progress else True) as bar:
            records, skipped = _run_jobs(jobs, files, workers, bar)
        records.sort(key=lambda r: r["index"])
        meta = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        atomic_write_bytes(tmp / META_FILE, meta.encode())
    return SynthFolder(Path(out), records, sorted(skipped))
