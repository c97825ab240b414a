"""Experiment configs: YAML files mapped onto typed dataclasses, with dotted command-line overrides.

A config has the sections ``model`` (``type:`` a registered model name; every other key is that
model's keyword argument), ``data``, ``train`` and ``seed``. Unknown keys and wrong types are
one-line errors naming the file and the key; the model's keys are checked against its constructor's
signature and type hints (:func:`diffdeblur.typecheck.check_kwargs`). Loaded configs are never mutated:
overrides build a new dict before the dataclasses are made.

The model section is read into one typed object, :class:`ModelConfig`. Its YAML spelling is the flat
``{type: NAME, **kwargs}`` users write; everywhere else (checkpoints, training states) the model config
is ``{"model": NAME, "kwargs": {...}}`` (:meth:`ModelConfig.to_dict`).
"""
from __future__ import annotations

import copy
import dataclasses
import os
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError, UnknownNameError
from .methods.blurdm import generated_config, generated_config_names
from .registry import get_entry
from .typecheck import check_kwargs, matches, plain


@dataclass(frozen=True)
class ModelConfig:
    """A registered model name and its keyword arguments (hyper-parameters), as one typed value.

    ``cfg.model["width"]`` reads a hyper-parameter. Spellings: :meth:`from_yaml` / :meth:`to_yaml` for a config
    file's flat ``{type: NAME, **kwargs}``, :meth:`from_dict` / :meth:`to_dict` for ``{"model": NAME, "kwargs":
    {...}}`` (checkpoints, training states); :meth:`from_dict` also reads the flat spelling older training
    states stored.
    """

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.kwargs[key]

    @classmethod
    def from_yaml(cls, section: Any, source: str = "<dict>") -> ModelConfig:
        """The ``model:`` section of a config file, ``{type: NAME, **kwargs}``; a one-line ConfigError when
        it is not a mapping with a string ``type``."""
        if not isinstance(section, Mapping) or not isinstance(section.get("type"), str):
            raise ConfigError(f"{source}: 'model.type' (a registered model name) is required")
        return cls(section["type"], copy.deepcopy({k: v for k, v in section.items() if k != "type"}))

    def to_yaml(self) -> dict[str, Any]:
        """The config-file spelling ``{"type": NAME, **kwargs}`` (plain data)."""
        return {"type": self.name, **plain(self.kwargs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """``{"model": NAME, "kwargs": {...}}``, or the flat ``{"type": NAME, **kwargs}`` of older training states."""
        if "model" in data:
            return cls(data["model"], copy.deepcopy(dict(data.get("kwargs", {}))))
        return cls.from_yaml(data, "model config")

    def to_dict(self) -> dict[str, Any]:
        """``{"model": NAME, "kwargs": {...}}`` as plain JSON data (tuples become lists)."""
        return {"model": self.name, "kwargs": plain(self.kwargs)}


@dataclass(frozen=True)
class DataSource:
    """One training source. ``type``: a dataset source name (paired | blur-kernels | synth | ...).

    paired: ``root`` is a paired folder (blur/+sharp/, input/+target/ or SCENE/blur+SCENE/sharp).
    blur-kernels / synth: ``root`` is a folder of sharp images; pairs are made on the fly.
    ``options`` are passed to the source's builder (e.g. kernel file, noise level, preset).
    """

    type: str = "paired"
    root: str = ""
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    train: tuple[DataSource, ...] = ()
    val: str = ""  # a paired folder; empty = no validation
    val_max_images: int = 0  # 0 = all
    val_crop: int = 0  # centre crop for validation (0 = full image, tiled by val_tile)
    val_tile: int = 0
    crop: int = 128
    batch_size: int = 8
    num_workers: int = 0
    samples_per_epoch: int = 2000
    cache_images: bool = True  # keep decoded source images in memory (fast crops, num_workers=0)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    optimizer: str = "adamw"  # adam | adamw
    lr: float = 1e-3
    min_lr: float = 1e-7
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.9)
    warmup_steps: int = 0
    scheduler: str = "cosine"  # cosine | constant
    loss: str = ""  # empty = the objective the model's preset names
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    ema: float = 0.0  # EMA decay; 0 = off
    amp: bool = True  # bf16 autocast on CUDA only
    threads: int = 0  # torch.set_num_threads, applied by train.apply_process_settings (the CLI); 0 = as is
    log_every: int = 50
    val_every: int = 500
    save_every: int = 500
    sample_images: int = 2  # validation images saved as samples at each validation
    out_dir: str = "runs/experiment"
    init_from: str = ""  # a .safetensors to initialise matching weights from (e.g. an earlier stage)
    val_options: dict[str, Any] = field(default_factory=dict)  # passed to model.restore at validation


@dataclass(frozen=True)
class ExperimentConfig:
    model: ModelConfig
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    seed: int = 0
    source: str = "<dict>"  # where the config came from (for messages)

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """A copy of the model's keyword arguments (building a model never changes the config)."""
        return copy.deepcopy(dict(self.model.kwargs))


def _build(cls: type, data: Any, where: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{where}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key '{where}.{unknown[0]}' (allowed: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        if tp is float:
            value = _number_or_same(value)
        if cls is DataConfig and key == "train":
            if not isinstance(value, list):
                raise ConfigError(f"{source}: 'data.train' must be a list of sources")
            kwargs[key] = tuple(_build(DataSource, v, f"data.train[{i}]", source) for i, v in enumerate(value))
            continue
        if not matches(value, tp):
            raise ConfigError(f"{source}: '{where}.{key}' must be {getattr(tp, '__name__', str(tp))}, got {value!r}")
        if typing.get_origin(tp) is tuple:
            value = tuple(value)
        if tp is float:
            value = float(value)
        kwargs[key] = value
    return cls(**kwargs)


def _validate_values(cfg: ExperimentConfig) -> None:
    s, t, d = cfg.source, cfg.train, cfg.data
    checks = [
        (t.steps > 0, "train.steps must be > 0"),
        (t.lr > 0, "train.lr must be > 0"),
        (t.optimizer in ("adam", "adamw"), f"train.optimizer must be adam or adamw, got '{t.optimizer}'"),
        (t.scheduler in ("cosine", "constant"), f"train.scheduler must be cosine or constant, got '{t.scheduler}'"),
        (0.0 <= t.ema < 1.0, "train.ema must be in [0, 1)"),
        (d.batch_size > 0, "data.batch_size must be > 0"),
        (d.crop > 0, "data.crop must be > 0"),
        (len(d.train) > 0, "data.train needs at least one source"),
        (all(src.weight > 0 for src in d.train), "data.train[*].weight must be > 0"),
        (len(t.betas) == 2, "train.betas must have two values"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(f"{s}: {msg}")
    try:
        entry = get_entry(cfg.model_name)
    except UnknownNameError as exc:
        raise ConfigError(f"{s}: model.type: {exc.args[0]}") from None
    check_kwargs(entry.builder, {**entry.defaults, **cfg.model.kwargs}, f"{s}: model '{cfg.model_name}'")


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=2e-4' -> (['train', 'lr'], 0.0002); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    key, raw = text.split("=", 1)
    path = [k for k in key.strip().split(".") if k]
    if not path:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return path, _number_or_same(value)


def _number_or_same(value: Any) -> Any:
    """YAML 1.1 reads '2e-4' (no dot) as a string; accept it as the number users mean."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a new dict with dotted ``key=value`` overrides applied (the input is not mutated)."""
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for k in path[:-1]:
            if isinstance(node, list) and k.isdigit() and int(k) < len(node):
                node = node[int(k)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{k}' is not a section")
            node = node.setdefault(k, {})
        last = path[-1]
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override '{text}': cannot set '{last}'")
    return out


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """Validate a raw config mapping and build the typed config."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: config must be a mapping")
    allowed = {"model", "data", "train", "seed"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown section '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")
    model = ModelConfig.from_yaml(raw.get("model"), source)
    raw = _expand_user_paths(raw)
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{source}: 'seed' must be an integer, got {seed!r}")
    cfg = ExperimentConfig(
        model=model,
        data=_build(DataConfig, raw.get("data", {}), "data", source),
        train=_build(TrainConfig, raw.get("train", {}), "train", source),
        seed=seed,
        source=source,
    )
    _validate_values(cfg)
    return cfg


def _expand_user_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` with a leading ``~`` expanded in its paths (data roots, data.val, train.out_dir,
    train.init_from). The shell leaves ``train.out_dir=~/runs`` alone (a dotted key is no shell variable)."""
    out = copy.deepcopy(raw)
    data, train = out.get("data"), out.get("train")
    if isinstance(data, dict):
        for src in data.get("train") or []:
            if isinstance(src, dict) and isinstance(src.get("root"), str):
                src["root"] = os.path.expanduser(src["root"])
        if isinstance(data.get("val"), str):
            data["val"] = os.path.expanduser(data["val"])
    if isinstance(train, dict):
        for key in ("out_dir", "init_from"):
            if isinstance(train.get(key), str):
                train[key] = os.path.expanduser(train[key])
    return out


def preset_names() -> list[str]:
    """The config presets: those shipped in ``diffdeblur/configs`` (names without .yaml) and the generated BlurDM
    stage configs (:func:`diffdeblur.methods.blurdm.stage_config`), sorted."""
    folder = resources.files("diffdeblur") / "configs"
    return sorted([f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml")] + generated_config_names())


def resolve_config_path(name: str | os.PathLike) -> Path:
    """A config file path, or the name of a preset shipped in ``diffdeblur/configs`` (with or without .yaml)."""
    p = Path(name)
    if p.is_file():
        return p
    stem = p.name[:-5] if p.name.endswith(".yaml") else p.name
    shipped = resources.files("diffdeblur") / "configs" / f"{stem}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise ConfigError(f"{name}: config file not found, and no shipped preset of that name "
                      f"(presets: {', '.join(preset_names())})")


def raw_config(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """The raw config (as its YAML holds it, before overrides and checks) of a file, a shipped preset name or a
    generated BlurDM config, and where it came from; one-line ConfigError for a missing file or invalid YAML."""
    generated = None if Path(path).is_file() else generated_config(str(path))
    if generated is not None:
        return generated, f"preset {path}"
    p = resolve_config_path(path)
    try:
        return yaml.safe_load(p.read_text()) or {}, str(p)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config (file, shipped preset name or generated BlurDM config), apply overrides, validate."""
    raw, source = raw_config(path)
    overrides = list(overrides or [])
    try:
        return config_from_dict(apply_overrides(raw, overrides), source=source)
    except ConfigError:
        blamed = _blame_override(raw, overrides, source)
        if blamed is None:
            raise
        raise blamed from None


def _blame_override(raw: dict[str, Any], overrides: list[str], source: str) -> ConfigError | None:
    """When the file alone is valid, the error of the first command-line override that breaks it,
    with that override named as its source (not the file); else None (the file is at fault)."""
    try:
        config_from_dict(raw, source=source)
    except ConfigError:
        return None
    for n, text in enumerate(overrides, start=1):
        try:
            config_from_dict(apply_overrides(raw, overrides[:n]), source=f"command-line override '{text}'")
        except ConfigError as exc:
            return exc
    return None


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """Plain-data form of a config in its file spelling (for logs and checkpoints): the model section as
    ``{"type": NAME, **kwargs}``, so that :func:`config_from_dict` reads it back."""
    return {"model": cfg.model.to_yaml(), "data": plain(dataclasses.asdict(cfg.data)),
            "train": plain(dataclasses.asdict(cfg.train)), "seed": cfg.seed}
