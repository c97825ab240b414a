"""`diffdeblur demo [--port N] [--model CKPT ...]`: the browser demo on http://127.0.0.1:N (needs the `demo` extra):
deblurring, super-resolution and object-removal tabs."""
from __future__ import annotations

import argparse
import importlib.util

from ..errors import ConfigError
from ..options import DEMO_MAX_MEGABYTES, DEMO_MAX_MEGAPIXELS, DEMO_PORT
from . import HelpFormatter


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="a browser demo on 127.0.0.1: deblur, upscale or remove objects, compare and "
                       "download (needs the demo extra)",
                       formatter_class=HelpFormatter)
    p.add_argument("--port", type=int, default=DEMO_PORT, help="port on 127.0.0.1")
    p.add_argument("--model", action="append", default=[], metavar="CHECKPOINT",
                   help="also offer this .safetensors checkpoint (repeatable), in the tab of its task (deblurring, "
                        "super-resolution or object removal); shipped weights are always offered")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    p.add_argument("--max-megabytes", type=float, default=DEMO_MAX_MEGABYTES, help="largest upload accepted")
    p.add_argument("--max-megapixels", type=float, default=DEMO_MAX_MEGAPIXELS, help="largest image accepted")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..demo import Limits, demo_models, launch

    if importlib.util.find_spec("gradio") is None:
        raise ConfigError('the demo needs Gradio: pip install "diffdeblur[demo]"')
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    print(f"diffdeblur demo on http://127.0.0.1:{args.port} (Ctrl+C to stop)", flush=True)
    launch(args.port, demo_models(args.model), args.device, Limits(args.max_megabytes, args.max_megapixels))
    return 0
