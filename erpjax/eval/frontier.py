"""Cost-aware routing, reward-vs-cost frontiers and the area metrics over them.

A router gives utilities `u: [N, M]` (predicted reward-like score per prompt and LLM); at a cost
weight λ >= 0 it routes prompt n to argmax_i u[n, i] - λ·c_i with routing costs `c: [M]`.
Sweeping λ over the router's own grid (`erpjax.routing.cost_weight_grid` of its utilities) gives
a family of routers, each a point (mean cost, mean reward) on the test set.

Curves and area metrics:
- `nondecreasing_hull` is RouterBench's "non-decreasing convex hull" (Hu et al., RouterBench,
  arXiv 2403.12031, §3): random mixtures of two routers of the family reach every point on the
  segment between them, so the achievable set is the upper convex hull of the points; it is then
  made non-decreasing in cost by carrying the best reward forward (at a larger budget one can
  always run the cheaper, better router).
- `aiq` is RouterBench's Average Improvement in Quality: the hull averaged over an explicit cost
  interval [c_min, c_max], by default from the cheapest to the most expensive single LLM.
- `gap_recovery` gives RouteLLM's APGR and CPT(p) (Ong et al., RouteLLM, arXiv 2406.18665, §4),
  generalised from a weak/strong pair to M LLMs: weak = the cheapest LLM, strong = the best single
  LLM (highest mean reward). PGR(c) = (R(c) - r_weak) / (r_strong - r_weak) on the hull R.
  RouteLLM integrates PGR over the percentage of calls to the strong model, 0..100%; here the
  axis is the normalised cost x = (c - c_weak) / (c_strong - c_weak), 0..1, which is the same
  thing when only the weak and strong models are routed to. RouteLLM evaluates its raw threshold
  curve; the hull used here is the achievable (mixture) curve, which is never below it, and is
  defined for non-monotone curves.

Outside the hull's cost range the curve is extended flat (`np.interp` semantics). On the right
this is exact for a budget reading of the curve; on the left it is optimistic, so `Hull.uncovered`
and the `uncovered` field of results say how much of an interval had to be extrapolated. A router's
`cost_weight_grid` reaches its all-cheapest routing, so with routing costs nothing is
extrapolated.
"""

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from erpjax import routing
from erpjax.eval import metrics

# The name reports give the router whose utilities are the observed test rewards.
ORACLE = "oracle"


def route(utilities, costs, cost_weight: float) -> np.ndarray:
  """Choice `[N]` = argmax_i utilities[n, i] - λ·costs[i], ties to the cheaper LLM: the rule of
  `erpjax.routing.route`, which ERP routes with, applied to any router's utilities.

  Args:
    utilities: `[N, M]`; -inf marks an LLM the router never picks.
    costs: `[M]` routing cost per call.
    cost_weight: the cost trade-off λ >= 0.
  """
  utilities, costs = np.asarray(utilities), np.asarray(costs)
  if utilities.ndim != 2 or costs.shape != utilities.shape[1:]:
    raise ValueError(f"utilities {utilities.shape} must be [N, M] with costs {costs.shape} [M]")
  if not cost_weight >= 0:
    raise ValueError(f"cost_weight must be >= 0, got {cost_weight}")
  return np.asarray(routing.route(utilities, costs, cost_weight))


def realized_costs(choice, route_costs, call_costs=None) -> np.ndarray:
  """Cost `[N]` of each routed call: observed `call_costs[n, choice[n]]` if given, else
  `route_costs[choice[n]]`."""
  if call_costs is not None:
    return metrics.chosen(call_costs, choice)
  return np.asarray(route_costs, dtype=np.float64)[np.asarray(choice)]


@dataclasses.dataclass(frozen=True, eq=False)
class Frontier:
  """A router family swept over λ: one entry per cost weight, in the order of `cost_weights`.

  Attributes:
    cost_weights: `[L]` trade-offs λ.
    cost: `[L]` mean realized cost per prompt.
    reward: `[L]` mean observed reward of the chosen LLMs.
    regret: `[L]` mean per-prompt regret.
  """

  cost_weights: np.ndarray
  cost: np.ndarray
  reward: np.ndarray
  regret: np.ndarray


def measure(choices, cost_weights, rewards, route_costs, call_costs=None) -> Frontier:
  """Measure a family of routings on the test set.

  Args:
    choices: `[L, N]` chosen LLM per prompt for each member of the family.
    cost_weights: `[L]` the trade-off λ that produced each routing.
    rewards: `[N, M]` observed test rewards.
    route_costs: `[M]` routing costs, used as each call's cost when `call_costs` is None.
    call_costs: optional `[N, M]` observed per-call costs.
  """
  cost_weights = np.asarray(cost_weights, dtype=np.float64)
  if len(choices) != cost_weights.size:
    raise ValueError(f"{len(choices)} routings for {cost_weights.size} cost weights")
  cost = [realized_costs(c, route_costs, call_costs).mean() for c in choices]
  reward = [metrics.chosen(rewards, c).mean() for c in choices]
  regret = [metrics.mean_regret(rewards, c) for c in choices]
  return Frontier(cost_weights, np.array(cost), np.array(reward), np.array(regret))


def sweep(utilities, rewards, route_costs, cost_weights, call_costs=None) -> Frontier:
  """Route with `utilities` at every λ of `cost_weights` (`[L]`, each >= 0) and `measure` the
  family."""
  choices = [route(utilities, route_costs, float(w)) for w in np.asarray(cost_weights)]
  return measure(choices, cost_weights, rewards, route_costs, call_costs)


@dataclasses.dataclass(frozen=True, eq=False)
class Hull:
  """A non-decreasing, concave, piecewise-linear reward-vs-cost curve, flat outside its vertices.

  Attributes:
    cost: `[V]` strictly increasing vertex costs.
    reward: `[V]` strictly increasing vertex rewards (a flat tail is implied after the last).
  """

  cost: np.ndarray
  reward: np.ndarray

  def __call__(self, c) -> np.ndarray:
    return np.interp(c, self.cost, self.reward)

  def mean(self, lo: float, hi: float) -> float:
    """Average of the curve over [lo, hi] (exact: trapezoids between its breakpoints)."""
    if not hi > lo:
      raise ValueError(f"need hi > lo, got [{lo}, {hi}]")
    inner = self.cost[(self.cost > lo) & (self.cost < hi)]
    xs = np.concatenate([[lo], inner, [hi]])
    ys = self(xs)
    return float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs)) / (hi - lo))

  def uncovered(self, lo: float, hi: float) -> float:
    """Fraction of [lo, hi] below the cheapest vertex, where the curve is extrapolated leftwards."""
    return float(np.clip((self.cost[0] - lo) / (hi - lo), 0.0, 1.0)) if hi > lo else 0.0

  def first_cost_reaching(self, target: float) -> float:
    """Smallest cost at which the curve reaches `target`: the cheapest vertex's cost if it already
    does, inf if the curve never does."""
    if target <= self.reward[0]:
      return float(self.cost[0])
    k = int(np.searchsorted(self.reward, target, side="left"))
    if k == self.reward.size:
      return math.inf
    c0, c1, r0, r1 = self.cost[k - 1], self.cost[k], self.reward[k - 1], self.reward[k]
    return float(c0 + (target - r0) * (c1 - c0) / (r1 - r0))


def nondecreasing_hull(cost, reward) -> Hull:
  """RouterBench's non-decreasing convex hull of (cost, reward) points.

  The upper convex hull (Andrew's monotone chain) of the points, cut at its highest vertex (the
  cheapest of equals): a concave curve only falls after its peak, and carrying the maximum forward
  turns that fall into the flat tail that `Hull` implies.

  Args:
    cost: `[P]` mean costs of the routers of a family.
    reward: `[P]` their mean rewards.
  """
  cost, reward = np.asarray(cost, dtype=np.float64), np.asarray(reward, dtype=np.float64)
  if cost.shape != reward.shape or cost.ndim != 1 or cost.size == 0:
    raise ValueError(
        f"need equal non-empty [P] arrays, got cost {cost.shape}, reward {reward.shape}")
  if not (np.all(np.isfinite(cost)) and np.all(np.isfinite(reward))):
    raise ValueError("cost and reward must be finite")
  # Sort by cost, best reward first among equal costs, and keep that best one.
  order = np.lexsort((-reward, cost))
  cost, reward = cost[order], reward[order]
  first = np.concatenate([[True], cost[1:] != cost[:-1]])
  cost, reward = cost[first], reward[first]
  hull: list[int] = []
  for k in range(cost.size):
    # Pop the last vertex while it lies on or below the chord from its predecessor to point k.
    while len(hull) >= 2:
      a, b = hull[-2], hull[-1]
      cross = ((cost[b] - cost[a]) * (reward[k] - reward[a])
               - (reward[b] - reward[a]) * (cost[k] - cost[a]))
      if cross < 0:
        break
      hull.pop()
    hull.append(k)
  idx = np.array(hull)
  peak = int(np.argmax(reward[idx]))
  return Hull(cost[idx[: peak + 1]], reward[idx[: peak + 1]])


@dataclasses.dataclass(frozen=True)
class CostInterval:
  """The cost interval an area metric averages over, reported with the metric."""

  lo: float
  hi: float


def single_llm_points(rewards, route_costs, call_costs=None) -> tuple[np.ndarray, np.ndarray]:
  """(mean cost `[M]`, mean reward `[M]`) of always routing to each LLM."""
  rewards = np.asarray(rewards, dtype=np.float64)
  if call_costs is not None:
    cost = np.asarray(call_costs, dtype=np.float64).mean(axis=0)
  else:
    cost = np.asarray(route_costs, dtype=np.float64)
  if cost.shape != rewards.shape[1:]:
    raise ValueError(f"costs {cost.shape} do not match {rewards.shape[1]} LLMs")
  return cost, rewards.mean(axis=0)


def default_interval(single_cost) -> CostInterval:
  """From the cheapest to the most expensive single LLM."""
  return CostInterval(float(np.min(single_cost)), float(np.max(single_cost)))


@dataclasses.dataclass(frozen=True)
class AIQ:
  """RouterBench AIQ over `interval`; nan with `reason` when the interval is empty."""

  value: float
  interval: CostInterval
  uncovered: float
  reason: str | None = None


def aiq(hull: Hull, interval: CostInterval) -> AIQ:
  """Average Improvement in Quality (RouterBench, arXiv 2403.12031, §3):
  AIQ = 1 / (c_max - c_min) · ∫_{c_min}^{c_max} R̃(c) dc, with R̃ the non-decreasing convex hull
  of the router family and [c_min, c_max] the explicit `interval`."""
  if not interval.hi > interval.lo:
    return AIQ(math.nan, interval, 0.0, f"empty cost interval [{interval.lo}, {interval.hi}]")
  return AIQ(hull.mean(interval.lo, interval.hi), interval,
             hull.uncovered(interval.lo, interval.hi))


@dataclasses.dataclass(frozen=True)
class GapRecovery:
  """RouteLLM metrics generalised to M LLMs (see the module docstring).

  Attributes:
    weak: index of the weak LLM (see `weak_and_strong`).
    strong: index of the strong LLM.
    apgr: average PGR over [c_weak, c_strong].
    cpt: {p: CPT(p)}, the smallest normalised cost (c - c_weak) / (c_strong - c_weak) at which the
      hull's PGR reaches p; > 1 if only beyond the strong model's cost, nan if never.
    uncovered: fraction of [c_weak, c_strong] the hull extrapolates.
    reason: why values are nan, or None.
  """

  weak: int
  strong: int
  apgr: float
  cpt: Mapping[float, float]
  uncovered: float
  reason: str | None = None


def weak_and_strong(single_cost, single_reward) -> tuple[int, int]:
  """RouteLLM's weak and strong models among M LLMs: (the cheapest, the better of equally cheap
  ones; the best mean reward, the cheaper of equally good ones)."""
  single_cost = np.asarray(single_cost, dtype=np.float64)
  single_reward = np.asarray(single_reward, dtype=np.float64)
  weak = int(np.lexsort((-single_reward, single_cost))[0])
  strong = int(np.lexsort((single_cost, -single_reward))[0])
  return weak, strong


def gap_recovery(hull: Hull, single_cost, single_reward, levels=(0.5, 0.8)) -> GapRecovery:
  """APGR and CPT(p) for each p in `levels` (RouteLLM, arXiv 2406.18665, §4), on the hull.

  Args:
    hull: the router family's `nondecreasing_hull`.
    single_cost: `[M]` cost of each single LLM.
    single_reward: `[M]` mean reward of each single LLM.
    levels: PGR levels p in (0, 1] for CPT.
  """
  single_cost = np.asarray(single_cost, dtype=np.float64)
  single_reward = np.asarray(single_reward, dtype=np.float64)
  weak, strong = weak_and_strong(single_cost, single_reward)
  c_weak, c_strong = single_cost[weak], single_cost[strong]
  r_weak, r_strong = single_reward[weak], single_reward[strong]
  nan_cpt = {float(p): math.nan for p in levels}
  if not r_strong > r_weak:
    return GapRecovery(weak, strong, math.nan, nan_cpt, 0.0,
                       "the cheapest LLM is also the best: "
                       "PGR's denominator r_strong - r_weak is 0")
  if not c_strong > c_weak:
    return GapRecovery(weak, strong, math.nan, nan_cpt, 0.0,
                       "the best LLM costs no more than the cheapest: the cost interval is empty")
  span = r_strong - r_weak
  apgr = (hull.mean(c_weak, c_strong) - r_weak) / span
  cpt = {}
  for p in levels:
    c = max(c_weak, hull.first_cost_reaching(r_weak + p * span))
    cpt[float(p)] = (c - c_weak) / (c_strong - c_weak) if math.isfinite(c) else math.nan
  never = [p for p, x in cpt.items() if math.isnan(x)]
  reason = f"the hull never reaches PGR {never}" if never else None
  return GapRecovery(weak, strong, float(apgr), cpt, hull.uncovered(c_weak, c_strong), reason)
