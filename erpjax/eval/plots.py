"""Figures for evaluation reports; each function returns a matplotlib `Figure` and writes nothing.

Figures are built with `matplotlib.figure.Figure`, not `pyplot`: no global state and no GUI
backend (saving to PNG renders with Agg).
"""

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from erpjax.eval import metrics
from erpjax.eval.frontier import ORACLE, Frontier


def _use_log_cost(costs: np.ndarray) -> bool:
  # Real per-call prices span orders of magnitude (RouterBench: ~100x); a linear axis would
  # squeeze the cheap LLMs together.
  costs = costs[np.isfinite(costs)]
  return bool(costs.size and costs.min() > 0 and costs.max() / costs.min() > 20)


def _frontier_figure(frontiers: Mapping[str, Frontier], field: str, single_cost: np.ndarray,
                     single_value: np.ndarray, llm_names: Sequence[str], ylabel: str,
                     chosen: str | None, points: Mapping[str, tuple[float, float]]) -> Figure:
  fig = Figure(figsize=(9, 6.5), layout="constrained")
  ax = fig.add_subplot()
  # The chosen router alone is drawn in red (C3), bold, its λ = 0 end starred; the other routers
  # take the remaining colors of the default cycle, so none can be mistaken for it.
  others = iter([f"C{i}" for i in range(10) if i != 3] * len(frontiers))
  for name, f in frontiers.items():
    label = name
    if name == ORACLE:
      style = dict(color="black", linestyle="--", linewidth=1.5)
    elif name == chosen:
      style, label = dict(color="C3", linewidth=2.5, zorder=4), f"{name} (chosen)"
      ax.scatter(f.cost[:1], getattr(f, field)[:1], marker="*", s=220, color="C3", zorder=5,
                 edgecolors="black", linewidths=0.6, label=f"{name} at λ=0")
    else:
      style = dict(color=next(others))
    ax.plot(f.cost, getattr(f, field), marker=".", markersize=4, label=label, **style)
  for name, (x, y) in points.items():
    ax.scatter([x], [y], marker="X", s=120, color="C3", edgecolors="black", zorder=5, label=name)
  ax.scatter(single_cost, single_value, marker="D", color="dimgray", zorder=3, label="single LLMs")
  for name, x, y in zip(llm_names, single_cost, single_value):
    ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
  if _use_log_cost(np.concatenate([single_cost] + [f.cost for f in frontiers.values()])):
    ax.set_xscale("log")
  ax.margins(x=0.08)
  ax.set_xlabel("mean cost per prompt")
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  # Below the axes, so that it covers neither curves nor the labels of the dearest LLMs.
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize=8, frameon=False)
  return fig


def reward_vs_cost(frontiers: Mapping[str, Frontier], single_cost, single_reward,
                   llm_names: Sequence[str], *, chosen: str | None = None,
                   points: Mapping[str, tuple[float, float]] | None = None) -> Figure:
  """Each router's λ-sweep as a line of (mean cost, mean reward), single LLMs as labeled points;
  a router named "oracle" is drawn dashed black, the `chosen` router bold with a star at λ = 0.

  Args:
    frontiers: {router name: its λ-sweep}.
    single_cost, single_reward: `[M]` each single LLM's mean cost and reward.
    llm_names: `[M]` their names.
    chosen: the router the report is about, if any.
    points: {label: (cost, reward)} single routings to mark (e.g. the chosen router at a budget).
  """
  return _frontier_figure(frontiers, "reward", np.asarray(single_cost), np.asarray(single_reward),
                          llm_names, "mean observed reward", chosen, points or {})


def regret_vs_cost(frontiers: Mapping[str, Frontier], single_cost, single_regret,
                   llm_names: Sequence[str], *, chosen: str | None = None,
                   points: Mapping[str, tuple[float, float]] | None = None) -> Figure:
  """Like `reward_vs_cost`, with mean per-prompt regret on the y axis (`points` give regrets)."""
  return _frontier_figure(frontiers, "regret", np.asarray(single_cost), np.asarray(single_regret),
                          llm_names, "mean regret", chosen, points or {})


def predicted_vs_observed(pred, rewards, llm_names: Sequence[str], title: str) -> Figure:
  """A grid of scatter plots, one per LLM, of predicted `[N, M]` against observed `[N, M]`
  rewards, each titled with its R²."""
  pred, rewards = np.asarray(pred), np.asarray(rewards)
  num = pred.shape[1]
  cols = math.ceil(math.sqrt(num))
  rows = math.ceil(num / cols)
  fig = Figure(figsize=(3.2 * cols, 3.0 * rows), layout="constrained")
  fig.suptitle(title)
  r2 = metrics.r2(pred, rewards, axis=0)
  lo = float(min(pred.min(), rewards.min()))
  hi = float(max(pred.max(), rewards.max()))
  for i in range(num):
    ax = fig.add_subplot(rows, cols, i + 1)
    ax.scatter(rewards[:, i], pred[:, i], s=6, alpha=0.3, linewidths=0)
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
    ax.set_title(f"{llm_names[i]}  R²={r2[i]:.3f}", fontsize=8)
    ax.set_xlabel("observed", fontsize=7)
    ax.set_ylabel("predicted", fontsize=7)
    ax.tick_params(labelsize=6)
  return fig
