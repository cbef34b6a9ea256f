"""Typed config: YAML + overrides, type checks, impossible values, one-line errors."""

import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import yaml

from plumbing import ROOT
from training.config import BaseConfig, ConfigError, build_config, check, from_dict, to_dict


@dataclass
class Model:
    widths: list[int] = field(default_factory=lambda: [8, 16])
    act: str = "lrelu"

    def validate(self):
        check(all(w > 0 for w in self.widths), "model.widths", "positive integers")


@dataclass
class Config(BaseConfig):
    model: Model = field(default_factory=Model)


def test_defaults_yaml_and_overrides_layer_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"seed": 3, "train": {"kimg": 5, "batch_size": 8}, "model": {"widths": [4]}}))
    config = build_config(Config, str(path), ["train.kimg=0.2", "data.path=imgs/", "model.widths=[2, 3]",
                                              "precision=bf16", "data.hflip=false"])
    assert config.seed == 3
    assert config.train.batch_size == 8
    assert config.train.kimg == 0.2 and isinstance(config.train.kimg, float)
    assert config.data.path == "imgs/"
    assert config.model.widths == [2, 3]
    assert config.precision == "bf16"
    assert config.data.hflip is False
    assert config.data.resolution == 64  # untouched default


def test_integer_is_accepted_where_a_number_is_expected():
    assert build_config(Config, None, ["train.kimg=3"]).train.kimg == 3.0


def test_text_fields_take_the_raw_text():
    assert build_config(Config, None, ["out_dir=123", "data.path=true"]).out_dir == "123"


@pytest.mark.parametrize("override, message", [
    ("nosuch.key=1", "nosuch.key: unknown key"),
    ("train.nosuch=1", "train.nosuch: unknown key"),
    ("train.kimg=abc", "train.kimg: expected a number"),
    ("train.batch_size=2.5", "train.batch_size: expected an integer"),
    ("train.batch_size=0", "train.batch_size: expected a positive integer"),
    ("data.hflip=3", "data.hflip: expected true or false"),
    ("precision=fp8", "precision: expected 'fp32' or 'fp16' or 'bf16'"),
    ("data.channels=2", "data.channels: expected 1 or 3"),
    ("model.widths=[1, -1]", "model.widths: expected positive integers"),
    ("model.widths=4", "model.widths: expected a list of an integer"),
    ("data=1", "data: is a section"),
    ("train.kimg", "overrides are written key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        build_config(Config, None, [override])
    assert message in str(error.value)


def test_bad_yaml_keys_are_named_with_their_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  batchsize: 3\n")
    with pytest.raises(ConfigError, match="train.batchsize: unknown key"):
        build_config(Config, str(path), [])
    path.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(Config, str(path), [])
    with pytest.raises(ConfigError, match="file not found"):
        build_config(Config, str(tmp_path / "missing.yaml"), [])


def test_round_trip_through_dict():
    config = build_config(Config, None, ["model.widths=[5]", "seed=9"])
    assert from_dict(Config, to_dict(config)) == config


@pytest.mark.parametrize("argument", ["nosuch.key=1", "train.kimg=-1"])
def test_script_exits_2_with_one_line_naming_the_key(argument, tmp_path):
    result = subprocess.run([sys.executable, "tests/toy_gan.py", argument, f"out_dir={tmp_path / 'run'}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and argument.split("=")[0] in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing written for a rejected command
