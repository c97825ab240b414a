"""Typed, declared model configs: values checked against constructor type hints (one-line errors), the
hyper-parameter mixin (the constructor's arguments are the model's own config), one config shape
{"model", "kwargs"} in files and training states, and old training states still resume."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import pytest
import torch
from torch import nn

from diffdeblur import build_model, load_model, save_model
from diffdeblur.checkpoint import read_metadata
from diffdeblur.config import ModelConfig, config_from_dict, config_to_dict, load_config
from diffdeblur.errors import ConfigError
from diffdeblur.models.hparams import HyperParameters, model_hparams
from diffdeblur.models.protocol import restore_options
from diffdeblur.registry import model_config, register_model, unregister_model
from diffdeblur.typecheck import check_kwargs, check_value, plain

from conftest import make_paired_folder

# ---- typecheck ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value,hint", [
    (3, int), (3, float), (2.5, float), (True, bool), ("x", str), (None, None), (None, Optional[int]), (4, int | None),
    ([1, 2], Sequence[int]), ((1, 2), tuple[int, ...]), ([1, 2], tuple[int, ...]), ([1.0, 2], list[float]),
    ((0.9, 0.99), tuple[float, float]), ({"a": 1}, dict[str, Any]), (object(), Any), ("l1", Literal["l1", "l2"]),
    ([1, 1], tuple[int, ...] | list[int]),
])
def test_values_that_match_their_hint(value, hint):
    assert check_value("owner", "key", value, hint) is value


@pytest.mark.parametrize("value,hint,message", [
    (16.5, int, "owner: key=16.5 is not an int"),
    ("16", int, "owner: key='16' is not an int"),
    (True, int, "owner: key=True is not an int"),  # a bool is not an int here
    (True, float, "owner: key=True is not a number"),
    (1, bool, "owner: key=1 is not a bool"),
    (3, str, "owner: key=3 is not a string"),
    ("x", int | None, "owner: key='x' is not an int or None"),
    ([1, "a"], Sequence[int], "owner: key=[1, 'a'] is not a list of ints"),
    (5, tuple[int, ...], "owner: key=5 is not a list of ints"),
    ([0.9], tuple[float, float], "owner: key=[0.9] is not a list of 2 values (a number, a number)"),
    ([1], dict[str, Any], "owner: key=[1] is not a mapping"),
    ("l3", Literal["l1", "l2"], "owner: key='l3' is not one of 'l1', 'l2'"),
])
def test_a_wrong_type_is_one_line_naming_owner_key_value_and_type(value, hint, message):
    with pytest.raises(ConfigError) as exc:
        check_value("owner", "key", value, hint)
    assert str(exc.value) == message


def _builder(width: int = 8, blocks: tuple[int, ...] = (1, 1), rate: float = 0.0, name: str | None = None,
             submodel: Any = None) -> None:
    return None


def test_check_kwargs_checks_names_and_types_and_skips_the_submodel_factory():
    check_kwargs(_builder, {"width": 4, "blocks": [2, 2], "rate": 1, "name": None}, "toy")
    with pytest.raises(ConfigError, match=r"unknown hyper-parameter 'submodel'"):  # the registry gives it, not a user
        check_kwargs(_builder, {"submodel": object()}, "toy")
    allowed = r"\(allowed: width, blocks, rate, name\)$"
    with pytest.raises(ConfigError, match=r"^toy: unknown hyper-parameter 'widht' " + allowed):
        check_kwargs(_builder, {"widht": 4}, "toy")
    with pytest.raises(ConfigError, match=r"^toy: rate='0.1' is not a number$"):
        check_kwargs(_builder, {"rate": "0.1"}, "toy")


def test_build_model_checks_types_first_in_one_line():
    with pytest.raises(ConfigError) as exc:
        build_model("nafnet-tiny", width=16.5)
    assert str(exc.value) == "model 'nafnet-tiny': width=16.5 is not an int"
    with pytest.raises(ConfigError) as exc:
        build_model("nafnet-tiny", width="16")
    assert str(exc.value) == "model 'nafnet-tiny': width='16' is not an int"


def test_a_config_file_with_a_wrong_model_type_names_the_file_and_key(tmp_path):
    raw = {"model": {"type": "nafnet-tiny", "width": 16.5}, "data": {"train": [{"type": "paired", "root": "x"}]}}
    with pytest.raises(ConfigError) as exc:
        config_from_dict(raw, source="cfg.yaml")
    assert str(exc.value) == "cfg.yaml: model 'nafnet-tiny': width=16.5 is not an int"
    with pytest.raises(ConfigError, match=r"^command-line override 'model.width=abc': model 'nafnet-tiny': width="):
        load_config("nafnet-tiny", ["model.width=abc"])


# ---- the hyper-parameter mixin -----------------------------------------------------------------------------


class ToyNet(HyperParameters, nn.Module):
    """A registered-style network declaring its hyper-parameters through the mixin."""

    def __init__(self, width: int = 4, blocks: tuple[int, ...] = (1, 1), rate: float = 0.0,
                 act: Literal["relu", "gelu"] = "relu") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.out = nn.Conv2d(width, 3, 3, padding=1)
        self.size_multiple = 1
        self.act = nn.ReLU() if act == "relu" else nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(self.act(self.conv(x)))

    @restore_options
    @torch.inference_mode()
    def restore(self, blur: torch.Tensor) -> torch.Tensor:
        return self(blur).clamp(0, 1)


class WideToyNet(ToyNet):
    """A subclass with its own signature: its call is the outermost one, the parent's records nothing."""

    def __init__(self, scale: int = 2, **kwargs: Any) -> None:
        super().__init__(width=4 * scale, **kwargs)
        self.scale = scale


class PlainSubclass(ToyNet):
    """No __init__ of its own: the parent's constructor is the outermost one."""


def test_the_outermost_constructor_records_its_arguments_with_defaults():
    net = ToyNet(width=6, blocks=(2, 3))
    assert net.hparams == {"width": 6, "blocks": [2, 3], "rate": 0.0, "act": "relu"}
    assert json.loads(json.dumps(net.hparams)) == net.hparams  # plain JSON data: the tuple became a list
    assert model_hparams(net) == net.hparams and model_hparams(net) is not net.hparams
    assert ToyNet(3).hparams["width"] == 3  # positional arguments are named too
    wide = WideToyNet(scale=3, rate=0.5)
    assert wide.hparams == {"scale": 3, "rate": 0.5} and wide.conv.out_channels == 12
    assert type(wide)(**wide.hparams).hparams == wide.hparams
    assert PlainSubclass(width=5).hparams["width"] == 5


def test_the_outermost_constructor_checks_the_callers_values():
    with pytest.raises(ConfigError) as exc:
        ToyNet(width=16.5)
    assert str(exc.value) == "ToyNet: width=16.5 is not an int"
    with pytest.raises(ConfigError, match=r"^ToyNet: act='tanh' is not one of 'relu', 'gelu'$"):
        ToyNet(act="tanh")
    with pytest.raises(ConfigError, match=r"^WideToyNet: scale='2' is not an int$"):
        WideToyNet(scale="2")
    with pytest.raises(TypeError):  # a wrong call stays Python's own error
        ToyNet(colour=3)


def test_model_hparams_of_a_network_without_the_mixin_is_one_line():
    with pytest.raises(ValueError, match=r"^Conv2d does not record its hyper-parameters"):
        model_hparams(nn.Conv2d(1, 1, 1))


@pytest.fixture
def toy_presets():
    register_model("toy-hparams", ToyNet, description="toy", width=4)
    register_model("toy-hparams-wide", ToyNet, description="toy, wider", width=8, blocks=(2, 2))
    yield "toy-hparams"
    unregister_model("toy-hparams")
    unregister_model("toy-hparams-wide")


def test_a_model_built_from_its_class_is_saved_and_loaded_by_its_own_config(tmp_path, toy_presets):
    torch.manual_seed(0)
    net = ToyNet(width=8, blocks=(2, 2))  # not through the registry: no diffdeblur_config
    assert not hasattr(net, "diffdeblur_config")
    cfg = model_config(net)
    assert cfg == {"model": "toy-hparams-wide", "kwargs": net.hparams}  # the preset whose values it has
    assert model_config(ToyNet(width=5))["model"] == "toy-hparams"  # no preset matches: the first of the class
    save_model(net, tmp_path / "toy.safetensors", info={"note": "direct"})
    meta = read_metadata(tmp_path / "toy.safetensors")
    assert meta["model"] == "toy-hparams-wide" and meta["kwargs"] == net.hparams and meta["info"] == {"note": "direct"}
    loaded = load_model(tmp_path / "toy.safetensors", device="cpu")
    x = torch.rand(1, 3, 8, 8)
    assert isinstance(loaded, ToyNet) and loaded.hparams == net.hparams
    with torch.no_grad():
        assert torch.equal(net.eval()(x), loaded(x))
    built = build_model(toy_presets, width=6)  # through the registry: its name, its own full arguments
    assert model_config(built) == {"model": "toy-hparams", "kwargs": {"width": 6, "blocks": [1, 1], "rate": 0.0,
                                                                       "act": "relu"}}
    with pytest.raises(ConfigError, match=r"^model 'toy-hparams': width=6.0 is not an int$"):
        build_model(toy_presets, width=6.0)


def test_an_unregistered_class_cannot_be_saved():
    with pytest.raises(ValueError) as exc:
        model_config(ToyNet())
    assert "ToyNet is not a registered model class" in str(exc.value) and "\n" not in str(exc.value)


# ---- one config shape ----------------------------------------------------------------------------------------


def test_the_model_section_is_one_typed_object_with_two_spellings():
    cfg = config_from_dict({"model": {"type": "nafnet-tiny", "width": 4, "enc_blk_nums": (1, 1)},
                            "data": {"train": [{"type": "paired", "root": "x"}]}})
    assert cfg.model == ModelConfig("nafnet-tiny", {"width": 4, "enc_blk_nums": (1, 1)})
    assert cfg.model["width"] == 4 and cfg.model_name == "nafnet-tiny" and cfg.model_kwargs["width"] == 4
    assert cfg.model.to_dict() == {"model": "nafnet-tiny", "kwargs": {"width": 4, "enc_blk_nums": [1, 1]}}
    assert config_to_dict(cfg)["model"] == {"type": "nafnet-tiny", "width": 4, "enc_blk_nums": [1, 1]}
    assert config_from_dict(config_to_dict(cfg)).model.to_dict() == cfg.model.to_dict()  # the file spelling reads back
    legacy = {"type": "nafnet-tiny", "width": 4}  # what training states stored before
    assert ModelConfig.from_dict(legacy) == ModelConfig.from_dict({"model": "nafnet-tiny", "kwargs": {"width": 4}})
    kwargs = cfg.model_kwargs
    kwargs["width"] = 99  # a copy: the config is never mutated
    assert cfg.model["width"] == 4


def _train_config(tmp_path: Path, data: Path, steps: int) -> dict:
    return {"model": {"type": "nafnet-tiny", "width": 4},
            "data": {"train": [{"type": "paired", "root": str(data)}], "crop": 32, "batch_size": 2},
            "train": {"steps": steps, "log_every": 1, "val_every": 1000, "save_every": 2, "ema": 0.9,
                      "out_dir": str(tmp_path / "run")}, "seed": 3}


def test_the_training_state_stores_the_one_shape_and_an_old_state_still_resumes(tmp_path):
    from safetensors.torch import load_file

    from diffdeblur.checkpoint import load_training_state, save_training_state
    from diffdeblur.train import train

    data = make_paired_folder(tmp_path / "d", n=1, size=(48, 48))
    ref_dir, old_dir = tmp_path / "ref", tmp_path / "old"
    train(config_from_dict(_train_config(ref_dir, data, 4)), device="cpu", show_progress=False)
    cfg = config_from_dict(_train_config(old_dir, data, 4))
    train(cfg, device="cpu", show_progress=False, stop_after=2)
    state_path = old_dir / "run" / "state.pt"
    state = load_training_state(state_path)
    assert state["model_config"] == {"model": "nafnet-tiny", "kwargs": {"width": 4}}
    save_training_state({**state, "model_config": {"type": "nafnet-tiny", "width": 4}}, state_path)  # as before
    assert train(cfg, resume=True, device="cpu", show_progress=False)["steps"] == 4
    a, b = (load_file(str(d / "run" / "final.safetensors")) for d in (ref_dir, old_dir))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # exact, through the old state
    assert read_metadata(old_dir / "run" / "final.safetensors")["model"] == "nafnet-tiny"


def test_train_changes_no_process_wide_setting(tmp_path):
    from diffdeblur.train import apply_process_settings, train

    data = make_paired_folder(tmp_path / "d", n=1, size=(48, 48))
    raw = _train_config(tmp_path, data, 2)
    raw["train"]["threads"] = 2
    cfg = config_from_dict(raw)
    torch.set_num_threads(1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(cfg, device="cpu", show_progress=False)
    assert torch.get_num_threads() == 1 and torch.equal(torch.rand(3), expected)  # RNG and threads as they were
    apply_process_settings(cfg)  # the explicit call the command line makes
    try:
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_a_fixed_seed_initialises_the_same_model_whatever_the_process_rng(tmp_path):
    from diffdeblur.train import build_run

    data = make_paired_folder(tmp_path / "d", n=1, size=(48, 48))
    states = []
    for k in range(2):
        torch.manual_seed(k)  # the caller's RNG does not leak into the run
        run = build_run(config_from_dict(_train_config(tmp_path / str(k), data, 2)), device="cpu")
        states.append(plain({n: v.tolist() for n, v in run.model.state_dict().items()}))
    assert states[0] == states[1]
