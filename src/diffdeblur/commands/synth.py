"""`diffdeblur synth SHARP_DIR -o OUT --count N --seed S`: synthetic dynamic-scene blur pairs
(:func:`diffdeblur.data.synthesize_folder`); `diffdeblur synth --from-frames DIR --frames 7:13 -o OUT`:
real blur pairs from high-speed frames (the GoPro protocol, :func:`diffdeblur.data.synthesize_from_frames`).

Both write a paired folder that ``train`` and ``eval`` read directly (the layout, seeding and
earlier-run rule are the library's: see those functions). This module parses the arguments, prints
and chooses the exit code: unreadable inputs are reported (one line each) and skipped; the exit
code is then 1.
"""
from __future__ import annotations

import argparse
import sys

from ..data.synth import PRESETS
from ..errors import ConfigError
from . import HelpFormatter


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("synth", help="make blur pairs: synthetic from sharp photos, or real from high-speed frames",
                       formatter_class=HelpFormatter)
    p.add_argument("sharp_dir", metavar="SHARP_DIR", nargs="?", default="",
                   help="folder of sharp images (synthetic blur; not with --from-frames)")
    p.add_argument("-o", "--out", required=True, help="output folder (blur/, sharp/, meta.jsonl, ...)")
    p.add_argument("--from-frames", default="", metavar="DIR",
                   help="folder of consecutive high-speed frames (e.g. 240 fps): average N of them in linear light "
                        "and pair the result with the middle frame (GoPro / REDS protocol)")
    p.add_argument("--frames", default="7:13", metavar="N|LO:HI",
                   help="with --from-frames: frames per exposure, fixed or drawn per exposure from LO..HI")
    p.add_argument("--gamma", type=float, default=2.2, help="with --from-frames: frames are linearised as x^gamma")
    p.add_argument("--stride", type=int, default=0,
                   help="with --from-frames: start an exposure every STRIDE frames (0 = back to back)")
    p.add_argument("--count", type=int, default=0, help="number of synthetic pairs to make (inputs are cycled)")
    p.add_argument("--seed", type=int, default=0, help="run seed; sample i is seeded by (seed, i)")
    p.add_argument("--preset", default="gopro-like", choices=sorted(PRESETS), help="blur / noise preset")
    p.add_argument("--subframes", type=int, default=0, help="sub-frames per exposure (0 = the preset's)")
    p.add_argument("--integration", default="linear", choices=["linear", "srgb"],
                   help="average sub-frames in linear light (physical) or as sRGB values (the common shortcut)")
    p.add_argument("--partials", default="", help="comma-separated k values: also write the mean of the first "
                   "k sub-frames as OUT/partials/NAME_kXX.png")
    p.add_argument("--motion", action="store_true", help="also write the motion field (OUT/motion/NAME.npy) and "
                   "the camera kernel (OUT/kernels/NAME.npy and .png)")
    p.add_argument("--size", type=int, default=0, help="output a random SIZE x SIZE window of each image "
                   "(clamped to the image; 0 = whole image)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (each uses one thread)")
    p.add_argument("--overwrite", action="store_true", help="replace the pairs of an earlier run in OUT "
                   "(without it such an OUT is refused, so that the folder and meta.jsonl always agree)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def parse_partials(text: str) -> tuple[int, ...]:
    if not text.strip():
        return ()
    try:
        return tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise ConfigError(f"--partials must be comma-separated integers, got '{text}'") from None


def run_from_frames(args: argparse.Namespace) -> int:
    from ..data import synthesize_from_frames

    if args.sharp_dir:
        raise ConfigError("give either SHARP_DIR (synthetic blur) or --from-frames DIR, not both")
    records = synthesize_from_frames(args.from_frames, args.out, args.frames, args.gamma, args.seed, args.stride,
                                     args.overwrite)
    ns = sorted({r["n"] for r in records})
    print(f"wrote {len(records)} pairs to {args.out} from {args.from_frames} "
          f"(N = {', '.join(map(str, ns))} frames, gamma {args.gamma:g})")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..data import synthesize_folder

    if args.from_frames:
        return run_from_frames(args)
    if not args.sharp_dir:
        raise ConfigError("give SHARP_DIR (synthetic blur from sharp photos) or --from-frames DIR (real blur)")
    done = synthesize_folder(args.sharp_dir, args.out, args.count, seed=args.seed, preset=args.preset,
                             subframes=args.subframes, integration=args.integration,
                             partials=parse_partials(args.partials), motion=args.motion, size=args.size,
                             workers=args.workers, overwrite=args.overwrite, show_progress=not args.quiet)
    for e in done.skipped:
        print(f"diffdeblur synth: skipped: {e}", file=sys.stderr)
    print(f"wrote {len(done.records)} pairs to {args.out} ({len(done.skipped)} input file(s) skipped)")
    return 1 if done.skipped else 0
