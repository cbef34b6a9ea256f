"""Typed configuration: YAML file + dotted `key=value` overrides -> nested dataclasses.

Each training script declares its config as a dataclass tree derived from
`BaseConfig` and calls `parse_command_line(TheConfig)`. Every value is checked
against its declared type; an unknown key, a wrong type or an impossible value
becomes a `ConfigError` whose message names the key and what was expected, which
the scripts print as one line before exiting with status 2.
"""

import argparse
import dataclasses
import os
import sys
import time
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config problem the user fixes by editing the YAML or an override."""


@dataclass
class DataConfig:
    path: str = "builtin:particles"  # folder (recursive), .zip, one image, .npy/.npz[:key] stack, file.h5:/dataset,
                                     # or builtin:particles[?count=N&seed=S]
    resolution: int = 64             # images are resized (antialiased) to resolution x resolution
    channels: int = 1                # 1 = grayscale, 3 = RGB
    hflip: bool = True               # random horizontal flips of real images
    vflip: bool = True               # random vertical flips (detector frames have no "up")
    normalize: Literal["linear", "log1p", "asinh"] = "linear"  # data units -> [-1, 1], one mapping for the set
    range: list[float] | None = None  # [low, high] in data units mapped to [-1, 1]; null: fitted (8-bit: [0, 255],
                                      # else the set's min and range_percentile); the run's config.yaml records it
    range_percentile: float = 99.9    # fitted high end of the range, a percentile of all the set's values
    scale: float = 1.0                # log1p/asinh: data units per unit inside the log (e.g. one count)
    labels: str | list[str] = ""      # per-frame labels for a conditional model: labels.csv, labels.npy,
                                      # frames.h5:/entry/energy, or a list of them (docs/conditional.md)
    label_columns: list[str] = field(default_factory=list)  # the labels used (all by default); name or
                                      # name:continuous / name:discrete; the run's config.yaml records the kinds
    label_ranges: list[list[float]] = field(default_factory=list)  # per column [low, high] mapped to [-1, 1]
                                      # ([] for discrete); fitted to min/max unless given, then recorded
    label_classes: list[list[str]] = field(default_factory=list)   # per column its classes (recorded)
    label_exclude: list[str] = field(default_factory=list)  # name:low:high drops the frames with a continuous
                                      # label in [low, high] (to test generation between the seen settings)

    def validate(self):
        check(self.resolution >= 4, "data.resolution", "an integer >= 4")
        check(self.channels in (1, 3), "data.channels", "1 or 3")
        check(self.range is None or (len(self.range) == 2 and self.range[0] < self.range[1]), "data.range",
              "null or [low, high] with low < high")
        check(0 < self.range_percentile <= 100, "data.range_percentile", "a number in (0, 100]")
        check(self.scale > 0, "data.scale", "a positive number")


@dataclass
class TrainConfig:
    batch_size: int = 32               # global batch, split over processes
    kimg: float = 1000.0               # training length in thousands of real images shown
    log_every_kimg: float = 1.0        # scalars to TensorBoard and losses on the progress bar
    sample_every_kimg: float = 10.0    # sample grid from fixed latents
    checkpoint_every_kimg: float = 10.0  # last.pt (always also at the end); a lost worker costs at most this
    collective_timeout_s: float = 300.0  # a process waiting this long on a lost peer ends (several processes)

    def validate(self):
        check(self.batch_size >= 1, "train.batch_size", "a positive integer")
        check(self.kimg > 0, "train.kimg", "a positive number")
        for key in ("log_every_kimg", "sample_every_kimg", "checkpoint_every_kimg", "collective_timeout_s"):
            check(getattr(self, key) > 0, f"train.{key}", "a positive number")


@dataclass
class EvalConfig:
    every_kimg: float = 50.0     # periodic FID/KID; 0 disables periodic evaluation
    num_samples: int = 2000      # generated images per evaluation
    batch_size: int = 64         # Inception batch per process
    kid_subsets: int = 100
    kid_subset_size: int = 1000  # capped by the number of available images
    precision_recall: bool = True  # also precision and recall (k=3 nearest neighbours) from the same features
    stats: bool = True           # also the physics statistics in data units (eval/stats.py) and the separation
                                 # powers and FPD/KPD (eval/physics.py), beside their floors
    physics_final: bool = False  # at the final evaluation also the classifier two-sample tests (eval/physics.py;
                                 # with eval.stats): ~1 min of CPU at 32 px, ~4x that at 64 px

    def validate(self):
        check(self.every_kimg >= 0, "eval.every_kimg", "a number >= 0 (0 disables evaluation)")
        check(self.num_samples >= (4 if self.precision_recall else 2), "eval.num_samples",
              "an integer >= 4 (k=3 neighbours for precision/recall; >= 2 with eval.precision_recall=false)")
        check(self.batch_size >= 1, "eval.batch_size", "a positive integer")
        check(self.kid_subsets >= 1, "eval.kid_subsets", "a positive integer")
        check(self.kid_subset_size >= 2, "eval.kid_subset_size", "an integer >= 2")


@dataclass
class BaseConfig:
    out_dir: str = ""                                   # run folder; default runs/<config-name>-<timestamp>
    seed: int = 0                                       # all randomness derives from it
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"  # mixed precision through Accelerate
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def check(condition: bool, key: str, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: expected {expected}")


# ---------------------------------------------------------------------------
# dict <-> dataclass with type checking

def _type_name(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(v) for v in typing.get_args(tp))
    if typing.get_origin(tp) in (list, tuple):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if _optional_inner(tp) is not None:
        return f"{_type_name(_optional_inner(tp))} or null"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(member) for member in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _optional_inner(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def _coerce(value: Any, tp, key: str) -> Any:
    """Return `value` as type `tp`, or raise ConfigError naming `key`."""
    wrong = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    inner = _optional_inner(tp)
    if inner is not None:
        return None if value is None else _coerce(value, inner, key)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # e.g. int | Literal["auto"]: the first that fits
        for member in typing.get_args(tp):
            try:
                return _coerce(value, member, key)
            except ConfigError:
                pass
        raise wrong
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise wrong
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise wrong
        item_type = typing.get_args(tp)[0]
        return [_coerce(v, item_type, key) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong
        return value
    raise TypeError(f"unsupported config type {tp} for {key}")


def from_dict(cls, values: dict, prefix: str = ""):
    """Build dataclass `cls` from a nested dict, checking every key and type."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = from_dict(tp, values[f.name], f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(values[f.name], tp, prefix + f.name)
    return cls(**kwargs)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def validate(config) -> None:
    """Run every nested dataclass's `validate()` (impossible values)."""
    if hasattr(config, "validate"):
        config.validate()
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            validate(value)


def field_type(cls, dotted_key: str):
    """The declared type of `a.b.c` in dataclass `cls`, or ConfigError naming the key."""
    tp = cls
    for part in dotted_key.split("."):
        if not dataclasses.is_dataclass(tp) or part not in {f.name for f in dataclasses.fields(tp)}:
            raise ConfigError(f"{dotted_key}: unknown key")
        tp = typing.get_type_hints(tp)[part]
    return tp


def apply_override(cls, values: dict, dotted_key: str, raw_value: str) -> None:
    """Set `a.b.c=raw` in a nested dict of `cls`'s shape.

    Text fields take the raw text; other values are parsed as YAML (1, 0.5, true, [1, 2]).
    """
    tp = field_type(cls, dotted_key)
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"{dotted_key}: is a section; set one of its keys, e.g. {dotted_key}.<key>=...")
    if tp is str or _optional_inner(tp) is str and raw_value not in ("null", "~"):
        value = raw_value
    else:
        try:
            value = yaml.safe_load(raw_value)
        except yaml.YAMLError:
            value = raw_value
    parts = dotted_key.split(".")
    node = values
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def _merge(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def read_yaml(path: str, flag: str):
    """A YAML file's contents ({} when empty); a missing or malformed file is a ConfigError naming `flag`."""
    if not os.path.isfile(path):
        raise ConfigError(f"{flag}: file not found: {path}")
    try:
        with open(path) as f:
            return yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{flag}: {path} is not valid YAML ({str(e).splitlines()[0]})")


def build_config(cls, yaml_path: str | None, overrides: list[str]):
    """Defaults <- YAML file <- overrides, type-checked and validated."""
    values = to_dict(cls())
    if yaml_path:
        loaded = read_yaml(yaml_path, "--config")
        from_dict(cls, loaded)  # unknown keys and wrong types in the file, named as they are written
        _merge(values, loaded)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{item}: overrides are written key=value (e.g. train.kimg=0.2)")
        key, raw = item.split("=", 1)
        apply_override(cls, values, key.strip(), raw)
    config = from_dict(cls, values)
    validate(config)
    return config


def parse_command_line(cls, description: str, argv: list[str] | None = None):
    """Parse `--config`, `--resume` and overrides; return (config, args).

    Config errors print one line and exit 2. An empty out_dir is filled in by
    the run setup, where the main process can share its choice with the others.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--resume", help="'auto' (out_dir/checkpoints/last.pt if present) or a checkpoint path")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted config overrides, e.g. train.kimg=0.2 data.path=imgs/")
    args = parser.parse_args(argv)
    try:
        config = build_config(cls, args.config, args.overrides)
    except ConfigError as e:
        exit_with_error(f"config error: {e}")
    return config, args


def default_out_dir(yaml_path: str | None) -> str:
    name = os.path.splitext(os.path.basename(yaml_path))[0] if yaml_path else os.path.splitext(os.path.basename(sys.argv[0]))[0]
    return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def exit_with_error(message: str, status: int = 2) -> typing.NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def save_yaml(config, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        yaml.safe_dump(to_dict(config), f, sort_keys=False)
    os.replace(tmp, path)
