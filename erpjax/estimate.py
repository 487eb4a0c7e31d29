"""Expected reward estimation: ER_i(x) from K sampled responses per (prompt, LLM, reward model).

The paper estimates ER_i(x) by the mean reward of K = 32 responses sampled at temperature 1.
K may differ between cells (ragged), so the statistics are segment reductions over the long-format
samples rather than a mean over a dense [N, M, R, K] array.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from erpjax.data import RoutingDataset


@dataclasses.dataclass(frozen=True)
class ExpectedRewards:
  """Per-cell statistics of reward samples; every array is [N, M, R] (prompt, LLM, reward model).

  Cells without samples have count 0 and NaN statistics. `variance` is the unbiased sample
  variance (NaN for count < 2) and `standard_error` = sqrt(variance / count).
  """

  mean: np.ndarray
  variance: np.ndarray
  standard_error: np.ndarray
  count: np.ndarray

  def of(self, reward_model: int = 0) -> np.ndarray:
    """[N, M] mean rewards under one reward model."""
    return self.mean[:, :, reward_model]


@jax.jit(static_argnames=("num_cells",))
def _segment_moments(cell, reward, num_cells):
  """Count, mean and centered sum of squares of `reward` [S] per `cell` [S] in [0, num_cells)."""
  count = jax.ops.segment_sum(jnp.ones_like(reward), cell, num_segments=num_cells)
  total = jax.ops.segment_sum(reward, cell, num_segments=num_cells)
  mean = total / jnp.maximum(count, 1.0)
  # Two-pass variance: sum of squared deviations from the cell mean, numerically stable.
  centered = reward - mean[cell]
  sum_sq = jax.ops.segment_sum(centered * centered, cell, num_segments=num_cells)
  return count, mean, sum_sq


def _power_of_two(n: int) -> int:
  """The least power of two >= n (1 for n <= 1)."""
  return 1 << max(n - 1, 0).bit_length()


def estimate_expected_rewards(dataset: RoutingDataset) -> ExpectedRewards:
  """Mean, variance, standard error and count of rewards per (prompt, LLM, reward model)."""
  n, m, r = dataset.num_prompts, dataset.num_llms, len(dataset.reward_models)
  s = dataset.samples
  cell = (s.prompt_index.astype(np.int64) * m + s.llm_index) * r + s.reward_model_index
  # float64 statistics need x64; run the reduction in float32 on centered data instead and keep
  # the host side in float64. Rewards are centered by their global mean first so that float32
  # keeps its precision for rewards with a large offset (e.g. raw reward-model logits).
  offset = float(s.reward.mean()) if len(s) else 0.0
  # Samples and cells are padded to powers of two, so that datasets of many sizes (the shards of
  # a streamed job) share a few compilations; padding samples fall into one spare cell.
  num_cells = n * m * r
  padded_cells = _power_of_two(num_cells + 1)
  padded_samples = _power_of_two(len(s))
  cell = np.pad(cell, (0, padded_samples - len(s)), constant_values=padded_cells - 1)
  reward = np.pad(s.reward - offset, (0, padded_samples - len(s)))
  count, mean, sum_sq = (np.asarray(a)[:num_cells] for a in _segment_moments(
      jnp.asarray(cell, jnp.int32), jnp.asarray(reward, jnp.float32), num_cells=padded_cells))
  count = count.astype(np.int64)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = np.where(count > 0, np.asarray(mean, np.float64) + offset, np.nan)
    variance = np.where(count > 1, np.asarray(sum_sq, np.float64) / (count - 1), np.nan)
    standard_error = np.sqrt(variance / count)
  shape = (n, m, r)
  return ExpectedRewards(
      mean=mean.reshape(shape),
      variance=variance.reshape(shape),
      standard_error=standard_error.reshape(shape),
      count=count.reshape(shape),
  )


def mean_call_costs(dataset: RoutingDataset) -> np.ndarray:
  """[N, M] mean observed cost of one call per (prompt, LLM); NaN where no sample has a cost."""
  s = dataset.samples
  known = np.isfinite(s.cost)
  cell = s.prompt_index[known].astype(np.int64) * dataset.num_llms + s.llm_index[known]
  size = dataset.num_prompts * dataset.num_llms
  count = np.bincount(cell, minlength=size)
  total = np.bincount(cell, weights=s.cost[known], minlength=size)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, total / count, np.nan).reshape(dataset.num_prompts, -1)
