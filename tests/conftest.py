"""Shared fixtures: procedural images and paired folders made on the fly (no downloads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffdeblur.example import example_pair
from diffdeblur.io import write_image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _auto_engine_is_eager(monkeypatch):
    """``engine="auto"`` runs eager fp32 on the CPU here: the measured choice costs seconds per network on a
    fresh cache and prints a line on stderr. tests/test_engine_choice.py puts the real chooser back."""
    from diffdeblur import engines

    monkeypatch.setattr(engines, "choose_engine",
                        lambda model, device, **kw: engines.CUDA_DEFAULT if device.type == "cuda" else "eager")


def active_tiny_model() -> torch.nn.Module:
    """nafnet-tiny with every block active (its untrained zero gates would skip them), so that engines
    that compute differently (bf16) give different outputs."""
    from diffdeblur.registry import build_model

    torch.manual_seed(0)
    model = build_model("nafnet-tiny").eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model


def active_fusions(model: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """``model`` with random weights in every prior fusion (:class:`~diffdeblur.models.blocks.PriorFusion`): they start
    at zero, so that a fused backbone starts as its plain twin, and would hide what a prior does to the output."""
    from diffdeblur.models.blocks import PriorFusion

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, PriorFusion):
                m.proj.weight.copy_(torch.randn(m.proj.weight.shape, generator=g) * std)
    return model


def make_paired_folder(root: Path, n: int = 3, size: tuple[int, int] = (48, 64), layout=("blur", "sharp"),
                       seed: int = 0) -> Path:
    """Write n procedural (blur, sharp) PNG pairs under root/<layout[0]> and root/<layout[1]>."""
    (root / layout[0]).mkdir(parents=True, exist_ok=True)
    (root / layout[1]).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        blur, sharp = example_pair(size[0], size[1], seed=seed + i)
        write_image(root / layout[0] / f"{i:04d}.png", blur)
        write_image(root / layout[1] / f"{i:04d}.png", sharp)
    return root


@pytest.fixture
def paired_folder(tmp_path: Path) -> Path:
    return make_paired_folder(tmp_path / "pairs")


@pytest.fixture
def ckpt(tmp_path: Path) -> str:
    """A tiny nafnet-tiny checkpoint with small random weights (not an identity): its path."""
    from diffdeblur import build_model, save_model

    torch.manual_seed(0)
    model = build_model("nafnet-tiny")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    path = tmp_path / "tiny.safetensors"
    save_model(model, path)
    return str(path)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def one_line_error(capsys, *fragments: str) -> str:
    """The run's stderr: exactly one line, an error naming every fragment, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def fit_losses(model: "torch.nn.Module", blur: "torch.Tensor", sharp: "torch.Tensor", lr: float,
               steps: int = 20) -> list[float]:
    """The L1 losses of ``steps`` Adam steps fitting ``model(blur)`` to ``sharp`` (an overfit check of a network)."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = F.l1_loss(model(blur), sharp)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
