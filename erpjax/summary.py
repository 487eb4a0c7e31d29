"""The summary of an ERP run: prediction quality, and routed reward and cost beside baselines.

At lambda = 0 the router maximises predicted reward; it is compared with the best single LLM
(chosen on the TRAIN split, as a user would have to) and the oracle (per-prompt best observed
LLM on the test split, cheapest on ties). The lambda sweep traces ERP's reward-vs-cost frontier.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import numpy as np

from erpjax.eval import frontier, metrics, plots
from erpjax.files import atomic_write, atomic_write_text
from erpjax.pipeline import FittedERP
from erpjax.routing import cost_weight_for_budget, cost_weight_grid, route


@dataclasses.dataclass(frozen=True)
class RoutedResult:
  """Mean observed reward and mean routing cost per prompt of one way of choosing LLMs."""

  name: str
  mean_reward: float
  mean_cost: float
  mean_call_cost: float | None = None  # observed $, where the data has per-call costs


@dataclasses.dataclass(frozen=True)
class RunSummary:
  """Everything `erpjax run` reports; `to_dict` is what summary.json holds."""

  dataset: str
  llms: tuple[str, ...]
  r2_per_llm: dict[str, float]
  r2_overall: float
  results: tuple[RoutedResult, ...]
  frontier: frontier.Frontier
  budget: dict[str, float] | None
  notes: tuple[str, ...]

  def to_dict(self) -> dict[str, Any]:
    return {
        "dataset": self.dataset,
        "llms": list(self.llms),
        "r2_per_llm": self.r2_per_llm,
        "r2_overall": self.r2_overall,
        "results": [dataclasses.asdict(r) for r in self.results],
        "frontier": {
            "cost_weights": self.frontier.lambdas.tolist(),
            "mean_cost": self.frontier.cost.tolist(),
            "mean_reward": self.frontier.reward.tolist(),
        },
        "budget": self.budget,
        "notes": list(self.notes),
    }

  def to_markdown(self) -> str:
    """Two tables: R^2 per LLM, and routed reward/cost at lambda = 0 beside the baselines."""
    lines = [f"## {self.dataset}", "", "| LLM | test R² |", "|---|---:|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in self.r2_per_llm.items()]
    lines += [f"| (all cells) | {self.r2_overall:.3f} |", ""]
    has_calls = any(r.mean_call_cost is not None for r in self.results)
    header = "| routing | mean reward | mean cost |" + (" observed $/call |" if has_calls else "")
    lines += [header, "|---|---:|---:|" + ("---:|" if has_calls else "")]
    for r in self.results:
      row = f"| {r.name} | {r.mean_reward:.4f} | {r.mean_cost:.6g} |"
      if has_calls:
        row += f" {r.mean_call_cost:.6g} |" if r.mean_call_cost is not None else " |"
      lines.append(row)
    return "\n".join(lines) + "\n"


def _routed(name, choice, fit: FittedERP) -> RoutedResult:
  call_costs = metrics.chosen(fit.test_call_costs, choice)
  return RoutedResult(
      name=name,
      mean_reward=float(metrics.chosen(fit.test_rewards, choice).mean()),
      mean_cost=float(fit.test.costs[choice].mean()),
      mean_call_cost=float(call_costs.mean()) if np.isfinite(call_costs).all() else None,
  )


def summarize(
    fit: FittedERP, *, num_cost_weights: int = 50, budget: float | None = None
) -> RunSummary:
  """Measures the fitted router on the test split."""
  costs = fit.test.costs
  r2 = metrics.r2(fit.test_predicted, fit.test_rewards, axis=0)
  best_single = int(np.nanargmax(np.nanmean(fit.train_rewards, axis=0)))
  n = fit.test.num_prompts
  results = [
      _routed("ERP (lambda=0)", np.asarray(route(fit.test_predicted, costs, 0.0)), fit),
      _routed(f"best single LLM: {fit.test.llms[best_single]}", np.full(n, best_single), fit),
      _routed("oracle", np.asarray(route(fit.test_rewards, costs, 0.0)), fit),
  ]
  budget_report = None
  if budget is not None:
    # lambda is calibrated on the prompts being routed: it needs their predictions only, no
    # rewards, just as `erpjax route --budget` does for a new batch of prompts. (The training
    # prompts' in-sample predictions would be more spread out than new prompts' and overspend.)
    cost_weight = cost_weight_for_budget(fit.test_predicted, costs, budget)
    routed = _routed(f"ERP (budget {budget:g})",
                     np.asarray(route(fit.test_predicted, costs, cost_weight)), fit)
    results.append(routed)
    budget_report = {"budget": budget, "cost_weight": cost_weight,
                     "test_mean_cost": routed.mean_cost, "test_mean_reward": routed.mean_reward}
  grid = cost_weight_grid(fit.test_predicted, costs, num=num_cost_weights)
  return RunSummary(
      dataset=fit.test.name,
      llms=fit.test.llms,
      r2_per_llm={name: float(v) for name, v in zip(fit.test.llms, r2)},
      r2_overall=float(metrics.r2(fit.test_predicted, fit.test_rewards, axis=None)),
      results=tuple(results),
      frontier=frontier.sweep(fit.test_predicted, fit.test_rewards, costs, grid),
      budget=budget_report,
      # Both splits' loaders often report the same facts (e.g. a prefix computed on train).
      notes=tuple(dict.fromkeys(fit.train.notes + fit.test.notes)),
  )


def write_outputs(
    summary: RunSummary, fit: FittedERP, out_dir: str | os.PathLike[str]
) -> dict[str, pathlib.Path]:
  """Writes summary.json, summary.md, predictions.parquet and reward_vs_cost.png to `out_dir`."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  files = {name: out / name for name in
           ("summary.json", "summary.md", "predictions.parquet", "reward_vs_cost.png")}
  atomic_write_text(files["summary.json"], json.dumps(summary.to_dict(), indent=2))
  atomic_write_text(files["summary.md"], summary.to_markdown())
  columns = {"prompt_id": list(fit.test.prompt_ids), "category": list(fit.test.categories)}
  for j, llm in enumerate(fit.test.llms):
    columns[f"{llm}|predicted"] = fit.test_predicted[:, j]
    columns[f"{llm}|observed"] = fit.test_rewards[:, j]
  columns["routed_lambda0"] = [fit.test.llms[i] for i in
                               np.asarray(route(fit.test_predicted, fit.test.costs, 0.0))]
  atomic_write(files["predictions.parquet"], lambda p: pq.write_table(pa.table(columns), p))
  oracle = frontier.sweep(
      fit.test_rewards, fit.test_rewards, fit.test.costs, summary.frontier.lambdas)
  figure = plots.reward_vs_cost(
      {"ERP": summary.frontier, plots.ORACLE: oracle},
      fit.test.costs, fit.test_rewards.mean(axis=0), fit.test.llms)
  figure.suptitle(f"{summary.dataset}: reward vs cost")
  atomic_write(files["reward_vs_cost.png"], lambda p: figure.savefig(p, format="png", dpi=120))
  return files
