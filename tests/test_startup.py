"""Start-up: `diffdeblur --help`, `--version` and top-level argument errors answer without importing
torch; `diffdeblur models` answers from its cache without importing torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from diffdeblur.cli import COMMANDS, build_parser

# Runs the command line in a fresh interpreter, then reports its exit code and whether torch was imported.
PROBE = """
import contextlib, io, json, sys
from diffdeblur.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        rc = main(sys.argv[1:])
    except SystemExit as exc:
        rc = exc.code
print(json.dumps({"rc": rc, "torch": "torch" in sys.modules, "out": out.getvalue(), "err": err.getvalue()}))
"""


def probe(*argv: str, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["--version"], [], ["no-such-command"], ["--bogus"]])
def test_top_level_answers_without_importing_torch(argv):
    result = probe(*argv)
    assert not result["torch"], f"diffdeblur {' '.join(argv)} imported torch"
    assert result["rc"] in (0, 2)
    if argv == ["--help"]:
        assert all(name in result["out"] for name in COMMANDS)


TORCH_FREE_PARSERS = [c for c in COMMANDS if c != "synth"]  # synth's presets live beside its torch warping


@pytest.mark.parametrize("command", TORCH_FREE_PARSERS)
def test_subcommand_help_and_argument_errors_answer_without_torch(command):
    helped = probe(command, "--help")
    assert helped["rc"] == 0 and not helped["torch"], f"diffdeblur {command} --help imported torch"
    bad = probe(command, "--no-such-option")
    assert bad["rc"] == 2 and not bad["torch"] and "error:" in bad["err"]


def test_a_bad_option_value_is_refused_before_torch_loads():
    bad = probe("deblur", "x.png", "--tile", "huge")
    assert bad["rc"] == 2 and not bad["torch"] and "expected 'auto' or an integer" in bad["err"]


def test_import_diffdeblur_is_light_and_the_api_loads_on_use():
    code = ("import sys, diffdeblur; assert 'torch' not in sys.modules; "
            "assert callable(diffdeblur.deblur) and 'nafnet-tiny' in diffdeblur.model_names()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_models_answers_from_its_cache_without_torch(tmp_path):
    env = {"DIFFDEBLUR_CACHE": str(tmp_path)}
    cold = probe("models", env=env)
    assert cold["rc"] == 0 and "nafnet-small" in cold["out"] and list(tmp_path.glob("models-*.json"))
    warm = probe("models", env=env)
    assert warm["rc"] == 0 and not warm["torch"] and warm["out"] == cold["out"]


def test_every_command_summary_matches_its_parser():
    """The one-line summaries listed by --help are the commands' own help texts."""
    for name, summary in COMMANDS.items():
        parser = build_parser(name)
        sub = next(a for a in parser._actions if a.dest == "command")
        helps = {c.dest: c.help for c in sub._choices_actions}
        assert " ".join(helps[name].split()) == summary, name
