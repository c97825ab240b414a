"""Evaluation over several named domains at once: one table, domain by domain (``diffdeblur eval`` with several
``--data``, ``--data NAME=PATH`` or ``--data domains.yaml``).

A *domain* is a named folder: a paired folder (blur/+sharp/, input/+target/ or SCENE/blur+SCENE/sharp, scored by
:func:`diffdeblur.evaluate.evaluate`: PSNR / SSIM or the ``metrics`` asked, of the restored and the blurry images)
or, without references, a folder of blurry images (directly in it, or in its ``blur/`` or ``input/``), scored by
the no-reference measures of :data:`diffdeblur.perception.PERCEPTION_METRICS` (NIQE, blur effect). ``reference``
says which it is; None (the default) takes a paired folder when the folder has pairs, else its images.

A domain that cannot run (missing folder, no pairs or no images, unreadable images only) is a row with status
``failed`` and its one-line reason; the others run. A domains file is YAML::

    domains:
      - {name: gopro, path: data_cache/ood/gopro, reference: true}
      - {name: reds-blurry, path: data_cache/ood/reds_blurry, reference: false}

with paths relative to the file's folder (or absolute). The table is written as ``domains.csv`` and
``domains.md``, each domain's per-image scores under ``<out>/<name>/`` (:func:`diffdeblur.evaluate.write_report`).
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml
from torch import nn

from .data.pairs import PairError, find_pairs
from .errors import ConfigError, DiffdeblurError
from .evaluate import (EvalItem, EvalReport, ROW_FIELDS, centre_crop, evaluate, evaluate_items, score_columns,
                       write_report)
from .io import atomic_write_bytes, is_image_file, read_image
from .options import DEFAULT_OVERLAP, DEFAULT_TILE
from .perception import PERCEPTION_METRICS, check_metrics

NO_REFERENCE_METRICS = ("niqe", "blur-effect")  # the default measures of a domain without references
DOMAIN_KEYS = ("name", "path", "reference")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a domain name is also its output folder's name
IMAGE_FOLDERS = ("blur", "input")  # where a reference-free folder may keep its images


@dataclass(frozen=True)
class Domain:
    """A named evaluation folder; ``reference``: True (paired), False (blurry images only), None (detect)."""

    name: str
    path: str
    reference: bool | None = None


@dataclass
class DomainResult:
    """One row of the table: the domain, whether it had references, ``status`` (ok | failed), the reason of a
    failure, and the evaluation's report (None when the domain failed before any image)."""

    domain: Domain
    reference: bool | None
    status: str
    reason: str = ""
    report: EvalReport | None = None
    metrics: tuple[str, ...] = ()


@dataclass
class DomainsReport:
    results: list[DomainResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Whether a domain failed or an image of one could not be read or scored."""
        return any(r.status != "ok" or (r.report is not None and r.report.errors) for r in self.results)


# ---- which domains --------------------------------------------------------------------------------

def is_domains_file(text: str) -> bool:
    return text.lower().endswith((".yaml", ".yml")) and Path(text).is_file()


def split_named(text: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> (NAME, PATH); a plain path (or an existing path that holds '=') -> (None, path)."""
    name, sep, path = text.partition("=")
    if sep and name and os.sep not in name and not Path(text).exists():
        return name, path
    return None, text


def is_multi_domain(values: list[str]) -> bool:
    """Whether ``--data`` values ask for the domains table (several values, a NAME=PATH, or a domains file)
    rather than the single paired folder of plain ``diffdeblur eval``."""
    return len(values) > 1 or any(split_named(v)[0] is not None or is_domains_file(v) for v in values)


def check_name(name: str, where: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(f"{where}: domain name {name!r} must be letters, digits, '.', '_' or '-'")
    return name


def read_domains_file(path: str | os.PathLike) -> list[Domain]:
    """The domains of a YAML file (see the module docstring); one-line ConfigErrors naming the file and key."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read the domains file ({str(exc).splitlines()[0]})") from None
    items = data.get("domains") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{p}: expected 'domains:' with a list of {{name, path, reference}}")
    out = []
    for i, item in enumerate(items):
        where = f"{p}: domains[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a mapping with {', '.join(DOMAIN_KEYS)}")
        unknown = sorted(set(item) - set(DOMAIN_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(DOMAIN_KEYS)})")
        if not isinstance(item.get("path"), str) or not item["path"]:
            raise ConfigError(f"{where}: 'path' (a folder) is required")
        reference = item.get("reference")
        if reference is not None and not isinstance(reference, bool):
            raise ConfigError(f"{where}: 'reference' must be true or false, got {reference!r}")
        folder = Path(item["path"]).expanduser()
        folder = folder if folder.is_absolute() else p.parent / folder
        name = item.get("name", folder.name)
        out.append(Domain(check_name(name, where), str(folder), reference))
    return out


def parse_domains(values: Iterable[str]) -> list[Domain]:
    """``--data`` values -> domains: ``NAME=PATH``, a plain folder (named after it) or a domains file;
    a ConfigError for a repeated name."""
    domains: list[Domain] = []
    for text in values:
        if is_domains_file(text):
            domains += read_domains_file(text)
            continue
        name, path = split_named(text)
        domains.append(Domain(check_name(name or Path(path).name or "data", f"--data {text}"), path))
    seen: set[str] = set()
    for d in domains:
        if d.name in seen:
            raise ConfigError(f"domain '{d.name}' is given twice; name the folders with --data NAME=PATH")
        seen.add(d.name)
    return domains


# ---- evaluating ------------------------------------------------------------------------------------

def reference_free_images(root: str | os.PathLike) -> list[Path]:
    """The blurry images of a folder without references: its ``blur/`` or ``input/`` subfolder's images, else its
    own (sorted); a one-line PairError when the folder is missing or holds none."""
    r = Path(root)
    if not r.is_dir():
        raise PairError(f"{r}: dataset folder not found")
    folder = next((r / sub for sub in IMAGE_FOLDERS if (r / sub).is_dir()), r)
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    if not files:
        raise PairError(f"{folder}: no images found")
    return files


def has_pairs(root: str | os.PathLike) -> bool:
    try:
        find_pairs(root)
    except PairError:
        return False
    return True


def evaluate_reference_free(model: nn.Module, root: str | os.PathLike, metrics: tuple[str, ...], *,
                            tile: int | str = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, crop: int = 0,
                            max_images: int = 0, seed: int = 0, engine: str = "auto",
                            save_dir: str | os.PathLike | None = None, **options: Any) -> EvalReport:
    """Restore every image of a folder without references and score it with the no-reference ``metrics`` (and the
    blurry input, ``input_<measure>``), timed as :func:`diffdeblur.evaluate.evaluate` times a restore."""
    files = reference_free_images(root)[:max_images or None]

    def item(path: Path) -> EvalItem:
        return EvalItem(path.stem, lambda: (centre_crop(read_image(path)[0], crop), None, {}))

    return evaluate_items(model, [item(p) for p in files], metrics, tile=tile, overlap=overlap, seed=seed,
                          engine=engine, save_dir=save_dir, crop=crop, **options)


def evaluate_domains(model: nn.Module, domains: list[Domain], *, metrics: Iterable[str] = ("psnr", "ssim"),
                     nr_metrics: Iterable[str] = NO_REFERENCE_METRICS, out_dir: str | os.PathLike | None = None,
                     save_images: bool = False, show_progress: bool = False, **kwargs: Any) -> DomainsReport:
    """Evaluate ``model`` on every domain, one after the other. Paired domains are scored with ``metrics``
    (:func:`~diffdeblur.evaluate.evaluate`), reference-free ones with the no-reference measures among ``metrics``
    and ``nr_metrics``. A domain's failure (a :class:`~diffdeblur.errors.DiffdeblurError`: missing folder, no
    pairs, no images) is recorded with its one-line reason and the next domain runs. ``kwargs`` (tile, overlap,
    crop, max_images, seed, engine and the sampling options) go to every evaluation. With ``out_dir``, each
    domain's per-image report goes to ``out_dir/<name>/`` (and its images to ``images/`` with ``save_images``)."""
    metrics = check_metrics(metrics)
    no_ref = tuple(dict.fromkeys(n for n in (*metrics, *check_metrics(nr_metrics))
                                 if not PERCEPTION_METRICS[n].needs_reference))
    result = DomainsReport()
    for d in domains:
        sub = Path(out_dir) / d.name if out_dir is not None else None
        saved = str(sub / "images") if sub is not None and save_images else None
        reference = d.reference
        try:
            if reference is None:
                reference = has_pairs(d.path) or not Path(d.path).is_dir()  # a missing folder fails as paired
            if reference:
                names = metrics
                report = evaluate(model, d.path, metrics=names, save_dir=saved, show_progress=show_progress, **kwargs)
            else:
                if not no_ref:
                    raise ConfigError("no no-reference measure to score a domain without references "
                                      f"(add one of {', '.join(n for n, m in PERCEPTION_METRICS.items() if not m.needs_reference)})")
                names = no_ref
                report = evaluate_reference_free(model, d.path, names, save_dir=saved, **kwargs)
        except DiffdeblurError as exc:
            result.results.append(DomainResult(d, reference, "failed", str(exc).splitlines()[0]))
            continue
        if not report.rows:
            reason = report.errors[0] if report.errors else "no image could be evaluated"
            result.results.append(DomainResult(d, reference, "failed", reason, report, names))
            continue
        if sub is not None:
            write_report(report, sub, {"domain": d.name, "data": d.path, "reference": reference})
        result.results.append(DomainResult(d, reference, "ok", "", report, names))
    return result


# ---- the table --------------------------------------------------------------------------------------

def table_columns(report: DomainsReport) -> list[str]:
    """Score columns present in any domain, in :data:`~diffdeblur.evaluate.ROW_FIELDS` order."""
    names = {m for r in report.results for m in r.metrics}
    return [c for c in score_columns(names) if c in ROW_FIELDS]


def table_rows(report: DomainsReport) -> tuple[list[str], list[dict[str, Any]]]:
    """(header, rows) of the domains table: domain, data, reference, status, images, errors, the score means
    ('' where a domain has no such score), seconds per image and the reason of a failure."""
    scores = table_columns(report)
    header = ["domain", "data", "reference", "status", "images", "errors", *scores, "seconds_per_image", "reason"]
    rows = []
    for r in report.results:
        s = r.report.summary if r.report is not None else {}
        row: dict[str, Any] = {"domain": r.domain.name, "data": r.domain.path,
                               "reference": {True: "yes", False: "no", None: "?"}[r.reference], "status": r.status,
                               "images": s.get("images", 0), "errors": len(r.report.errors) if r.report else 0}
        for c in scores:
            v = s.get(c)
            row[c] = "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
        row["seconds_per_image"] = s.get("seconds_per_image", "")
        row["reason"] = r.reason
        rows.append(row)
    return header, rows


def _cell(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def render_markdown(report: DomainsReport, title: str = "") -> str:
    header, rows = table_rows(report)
    lines = [f"# {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(r[h]).replace("|", "\\|") for h in header) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_domains_table(report: DomainsReport, out_dir: str | os.PathLike, title: str = "") -> tuple[Path, Path]:
    """Write ``domains.csv`` and ``domains.md`` into ``out_dir`` (atomically); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header, rows = table_rows(report)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_bytes(out / "domains.csv", buf.getvalue().encode())
    atomic_write_bytes(out / "domains.md", render_markdown(report, title).encode())
    return out / "domains.csv", out / "domains.md"
