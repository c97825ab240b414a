from importlib import resources

import pytest

from diffdeblur.config import ConfigError, apply_overrides, config_from_dict, load_config

BASE = {"model": {"type": "nafnet-tiny"}, "data": {"train": [{"type": "paired", "root": "x"}]}}


def test_shipped_presets_all_load():
    names = [p.name[:-5] for p in (resources.files("diffdeblur") / "configs").iterdir() if p.name.endswith(".yaml")]
    assert "nafnet-small" in names and "mimo-unet" in names
    for name in names:
        cfg = load_config(name)
        assert cfg.model_name and cfg.train.steps > 0


@pytest.mark.parametrize("raw,needle", [
    ({**BASE, "trian": {}}, "unknown section 'trian'"),
    ({**BASE, "train": {"stpes": 3}}, "unknown key 'train.stpes'"),
    ({**BASE, "train": {"steps": "many"}}, "'train.steps' must be int"),
    ({**BASE, "train": {"lr": -1.0}}, "train.lr must be > 0"),
    ({**BASE, "model": {"type": "nope"}}, "unknown model 'nope'"),
    ({"data": BASE["data"]}, "'model.type'"),
    ({**BASE, "data": {"train": [{"type": "paired", "rot": "x"}]}}, "unknown key 'data.train[0].rot'"),
])
def test_invalid_configs_are_one_line_errors(raw, needle):
    with pytest.raises(ConfigError) as exc:
        config_from_dict(raw, source="cfg.yaml")
    assert needle in str(exc.value) and str(exc.value).startswith("cfg.yaml:") and "\n" not in str(exc.value)


def test_overrides_build_a_new_dict():
    out = apply_overrides(BASE, ["train.lr=2e-4", "model.width=16", "data.train.0.root=/d", "seed=5"])
    assert out["train"]["lr"] == 2e-4 and out["model"]["width"] == 16 and out["data"]["train"][0]["root"] == "/d"
    assert "train" not in BASE and BASE["data"]["train"][0]["root"] == "x"  # not mutated
    cfg = config_from_dict(out)
    assert cfg.seed == 5 and cfg.model_kwargs == {"width": 16}
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides(BASE, ["novalue"])


def test_home_in_paths_is_expanded(monkeypatch, tmp_path):
    # the shell leaves `train.out_dir=~/runs` alone (a dotted key is no shell variable): the config expands it
    monkeypatch.setenv("HOME", str(tmp_path))
    out = apply_overrides(BASE, ["train.out_dir=~/runs/a", "data.train.0.root=~/d", "data.val=~/v",
                                 "train.init_from=~/w.safetensors"])
    cfg = config_from_dict(out)
    assert cfg.train.out_dir == str(tmp_path / "runs/a") and cfg.data.train[0].root == str(tmp_path / "d")
    assert cfg.data.val == str(tmp_path / "v") and cfg.train.init_from == str(tmp_path / "w.safetensors")
    assert out["train"]["out_dir"] == "~/runs/a"  # the raw mapping is not mutated


def test_config_file_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


PRETRAINED_ONLY = {"taef2"}  # third-party autoencoder weights, loaded from a user path, not trained here


def test_every_registered_model_has_a_shipped_config():
    from diffdeblur.config import preset_names
    from diffdeblur.registry import list_models

    types = {load_config(name).model_name for name in preset_names()}  # shipped files and generated configs
    missing = [e.name for e in list_models() if e.name not in types and e.name not in PRETRAINED_ONLY]
    assert not missing, f"registered models without a config preset: {missing}"
