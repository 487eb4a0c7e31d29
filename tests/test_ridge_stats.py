"""Ridge heads from streamed statistics sharded over 8 emulated devices equal the in-memory fit,
and the GCV choice of the penalty equals a brute-force GCV with the explicit hat matrix."""

import jax
import numpy as np
import pytest

from erpjax import sharding
from erpjax.routing._ridge import fit_ridge_heads
from erpjax.routing._ridge_stats import RidgeStatistics, fit_ridge_streamed


def _data(n, d, m, seed):
  rng = np.random.default_rng(seed)
  # An offset far from 0 checks the shifted sums: the centered Gram must not cancel away.
  x = 3.0 + rng.normal(size=(n, d))
  w = rng.normal(size=(d, m))
  y = 5.0 + (x - 3.0) @ w + rng.normal(scale=0.5, size=(n, m))
  return x.astype(np.float32), y.astype(np.float32)


def _chunks(x, y, sizes):
  """Uneven chunks: 0-row ones and ones longer than a step included."""
  bounds = np.cumsum([0, *sizes])
  assert bounds[-1] == len(x)
  return [(x[a:b], y[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def _needs_8_devices():
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 (emulated) devices; tests/conftest.py sets them up")


@pytest.mark.parametrize("masked", [False, True])
def test_streamed_sharded_statistics_give_the_in_memory_weights(masked):
  _needs_8_devices()
  x, y = _data(1000, 12, 4, seed=0)
  if masked:
    rng = np.random.default_rng(1)
    shared = rng.random(1000) < 0.3
    y[shared, 1] = y[shared, 2] = np.nan  # Heads 1 and 2 share a pattern, head 3 has its own.
    y[rng.random(1000) < 0.5, 3] = np.nan
  stats = RidgeStatistics(12, 4, mesh=sharding.make_mesh(1), rows_per_device=16)
  assert stats.mesh.shape[sharding.DATA] == 8  # A step of 128 rows, 16 on each device.
  for chunk in _chunks(x, y, [137, 0, 300, 63, 500]):
    stats.add(*chunk)
  assert stats.num_groups == (3 if masked else 1)
  np.testing.assert_array_equal(stats.count_m, np.isfinite(y).sum(0))
  fit = stats.solve(betas=[2.0])
  weights, bias, _ = fit_ridge_heads(x, y, beta=2.0)
  np.testing.assert_allclose(fit.weights, weights, atol=1e-5, rtol=0)
  np.testing.assert_allclose(fit.bias, bias, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(fit.betas, 2.0)


def _brute_force_gcv(x, y, betas):
  """n RSS / (n - trace H)^2 with the explicit [n, n] hat matrix of ridge + free intercept."""
  n, d = x.shape
  ones = np.ones((n, 1)) / np.sqrt(n)
  xc = x - x.mean(0)
  scores = []
  for beta in betas:
    hat = ones @ ones.T + xc @ np.linalg.solve(xc.T @ xc + beta * np.eye(d), xc.T)
    rss = np.sum((y - hat @ y) ** 2)
    scores.append(n * rss / (n - np.trace(hat)) ** 2)
  return np.array(scores)


def test_gcv_choice_equals_brute_force_gcv():
  _needs_8_devices()
  x, y = _data(240, 30, 3, seed=2)  # Few prompts per feature: the penalty matters.
  y[np.random.default_rng(3).random(240) < 0.25, 2] = np.nan
  grid = np.geomspace(1e-2, 1e3, 16)
  fit = fit_ridge_streamed(_chunks(x, y, [100, 140]), 30, 3, betas=grid, rows_per_device=8)
  for j in range(3):
    rows = np.isfinite(y[:, j])
    expected = _brute_force_gcv(x[rows].astype(np.float64), y[rows, j].astype(np.float64), grid)
    np.testing.assert_allclose(fit.gcv[:, j], expected, rtol=1e-4)
    assert fit.betas[j] == grid[np.argmin(expected)]
    assert grid[0] < fit.betas[j] < grid[-1]  # An interior choice: the test can fail.
  # The chosen head equals the in-memory fit at its penalty.
  for j in range(3):
    weights, bias, _ = fit_ridge_heads(x, y[:, [j]], beta=fit.betas[j])
    np.testing.assert_allclose(fit.weights[:, j], weights[:, 0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(fit.bias[j], bias[0], atol=1e-5, rtol=0)


def test_a_head_never_observed_is_refused():
  x, y = _data(50, 4, 2, seed=4)
  y[:, 1] = np.nan
  with pytest.raises(ValueError, match=r"heads \[1\] have no observed target"):
    fit_ridge_streamed([(x, y)], 4, 2, rows_per_device=8)
