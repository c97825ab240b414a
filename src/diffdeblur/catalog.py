"""The table of registered models that ``diffdeblur models`` prints, from the registry's metadata.

Listing builds no network: the name, kind and description come from the registry's entries, the
parameter count (and the MACs of one ``restore`` at 256x256, per sampling step for the models that
take ``steps``) from :data:`diffdeblur.catalog_stats.STATS`, counted once by ``python -m
diffdeblur.catalog`` (which rewrites that file). Each stored row carries a fingerprint of its
preset (builder and keyword arguments); a preset without a row or with another fingerprint (a
model registered outside the package, an edited preset) is counted on the spot: parameters on
PyTorch's meta device, MACs on the meta device where the model's ``restore`` runs there, else on
a real build (slow for large diffusion models; ``diffdeblur models`` caches the table).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pprint
import warnings
from pathlib import Path
from typing import Any, Collection

from .catalog_stats import STATS
from .inference import DEFAULT_MODEL, weights_for
from .methods.base import ModelSpec
from .registry import list_models
from .tensorfile import read_metadata

MAC_SIZE = 256  # the side of the square input the MACs are counted on
STATS_FILE = Path(__file__).with_name("catalog_stats.py")


def preset_fingerprint(entry: ModelSpec) -> str:
    """A short hash of what builds the preset: its builder's qualified name and keyword arguments."""
    builder = f"{entry.builder.__module__}.{entry.builder.__qualname__}"
    text = json.dumps({"builder": builder, "defaults": entry.defaults, "composite": entry.composite},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def takes_steps(entry: ModelSpec) -> bool:
    """Whether the preset's cost grows with its ``steps`` (its MACs are then per sampling step): its ``restore``
    takes ``steps`` and the chain is not ``fixed_steps`` (BlurDM runs its T steps inside one forward)."""
    return "steps" in getattr(entry.builder.restore, "options", ()) and not getattr(entry.builder, "fixed_steps", False)


def count_stats(entry: ModelSpec, with_macs: bool, real_macs: bool = True) -> dict[str, Any]:
    """{"config", "params", "gmacs_256"} of ``entry``, counted now (see the module docstring);
    ``gmacs_256`` is None without ``with_macs``, and where neither count works (e.g. third-party
    weights not installed) or a real build would be needed but ``real_macs`` is False."""
    from .evaluate import build_on_meta, count_parameters  # the counting tools: only when a row is missing

    meta = build_on_meta(entry.name)
    macs = count_macs_of(entry, meta) if with_macs else None
    if with_macs and macs is None and real_macs:
        from .registry import build_model

        macs = count_macs_of(entry, None, build_model)
    return {"config": preset_fingerprint(entry), "params": count_parameters(meta),
            "gmacs_256": None if macs is None else macs / 1e9}


def count_macs_of(entry: ModelSpec, model: Any, build: Any = None) -> int | None:
    """MACs of one ``restore`` (one step for the models that take ``steps``) of ``model``, or of
    ``build(entry.name)`` when ``model`` is None; None when that model cannot run the count."""
    from .evaluate import count_macs

    options = {"steps": 1} if takes_steps(entry) else {}
    try:
        model = model if model is not None else build(entry.name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # meta tensors: "copying is a no-op"
            return count_macs(model, MAC_SIZE, **options)
    except (OSError, ValueError, RuntimeError, KeyError, NotImplementedError):
        return None  # no data on the meta device, or third-party weights not installed


def stats_for(entry: ModelSpec, with_macs: bool) -> dict[str, Any]:
    """The stored counts of ``entry`` when they are of its current preset, else counted now."""
    stored = STATS.get(entry.name)
    if stored is not None and stored["config"] == preset_fingerprint(entry):
        if not with_macs or stored["gmacs_256"] is not None:
            return stored
    return count_stats(entry, with_macs)


def model_table(with_macs: bool = False) -> list[dict[str, Any]]:
    """One row per registered model: name, kind, params, gmacs_256 (None without ``with_macs``),
    per_step (MACs per sampling step), weights (trained weights ship), description; first a
    ``default`` row for the shipped default weights when they are a registered preset."""
    rows = []
    for entry in list_models():
        stats = stats_for(entry, with_macs)
        rows.append({"name": entry.name, "kind": entry.kind, "params": stats["params"],
                     "gmacs_256": stats["gmacs_256"] if with_macs else None, "per_step": takes_steps(entry),
                     "weights": weights_for(entry.name) is not None, "description": entry.description})
    return default_row(rows) + rows


def default_row(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """[the row of the preset that the default weights are, renamed ``default``], or [] without them."""
    path = weights_for(DEFAULT_MODEL)
    name = read_metadata(path)["model"] if path is not None else None
    base = next((r for r in rows if r["name"] == name), None)
    if base is None or weights_for(name) != path:
        return []
    return [{**base, "name": DEFAULT_MODEL, "description": f"the shipped default weights ({name}): {base['description']}"}]


def write_stats(path: Path = STATS_FILE, real_macs: Collection[str] | None = ()) -> dict[str, dict[str, Any]]:
    """Count every registered preset (see :func:`count_stats`) and write the table module ``path``.
    ``real_macs``: the presets whose MACs may be counted on a real build when the meta device cannot
    (None: all of them)."""
    stats = {e.name: count_stats(e, True, real_macs is None or e.name in real_macs) for e in list_models()}
    body = pprint.pformat(stats, sort_dicts=True, width=110)
    path.write_text(f'"""Parameters and GMACs at {MAC_SIZE}x{MAC_SIZE} (per step for the models that take `steps`) of '
                    'the registered presets,\nwritten by `python -m diffdeblur.catalog`; read by '
                    ':mod:`diffdeblur.catalog` (do not edit by hand)."""\n\n'
                    f"STATS = {body}\n")
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Recount the parameters and MACs of every registered preset and "
                                            f"rewrite {STATS_FILE.name}.")
    p.add_argument("--real-macs", nargs="*", metavar="NAME", default=(),
                   help="count on real tensors the MACs that the meta device cannot count, for these presets "
                        "(no name: all; minutes on a CPU); the others are counted when listed")
    args = p.parse_args(argv)
    stats = write_stats(real_macs=None if args.real_macs == [] else set(args.real_macs))
    missing = sorted(n for n, s in stats.items() if s["gmacs_256"] is None)
    print(f"wrote {STATS_FILE} ({len(stats)} presets; MACs counted when listed: {', '.join(missing) or 'none'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
