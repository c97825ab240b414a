"""`diffdeblur models`: the registered models with parameters and MACs at 256x256."""
from __future__ import annotations

import argparse

from ..evaluate import count_macs, count_parameters
from ..inference import shipped_weights
from ..registry import build_model, list_models


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("models", help="list registered models with parameters and MACs",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--no-macs", action="store_true", help="skip counting MACs (faster)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    rows = []
    for entry in list_models():
        model = build_model(entry.name)
        macs = "" if args.no_macs or entry.kind in ("autoencoder",) else f"{count_macs(model, steps=1) / 1e9:.2f}" \
            if getattr(model, "stochastic", False) else f"{count_macs(model) / 1e9:.2f}"
        rows.append((entry.name, entry.kind, f"{count_parameters(model) / 1e6:.3f}", macs,
                     "yes" if shipped_weights(entry.name) else "", entry.description))
    head = ("name", "kind", "params (M)", "GMACs@256", "weights", "description")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  " + head[5])
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[5])
    print("GMACs for diffusion models are per sampling step.")
    return 0
