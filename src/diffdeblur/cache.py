"""The user's cache folder for derived files (the `models` table, exported ONNX graphs, the engine
that ``auto`` measured fastest on this CPU).

``$DIFFDEBLUR_CACHE`` if set (an empty value turns caching off), else ``$XDG_CACHE_HOME/diffdeblur``,
else ``~/.cache/diffdeblur``. Every cached file is derived and can be deleted at any time.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path | None:
    """The cache folder (None when caching is turned off)."""
    if "DIFFDEBLUR_CACHE" in os.environ:
        return Path(os.environ["DIFFDEBLUR_CACHE"]) if os.environ["DIFFDEBLUR_CACHE"] else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diffdeblur"


def cache_path(name: str) -> Path | None:
    """Where cached file ``name`` lives (it may not exist yet); None when caching is turned off."""
    folder = cache_dir()
    return None if folder is None else folder / name


def read_cached(name: str) -> bytes | None:
    """The bytes of cached file ``name``, or None (no cache, no such file, unreadable)."""
    folder = cache_dir()
    try:
        return (folder / name).read_bytes() if folder is not None else None
    except OSError:
        return None


def write_cached(name: str, data: bytes) -> None:
    """Store ``data`` as cached file ``name`` (atomically); a read-only or absent cache is skipped."""
    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{name}.tmp{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)
    except OSError:
        pass
