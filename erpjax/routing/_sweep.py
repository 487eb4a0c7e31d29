"""Choosing the cost weight (λ): its useful range, the grid a router is swept over, and the cost
weight that meets a budget."""

from __future__ import annotations

import numpy as np

from erpjax.routing._router import route


def max_useful_cost_weight(utilities: np.ndarray, costs: np.ndarray) -> float:
  """The smallest cost weight from which every prompt goes to its cheapest allowed LLM.

  For prompt x, LLM i and the cheapest LLM j that x may go to (finite utility), i loses to j once
  cost_weight > (u_i(x) - u_j(x)) / (c_i - c_j); the max of that over prompts and dearer LLMs is
  the bound. A non-finite utility (-inf: a router that never picks that LLM) is skipped, so the
  bound also serves routers that restrict their choice (e.g. a single LLM: 0).

  Args:
    utilities: [N, M] predicted expected rewards, or any router's utilities.
    costs: [M] routing cost per call.
  """
  utilities = np.asarray(utilities, np.float64)
  costs = np.asarray(costs, np.float64)
  allowed = np.isfinite(utilities)
  rows = allowed.any(axis=1)
  if not rows.any():
    return 0.0
  utilities, allowed = utilities[rows], allowed[rows]
  cheapest = np.argmin(np.where(allowed, costs, np.inf), axis=1)  # [N]
  cheapest_cost = costs[cheapest][:, None]  # [N, 1]
  dearer = allowed & (costs > cheapest_cost)  # [N, M]
  if not dearer.any():
    return 0.0
  cheapest_utility = np.take_along_axis(utilities, cheapest[:, None], axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    ratios = (utilities - cheapest_utility) / (costs - cheapest_cost)
  return float(max(0.0, ratios[dearer].max()))


def cost_weight_grid(utilities: np.ndarray, costs: np.ndarray, num: int = 50) -> np.ndarray:
  """[num] cost weights for sweeping one router: 0, then log-spaced up to just past its
  `max_useful_cost_weight` (1e-4 of it to 1.01 times it), so the sweep ends at the all-cheapest
  routing; [0] alone if no cost weight changes the routing (e.g. all LLMs cost the same).

  Every router gets a grid from its own utilities: the scale of a cost weight is the scale of the
  utilities (rewards, log-probabilities), so one grid stretched by the widest router would leave
  the others a few points each.

  Args:
    utilities: [N, M] the router's utilities on the prompts being routed (-inf: never picked).
    costs: [M] routing cost per call.
    num: grid size, >= 1.
  """
  if num < 1:
    raise ValueError(f"need num >= 1 cost weights, got {num}")
  top = max_useful_cost_weight(utilities, costs)
  if top == 0.0 or num == 1:
    return np.zeros(1)
  return np.concatenate([[0.0], np.geomspace(top * 1e-4, top * 1.01, num - 1)])


def cost_weight_for_budget(
    utilities: np.ndarray, costs: np.ndarray, budget: float, *, at_zero: np.ndarray | None = None,
    iterations: int = 60,
) -> float:
  """The smallest cost weight found whose routing of these prompts costs at most `budget` each.

  Guarantee: `costs[route(u, costs, w)].mean() <= budget` for the returned w, with u = `at_zero`
  if w == 0 (and `at_zero` is given) else `utilities` (what `ERPRouter.utilities(x, w)` gives),
  computed in float64 exactly as `route` (float64 numpy, ties to the cheaper LLM) and this line do
  it. The
  search evaluates that very expression and keeps only cost weights that pass it, so the guarantee
  does not rest on float rounding: a caller that routes the same `utilities` and `costs` with
  `route` makes the same choices. (It is about routing costs: observed per-call costs may differ.)

  Each prompt's chosen cost does not increase with the cost weight (an argmax of lines
  u_i - w c_i), so bisection finds the least restrictive cost weight to within 2^-iterations of the
  search interval.

  Args:
    utilities: [N, M] what the router routes on at positive cost weights (its predictions).
    at_zero: [N, M] what it routes on at cost weight 0 (the safe rule applied); None: `utilities`.
    costs: [M] routing costs.
    budget: the mean cost per prompt allowed.

  Raises:
    ValueError: no prompts, or even the cheapest LLM costs more than the budget.
  """
  utilities = np.asarray(utilities, np.float64)
  costs = np.asarray(costs, np.float64)
  if utilities.ndim != 2 or utilities.shape[0] == 0:
    raise ValueError(f"need [N, M] utilities of at least one prompt, got {utilities.shape}")

  def within(cost_weight: float) -> bool:
    u = at_zero if cost_weight == 0 and at_zero is not None else utilities
    return bool(costs[route(u, costs, cost_weight)].mean() <= budget)

  if costs.min() > budget:
    raise ValueError(
        f"budget {budget:g} per prompt is below the cheapest LLM's cost {costs.min():g}")
  if within(0.0):
    return 0.0
  low, high = 0.0, max_useful_cost_weight(utilities, costs) * 1.01 + 1e-12
  for _ in range(64):  # only if rounding kept a dearer LLM at the bound
    if within(high):
      break
    low, high = high, 2.0 * high
  else:
    raise ValueError(f"no cost weight routes these prompts within budget {budget:g} (a router "
                     "that never picks the cheapest LLM for some prompts?)")
  for _ in range(iterations):
    mid = 0.5 * (low + high)
    if within(mid):
      high = mid
    else:
      low = mid
  return high
