"""The library leaves the caller's objects alone: after ``deblur(x, model=m)`` the model's weights,
``training`` flags, parameter memory format and attributes are as they were, and no process-wide
setting (allocator, threads, RNG, grad mode, default dtype) has changed."""
from __future__ import annotations

import copy
import gc
import weakref

import numpy as np
import pytest
import torch

import diffdeblur
from diffdeblur import runtime
from diffdeblur.example import example_pair
from diffdeblur.io import to_numpy, to_tensor


def train_mode_model() -> torch.nn.Module:
    """nafnet-tiny as a caller might hold it in the middle of training: train mode, every block active
    (untrained zero gates would skip them), one submodule switched to eval by the caller."""
    torch.manual_seed(0)
    model = diffdeblur.build_model("nafnet-tiny")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    model.train()
    model.encoders[0].eval()  # mixed flags: each must come back as it was, not all True
    return model


def snapshot(model: torch.nn.Module) -> dict:
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "training": [(name, m.training) for name, m in model.named_modules()],
            "strides": [(name, p.stride(), p.is_contiguous()) for name, p in model.named_parameters()],
            "keys": set(model.__dict__)}


def assert_untouched(model: torch.nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())
    assert after["training"] == before["training"]
    assert after["strides"] == before["strides"]  # not converted to channels-last
    assert after["keys"] == before["keys"]


@pytest.mark.parametrize("engine", ["eager", "channels-last"])
@pytest.mark.parametrize("tile", [0, 24])
def test_deblur_leaves_the_callers_model_as_it_was(engine, tile):
    model = train_mode_model()
    before = snapshot(model)
    blur = example_pair(40, 56, seed=3)[0]
    out = diffdeblur.deblur(blur, model=model, tile=tile, overlap=8, engine=engine)
    assert_untouched(model, before)
    again = diffdeblur.deblur(blur, model=model, tile=tile, overlap=8, engine=engine)
    assert_untouched(model, before)
    assert np.array_equal(out, again)  # deterministic
    # the same output as running the network itself in eval mode (what deblur did before)
    reference = copy.deepcopy(model).eval()
    with torch.inference_mode():
        if tile == 0:
            expected = to_numpy(reference.restore(to_tensor(blur)).clamp(0, 1))
        else:
            expected = to_numpy(diffdeblur.restore_tensor(reference, to_tensor(blur), tile=tile, overlap=8,
                                                          engine="eager"))
    if engine == "eager":
        assert np.array_equal(out, expected)
    else:
        assert np.abs(out - expected).max() <= 1e-5


@pytest.mark.parametrize("engine", ["eager", "channels-last"])
def test_restore_tensor_leaves_the_model_collectable_and_eval_models_in_eval(engine):
    model = train_mode_model().eval()
    before = snapshot(model)
    x = to_tensor(example_pair(32, 32, seed=1)[0])
    diffdeblur.restore_tensor(model, x, engine=engine)
    assert_untouched(model, before)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # the runners and copies kept for it go with it


def test_no_process_wide_setting_changes(monkeypatch):
    def refuse() -> bool:
        raise AssertionError("the library tuned the allocator")

    monkeypatch.setattr(runtime, "tune_allocator", refuse)
    monkeypatch.setattr(runtime, "tune_allocator_once", refuse)
    model = train_mode_model()
    rng, threads, dtype = torch.get_rng_state(), torch.get_num_threads(), torch.get_default_dtype()
    grad = torch.is_grad_enabled()
    out = diffdeblur.deblur(example_pair(24, 32, seed=2)[0], model=model, tile=16, overlap=4, engine="eager")
    assert out.shape == (24, 32, 3)
    assert torch.equal(torch.get_rng_state(), rng)  # its noise comes from its own seeded generator
    assert torch.get_num_threads() == threads and torch.get_default_dtype() == dtype
    assert torch.is_grad_enabled() == grad and not torch.is_inference_mode_enabled()
