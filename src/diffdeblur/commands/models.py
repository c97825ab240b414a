"""`diffdeblur models [--macs]`: the registered models with parameters (and MACs at 256x256 on request).

The table comes from the registry's metadata (:mod:`diffdeblur.catalog`: no network is built). Importing
torch still takes seconds, so the table is cached as JSON in the user's cache folder (:mod:`diffdeblur.cache`). The cache key is a hash of the package version
and the size and modification time of every source and weights file, so any change of the package
recomputes it. A warm cache answers without importing torch.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from ..cache import read_cached, write_cached
from ..version import __version__
from . import HelpFormatter

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("models", help="list registered models with parameters (and MACs with --macs)",
                       formatter_class=HelpFormatter)
    p.add_argument("--macs", action="store_true",
                   help="also show MACs at 256x256 (per sampling step for diffusion models); stored for the "
                        "shipped presets, counted once and cached for the others")
    p.add_argument("--no-macs", action="store_true", help=argparse.SUPPRESS)  # the former default's opt-out
    p.add_argument("--no-cache", action="store_true", help="recompute the table instead of reading the cache")
    p.set_defaults(func=run)
    return p


def package_fingerprint() -> str:
    """Hash of the version and (path, size, mtime) of the package's source and weights files."""
    h = hashlib.sha256(__version__.encode())
    for p in sorted(q for q in PACKAGE_DIR.rglob("*") if q.suffix in (".py", ".safetensors", ".yaml")):
        st = p.stat()
        h.update(f"{p.relative_to(PACKAGE_DIR)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def cached_table(with_macs: bool, use_cache: bool = True) -> list[dict[str, Any]]:
    """:func:`diffdeblur.catalog.model_table`, read from / written to the cache when possible."""
    name = f"models-{'macs-' if with_macs else ''}{package_fingerprint()}.json"
    cached = read_cached(name) if use_cache else None
    if cached is not None:
        try:
            return json.loads(cached)
        except ValueError:
            pass  # a damaged cache file: recompute it
    from ..catalog import model_table  # imports torch: only on a cold cache

    rows = model_table(with_macs)
    if use_cache:
        write_cached(name, json.dumps(rows).encode())
    return rows


def run(args: argparse.Namespace) -> int:
    with_macs = args.macs and not args.no_macs
    head = ("name", "kind", "params (M)", "GMACs@256", "weights", "description")
    rows = [(r["name"], r["kind"], f"{r['params'] / 1e6:.3f}",
             "" if r["gmacs_256"] is None else f"{r['gmacs_256']:.2f}" + (" per step" if r["per_step"] else ""),
             "yes" if r["weights"] else "", r["description"]) for r in cached_table(with_macs, not args.no_cache)]
    if not with_macs:
        head, rows = head[:3] + head[4:], [r[:3] + r[4:] for r in rows]
    n = len(head) - 1
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(n)]
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[n])
    return 0
