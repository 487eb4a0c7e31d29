"""Run configs: every shipped config loads and runs its first stage; defaults, validation."""

import pathlib

import numpy as np
import pytest

from erpjax import paths, pipeline
from erpjax.config import RunConfig
from erpjax.train import reward_model

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
SHIPPED = sorted(path.name for path in CONFIGS.glob("*.yaml"))
# The shared-data folder each source reads when the config names no root.
SHARED = {"routerbench": "routerbench_subset", "llmrouter": "llmrouter"}


def _shared_or_skip(name: str) -> None:
  try:
    paths.shared_data(name)
  except FileNotFoundError as error:
    pytest.skip(f"shared data absent: {error}")


def test_configs_are_shipped():
  assert {"demo.yaml", "routerbench.yaml", "llmrouter.yaml", "train_rm.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "train_rm.yaml"])
def test_shipped_run_config_loads_its_data(name, monkeypatch):
  monkeypatch.chdir(REPO)  # Configs name folders relative to the repository root.
  config = RunConfig.from_yaml(CONFIGS / name)
  if config.data.root is None and config.data.source in SHARED:
    _shared_or_skip(SHARED[config.data.source])
  train, tests = pipeline.load_splits(config.data)
  assert tuple(tests) == config.data.test_splits
  assert train.num_prompts > 0 and train.llms
  for test in tests.values():
    assert test.num_prompts > 0 and set(test.llms) <= set(train.llms)
    assert not set(test.prompt_ids) & set(train.prompt_ids)
  if config.rewards is None:
    # The reward model the predictor fits on exists in the data.
    pipeline.reward_model_index(train, config.predictor.reward_model)
  else:
    # Rewards come from a model another shipped config trains: it must read where that one writes.
    assert config.predictor.reward_model == config.rewards.name
    trained = reward_model.TrainRMConfig.from_yaml(CONFIGS / "train_rm.yaml")
    assert pathlib.Path(config.rewards.model) == pathlib.Path(trained.output_dir) / "model"


def test_shipped_train_rm_config_packs_its_first_batch():
  config = reward_model.TrainRMConfig.from_yaml(CONFIGS / "train_rm.yaml")
  if config.data_dir is None:
    _shared_or_skip("hh_rlhf_test")
  data = reward_model.load_pair_data(config)
  assert data.train_pairs == config.max_train_pairs and data.eval_pairs == config.max_eval_pairs
  rows = config.tokens_per_step // config.max_length
  first = data.train_batches[0]
  assert first.inputs["tokens_bt"].shape == (rows, config.max_length)
  assert 0 < first.num_pairs <= rows * config.max_segments // 2
  # Every training pair is in exactly one batch of the epoch, both of its sequences real.
  assert sum(b.num_pairs for b in data.train_batches) == config.epochs * data.train_pairs
  tokens = first.inputs["tokens_bt"][first.inputs["segment_ids_bt"] > 0]
  assert tokens.size and np.all(tokens > 0)


def test_defaults_follow_the_paper():
  config = RunConfig.from_dict({"data": {"source": "synthetic"}})
  # Issue 10: the default predictor is chosen by CV on train; the paper's is `kind: ridge, beta: 1`.
  assert config.predictor.kind == "auto" and config.predictor.safe
  paper = RunConfig.from_dict({"data": {"source": "synthetic"},
                               "predictor": {"kind": "ridge", "beta": 1.0}})
  assert paper.predictor.beta == 1.0
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
