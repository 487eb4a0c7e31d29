"""ERP on a reward model's rewards: a run config's `rewards` section scores every response first."""

import dataclasses

import numpy as np
import pytest

from erpjax import pipeline
from erpjax.config import DataConfig, RewardsConfig, RunConfig
from erpjax.data import RewardSamples, RoutingDataset, write_dataset
from erpjax.encode import default_model_dir

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory):
  """A random tiny BertForSequenceClassification with MiniLM's tokenizer, saved as an HF folder."""
  folder = tmp_path_factory.mktemp("tiny_rm")
  config = transformers.BertConfig(
      vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
      intermediate_size=64, max_position_embeddings=128, num_labels=1,
      architectures=["BertForSequenceClassification"])
  torch.manual_seed(0)
  transformers.BertForSequenceClassification(config).save_pretrained(folder)
  transformers.AutoTokenizer.from_pretrained(default_model_dir()).save_pretrained(folder)
  return folder


def _split(name, n, rng):
  llms = ("alpha", "beta", "gamma")
  rows = [(p, m) for p in range(n) for m in range(3) for _ in range(2)]
  prompt_index, llm_index = map(np.array, zip(*rows))
  responses = [f"Answer {k} by {llms[m]} to question {p}: " + "word " * int(rng.integers(1, 30))
               for k, (p, m) in enumerate(rows)]
  return RoutingDataset(
      name=name, prompt_ids=tuple(f"{name}-{i}" for i in range(n)),
      prompts=tuple(f"Question {i}: how do I {['cook', 'code', 'sing'][i % 3]} well?"
                    for i in range(n)),
      categories=(None,) * n, llms=llms, costs=np.array([1.0, 2.0, 3.0]),
      reward_models=("correctness",),
      samples=RewardSamples.build(prompt_index, llm_index, rng.integers(0, 2, len(rows)),
                                  response=responses))


def test_run_scores_responses_then_fits_on_the_reward_models_rewards(
    tmp_path, tiny_reward_model, monkeypatch, caplog):
  monkeypatch.setenv("ERPJAX_CACHE", str(tmp_path / "cache"))
  rng = np.random.default_rng(0)
  write_dataset(_split("train", 24, rng), tmp_path / "data" / "train")
  write_dataset(_split("test", 9, rng), tmp_path / "data" / "test")
  config = RunConfig(
      data=DataConfig(source="folder", root=str(tmp_path / "data")),
      rewards=RewardsConfig(model=str(tiny_reward_model), name="tiny_rm",
                            scoring={"lengths": [64, 128], "tokens_per_batch": 1024,
                                     "progress": False}),
      output_dir=str(tmp_path / "run"))
  config = dataclasses.replace(
      config, predictor=dataclasses.replace(config.predictor, reward_model="tiny_rm"))
  fit = pipeline.fit_and_predict(config, progress=False)
  assert fit.router.spec.reward_model == "tiny_rm"
  assert fit.train.reward_models == ("correctness", "tiny_rm")
  # Real-valued reward-model scores, not the 0/1 correctness labels.
  assert not np.isin(fit.test_rewards, [0.0, 1.0]).all()
  scores_dir = tmp_path / "run" / "scores"
  assert (scores_dir / "train").is_dir() and (scores_dir / "test").is_dir()
  # A second run reuses the finished score shards (all 9 x 3 x 2 test items skipped) and gets
  # the same rewards.
  caplog.set_level("INFO", logger="erpjax.pipeline")
  again = pipeline.fit_and_predict(config, progress=False)
  np.testing.assert_array_equal(again.test_rewards, fit.test_rewards)
  assert "scored test: ScoringSummary(num_items=54, num_skipped=54" in caplog.text


def test_score_command_adds_the_reward_model_to_a_dataset(tmp_path, tiny_reward_model, capsys):
  from erpjax import cli
  from erpjax.data import read_dataset

  data = _split("train", 5, np.random.default_rng(1))
  # Two LLMs giving the same answer: one forward pass, one score.
  responses = list(data.samples.response)
  responses[2] = responses[0]
  data = dataclasses.replace(data, samples=dataclasses.replace(data.samples, response=responses))
  write_dataset(data, tmp_path / "in")
  argv = ["score", str(tmp_path / "in"), "--model", str(tiny_reward_model), "--name", "tiny_rm",
          "--max-length", "128", "-o", str(tmp_path / "out")]
  assert cli.main(argv) == 0
  assert "30 responses: 0 scored by an earlier run, 1 copies of another" in capsys.readouterr().out
  scored = read_dataset(tmp_path / "out")
  assert scored.reward_models == ("correctness", "tiny_rm")
  tiny = scored.samples.reward[scored.samples.reward_model_index == 1]
  assert len(tiny) == 30 and tiny[0] == tiny[2] and len(np.unique(tiny)) == 29
  # Run again: every response is found in the score folder.
  assert cli.main(argv) == 0
  assert "30 responses: 30 scored by an earlier run" in capsys.readouterr().out


def test_the_pod_commands_convert_score_featurize_fit_and_route(tmp_path, tiny_reward_model,
                                                                 capsys, monkeypatch):
  """README's "Running on a pod" job, here as one process: each command reads records shards."""
  from erpjax import cli, data

  monkeypatch.setenv("ERPJAX_CACHE", str(tmp_path / "cache"))
  write_dataset(_split("train", 24, np.random.default_rng(2)), tmp_path / "train")
  steps = [
      ["convert", tmp_path / "train", "-o", tmp_path / "samples", "--shards", "3"],
      ["score", tmp_path / "samples", "--model", tiny_reward_model, "--name", "tiny_rm",
       "--max-length", "128", "-o", tmp_path / "scored"],
      ["featurize", tmp_path / "scored", "--reward-model", "tiny_rm", "-o", tmp_path / "features"],
      ["fit-features", tmp_path / "features", "--router", tmp_path / "router"],
      ["route", tmp_path / "train", "--router", tmp_path / "router", "-o", tmp_path / "r.parquet"],
  ]
  for argv in steps:
    assert cli.main([str(a) for a in argv]) == 0, argv
  out = capsys.readouterr().out
  assert "144 responses: 0 scored by an earlier run" in out
  assert "wrote features of 24 prompts (dim 384" in out
  scored = data.read_samples(tmp_path / "scored")
  assert scored.reward_models == ("correctness", "tiny_rm") and len(scored.samples) == 288
  from erpjax.routing import load_router

  router = load_router(tmp_path / "router")
  assert router.spec.reward_model == "tiny_rm" and router.spec.llms == ("alpha", "beta", "gamma")
  import pyarrow.parquet as pq

  assert pq.read_table(tmp_path / "r.parquet").num_rows == 24
  # Rerun: every shard is there already; nothing is scored again.
  assert cli.main([str(a) for a in steps[1]]) == 0
  assert "0 responses: 0 scored by an earlier run" in capsys.readouterr().out


def test_single_process_commands_refuse_a_multi_process_run(monkeypatch, capsys, tmp_path):
  from erpjax import cli
  from erpjax.runtime import distributed

  monkeypatch.setattr(distributed, "initialize",
                      lambda: distributed.ProcessInfo(1, 2, "explicit"))
  assert cli.main(["demo", "--output-dir", str(tmp_path / "demo")]) == 2
  err = capsys.readouterr().err
  assert "erpjax demo: error: runs in one process, this is process 1 of 2" in err
  assert "score, featurize, fit-features" in err
  assert not (tmp_path / "demo").exists()
