"""Find (blurry, sharp) image pairs in the folder layouts that deblurring datasets use.

Layouts, tried in order under ROOT:
- ``ROOT/blur/*`` + ``ROOT/sharp/*``            (also ``input/`` + ``target/``)
- ``ROOT/SCENE/blur/*`` + ``ROOT/SCENE/sharp/*`` (GoPro; also input/target per scene)
Files pair by name (the stem; extensions may differ). Unmatched files are reported.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..io import is_image_file

LAYOUTS = (("blur", "sharp"), ("input", "target"))


class PairError(ConfigError):
    """A dataset folder has no recognisable layout or no pairs."""


@dataclass(frozen=True)
class Pair:
    blur: Path
    sharp: Path


def _images(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and is_image_file(p)}


def _pairs_in(folder: Path) -> tuple[list[Pair], list[str]] | None:
    for b, s in LAYOUTS:
        if (folder / b).is_dir() and (folder / s).is_dir():
            blur, sharp = _images(folder / b), _images(folder / s)
            pairs = [Pair(blur[k], sharp[k]) for k in sorted(blur) if k in sharp]
            unmatched = [str(blur[k]) for k in sorted(set(blur) - set(sharp))]
            unmatched += [str(sharp[k]) for k in sorted(set(sharp) - set(blur))]
            return pairs, unmatched
    return None


def find_pairs(root: str | os.PathLike) -> tuple[list[Pair], list[str]]:
    """Return (pairs sorted by name, list of unmatched files) found under ``root``."""
    r = Path(root)
    if not r.is_dir():
        raise PairError(f"{r}: dataset folder not found")
    direct = _pairs_in(r)
    if direct is not None:
        pairs, unmatched = direct
    else:
        pairs, unmatched = [], []
        for scene in sorted(p for p in r.iterdir() if p.is_dir()):
            found = _pairs_in(scene)
            if found is not None:
                pairs += found[0]
                unmatched += found[1]
    if not pairs:
        raise PairError(f"{r}: no image pairs found (expected blur/+sharp/, input/+target/, "
                        "or SCENE/blur/+SCENE/sharp/)")
    return pairs, unmatched


def pair_name(pair: Pair, root: str | os.PathLike) -> str:
    """Name of a pair relative to the dataset root, e.g. 'GOPR0372_07_00/000100'."""
    rel = pair.blur.relative_to(Path(root))
    parts = rel.parts[:-2]  # drop 'blur/<file>'
    return "/".join([*parts, pair.blur.stem])
