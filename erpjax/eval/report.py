"""Evaluate named routers' test utilities and write `metrics.json`, `report.md` and PNG plots.

Every router is given as utilities `[N, M]` on the test set (ERP's predicted expected rewards are
one more such array) and swept over one λ grid. The report adds the oracle (utilities = observed
test rewards) and the single LLMs itself, and optionally a random permutation of one router's
choices at every λ (same cost mix, no prompt information).
"""

import dataclasses
import io
import json
import math
import pathlib
import re
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from erpjax.eval import frontier as fr
from erpjax.eval import metrics, plots
from erpjax.eval.peers import permute_choices
from erpjax.files import atomic_write_bytes


@dataclasses.dataclass(frozen=True, eq=False)
class EvalSet:
  """Observed test data every router is scored on.

  Attributes:
    rewards: `[N, M]` observed (estimated) expected rewards.
    route_costs: `[M]` cost per call each router trades off against utility.
    call_costs: optional `[N, M]` observed per-call costs; when given, costs are measured with them.
    categories: optional `[N]` category names.
    llm_names: `[M]` names; defaults to llm0..llm{M-1}.
  """

  rewards: np.ndarray
  route_costs: np.ndarray
  call_costs: np.ndarray | None = None
  categories: np.ndarray | None = None
  llm_names: Sequence[str] | None = None

  def __post_init__(self):
    def set_(name, value):
      object.__setattr__(self, name, value)

    set_("rewards", np.asarray(self.rewards, dtype=np.float64))
    set_("route_costs", np.asarray(self.route_costs, dtype=np.float64))
    n, m = self.rewards.shape if self.rewards.ndim == 2 else (None, None)
    if m is None or self.route_costs.shape != (m,):
      raise ValueError(f"need rewards [N, M] and route_costs [M], got {self.rewards.shape}, "
                       f"{self.route_costs.shape}")
    # A missing reward (NaN) would make the reward of a routing unknown: drop such prompts first.
    if not np.all(np.isfinite(self.rewards)):
      raise ValueError(
          "rewards must be finite; drop prompts with missing rewards before evaluating")
    if self.call_costs is not None:
      set_("call_costs", np.asarray(self.call_costs, dtype=np.float64))
      if self.call_costs.shape != (n, m):
        raise ValueError(f"call_costs {self.call_costs.shape} must be [N, M] = [{n}, {m}]")
      if not np.all(np.isfinite(self.call_costs)):
        raise ValueError("call_costs must be finite; pass None to measure with route_costs")
    if self.categories is not None:
      set_("categories", np.asarray(self.categories, dtype=str))
      if self.categories.shape != (n,):
        raise ValueError(f"categories {self.categories.shape} must be [N] = [{n}]")
    names = list(self.llm_names) if self.llm_names is not None else [f"llm{i}" for i in range(m)]
    if len(names) != m or len(set(names)) != m:
      raise ValueError(f"need {m} distinct LLM names, got {names}")
    set_("llm_names", names)


def _choice_summary(data: EvalSet, choice: np.ndarray, rows=slice(None)) -> dict:
  rewards = data.rewards[rows]
  call_costs = data.call_costs[rows] if data.call_costs is not None else None
  choice = choice[rows]
  return {
      "reward": float(metrics.chosen(rewards, choice).mean()),
      "cost": float(fr.realized_costs(choice, data.route_costs, call_costs).mean()),
      "regret": metrics.mean_regret(rewards, choice),
      "top1": metrics.top1_accuracy(rewards, choice),
  }


def _at_lambda0(data: EvalSet, choice: np.ndarray) -> dict:
  out = _choice_summary(data, choice)
  if data.categories is not None:
    out["by_category"] = {str(c): _choice_summary(data, choice, data.categories == c)
                          for c in np.unique(data.categories)}
  return out


def _per_llm(values: np.ndarray, names: Sequence[str]) -> dict[str, float]:
  return {name: float(v) for name, v in zip(names, values)}


def prediction_metrics(pred, data: EvalSet) -> dict:
  """How well `pred` `[N, M]` predicts the observed rewards: R² (per LLM, pooled, per category),
  Pearson and Spearman (pooled and per LLM) and the pairwise AUROC."""
  out = {
      "r2": metrics.r2(pred, data.rewards, axis=None),
      "r2_per_llm": _per_llm(metrics.r2(pred, data.rewards, axis=0), data.llm_names),
      "pearson": metrics.pearson(pred, data.rewards, axis=None),
      "pearson_per_llm": _per_llm(metrics.pearson(pred, data.rewards, axis=0), data.llm_names),
      "spearman": metrics.spearman(pred, data.rewards, axis=None),
      "spearman_per_llm": _per_llm(metrics.spearman(pred, data.rewards, axis=0), data.llm_names),
      "pairwise_auroc": metrics.pairwise_auroc(pred, data.rewards),
  }
  if data.categories is not None:
    out["r2_by_category"] = metrics.r2_by_category(pred, data.rewards, data.categories)
  return out


def _family_metrics(f: fr.Frontier, single_cost, single_reward, interval: fr.CostInterval,
                    levels: Sequence[float]) -> dict:
  hull = fr.nondecreasing_hull(f.cost, f.reward)
  aiq = fr.aiq(hull, interval)
  gap = fr.gap_recovery(hull, single_cost, single_reward, levels)
  out = {
      "frontier": {
          "cost": f.cost.tolist(), "reward": f.reward.tolist(), "regret": f.regret.tolist()
      },
      "hull": {"cost": hull.cost.tolist(), "reward": hull.reward.tolist()},
      "aiq": aiq.value,
      "aiq_uncovered": aiq.uncovered,
      "apgr": gap.apgr,
      "gap_uncovered": gap.uncovered,
      "gap_reason": gap.reason,
  }
  out.update({_cpt_key(p): v for p, v in gap.cpt.items()})
  return out


def _cpt_key(p: float) -> str:
  return f"cpt{round(100 * p)}"


def evaluate(utilities: Mapping[str, np.ndarray], data: EvalSet, lambdas, *,
             reward_predictors: Collection[str] = (), permuted: str | None = None,
             interval: fr.CostInterval | None = None, levels: Sequence[float] = (0.5, 0.8),
             seed: int = 0) -> tuple[dict, dict[str, fr.Frontier]]:
  """Every metric of every router, JSON-ready, and each router's λ-sweep.

  Args:
    utilities: {router name: `[N, M]` test utilities}; "oracle" is reserved (added here).
    data: the observed test data.
    lambdas: `[L]` λ grid shared by all routers (see `frontier.lambda_grid`).
    reward_predictors: names of routers whose utilities are predicted rewards (ERP, kNN, MF, MLP);
      they also get `prediction_metrics`.
    permuted: a router name; adds "<name> (permuted)", its choices at each λ permuted (seeded).
    interval: cost interval of AIQ; default cheapest..most expensive single LLM.
    levels: PGR levels of CPT, e.g. 0.5 -> "cpt50".
    seed: seed of the permutation.

  Returns:
    (metrics, frontiers): metrics as a dict of plain Python values (nan where undefined), and
    {router name: Frontier} including the oracle and the permuted router.
  """
  if plots.ORACLE in utilities:
    raise ValueError(f"{plots.ORACLE!r} is added by the report; do not pass it")
  for name in [*reward_predictors, *([permuted] if permuted else [])]:
    if name not in utilities:
      raise ValueError(f"unknown router {name!r}; have {sorted(utilities)}")
  lambdas = np.asarray(lambdas, dtype=np.float64)
  if lambdas.ndim != 1 or lambdas.size == 0 or np.any(lambdas < 0):
    raise ValueError("lambdas must be a non-empty [L] grid of values >= 0")
  single_cost, single_reward = fr.single_llm_points(data.rewards, data.route_costs, data.call_costs)
  interval = interval or fr.default_interval(single_cost)

  families = {**{k: np.asarray(u, dtype=np.float64) for k, u in utilities.items()},
              plots.ORACLE: data.rewards}
  choices = {name: [fr.route(u, data.route_costs, float(lam)) for lam in lambdas]
             for name, u in families.items()}
  lambda0 = {name: fr.route(u, data.route_costs, 0.0) for name, u in families.items()}
  if permuted:
    name = f"{permuted} (permuted)"
    choices[name] = [permute_choices(c, seed) for c in choices[permuted]]
    lambda0[name] = permute_choices(lambda0[permuted], seed)

  frontiers, routers = {}, {}
  for name, family in choices.items():
    frontiers[name] = fr.measure(family, lambdas, data.rewards, data.route_costs, data.call_costs)
    routers[name] = {
        "lambda0": _at_lambda0(data, lambda0[name]),
        **_family_metrics(frontiers[name], single_cost, single_reward, interval, levels),
    }
    if name in reward_predictors:
      routers[name]["prediction"] = prediction_metrics(families[name], data)

  weak, strong = fr.weak_and_strong(single_cost, single_reward)
  single = {}
  for i, llm in enumerate(data.llm_names):
    choice = np.full(data.rewards.shape[0], i)
    single[llm] = _choice_summary(data, choice)
  result = {
      "llms": list(data.llm_names),
      "num_prompts": int(data.rewards.shape[0]),
      "lambdas": lambdas.tolist(),
      "cost_measure": "observed per-call costs" if data.call_costs is not None else "routing costs",
      "cost_interval": [interval.lo, interval.hi],
      "weak_llm": data.llm_names[weak],
      "strong_llm": data.llm_names[strong],
      "cpt_levels": {_cpt_key(p): float(p) for p in levels},
      "single_llms": single,
      "routers": routers,
  }
  return result, frontiers


def _json_ready(x):
  """NaN and inf become None, so that the file is strict JSON."""
  if isinstance(x, dict):
    return {k: _json_ready(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_ready(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def _fmt(x) -> str:
  return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def markdown(result: dict) -> str:
  """The metrics of `evaluate` as a Markdown report."""
  cpts = list(result["cpt_levels"])
  lines = [
      "# Routing evaluation", "",
      f"{result['num_prompts']} test prompts, {len(result['llms'])} LLMs. Costs: "
      f"{result['cost_measure']}. AIQ cost interval: [{_fmt(result['cost_interval'][0])}, "
      f"{_fmt(result['cost_interval'][1])}]. Weak (cheapest) LLM: {result['weak_llm']}; strong "
      f"(best) LLM: {result['strong_llm']}. λ grid: {len(result['lambdas'])} values in "
      f"[{_fmt(min(result['lambdas']))}, {_fmt(max(result['lambdas']))}].", "",
      "## Routers", "",
      "| router | reward (λ=0) | cost (λ=0) | regret (λ=0) | top-1 (λ=0) | AIQ | APGR | "
      + " | ".join(c.upper() for c in cpts) + " |",
      "|---" * (7 + len(cpts)) + "|",
  ]
  notes: dict[str, list[str]] = {}  # note -> routers it applies to
  for name, r in result["routers"].items():
    l0 = r["lambda0"]
    cells = [l0["reward"], l0["cost"], l0["regret"], l0["top1"], r["aiq"], r["apgr"]]
    cells += [r[c] for c in cpts]
    lines.append(f"| {name} | " + " | ".join(_fmt(c) for c in cells) + " |")
    if r["gap_reason"]:
      notes.setdefault(f"APGR/CPT undefined or partial: {r['gap_reason']}", []).append(name)
    if r["aiq_uncovered"] > 0:
      notes.setdefault(f"the hull is extrapolated over {r['aiq_uncovered']:.1%} of the AIQ cost "
                       "interval", []).append(name)
  lines.append("")
  if notes:
    lines += [f"- {note} ({', '.join(names)})" for note, names in notes.items()] + [""]
  predictors = {n: r["prediction"] for n, r in result["routers"].items() if "prediction" in r}
  if predictors:
    lines += ["## Reward prediction", "",
              "| router | R² | Pearson | Spearman | pairwise AUROC |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {_fmt(p['r2'])} | {_fmt(p['pearson'])} | {_fmt(p['spearman'])} | "
              f"{_fmt(p['pairwise_auroc'])} |" for n, p in predictors.items()]
    lines += ["", "R² per LLM:", "", "| router | " + " | ".join(result["llms"]) + " |",
              "|---" * (1 + len(result["llms"])) + "|"]
    lines += [f"| {n} | " + " | ".join(_fmt(p["r2_per_llm"][m]) for m in result["llms"]) + " |"
              for n, p in predictors.items()]
    lines.append("")
  lines += ["## Single LLMs", "", "| LLM | cost | reward | regret | top-1 |",
            "|---|---|---|---|---|"]
  lines += [f"| {n} | {_fmt(s['cost'])} | {_fmt(s['reward'])} | {_fmt(s['regret'])} | "
            f"{_fmt(s['top1'])} |" for n, s in result["single_llms"].items()]
  return "\n".join(lines) + "\n"


def _png(fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120)
  return buf.getvalue()


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "router"


def write_report(out_dir, utilities: Mapping[str, np.ndarray], data: EvalSet, lambdas, *,
                 reward_predictors: Collection[str] = (), scatter_router: str | None = None,
                 permuted: str | None = None, interval: fr.CostInterval | None = None,
                 levels: Sequence[float] = (0.5, 0.8), seed: int = 0) -> dict:
  """`evaluate`, then write into `out_dir` (created if needed), each file atomically:
  `metrics.json`, `report.md`, `reward_vs_cost.png`, `regret_vs_cost.png` and
  `pred_vs_observed_<router>.png` for `scatter_router` (default: the first reward predictor).

  Returns:
    The metrics dict as written to `metrics.json` (nan and inf as None).
  """
  result, frontiers = evaluate(utilities, data, lambdas, reward_predictors=reward_predictors,
                               permuted=permuted, interval=interval, levels=levels, seed=seed)
  result = _json_ready(result)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  atomic_write_bytes(out / "metrics.json",
                json.dumps(result, indent=1, allow_nan=False).encode())
  atomic_write_bytes(out / "report.md", markdown(result).encode())

  single = result["single_llms"]
  single_cost = np.array([s["cost"] for s in single.values()])
  fig = plots.reward_vs_cost(frontiers, single_cost, [s["reward"] for s in single.values()],
                             data.llm_names)
  fig.suptitle("Reward vs cost: each router swept over λ")
  atomic_write_bytes(out / "reward_vs_cost.png", _png(fig))
  fig = plots.regret_vs_cost(frontiers, single_cost, [s["regret"] for s in single.values()],
                             data.llm_names)
  fig.suptitle("Regret vs cost: each router swept over λ")
  atomic_write_bytes(out / "regret_vs_cost.png", _png(fig))
  scatter_router = scatter_router or next(iter(reward_predictors), None)
  if scatter_router is not None:
    if scatter_router not in utilities:
      raise ValueError(f"unknown scatter_router {scatter_router!r}")
    fig = plots.predicted_vs_observed(utilities[scatter_router], data.rewards, data.llm_names,
                                      f"{scatter_router}: predicted vs observed reward")
    atomic_write_bytes(out / f"pred_vs_observed_{_slug(scatter_router)}.png", _png(fig))
  return result
