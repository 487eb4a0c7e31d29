"""The records job (erpjax.streamed): samples sharded by prompt -> scores -> features -> ridge
router, one shard at a time, against the in-memory path on the same data."""

import jax
import numpy as np
import pytest
from _processes import K, NUM_LLMS, NUM_PROMPTS, HashEncoder, WordPieceFormatter, make_dataset

from erpjax import data, scoring, sharding, streamed
from erpjax.estimate import estimate_expected_rewards
from erpjax.routing import _ridge
from erpjax.scoring import testing

def make_engine():
  config = scoring.ScoringConfig(lengths=(64,), tokens_per_batch=256, window=8, progress=False)
  return scoring.ScoringEngine(testing.TinyRewardModel(seed=0), WordPieceFormatter(), config,
                               score_token="first", name="tiny",
                               mesh=sharding.make_mesh(1, jax.devices()[:1]))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  """The records job on make_dataset() in 4 shards: (dataset, folders)."""
  root = tmp_path_factory.mktemp("streamed")
  dataset = make_dataset()
  samples = data.write_samples(dataset, root / "samples", num_shards=4)
  summary = streamed.score_samples(samples, make_engine(), root / "scored", name="tiny")
  features = streamed.featurize_samples(root / "scored", root / "features", HashEncoder(),
                                        reward_model="tiny")
  return dataset, summary, {"samples": samples, "scored": root / "scored",
                            "features": features, "root": root}


def test_each_shard_holds_whole_prompts(job):
  dataset, _, folders = job
  shards = [data.read_samples(folders["samples"], shards=[s]) for s in range(4)]
  ids = [set(shard.prompt_ids) for shard in shards]
  assert sum(map(len, ids)) == NUM_PROMPTS and set().union(*ids) == set(dataset.prompt_ids)
  assert all(ids)  # 40 prompts hash into every one of 4 shards.
  for shard in shards:  # Every sample of each of its prompts.
    assert len(shard.samples) == shard.num_prompts * NUM_LLMS * K


def test_scored_shards_equal_scoring_the_whole_dataset(job, tmp_path):
  dataset, summary, folders = job
  scored = data.read_samples(folders["scored"])
  assert scored.reward_models == ("given", "tiny")
  assert summary.num_items == NUM_PROMPTS * NUM_LLMS * K
  assert summary.num_copies == NUM_PROMPTS // 4  # Copies share a prompt, so a shard.
  whole, _ = scoring.score_dataset(dataset, make_engine(), tmp_path / "scores", name="tiny")

  def rewards(d):
    rows = np.flatnonzero(d.samples.reward_model_index == 1)
    return dict(zip(d.sample_ids(rows), d.samples.reward[rows]))

  got, want = rewards(scored), rewards(whole)
  assert got.keys() == want.keys()
  # Other windows pack the pairs into other batches: equal up to float summation order.
  np.testing.assert_allclose([got[i] for i in want], list(want.values()), rtol=1e-5, atol=1e-6)
  # Resuming a complete job does nothing.
  again = streamed.score_samples(folders["samples"], make_engine(), folders["scored"], name="tiny")
  assert again.num_items == 0


def test_features_and_router_equal_the_in_memory_fit(job):
  _, _, folders = job
  scored = data.read_samples(folders["scored"])
  want_y = estimate_expected_rewards(scored).of(1)
  chunks = list(data.feature_chunks(folders["features"], batch_size=7))
  ids = [i for c in chunks for i in c.ids]
  row = {p: i for i, p in enumerate(scored.prompt_ids)}
  order = [row[i] for i in ids]
  assert sorted(order) == list(range(NUM_PROMPTS))
  x = np.concatenate([c.features for c in chunks])
  np.testing.assert_array_equal(x, HashEncoder().encode([scored.prompts[i] for i in order]))
  # estimate_expected_rewards sums in float32 (JAX's default): per-shard sums round differently.
  np.testing.assert_allclose(np.concatenate([c.rewards for c in chunks]), want_y[order],
                             rtol=1e-6, atol=1e-7)

  router, fit = streamed.fit_features(folders["features"], betas=[1.0])
  kernel, bias, _ = _ridge.fit_ridge_heads(x, want_y[order], 1.0)
  np.testing.assert_allclose(router.kernel[...], kernel, atol=2e-6)
  np.testing.assert_allclose(router.bias[...], bias, atol=2e-6)
  assert router.spec.encoder == HashEncoder.identifier and router.spec.reward_model == "tiny"
  np.testing.assert_allclose(router.costs[...], [0.1, 0.5, 2.0])
  assert fit.counts.tolist() == [NUM_PROMPTS] * NUM_LLMS


def test_a_folder_of_other_records_is_refused(job):
  _, _, folders = job
  with pytest.raises(data.DataError, match="holds other records"):
    streamed.featurize_samples(folders["scored"], folders["features"], HashEncoder(),
                               reward_model="given")


def test_an_interrupted_stage_writes_only_the_missing_shards(job, tmp_path):
  _, _, folders = job
  out = tmp_path / "features"
  calls = []

  class CountingEncoder(HashEncoder):
    def encode(self, texts, batch_size=None, progress=False):
      calls.append(len(texts))
      if len(calls) == 3:
        raise KeyboardInterrupt  # Killed during the third shard.
      return super().encode(texts)

  with pytest.raises(KeyboardInterrupt):
    streamed.featurize_samples(folders["scored"], out, CountingEncoder(), reward_model="tiny")
  assert len(list(out.glob("features-*.array_record"))) == 2
  assert not (out / "records.json").exists()
  with pytest.raises(data.DataError, match="not a records folder"):
    data.read_manifest(out)
  calls.clear()
  streamed.featurize_samples(folders["scored"], out, CountingEncoder(), reward_model="tiny")
  assert len(calls) == 2  # Only the two missing shards.
  assert [c.ids for c in data.feature_chunks(out)] == [
      c.ids for c in data.feature_chunks(folders["features"])]
