"""train-rm: HH-RLHF pairs, pair packing, the Bradley-Terry step, and a tiny end-to-end run."""

import dataclasses
import gzip
import json
import pathlib

import numpy as np
import pytest

from erpjax import data, paths, train
from erpjax.scoring import testing
from erpjax.train import reward_model

MINILM = paths.default_model_dir()


def write_hh(folder: pathlib.Path, name: str, rows: list[dict]) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  with gzip.open(folder / f"{name}.test.jsonl.gz", "wt", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


def dialogue(question: str, answer: str) -> str:
  return f"\n\nHuman: {question}\n\nAssistant: {answer}"


def test_read_hh_pairs_drops_identical_pairs_and_names_bad_lines(tmp_path):
  write_hh(tmp_path, "a", [{"chosen": "x", "rejected": "y"}, {"chosen": "z", "rejected": "z"}])
  write_hh(tmp_path, "b", [{"chosen": "u", "rejected": "v"}])
  pairs, identical = data.read_hh_pairs(tmp_path, ("a", "b"))
  assert pairs.chosen == ("x", "u") and pairs.rejected == ("y", "v")
  assert pairs.source == ("a", "b") and identical == 1
  write_hh(tmp_path, "c", [{"chosen": "x", "rejected": "y"}, {"chosen": "x"}])
  with pytest.raises(ValueError, match="c.test.jsonl.gz, line 2"):
    data.read_hh_pairs(tmp_path, ("c",))


def test_split_is_seeded_and_disjoint():
  pairs = data.PreferencePairs(*(tuple(f"{k}{i}" for i in range(50)) for k in "crs"))
  train, holdout = data.split_pairs(pairs, 0.1, seed=3)
  again, _ = data.split_pairs(pairs, 0.1, seed=3)
  other, _ = data.split_pairs(pairs, 0.1, seed=4)
  assert len(holdout) == 5 and len(train) == 45
  assert set(train.chosen).isdisjoint(holdout.chosen)
  assert set(train.chosen) | set(holdout.chosen) == set(pairs.chosen)
  assert train.chosen == again.chosen and train.chosen != other.chosen
  assert all(c[1:] == r[1:] for c, r in zip(train.chosen, train.rejected))  # Pairs stay paired.


def test_pack_pairs_keeps_pairs_whole_and_in_order():
  rng = np.random.default_rng(0)
  chosen = [[1000 + i] * rng.integers(1, 40) for i in range(60)]
  rejected = [[2000 + i] * rng.integers(1, 40) for i in range(60)]
  batches = train.pack_pairs(chosen, rejected, rows=4, length=64, max_segments=4)
  assert len({b.inputs["tokens_bt"].shape for b in batches}) == 1  # One compiled shape.
  assert len({b.chosen_p2.shape for b in batches}) == 1
  seen = []
  for batch in batches:
    tokens = batch.inputs["tokens_bt"]
    starts = batch.inputs["score_index_bs"]
    for p in range(batch.num_pairs):
      (cb, cs), (rb, rs) = batch.chosen_p2[p], batch.rejected_p2[p]
      pair = tokens[cb, starts[cb, cs]] - 1000
      assert tokens[rb, starts[rb, rs]] == 2000 + pair
      seen.append(int(pair))
    assert not batch.mask_p[batch.num_pairs:].any()
  assert seen == list(range(60))
  with pytest.raises(ValueError, match="does not fit"):
    train.pack_pairs([[1] * 40], [[2] * 40], rows=1, length=64, max_segments=4)


def test_bradley_terry_loss():
  margin = np.array([0.0, 2.0, -1.0, 5.0], np.float32)
  mask = np.array([True, True, True, False])
  expected = np.mean([np.log(2), np.log1p(np.exp(-2.0)), np.log1p(np.exp(1.0))])
  assert float(reward_model.bradley_terry_loss(margin, mask)) == pytest.approx(expected, rel=1e-6)


def test_weight_decay_skips_biases_and_norm_scales():
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from erpjax.models import classifiers  # pylint: disable=import-outside-toplevel

  model = nnx.eval_shape(lambda: classifiers.BertClassifier(classifiers.TINY_BERT,
                                                            rngs=nnx.Rngs(0)))
  mask = nnx.to_flat_state(reward_model.decay_mask(nnx.state(model, nnx.Param)))
  decayed = {"/".join(map(str, path)) for path, v in mask if v.get_value()}
  assert "encoder/layers/ffn/in_kernel" in decayed and "encoder/embeddings/word" in decayed
  assert "head/out/kernel" in decayed
  for path, v in mask:
    name = str(path[-1])
    assert v.get_value() == (not (name.endswith("bias") or name == "scale")), path


def test_steps_lower_the_loss_of_a_tiny_model():
  rng = np.random.default_rng(1)
  # Chosen sequences use tokens 1000-1099, rejected ones 1100-1199: learnable in a few steps.
  chosen = [list(rng.integers(1000, 1100, rng.integers(2, 30))) for _ in range(48)]
  rejected = [list(rng.integers(1100, 1200, rng.integers(2, 30))) for _ in range(48)]
  batches = train.pack_pairs(chosen, rejected, rows=4, length=64, max_segments=4)
  model = testing.TinyRewardModel(seed=0)
  config = reward_model.TrainRMConfig(learning_rate=3e-3, warmup_fraction=0.0)
  optimizer = reward_model.make_optimizer(model, config, total_steps=3 * len(batches))
  before = reward_model.evaluate(model, batches)
  for _ in range(3):
    for batch in batches:
      reward_model.train_step(model, optimizer, reward_model._device_batch(batch))
  after = reward_model.evaluate(model, batches)
  assert after["pairs"] == before["pairs"] == 48
  assert after["loss"] < 0.5 * before["loss"] and after["accuracy"] == 1.0


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
  path = tmp_path / "c.yaml"
  path.write_text("max_train_pairs: 10\nlerning_rate: 0.1\n")
  with pytest.raises(ValueError, match="lerning_rate"):
    reward_model.TrainRMConfig.from_yaml(path)
  with pytest.raises(ValueError, match="holdout_fraction"):
    reward_model.TrainRMConfig(holdout_fraction=1.0)
  repo_config = pathlib.Path(__file__).parent.parent / "configs" / "train_rm.yaml"
  assert reward_model.TrainRMConfig.from_yaml(repo_config).max_length == 256


# ------------------------------------------------------------------------------------------------
# End to end, from a tiny BERT base: train, export, load back, resume.


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
  """A tiny random BERT checkpoint (with pooler) and MiniLM's tokenizer, as transformers saves."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  folder = tmp_path_factory.mktemp("tiny_bert")
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64,
                                   max_position_embeddings=128)
  transformers.BertModel(config).save_pretrained(folder)
  transformers.AutoTokenizer.from_pretrained(MINILM).save_pretrained(folder)
  return folder


@pytest.fixture(scope="module")
def hh_folder(tmp_path_factory):
  """60 learnable pairs: chosen answers are polite, rejected ones rude."""
  folder = tmp_path_factory.mktemp("hh")
  rng = np.random.default_rng(0)
  topics = ["cats", "rain", "bread", "trains", "music", "maps"]
  polite = ["thank you, happy to help", "sure, here is a kind answer", "glad you asked"]
  rude = ["go away", "that is a stupid question", "figure it out yourself"]
  rows = []
  for i in range(60):
    question = f"tell me about {rng.choice(topics)} number {i}"
    rows.append({"chosen": dialogue(question, rng.choice(polite)),
                 "rejected": dialogue(question, rng.choice(rude))})
  write_hh(folder, "toy", rows)
  return folder


def tiny_config(tmp_path, base, data, **overrides):
  return reward_model.TrainRMConfig(**{
      "output_dir": str(tmp_path), "data_dir": str(data), "files": ("toy",),
      "base_model": str(base), "max_length": 32, "holdout_fraction": 0.2,
      "tokens_per_step": 128, "max_segments": 4, "epochs": 2, "learning_rate": 3e-3,
      "checkpoint_every": 3, **overrides})


def test_train_export_and_load_back(tmp_path, tiny_base, hh_folder):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  from erpjax import scoring  # pylint: disable=import-outside-toplevel

  result = reward_model.train_reward_model(tiny_config(tmp_path, tiny_base, hh_folder),
                                       progress=False)
  assert result.resumed_from == 0 and len(result.losses) == result.steps > 6
  assert result.train_pairs == 48 and result.eval["pairs"] == 12
  assert np.mean(result.losses[-3:]) < 0.5 * np.mean(result.losses[:3])
  assert result.eval["accuracy"] == 1.0
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert metrics["eval"] == result.eval and metrics["steps"] == result.steps

  # The folder loads in transformers and in the scoring engine, which agree on the scores.
  items = [("good", "hi", "thank you, happy to help"), ("bad", "hi", "go away")]
  engine = scoring.ScoringEngine.from_pretrained(
      result.model_dir, scoring.ScoringConfig(lengths=(32,), progress=False))
  assert engine.formatter.name == "dialogue" and engine.score_token == "first"
  engine.score(items, tmp_path / "scores")
  ours = scoring.read_scores(tmp_path / "scores").as_dict()
  peer = transformers.AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
  tokenized = engine.formatter([p for _, p, _ in items], [r for _, _, r in items], 32)
  with torch.no_grad():
    for (item_id, _, _), ids in zip(items, tokenized.ids):
      logit = peer(input_ids=torch.tensor([ids])).logits[0, 0].item()
      assert ours[item_id] == pytest.approx(logit, abs=1e-5)
  assert ours["good"] > ours["bad"]


def test_interrupted_training_resumes_to_the_same_model(tmp_path, tiny_base, hh_folder,
                                                        monkeypatch):
  config = tiny_config(tmp_path / "whole", tiny_base, hh_folder, epochs=1)
  whole = reward_model.train_reward_model(config, progress=False)

  step = reward_model.train_step
  calls = []

  def crash_after_four(*args):
    calls.append(1)
    if len(calls) > 4:
      raise KeyboardInterrupt  # As if killed between steps 4 and 5.
    return step(*args)

  config = dataclasses.replace(config, output_dir=str(tmp_path / "split"))
  monkeypatch.setattr(reward_model, "train_step", crash_after_four)
  with pytest.raises(KeyboardInterrupt):
    reward_model.train_reward_model(config, progress=False)
  monkeypatch.setattr(reward_model, "train_step", step)
  resumed = reward_model.train_reward_model(config, progress=False)
  assert resumed.resumed_from == 3  # The last checkpoint before the crash.
  np.testing.assert_allclose(resumed.losses, whole.losses[3:], rtol=1e-5, atol=1e-6)
  assert resumed.eval == pytest.approx(whole.eval, rel=1e-5)
