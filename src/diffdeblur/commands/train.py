"""`diffdeblur train CONFIG [key=value ...]`: train any registered model from a YAML config."""
from __future__ import annotations

import argparse
import json

from ..config import load_config


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a model from a YAML config (file or shipped preset name)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train a registered model. Overrides are dotted keys, e.g. "
                                   "train.steps=2000 data.batch_size=4 model.width=16. Run under torchrun "
                                   "for distributed data parallel training.")
    p.add_argument("config", help="YAML config file, or the name of a shipped preset (see configs/)")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/state.pt if it exists")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="training device")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..train import train  # imported on use: keeps the start-up of the other commands light

    cfg = load_config(args.config, args.overrides)
    summary = train(cfg, resume=args.resume, device=args.device, show_progress=not args.no_progress)
    print(json.dumps(summary))
    return 0
