"""The package's import graph, read from the source with ``ast``: no cycle, and every import points down.

Floors (STYLE.md section 11): leaf utilities -> pure maths (diffusion/, losses) -> networks (models/)
-> methods (methods/), registry and objectives -> config, checkpoint, data sources -> inference, evaluation, trace ->
train -> commands and cli -> the package's ``__init__``. An import may stay on its floor (if it
makes no cycle) or go down, never up. Function-local imports count like any other.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import diffdeblur

PACKAGE_DIR = Path(diffdeblur.__file__).parent
FLOORS: dict[str, int] = {
    # 0: leaf utilities
    "errors": 0, "png16": 0, "io": 0, "metrics": 0, "niqe": 0, "tiling": 0, "device": 0, "runtime": 0,
    "tensorfile": 0, "version": 0, "cache": 0, "options": 0, "example": 0, "data": 0, "data.kernels": 0, "data.trajectories": 0, "data.exposure": 0,
    "data.synth": 0, "data.pairs": 0, "data.sources": 0, "data.image_sources": 0, "data.synth_source": 0,
    "data.frames": 0, "data.folders": 0, "perception": 0, "figures": 0, "catalog_stats": 0, "registrar": 0, "typecheck": 0,
    # 1: pure maths
    "losses": 1, "diffusion": 1,
    # 2: networks only
    "models": 2,
    # 3: the methods (wrapper + loss + presets), the model registry and the objective table
    "methods": 3, "registry": 3, "objectives": 3,
    # 4: configs, checkpoints, training data sources
    "config": 4, "checkpoint": 4, "data.datasets": 4,
    # 5: using a model
    "inference": 5, "tasks": 5, "evaluate": 5, "domains": 5, "trace": 5, "demo": 5, "export": 5, "engines": 5, "runners": 5, "benchmark": 5, "catalog": 5,
    "packaging": 5,
    # 6: training
    "train": 6, "train_setup": 6,
    # 7: the command line
    "commands": 7, "cli": 7,
}
PACKAGE_FLOOR = 8  # diffdeblur/__init__.py: the public API over everything


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(("diffdeblur",) + parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def floor_of(module: str) -> int:
    """The floor of the longest listed prefix of ``module`` (e.g. diffusion.noise -> diffusion)."""
    if module == "diffdeblur":
        return PACKAGE_FLOOR
    parts = module.split(".")[1:]
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in FLOORS:
            return FLOORS[key]
    raise AssertionError(f"{module}: not on any floor; add it to FLOORS in {Path(__file__).name}")


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in its source, function bodies included)."""
    files = {module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod if is_package(path) else mod.rsplit(".", 1)[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in files else origin for a in node.names]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "import_module"):
                raise AssertionError(f"{path}: importlib.import_module hides an import from this graph; import explicitly")
            else:
                continue
            edges |= {t for t in targets if t.split(".")[0] == "diffdeblur" and t != mod}
        graph[mod] = {e for e in edges if e in files}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_import_points_down_or_stays_on_its_floor():
    upward = [f"{mod} (floor {floor_of(mod)}) imports {dep} (floor {floor_of(dep)})"
              for mod, deps in sorted(import_graph().items()) for dep in sorted(deps)
              if floor_of(dep) > floor_of(mod)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_networks_never_import_the_loading_layers():
    for mod, deps in import_graph().items():
        if mod.startswith("diffdeblur.models"):
            assert not {d for d in deps if floor_of(d) > FLOORS["models"]}, mod


def test_the_graph_sees_function_local_imports():
    """commands/train.py imports the training loop inside run(): the graph must count it."""
    assert "diffdeblur.train" in import_graph()["diffdeblur.commands.train"]


@pytest.mark.parametrize("module", ["diffdeblur.objectives", "diffdeblur.models.sr3_unet"])
def test_each_module_imports_first_in_a_fresh_process(module):
    """No module depends on another having been imported before it (registration happens once)."""
    code = (f"import importlib; importlib.import_module('{module}'); "
            "from diffdeblur.objectives import get_objective; from diffdeblur.registry import model_names; "
            "get_objective('diffusion'); get_objective('latent-diffusion'); get_objective('blurdm-stage2'); "
            "get_objective('autoencoder'); get_objective('l1-fft'); assert 'sr3-tiny' in model_names()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
