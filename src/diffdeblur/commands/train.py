"""`diffdeblur train CONFIG [key=value ...]`: train any registered model from a YAML config."""
from __future__ import annotations

import argparse
import json
import os
import warnings

from ..errors import ConfigError
from . import HelpFormatter


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a model from a YAML config (file or shipped preset name)",
                       formatter_class=HelpFormatter,
                       description="Train a registered model. Overrides are dotted keys, e.g. "
                                   "train.steps=2000 data.batch_size=4 model.width=16, before or after the "
                                   "options. Ctrl-C saves the training state at the current step (continue with "
                                   "--resume). Run under torchrun for distributed data parallel training.")
    p.add_argument("config", help="YAML config file, or the name of a shipped preset (see configs/)")
    p.add_argument("overrides", nargs="*", default=[], help="key.path=value overrides (before or after the options)")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/state.pt if it exists")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in OUT_DIR (without it, or --resume, such an OUT_DIR is refused)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="training device")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..config import load_config  # imported on use: --help and argument errors answer without torch
    from ..train import apply_process_settings, train

    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    cfg = load_config(args.config, args.overrides)
    apply_process_settings(cfg)  # train.threads: the command owns its process; the library function does not
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    with warnings.catch_warnings():
        if not main_rank:
            warnings.simplefilter("ignore")  # rank 0 shows each warning once, for all ranks
        summary = train(cfg, resume=args.resume, device=args.device, show_progress=not args.no_progress,
                        overwrite=args.overwrite)
    if main_rank:
        print(json.dumps(summary))
    return 0
