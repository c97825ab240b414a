"""A method is one file: a toy chain written here (process step, wrapper, loss, preset) trains and samples
through the library's one chain loop, training loop, tiling and API, with one registration line."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import diffdeblur
from diffdeblur.errors import ConfigError
from diffdeblur.config import config_from_dict
from diffdeblur.diffusion.chain import Step, run_chain
from diffdeblur.methods.base import OBJECTIVES, ChainModel, SamplingOptions, ToImage, register_objective
from diffdeblur.objectives import default_objective_name
from diffdeblur.registry import build_model, register_model, unregister_model
from diffdeblur.train import train
from tests.conftest import make_paired_folder


# ---- the toy method: x_t = x + t (y - x), t in (0, 1]; a conv net estimates x; deterministic steps ----------

def toy_step_fn(net, y: torch.Tensor):
    """The process's step: x0 = net(x_t, t); x_{t'} = x0 + t' (y - x0) (InDI-like, noise-free)."""
    def step(i, t, t_next, x, cond, draw) -> Step:
        x0 = net(torch.cat([x, y], 1), t)
        return Step(x0 + max(t_next, 0.0) * (y - x0), x0, torch.zeros_like(x0))
    return step


class ToyNet(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(7, width, 3, padding=1)
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, xy: torch.Tensor, t: float) -> torch.Tensor:
        h = torch.relu(self.conv(torch.cat([xy, torch.full_like(xy[:, :1], t)], 1)))
        return xy[:, :3] + self.out(h)


class ToyChain(ChainModel):
    samplers = ("ddim",)
    stochastic = False
    tile_context = 8  # 3 steps x 2 convs of radius 1 = 6 input pixels reach a tile's output

    def __init__(self, width: int = 4, default_steps: int = 3) -> None:
        super().__init__(default_steps=default_steps, default_sampler="ddim", noise_channels=3)
        self.net = ToyNet(width)
        self.size_multiple = 1

    def sampling_context(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], ToImage]:
        return x, (x.shape[-2], x.shape[-1]), lambda state, final: state

    def timesteps(self, options: SamplingOptions) -> list[float]:
        n = int(options.steps or self.default_steps)
        return [1 - k / n for k in range(n)]

    def run_chain(self, sampler, options, ts, cond, draw, callback):
        return run_chain(toy_step_fn(self.net, cond), cond, ts, noise=draw, callback=callback)


def toy_loss(model: ToyChain, batch: dict, generator: torch.Generator | None = None):
    t = float(torch.rand((), generator=generator)) * 0.9 + 0.1
    x, y = batch["target"], batch["input"]
    x0 = model.net(torch.cat([x + t * (y - x), y], 1), t)
    loss = (x0 - x).abs().mean()
    return loss, {"l1": float(loss.detach())}


@pytest.fixture
def toy_method():
    register_objective("toy-chain")(toy_loss)
    register_model("toy-chain", ToyChain, description="a toy chain", kind="diffusion", loss="toy-chain")
    yield "toy-chain"
    unregister_model("toy-chain")
    del OBJECTIVES["toy-chain"]


def test_a_toy_chain_in_one_file_trains_and_samples(tmp_path, toy_method):
    data = make_paired_folder(tmp_path / "d", n=2, size=(40, 48))
    cfg = config_from_dict({"model": {"type": toy_method, "width": 6},
                            "data": {"train": [{"type": "paired", "root": str(data)}], "crop": 24, "batch_size": 2},
                            "train": {"steps": 12, "lr": 3e-3, "log_every": 4, "val_every": 1000, "save_every": 6,
                                      "out_dir": str(tmp_path / "run"), "threads": 1}, "seed": 1})
    first = build_model(toy_method, width=6)
    assert default_objective_name(first) == "toy-chain"
    result = train(cfg, device="cpu", show_progress=False)
    assert result["steps"] == 12
    model = diffdeblur.load_model(str(tmp_path / "run" / "final.safetensors"), device="cpu")
    assert isinstance(model, ToyChain) and model.net.conv.out_channels == 6
    steps: list[dict[str, Any]] = []
    x = torch.rand(1, 3, 30, 37)
    out = model.restore(x, steps=4, callback=steps.append)
    assert out.shape == x.shape and [s["i"] for s in steps] == [0, 1, 2, 3] and steps[-1]["t_next"] == -1.0
    # the API runs it like any model: whole and tiled agree (no noise, a 2-conv receptive field)
    img = x[0].permute(1, 2, 0).numpy()
    whole = diffdeblur.deblur(img, model=model, tile=0, engine="eager")
    tiled = diffdeblur.deblur(img, model=model, tile=16, overlap=6, engine="eager")
    assert np.abs(whole - tiled).max() < 1e-5
    with pytest.raises(ConfigError, match="sampler 'ddpm' does not apply"):
        model.restore(x, sampler="ddpm")


def test_blurdm_is_a_chain_like_any_other():
    from diffdeblur.demo import steps_slider
    from diffdeblur.export import check_exportable

    m = build_model("blurdm-nafnet-tiny").eval()
    assert isinstance(m, ChainModel) and m.samplers == ("dual",) and m.graph_noise
    assert steps_slider(m)["minimum"] == steps_slider(m)["maximum"] == 5 and not steps_slider(m)["interactive"]
    check_exportable(m)  # the protocol's graph_noise, not a special case
    x = torch.rand(1, 3, 16, 16)
    infos: list[dict] = []
    out = m.restore(x, generator=torch.Generator().manual_seed(0), callback=infos.append)
    assert out.shape == x.shape and [i["i"] for i in infos] == list(range(5)) and "x0_image" in infos[0]
    with pytest.raises(ConfigError, match="5 steps"):
        m.restore(x, steps=2)
    with pytest.raises(ConfigError, match="eta='0.5' is not a number"):
        build_model("indi-nafnet-tiny").restore(x, eta="0.5")
