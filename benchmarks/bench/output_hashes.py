"""Are the shipped models' outputs unchanged by a code change? Output hashes of this checkout beside another's.

Every shipped weights file restores one generated test image (64x96, smoothed noise, seed 3) in fp32 eager,
whole image: through ``model.restore`` (default options and, for chains, 2 steps; start noise from seed 0) and
through ``diffdeblur.deblur`` (engine eager, tile 0). The SHA-256 of each output's float32 bytes is printed for
this checkout and, with ``--repo OLD``, for another checkout run in a subprocess with its ``src`` first on
``PYTHONPATH`` (e.g. a ``git worktree`` of an earlier commit); equal hashes mean bit-identical outputs.

    python -m benchmarks.bench.output_hashes [--repo OLD_CHECKOUT] [--repo-note TEXT]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import measure_main, ROOT, command, machine, md_table, today, write_report

NAME = "output_hashes"
MODELS = ("default", "indi-nafnet-small", "resshift-nafnet-small-refine")
PROBE = r'''
import hashlib, json
import torch
import diffdeblur
from diffdeblur.inference import load_model
torch.set_num_threads(1)
x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
x = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect"), 5, 1)
digest = lambda a: hashlib.sha256(a.tobytes()).hexdigest()[:16]
out = {}
for name in %r:
    m = load_model(name, "cpu")
    chain = "steps" in getattr(type(m).restore, "options", ())
    for steps in (None, 2):
        kw = {"steps": steps} if steps and chain else {}
        if getattr(m, "stochastic", False):
            kw["generator"] = torch.Generator().manual_seed(0)
        with torch.no_grad():
            out[f"{name} restore steps={steps or 'default'}"] = digest(m.restore(x, **kw).contiguous().numpy())
    y = diffdeblur.deblur(x[0].permute(1, 2, 0).numpy(), model=m, tile=0, engine="eager")
    out[f"{name} deblur()"] = digest(y)
print(json.dumps(out))
''' % (MODELS,)


def hashes(src: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(src) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=src.parent,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(data: dict[str, Any], results: Path) -> None:
    other = data.get("other") or {}
    rows = [[k, v, other.get(k, "-"), "yes" if other.get(k) == v else ("-" if not other else "NO")]
            for k, v in data["this"].items()]
    same = other and all(other.get(k) == v for k, v in data["this"].items())
    lines = ["# Shipped models' outputs: this checkout beside another", "",
             f"`{data['command']}` on {data['machine']}, {data['date']}.", "",
             "SHA-256 (first 16 hex) of the float32 output of each shipped model on one generated 64x96 image, "
             "fp32 eager, whole image; the other checkout: " + (data.get("repo_note") or "none") + ".", "",
             *md_table(["output", "this checkout", "other checkout", "equal"], rows), "",
             ("Every output is bit-identical." if same else "Not every output is compared or equal.")]
    write_report(NAME, lines, data, results)


def measure(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    return {"this": hashes(ROOT / "src"), "other": hashes(args.repo / "src") if args.repo else None,
            "repo_note": args.repo_note, "machine": machine(), "date": today(),
            "command": command(f"benchmarks.bench.{NAME}", argv)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=None, help="another checkout to compare with")
    ap.add_argument("--repo-note", default="", help="what the other checkout is (e.g. its commit)")
    return measure_main(ap, NAME, measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
