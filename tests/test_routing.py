"""Ridge heads, the router module, lambda sweeps, budgets and router checkpoints."""

import json
import pathlib

import numpy as np
import pytest

from erpjax.routing import (
    RouterCheckpointError,
    add_llm,
    cost_weight_for_budget,
    cost_weight_grid,
    fit_ridge,
    fit_router,
    load_router,
    route,
    save_router,
)


def _problem(seed=0, n=200, d=16, m=4):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  true_w = rng.normal(size=(d, m))
  y = x @ true_w + rng.normal(scale=0.1, size=(n, m)) + np.arange(m)
  return x, y, np.array([1.0, 2.0, 4.0, 8.0])[:m]


def _numpy_ridge(x, y, beta):
  xm, ym = x.mean(0), y.mean(0)
  xc = x - xm
  w = np.linalg.solve(xc.T @ xc + beta * np.eye(x.shape[1]), xc.T @ (y - ym))
  return w, ym - xm @ w


def test_ridge_matches_numpy_closed_form():
  x, y, _ = _problem()
  w, b = fit_ridge(x, y, beta=1.0)
  w_ref, b_ref = _numpy_ridge(x.astype(np.float64), y, 1.0)
  np.testing.assert_allclose(w, w_ref, atol=1e-4)
  np.testing.assert_allclose(b, b_ref, atol=1e-4)


def test_ridge_uses_only_observed_targets():
  x, y, _ = _problem()
  y_missing = y.copy()
  y_missing[::3, 1] = np.nan
  w, b = fit_ridge(x, y_missing, beta=1.0)
  keep = ~np.isnan(y_missing[:, 1])
  w_ref, b_ref = _numpy_ridge(x[keep].astype(np.float64), y[keep, 1:2], 1.0)
  np.testing.assert_allclose(w[:, 1:2], w_ref, atol=1e-4)
  np.testing.assert_allclose(b[1:2], b_ref, atol=1e-4)


def test_ridge_refuses_an_empty_column():
  x, y, _ = _problem()
  y[:, 2] = np.nan
  with pytest.raises(ValueError, match="column 2"):
    fit_ridge(x, y)


def test_route_is_argmax_of_penalized_utility_with_cheap_tie_break():
  predicted = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 3.0]])
  costs = np.array([2.0, 1.0, 3.0])
  np.testing.assert_array_equal(route(predicted, costs, 0.0), [1, 2])  # tie -> cheaper LLM 1
  np.testing.assert_array_equal(route(predicted, costs, 10.0), [1, 1])


@pytest.mark.parametrize("standardize", [False, True])
def test_router_predicts_with_fitted_heads(standardize):
  x, y, costs = _problem()
  router = fit_router(x, y, costs, llms=("a", "b", "c", "d"), encoder="enc", reward_model="rm",
                      standardize=standardize)
  pred = np.asarray(router.predict(x))
  residual = 1 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
  assert residual.min() > 0.95  # R^2 on a nearly linear problem
  np.testing.assert_array_equal(np.asarray(router(x, 0.0)), np.asarray(route(pred, costs, 0.0)))


def test_budget_mode_meets_the_budget_and_is_least_restrictive():
  x, y, costs = _problem()
  router = fit_router(x, y, costs, llms=("a", "b", "c", "d"), encoder="enc", reward_model="rm")
  pred = np.asarray(router.predict(x))
  budget = 3.0
  cost_weight = cost_weight_for_budget(pred, costs, budget)
  assert costs[np.asarray(route(pred, costs, cost_weight))].mean() <= budget
  # A slightly smaller lambda would overspend: the returned lambda is (nearly) the tightest.
  assert costs[np.asarray(route(pred, costs, cost_weight * 0.98))].mean() > budget
  with pytest.raises(ValueError, match="below the cheapest"):
    cost_weight_for_budget(pred, costs, 0.5)


def test_cost_falls_over_the_lambda_grid_to_the_cheapest_llm():
  x, y, costs = _problem()
  router = fit_router(x, y, costs, llms=("a", "b", "c", "d"), encoder="enc", reward_model="rm")
  pred = np.asarray(router.predict(x))
  grid = cost_weight_grid(pred, costs, num=30)
  mean_costs = [costs[np.asarray(route(pred, costs, w))].mean() for w in grid]
  assert grid[0] == 0.0
  assert all(a >= b for a, b in zip(mean_costs, mean_costs[1:]))
  assert mean_costs[-1] == costs.min()


def test_checkpoint_round_trip(tmp_path):
  x, y, costs = _problem()
  router = fit_router(x, y, costs, llms=("a", "b", "c", "d"), encoder="enc", reward_model="rm",
                      standardize=True)
  save_router(router, tmp_path / "router")
  save_router(router, tmp_path / "router")  # overwriting an existing router works
  loaded = load_router(tmp_path / "router", expect_encoder="enc", expect_llms=("a", "b", "c", "d"))
  assert loaded.spec == router.spec
  np.testing.assert_array_equal(np.asarray(loaded.predict(x)), np.asarray(router.predict(x)))
  np.testing.assert_array_equal(np.asarray(loaded.costs[...]), np.asarray(router.costs[...]))


def test_checkpoint_refuses_mismatches(tmp_path):
  x, y, costs = _problem()
  router = fit_router(x, y, costs, llms=("a", "b", "c", "d"), encoder="enc", reward_model="rm")
  path = save_router(router, tmp_path / "router")
  with pytest.raises(RouterCheckpointError, match="encoder 'enc'"):
    load_router(path, expect_encoder="other-encoder")
  with pytest.raises(RouterCheckpointError, match="routes to"):
    load_router(path, expect_llms=("a", "b"))
  with pytest.raises(RouterCheckpointError, match="no metadata"):
    load_router(tmp_path)
  # Metadata that disagrees with the saved arrays (here: one LLM too many) is refused.
  meta_file = next(pathlib.Path(path, "metadata").glob("*"))
  meta = json.loads(meta_file.read_text())
  meta["spec"]["llms"].append("e")
  meta_file.write_text(json.dumps(meta))
  with pytest.raises(RouterCheckpointError, match="does not match"):
    load_router(path)


def test_adding_an_llm_fits_one_head_and_keeps_the_others_bit_identical(tmp_path):
  x, y, costs = _problem(m=4)
  router = fit_router(x, y[:, :3], costs[:3], llms=("a", "b", "c"), encoder="enc",
                      reward_model="rm", standardize=True)
  save_router(router, tmp_path / "r3")
  router = load_router(tmp_path / "r3")
  grown = add_llm(router, "d", x[:120], y[:120, 3], cost=costs[3])
  assert grown.spec.llms == ("a", "b", "c", "d")
  np.testing.assert_array_equal(
      np.asarray(grown.kernel[...])[:, :3], np.asarray(router.kernel[...]))
  np.testing.assert_array_equal(np.asarray(grown.bias[...])[:3], np.asarray(router.bias[...]))
  np.testing.assert_array_equal(np.asarray(grown.predict(x))[:, :3], np.asarray(router.predict(x)))
  # The new head equals a head fit on the same data on its own (heads are independent).
  alone = fit_ridge(np.asarray(router.features(x[:120])), y[:120, 3:4])
  np.testing.assert_array_equal(np.asarray(grown.kernel[...])[:, 3:], alone[0])
  with pytest.raises(ValueError, match="already"):
    add_llm(grown, "a", x, y[:, 0], cost=1.0)
