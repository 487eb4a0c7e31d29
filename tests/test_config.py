"""Run configs: YAML parsing, defaults, validation and unknown keys."""

import pathlib

import pytest

from erpjax.config import RunConfig

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name", ["routerbench.yaml", "llmrouter.yaml", "demo.yaml"])
def test_shipped_configs_parse(name):
  config = RunConfig.from_yaml(CONFIGS / name)
  assert config.predictor.beta == 1.0
  assert config.data.source in ("routerbench", "llmrouter", "synthetic")


def test_defaults_follow_the_paper():
  config = RunConfig.from_dict({"data": {"source": "synthetic"}})
  assert config.predictor.beta == 1.0
  assert config.encoder.path is None and config.encoder.dtype == "float32"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"data": {"source": "routerbench", "rot": "x"}},
         r"config: data: unknown key\(s\) \['rot'\]"),
        ({"data": {"source": "nope"}}, "data.source must be one of"),
        ({"data": {"source": "folder"}}, "needs data.root"),
        ({"data": {"source": "synthetic"}, "predictor": {"beta": 0}}, "beta must be positive"),
        ({"data": {"source": "synthetic"}, "encoder": {"dtype": "float16"}}, "encoder.dtype"),
        ({"data": {"source": "synthetic"}, "routing": {"budget": -1}}, "budget must be positive"),
        ({"data": {"source": "synthetic"}, "extra": 1}, r"unknown key\(s\) \['extra'\]"),
        ({}, "data"),
    ],
)
def test_bad_configs_are_refused_with_a_clear_message(raw, message):
  with pytest.raises(ValueError, match=message):
    RunConfig.from_dict(raw)
