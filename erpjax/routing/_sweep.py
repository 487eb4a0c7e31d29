"""Choosing the cost weight lambda: its useful range, and the lambda that meets a budget."""

from __future__ import annotations

import numpy as np

from erpjax.routing._router import route


def max_useful_cost_weight(predicted: np.ndarray, costs: np.ndarray) -> float:
  """The smallest lambda at which every prompt goes to the cheapest LLM.

  For prompt x and LLM i dearer than the cheapest LLM j, i loses to j once
  lambda > (ER_i(x) - ER_j(x)) / (c_i - c_j); the max of that over prompts and LLMs is the bound.
  """
  cheapest = int(np.argmin(costs))
  dearer = costs > costs[cheapest]
  if not dearer.any():
    return 0.0
  gains = predicted[:, dearer] - predicted[:, [cheapest]]
  return float(max(0.0, (gains / (costs[dearer] - costs[cheapest])).max()))


def cost_weight_grid(predicted: np.ndarray, costs: np.ndarray, num: int = 50) -> np.ndarray:
  """[num] lambdas from 0 to just past `max_useful_cost_weight`, log-spaced above 0."""
  top = max_useful_cost_weight(predicted, costs)
  if top == 0.0:
    return np.zeros(1)
  return np.concatenate([[0.0], np.geomspace(top * 1e-4, top * 1.01, num - 1)])


def cost_weight_for_budget(
    predicted: np.ndarray, costs: np.ndarray, budget: float, *, iterations: int = 60
) -> float:
  """The smallest lambda whose routing of the calibration prompts costs at most `budget` per prompt.

  The cost of each prompt's chosen LLM does not increase with lambda, so the mean cost is
  monotone and bisection finds the least restrictive lambda that meets the budget.

  Args:
    predicted: [N, M] predicted expected rewards on calibration prompts.
    costs: [M] routing costs.
    budget: the mean cost per prompt allowed.

  Raises:
    ValueError: if even the cheapest LLM costs more than the budget.
  """
  predicted = np.asarray(predicted, np.float64)
  costs = np.asarray(costs, np.float64)

  def mean_cost(cost_weight: float) -> float:
    return float(costs[np.asarray(route(predicted, costs, cost_weight))].mean())

  if costs.min() > budget:
    raise ValueError(
        f"budget {budget:g} per prompt is below the cheapest LLM's cost {costs.min():g}")
  if mean_cost(0.0) <= budget:
    return 0.0
  low, high = 0.0, max_useful_cost_weight(predicted, costs) * 1.01 + 1e-12
  for _ in range(iterations):
    mid = 0.5 * (low + high)
    if mean_cost(mid) <= budget:
      high = mid
    else:
      low = mid
  return high
