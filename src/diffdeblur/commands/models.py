"""`diffdeblur models`: the registered models with parameters and MACs at 256x256."""
from __future__ import annotations

import argparse

from ..evaluate import model_table


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("models", help="list registered models with parameters and MACs",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--no-macs", action="store_true", help="skip counting MACs (faster)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    head = ("name", "kind", "params (M)", "GMACs@256", "weights", "description")
    rows = [(r["name"], r["kind"], f"{r['params'] / 1e6:.3f}",
             "" if r["gmacs_256"] is None else f"{r['gmacs_256']:.2f}" + (" /step" if r["per_step"] else ""),
             "yes" if r["weights"] else "", r["description"]) for r in model_table(not args.no_macs)]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[5])
    return 0
