"""What every benchmark, study and model card shares: where things are, what machine ran them,
training and evaluation through the product, and report writing.

Run the scripts from the repository root as modules, e.g. ``python -m benchmarks.bench.core``. A script
named ``<name>.py`` writes ``docs/results/<name>.md`` and ``docs/results/<name>.json``; the markdown is
rendered from the JSON alone, so ``report`` (or ``--report``) rewrites it from the committed JSON without
any ``runs/`` folder. Paths in committed files are portable (:func:`portable`): the data root shows as
``../shared/data`` and files of the repository relative to its root.

Data: ``../shared/data`` beside the repository, or ``DIFFDEBLUR_DATA``. CPU budget: the studies run on a
shared 2-core machine, one thread each, so their models are small, crops small and runs short; each
report states its budget.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DIFFDEBLUR_DATA", ROOT.parent / "shared" / "data"))
DATA_SHOWN = "../shared/data"  # how the data root appears in committed files
RESULTS = ROOT / "docs" / "results"
RUNS = ROOT / "runs"
GOPRO_TRAIN, GOPRO_VAL = DATA / "gopro_sample" / "train", DATA / "gopro_sample" / "val"
REDS_TRAIN, REDS_VAL = DATA / "reds_sample" / "train", DATA / "reds_sample" / "val"
BSDS = DATA / "bsds500" / "train"
TAEF2_DIR = Path(os.environ.get("DIFFDEBLUR_TAEF2_DIR", DATA / "weights" / "taef2"))


# ---- paths -------------------------------------------------------------------------------------

def portable(path: str | os.PathLike) -> str:
    """``path`` as committed files show it: under the data root as ``../shared/data/...``, inside the
    repository relative to its root, under the home folder as ``~/...`` (e.g. a long run's folder), anything
    else unchanged."""
    text = str(path)
    if not text:
        return text
    p = Path(text).expanduser()
    for base, shown in ((DATA, DATA_SHOWN), (ROOT, ""), (Path.home(), "~")):
        for b in {base, base.resolve()}:
            try:
                rel = p.relative_to(b)
            except ValueError:
                continue
            return (Path(shown) / rel).as_posix() if shown else rel.as_posix()
    return text


def portable_tree(obj: Any) -> Any:
    """A copy of nested dicts / lists with every absolute path string made :func:`portable`."""
    if isinstance(obj, dict):
        return {k: portable_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable_tree(v) for v in obj]
    if isinstance(obj, str) and obj.startswith(("/", "~")):
        return portable(obj)
    return obj


def have_data(*paths: Path) -> bool:
    return all(Path(p).exists() for p in paths)


def missing_data(paths: Iterable[Path]) -> str:
    """A one-line message naming the missing data folders ('' when all are there)."""
    gone = [portable(p) for p in paths if not Path(p).exists()]
    return f"data not found: {', '.join(gone)} (set DIFFDEBLUR_DATA)" if gone else ""


# ---- machine and command -----------------------------------------------------------------------

def machine() -> str:
    """'x86_64, 2 CPUs, torch 2.x' for the report headers."""
    return f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def cpu_name() -> str:
    return platform.processor() or platform.machine()


def vector_isa() -> str:
    """The CPU's widest vector extensions, from /proc/cpuinfo: "avx512" (with native bf16), "avx512-no-bf16"
    or "avx2" (anything else)."""
    try:
        flags = next((set(line.split(":")[1].split()) for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), set())
    except OSError:
        flags = set()
    if "avx512f" in flags:
        return "avx512" if "avx512_bf16" in flags else "avx512-no-bf16"
    return "avx2"


def hardware() -> str:
    """This machine in words for a model card: cores, CPU and vector extensions."""
    return f"{os.cpu_count()}-core CPU ({cpu_name()}, {vector_isa().upper().replace('-', ' ')})"


def load_average() -> float:
    return os.getloadavg()[0]


def today() -> str:
    return time.strftime("%Y-%m-%d")


def command(module: str, argv: list[str] | None) -> str:
    """The command that ran ``module`` (``benchmarks.bench.core``), with portable paths and the CPU pinning
    and thread count that were in force."""
    args = sys.argv[1:] if argv is None else argv
    prefix = []
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) < (os.cpu_count() or 1):
        prefix.append("taskset -c " + ",".join(str(c) for c in sorted(os.sched_getaffinity(0))))
    if "OMP_NUM_THREADS" in os.environ:
        prefix.append(f"env OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    shown = [shlex.quote(portable(a) if a.startswith(("/", "~")) else a) for a in args]
    return " ".join(prefix + ["python -m " + module, *shown])


# ---- training and evaluation through the product -----------------------------------------------

def train_or_load(cfg: dict[str, Any], device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train ``cfg`` with :func:`diffdeblur.train.train` (resuming if interrupted) unless
    ``<out_dir>/final.safetensors`` exists; return (the final model, train info).

    The info's ``cpu_seconds`` / ``wall_seconds`` are those of the call that finished the training: the time
    of a run killed before it finished is lost, so ``resumed_at_step`` (when present) says they undercount.
    """
    from diffdeblur.config import config_from_dict
    from diffdeblur.inference import load_model
    from diffdeblur.train import train

    out = Path(cfg["train"]["out_dir"])
    final = out / "final.safetensors"
    info_path = out / "train_info.json"
    if not final.exists():
        out.mkdir(parents=True, exist_ok=True)
        state = out / "state.pt"
        resumed = int(torch.load(state, map_location="cpu", weights_only=True)["step"]) if state.exists() else 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        train(config_from_dict(cfg, source=str(out)), resume=True, device=device, show_progress=False)
        info = {**({"resumed_at_step": resumed} if resumed else {}),
                "cpu_seconds": time.process_time() - cpu0, "wall_seconds": time.perf_counter() - t0,
                "steps": cfg["train"]["steps"], "batch": cfg["data"]["batch_size"], "crop": cfg["data"]["crop"]}
        info_path.write_text(json.dumps(info))
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    model = load_model(final, device)
    info["params_M"] = sum(p.numel() for p in model.parameters()) / 1e6
    return model, info


def eval_crops(model: torch.nn.Module, folder: Path = GOPRO_VAL, *, crop: int, images: int, tile: int = 0,
               seed: int = 0, threads: int = 1, niqe: bool = False, metrics: Iterable[str] = (),
               **options: Any) -> dict[str, Any]:
    """PSNR/SSIM (:func:`diffdeblur.evaluate.evaluate`) on centre crops (``crop`` = 0: full frames) of the
    first ``images`` pairs of a paired folder (0: all), with wall and CPU seconds per image (the whole
    evaluation: reading, restoring, scoring) and the CPU seconds of the restores alone. ``niqe``: also NIQE
    of the restored and of the blurry images (``niqe``, ``input_niqe`` and their per-image lists).
    ``metrics``: also these measures of :data:`diffdeblur.perception.PERCEPTION_METRICS` (``"ms-ssim"``, ...):
    their means for the restored and the blurry images (``ms_ssim``, ``input_ms_ssim``, ...) and ``errors``
    (the images a measure could not score, left out of its mean)."""
    from diffdeblur.evaluate import evaluate, score_columns

    torch.set_num_threads(threads)
    cpu0 = time.process_time()
    names = tuple(dict.fromkeys(("psnr", "ssim", *metrics)))
    rep = evaluate(model, folder, crop=crop, max_images=images, tile=tile, seed=seed, niqe=niqe, metrics=names,
                   **options)
    s = rep.summary
    out = {"psnr": s["psnr"], "ssim": s["ssim"], "input_psnr": s["input_psnr"], "input_ssim": s["input_ssim"],
           "images": s["images"], "crop": crop, "tile": tile, "wall_s_per_image": s["seconds_per_image"],
           "cpu_s_per_image": (time.process_time() - cpu0) / max(1, s["images"]),
           "restore_cpu_s_per_image": s["cpu_seconds_per_image"],
           "per_image_psnr": [r["psnr"] for r in rep.rows], "per_image_input_psnr": [r["input_psnr"] for r in rep.rows],
           "options": dict(options)}
    if niqe:
        out.update(niqe=s["niqe"], input_niqe=s["input_niqe"], per_image_niqe=[r["niqe"] for r in rep.rows],
                   per_image_input_niqe=[r["input_niqe"] for r in rep.rows], errors=list(rep.errors))
    if metrics:
        out.update({c: s[c] for c in score_columns(rep.metrics)}, errors=list(rep.errors))
    return out


# every measure of diffdeblur.perception, in the order the reports show them, with its column title
MEASURES = ("psnr", "ssim", "ms-ssim", "vif", "haarpsi", "gmsd", "blur-effect", "niqe")
MEASURE_TITLES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "ms-ssim": "MS-SSIM", "vif": "VIF", "haarpsi": "HaarPSI",
                  "gmsd": "GMSD", "blur-effect": "blur effect", "niqe": "NIQE"}


def measure_header(name: str) -> str:
    """A measure's column title with its direction: ``SSIM ↑`` (higher is better), ``GMSD ↓`` (lower)."""
    from diffdeblur.perception import PERCEPTION_METRICS

    return f"{MEASURE_TITLES[name]} {'↑' if PERCEPTION_METRICS[name].higher_is_better else '↓'}"


def measure_text(name: str, value: float | None) -> str:
    """A measure's value as the reports show it (dB and NIQE to 0.01, the others to 0.0001); '–' when absent
    or NaN (a row written before the measure existed, or no image it could score)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}" if name in ("psnr", "niqe") else f"{value:.4f}"


def fill_evals(entry: dict[str, Any], model: torch.nn.Module, tests: dict[str, dict[str, Any]],
               save: Callable[[], None], tag: str = "") -> None:
    """Run :func:`eval_crops` for every test (label -> its keyword arguments) not yet in ``entry["eval"]``,
    calling ``save()`` after each, so that an interrupted study resumes where it stopped."""
    for label, kwargs in tests.items():
        if label not in entry["eval"]:
            entry["eval"][label] = eval_crops(model, **kwargs)
            save()
            print(tag, label, f"{entry['eval'][label]['psnr']:.2f} dB", flush=True)


def gains(report: Any) -> dict[str, Any]:
    """Summary of an :class:`~diffdeblur.evaluate.EvalReport` with the per-image gain over the input:
    the worst one and how many images got worse."""
    s = {k: report.summary[k] for k in ("psnr", "ssim", "input_psnr", "input_ssim", "images")}
    g = [r["psnr"] - r["input_psnr"] for r in report.rows]
    s["worst_gain"], s["images_worse_than_input"] = float(min(g)), int(sum(x < 0 for x in g))
    return s


def write_example_pairs(root: Path, n: int, height: int, width: int, first_seed: int = 0) -> Path:
    """``n`` procedural (blur, sharp) pairs of the built-in example generator, seeds ``first_seed``.., as a
    paired folder ``root/{blur,sharp}/NNN.png`` (no data set needed)."""
    from diffdeblur.example import example_pair
    from diffdeblur.io import write_image

    for sub in ("blur", "sharp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        blur, sharp = example_pair(height, width, seed=first_seed + i)
        write_image(root / "blur" / f"{i:03d}.png", blur)
        write_image(root / "sharp" / f"{i:03d}.png", sharp)
    return root


def worker_call(argv: list[str] | None, worker: Callable[[dict[str, Any]], None]) -> bool:
    """The other side of :func:`run_worker`: when this process is ``python -m module --worker JSON`` (``argv`` None,
    from the command line), run ``worker(job)`` and return True (the script's ``main`` then returns 0)."""
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
        return True
    return False


def run_worker(module: str, job: dict[str, Any], env: dict[str, str], timeout: int) -> dict[str, Any]:
    """Run ``python -m module --worker JSON(job)`` from the repository root (one measurement in a process of its
    own, so that its peak memory is its own) and return the JSON of its last output line, or {"error": the last
    line of its stderr, or "over N s"}."""
    try:
        proc = subprocess.run([sys.executable, "-m", module, "--worker", json.dumps(job)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout} s"}
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}


# ---- results -----------------------------------------------------------------------------------

def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def save_json(path: Path, data: Any, indent: int = 2) -> None:
    """Write ``data`` atomically, its path strings made portable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # several study processes may share one results file
    tmp.write_text(json.dumps(portable_tree(data), indent=indent, default=float) + "\n")
    tmp.replace(path)


def md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]


def read_results(name: str, results: Path = RESULTS) -> dict[str, Any]:
    """The JSON ``<results>/<name>.json`` a report is rendered from (paths made portable); exits with a
    message if absent."""
    path = Path(results) / f"{name}.json"
    if not path.exists():
        sys.exit(f"{portable(path)}: no results yet (run the script first)")
    return portable_tree(json.loads(path.read_text()))


def write_report(name: str, lines: list[str], data: Any, results: Path = RESULTS, quiet: bool = False,
                 indent: int = 2) -> Path:
    """Write ``<results>/<name>.md`` (the lines) and ``<name>.json`` (the data, portable paths); print the
    markdown unless ``quiet``. Returns the markdown's path."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    md = results / f"{name}.md"
    text = "\n".join(lines)
    md.write_text(text if text.endswith("\n") else text + "\n")
    if data is not None:
        save_json(results / f"{name}.json", data, indent)
    if not quiet:
        print(text)
    return md


# ---- command line ------------------------------------------------------------------------------

def add_output_arguments(ap: argparse.ArgumentParser, runs: Path) -> None:
    """The options every study shares: where results and runs go, and the smoke budget."""
    ap.add_argument("--results", type=Path, default=RESULTS, help="where <name>.md / .json go")
    ap.add_argument("--runs", type=Path, default=runs, help="where the training runs go (run only)")
    ap.add_argument("--smoke", action="store_true",
                    help="run: a tiny budget (seconds) for the smoke test; write into --results / --runs")


def measure_main(ap: argparse.ArgumentParser, name: str, measure: Callable[[argparse.Namespace, list[str] | None], Any],
                 report: Callable[[Any, Path], None], argv: list[str] | None = None) -> int:
    """The command line of a measurement: ``ap``'s own options plus ``--results`` and ``--report`` (rewrite
    ``<name>.md`` from its JSON only); otherwise ``report(measure(args, argv), results)``."""
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--report", action="store_true", help="rewrite the markdown from the JSON only")
    args = ap.parse_args(argv)
    report(read_results(name, args.results) if args.report else measure(args, argv), args.results)
    return 0


def study_main(doc: str, run: Callable[..., None], report: Callable[..., None], argv: list[str] | None = None,
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
               needs: Iterable[Path] = (GOPRO_TRAIN, GOPRO_VAL, BSDS),
               runs: Path = RUNS / "diffusion_studies") -> int:
    """The command line of the studies: ``run`` (train, evaluate, report) or ``report`` (from the JSON only).

    ``run`` gets ``results``, ``runs``, ``smoke`` and the options of ``add_arguments``; ``report`` gets
    ``results`` and those options. Exit code 1 (with a one-line message) when ``run`` lacks its data.
    """
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["run", "report"])
    add_output_arguments(ap, runs)
    if add_arguments is not None:
        add_arguments(ap)
    args = vars(ap.parse_args(argv))
    action = args.pop("action")
    if action == "run":
        message = missing_data(needs)
        if message:
            print(message, file=sys.stderr)
            return 1
        run(**args)
    else:
        args.pop("runs"), args.pop("smoke")
        report(**args)
    return 0
