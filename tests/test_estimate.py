"""Expected-reward estimation over ragged K, checked against numpy."""

import numpy as np

from erpjax.data import RewardSamples, RoutingDataset
from erpjax.estimate import estimate_expected_rewards


def _dataset(rng, n=7, m=3, r=2):
  rows = []
  for p in range(n):
    for i in range(m):
      for k in range(r):
        if (p + i + k) % 5 == 0:
          continue  # a missing cell
        for _ in range(rng.integers(1, 6)):  # ragged K in [1, 5]
          rows.append((p, i, k, 1000.0 + rng.normal()))  # a large offset tests precision
  p, i, k, reward = map(np.array, zip(*rows))
  samples = RewardSamples.build(p, i, reward, reward_model_index=k)
  return RoutingDataset(
      name="t", prompt_ids=tuple(f"p{j}" for j in range(n)), prompts=("x",) * n,
      categories=(None,) * n, llms=tuple(f"m{j}" for j in range(m)), costs=np.ones(m),
      reward_models=tuple(f"rm{j}" for j in range(r)), samples=samples,
  )


def test_matches_numpy_per_cell():
  rng = np.random.default_rng(0)
  ds = _dataset(rng)
  est = estimate_expected_rewards(ds)
  s = ds.samples
  for p in range(ds.num_prompts):
    for i in range(ds.num_llms):
      for k in range(2):
        values = s.reward[(s.prompt_index == p) & (s.llm_index == i) & (s.reward_model_index == k)]
        assert est.count[p, i, k] == len(values)
        if len(values) == 0:
          assert np.isnan(est.mean[p, i, k])
          continue
        np.testing.assert_allclose(est.mean[p, i, k], values.mean(), rtol=0, atol=1e-4)
        if len(values) > 1:
          np.testing.assert_allclose(
              est.variance[p, i, k], values.var(ddof=1), rtol=1e-3, atol=1e-5)
          np.testing.assert_allclose(
              est.standard_error[p, i, k], values.std(ddof=1) / np.sqrt(len(values)),
              rtol=1e-3, atol=1e-5)
        else:
          assert np.isnan(est.variance[p, i, k])


def test_of_selects_reward_model():
  ds = _dataset(np.random.default_rng(1))
  est = estimate_expected_rewards(ds)
  assert est.of(1).shape == (ds.num_prompts, ds.num_llms)
  np.testing.assert_array_equal(est.of(1), est.mean[:, :, 1])


def test_datasets_of_many_sizes_share_a_few_compilations():
  """The shards of a streamed job differ in size: padding to powers of two bounds the compiles."""
  from erpjax import estimate

  rng = np.random.default_rng(1)
  before = estimate._segment_moments._cache_size()
  for n in range(20, 40):
    estimate_expected_rewards(_dataset(rng, n=n))
  # 20 sizes: from ~360 to ~720 samples and 360 to 720 cells, 2 powers of two each at most.
  assert estimate._segment_moments._cache_size() - before <= 4
