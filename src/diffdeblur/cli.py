"""The ``diffdeblur`` command line: a thin layer over the library.

Each subcommand lives in ``diffdeblur.commands.<name>`` (``add_parser`` + ``run``). Only the invoked
command's module is imported (:func:`load_command`), after the top level has been parsed, so that
``diffdeblur --help``, ``--version`` and a mistyped command answer without importing torch.
Errors the user can fix (:class:`~diffdeblur.errors.DiffdeblurError`) are reported as one line on
stderr with a non-zero exit code; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
from types import ModuleType

from .errors import DiffdeblurError
from .runtime import tune_allocator
from .version import __version__

# name -> one-line summary listed by `diffdeblur --help` (the invoked command's own parser replaces it)
COMMANDS: dict[str, str] = {
    "bench": "benchmark models: params, MACs, latency, peak memory, PSNR/SSIM (table, JSON, plot)",
    "deblur": "deblur images (the built-in example when no input is given)",
    "demo": "a browser demo on 127.0.0.1: deblur, upscale or remove objects, compare and download (needs the demo extra)",
    "eval": "evaluate a model on a paired folder (PSNR/SSIM, params, MACs, latency)",
    "export": "export a regression or BlurDM model to ONNX (dynamic height and width)",
    "models": "list registered models with parameters (and MACs with --macs)",
    "package": "ship a training run's weights as one .safetensors file (float16)",
    "remove": "remove objects marked by a mask or boxes and fill the hole (inpainting)",
    "sr": "upscale images 2 or 4 times (super-resolution)",
    "synth": "make blur pairs: synthetic from sharp photos, or real from high-speed frames",
    "trace": "run a diffusion model's reverse process on one image and save per-step images (grid, GIF), "
             "per-step PSNR/SSIM (CSV) and curves",
    "train": "train a model from a YAML config (file or shipped preset name)",
}


def load_command(name: str) -> ModuleType:
    """The module of subcommand ``name``, imported on use (explicit imports: the layering test reads them)."""
    if name == "bench":
        from .commands import bench as module
    elif name == "deblur":
        from .commands import deblur as module
    elif name == "demo":
        from .commands import demo as module
    elif name == "eval":
        from .commands import eval as module
    elif name == "export":
        from .commands import export as module
    elif name == "models":
        from .commands import models as module
    elif name == "package":
        from .commands import package as module
    elif name == "remove":
        from .commands import remove as module
    elif name == "sr":
        from .commands import sr as module
    elif name == "synth":
        from .commands import synth as module
    elif name == "trace":
        from .commands import trace as module
    elif name == "train":
        from .commands import train as module
    else:
        raise KeyError(name)
    return module


def invoked_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (its first positional word), if it is a known one."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; ``command`` gets its full sub-parser, the others a one-line entry."""
    parser = argparse.ArgumentParser(
        prog="diffdeblur", description="Efficient dynamic-scene image deblurring with diffusion models.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"diffdeblur {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if name == command:
            load_command(name).add_parser(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-parser of ``command`` inside the top-level ``parser``."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def parse_command_line(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """(top-level parser, parsed arguments). The invoked command's own parser reads the words after
    its name, intermixed (``train CFG --resume train.steps=50``: positionals may follow options), so
    that a usage error shows that command's usage and names it (``diffdeblur train: error: ...``)."""
    command = invoked_command(argv)
    parser = build_parser(command)
    if command is None:
        return parser, parser.parse_args(argv)
    at = argv.index(command)
    parser.parse_args(argv[:at])  # options before the command: --help, --version
    namespace = argparse.Namespace(command=command)
    return parser, command_parser(parser, command).parse_intermixed_args(argv[at + 1:], namespace)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, args = parse_command_line(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    tune_allocator()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:  # Interrupted says what was saved; a bare Ctrl-C says nothing
        print(f"diffdeblur {args.command}: {exc}" if str(exc) else "diffdeblur: interrupted", file=sys.stderr)
        return 130
    except DiffdeblurError as exc:  # errors the user can fix: one line; anything else is a bug (traceback)
        print(f"diffdeblur {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
