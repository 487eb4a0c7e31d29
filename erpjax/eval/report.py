"""The one report of `erpjax run` and `erpjax evaluate`: routers' test utilities in, metrics.json,
report.md and PNG plots out.

Every router is given as utilities `[N, M]` on one test split (ERP's are its predicted expected
rewards; what its safe rule routes on at λ = 0 comes as `at_zero`) and swept over its own grid of
cost weights λ (`erpjax.routing.cost_weight_grid` of its own utilities: a λ means nothing across
utility scales, so a grid shared by routers would be stretched by the one with the widest scale
and leave the others a few points each). The report adds the oracle (utilities = observed test
rewards) and the single LLMs, and optionally a random permutation of one router's choices at every
λ (same cost mix, no prompt information) and the chosen router at a mean-cost budget. `run`
reports the chosen router with these baselines; `evaluate` adds the peer routers.
"""

import dataclasses
import io
import json
import logging
import math
import pathlib
import re
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from erpjax.eval import frontier as fr
from erpjax.eval import metrics
from erpjax.eval.frontier import ORACLE
from erpjax.eval.peers import permute_choices
from erpjax.files import atomic_write_bytes
from erpjax.routing import cost_weight_for_budget, cost_weight_grid

log = logging.getLogger(__name__)

EQUAL_COSTS = ("all LLMs have the same routing cost, so no cost weight changes a routing: routers "
               "are compared at λ = 0 (AIQ, APGR and CPT need a cost range)")


@dataclasses.dataclass(frozen=True, eq=False)
class EvalSet:
  """Observed test data every router is scored on.

  Attributes:
    rewards: `[N, M]` observed (estimated) expected rewards.
    route_costs: `[M]` cost per call each router trades off against utility.
    call_costs: optional `[N, M]` observed per-call costs; when given, costs are measured with them.
    categories: optional `[N]` category names.
    llm_names: `[M]` names; defaults to llm0..llm{M-1}.
    name: the dataset (test split) the report is titled with.
    notes: facts about the data to print with the report (e.g. prompts left out).
  """

  rewards: np.ndarray
  route_costs: np.ndarray
  call_costs: np.ndarray | None = None
  categories: np.ndarray | None = None
  llm_names: Sequence[str] | None = None
  name: str = "test"
  notes: Sequence[str] = ()

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
    set_("notes", tuple(self.notes))

  @property
  def equal_costs(self) -> bool:
    """True when every LLM has the same routing cost: then λ changes no routing."""
    return bool(np.ptp(self.route_costs) == 0)


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


def _at_cost_weight0(data: EvalSet, choice: np.ndarray) -> dict:
  out = _choice_summary(data, choice)
  if data.categories is not None:
    out["by_category"] = {str(c): _choice_summary(data, choice, data.categories == c)
                          for c in np.unique(data.categories)}
  return out


def _per_llm(values: np.ndarray, names: Sequence[str]) -> dict[str, float]:
  return {name: float(v) for name, v in zip(names, values)}


def prediction_metrics(pred, data: EvalSet) -> dict:
  """How well `pred` `[N, M]` predicts the observed rewards.

  Headline values average per-LLM (R², Pearson, Spearman) or per-LLM-pair (pairwise AUROC)
  values, as the ERP paper does; `*_pooled` pool every (prompt, LLM) cell, which credits knowing
  each LLM's average reward and so reads higher than any per-LLM value can justify.
  """
  names = data.llm_names
  r2 = metrics.r2(pred, data.rewards, axis=0)
  pearson = metrics.pearson(pred, data.rewards, axis=0)
  spearman = metrics.spearman(pred, data.rewards, axis=0)
  per_pair = metrics.pairwise_auroc_per_pair(pred, data.rewards)

  def mean(values):
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan

  out = {
      "r2": metrics.mean_r2(pred, data.rewards),
      "r2_per_llm": _per_llm(r2, names),
      "r2_pooled": metrics.r2(pred, data.rewards, axis=None),
      "pearson": mean(pearson),
      "pearson_per_llm": _per_llm(pearson, names),
      "pearson_pooled": metrics.pearson(pred, data.rewards, axis=None),
      "spearman": mean(spearman),
      "spearman_per_llm": _per_llm(spearman, names),
      "spearman_pooled": metrics.spearman(pred, data.rewards, axis=None),
      "pairwise_auroc": metrics.pairwise_auroc(pred, data.rewards),
      "pairwise_auroc_per_pair": {f"{names[i]} | {names[j]}": float(per_pair[i, j])
                                  for i in range(len(names)) for j in range(i + 1, len(names))},
      "pairwise_auroc_pooled": metrics.pooled_pairwise_auroc(pred, data.rewards),
  }
  if data.categories is not None:
    out["r2_by_category"] = metrics.r2_by_category(pred, data.rewards, data.categories)
  return out


def _family_metrics(f: fr.Frontier, single_cost, single_reward, interval: fr.CostInterval,
                    levels: Sequence[float], equal_costs: bool) -> dict:
  hull = fr.nondecreasing_hull(f.cost, f.reward)
  aiq = fr.aiq(hull, interval)
  gap = fr.gap_recovery(hull, single_cost, single_reward, levels)
  out = {
      "cost_weights": f.cost_weights.tolist(),
      "frontier": {
          "cost": f.cost.tolist(), "reward": f.reward.tolist(), "regret": f.regret.tolist()
      },
      "hull": {"cost": hull.cost.tolist(), "reward": hull.reward.tolist()},
      "aiq": aiq.value,
      "aiq_uncovered": aiq.uncovered,
      "aiq_reason": aiq.reason,
      "apgr": gap.apgr,
      "gap_uncovered": gap.uncovered,
      "gap_reason": gap.reason,
  }
  out.update({_cpt_key(p): v for p, v in gap.cpt.items()})
  if equal_costs:
    # The interval may still be non-empty with observed call costs, but every router is one point
    # and its "area" would be its λ = 0 reward under another name; say what is going on instead.
    out.update({"aiq": math.nan, "aiq_uncovered": 0.0, "aiq_reason": EQUAL_COSTS,
                "apgr": math.nan, "gap_uncovered": 0.0, "gap_reason": EQUAL_COSTS})
    out.update({_cpt_key(p): math.nan for p in levels})
  return out


def _cpt_key(p: float) -> str:
  return f"cpt{round(100 * p)}"


def _role(name: str, *, chosen, candidates, label_free_peers, permuted) -> str:
  if name == chosen:
    return "chosen"
  if name == ORACLE:
    return "oracle (reads test rewards)"
  if permuted and name == f"{permuted} (permuted)":
    return "control"
  if name in candidates:
    return "candidate"
  if name in label_free_peers:
    return "label-free peer"
  return "peer"


def evaluate(utilities: Mapping[str, np.ndarray], data: EvalSet, *, num_cost_weights: int = 50,
             chosen: str | None = None, predictions: Mapping[str, np.ndarray] | None = None,
             candidates: Collection[str] = (), label_free_peers: Collection[str] = (),
             best_single_llm: str | None = None, budget: float | None = None,
             permuted: str | None = None, interval: fr.CostInterval | None = None,
             levels: Sequence[float] = (0.5, 0.8), seed: int = 0,
             selection: Sequence[Mapping] = (),
             at_zero: Mapping[str, np.ndarray] | None = None) -> tuple[dict, dict]:
  """Every metric of every router, JSON-ready, and each router's λ-sweep.

  Args:
    utilities: {router name: `[N, M]` test utilities}; "oracle" is reserved (added here).
    data: the observed test data.
    num_cost_weights: size of each router's own cost-weight grid (`cost_weight_grid`).
    chosen: the router the report is about (ERP): the headline line, the marked frontier, the
      budget routing.
    predictions: {router name: `[N, M]` predicted rewards} of the routers that predict rewards
      (ERP, its candidates, kNN, MF, MLP); they get `prediction_metrics`. A router may route on
      utilities other than its predictions (e.g. predictions less safety margins).
    candidates: names of routers that are candidate predictors of the chosen router.
    label_free_peers: names of peers that read no test labels; the headline compares the chosen
      router's AIQ with the best of them.
    best_single_llm: the LLM a user would send everything to, chosen on the TRAIN split; None =
      the best on the test split (an optimistic baseline, said so in the report).
    budget: a mean routing cost per prompt: the chosen router is routed at the cost weight that
      meets it on these prompts (`cost_weight_for_budget`: predictions only, no rewards).
    permuted: a router name; adds "<name> (permuted)", its choices at each λ permuted (seeded).
    interval: cost interval of AIQ; default cheapest..most expensive single LLM.
    levels: PGR levels of CPT, e.g. 0.5 -> "cpt50".
    seed: seed of the permutation.
    at_zero: {router name: `[N, M]` utilities it routes on at λ = 0 only}, for routers whose
      rule differs there (ERP's safe rule: predictions less per-LLM margins at λ = 0, the
      predictions above it); its grid still comes from `utilities`.
    selection: how the chosen router's predictor was selected on the train split: one row
      {column: value} per candidate (e.g. cross-validated reward at λ = 0 and AIQ), reported as
      given in a table of its own.

  Returns:
    (metrics, frontiers): metrics as a dict of plain Python values (nan where undefined), and
    {router name: Frontier} including the oracle and the permuted router.
  """
  predictions = dict(predictions or {})
  if ORACLE in utilities:
    raise ValueError(f"{ORACLE!r} is added by the report; do not pass it")
  at_zero = dict(at_zero or {})
  named = [*predictions, *at_zero, *candidates, *label_free_peers, *([chosen] if chosen else []),
           *([permuted] if permuted else [])]
  for name in named:
    if name not in utilities:
      raise ValueError(f"unknown router {name!r}; have {sorted(utilities)}")
  if budget is not None and chosen is None:
    raise ValueError("a budget routes the chosen router: pass chosen")
  if best_single_llm is not None and best_single_llm not in data.llm_names:
    raise ValueError(f"unknown LLM {best_single_llm!r}; have {data.llm_names}")
  single_cost, single_reward = fr.single_llm_points(data.rewards, data.route_costs, data.call_costs)
  interval = interval or fr.default_interval(single_cost)

  families = {**{k: np.asarray(u, dtype=np.float64) for k, u in utilities.items()},
              ORACLE: data.rewards}
  grids = {name: cost_weight_grid(u, data.route_costs, num=num_cost_weights)
           for name, u in families.items()}

  def utilities_at(name, w):
    return at_zero[name] if w == 0 and name in at_zero else families[name]

  choices = {name: [fr.route(utilities_at(name, w), data.route_costs, float(w))
                    for w in grids[name]] for name in families}
  if permuted:
    name = f"{permuted} (permuted)"
    grids[name] = grids[permuted]
    choices[name] = [permute_choices(c, seed) for c in choices[permuted]]

  frontiers, routers = {}, {}
  for name, family in choices.items():
    frontiers[name] = fr.measure(family, grids[name], data.rewards, data.route_costs,
                                 data.call_costs)
    routers[name] = {
        "role": _role(name, chosen=chosen, candidates=candidates,
                      label_free_peers=label_free_peers, permuted=permuted),
        # Every grid starts at λ = 0.
        "cost_weight_0": _at_cost_weight0(data, family[0]),
        **_family_metrics(frontiers[name], single_cost, single_reward, interval, levels,
                          data.equal_costs),
    }
    if name in predictions:
      routers[name]["prediction"] = prediction_metrics(predictions[name], data)

  weak, strong = fr.weak_and_strong(single_cost, single_reward)
  n = data.rewards.shape[0]
  single = {llm: _choice_summary(data, np.full(n, i)) for i, llm in enumerate(data.llm_names)}
  best_name = best_single_llm or data.llm_names[strong]
  result = {
      "dataset": data.name,
      "llms": list(data.llm_names),
      "num_prompts": int(n),
      "num_cost_weights": int(num_cost_weights),
      "cost_measure": "observed per-call costs" if data.call_costs is not None else "routing costs",
      "equal_costs": data.equal_costs,
      "cost_interval": [interval.lo, interval.hi],
      "weak_llm": data.llm_names[weak],
      "strong_llm": data.llm_names[strong],
      "cpt_levels": {_cpt_key(p): float(p) for p in levels},
      "chosen": chosen,
      "best_single_llm": {"name": best_name,
                          "chosen_on": "train" if best_single_llm else "test",
                          **single[best_name]},
      "single_llms": single,
      "routers": routers,
      "budget": None,
      "notes": list(data.notes),
  }
  if budget is not None:
    cost_weight = cost_weight_for_budget(families[chosen], data.route_costs, budget,
                                         at_zero=at_zero.get(chosen))
    choice = fr.route(utilities_at(chosen, cost_weight), data.route_costs, cost_weight)
    result["budget"] = {"router": chosen, "budget": float(budget), "cost_weight": cost_weight,
                        "route_cost": float(data.route_costs[choice].mean()),
                        **_choice_summary(data, choice)}
  result["selection"] = [dict(row) for row in selection]
  result["headline"] = headline(result)
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


def _finite(x) -> bool:
  return x is not None and math.isfinite(x)


def headline(result: dict) -> str | None:
  """One line answering "should I route, and with what?": the chosen router's λ = 0 reward against
  the best single LLM (and the share of the oracle's gap it closes), its AIQ against the best
  label-free peer's; None without a chosen router."""
  chosen = result["chosen"]
  if chosen is None:
    return None
  routers = result["routers"]
  mine, oracle = routers[chosen], routers[ORACLE]
  best = result["best_single_llm"]
  x, y, o = mine["cost_weight_0"]["reward"], best["reward"], oracle["cost_weight_0"]["reward"]
  gap = (f"{100 * (x - y) / (o - y):+.0f}% of the oracle gap" if o > y
         else "the oracle is no better than it")
  line = (f"{result['dataset']}: default router {chosen}: reward {_fmt(x)} at λ=0 vs best single "
          f"LLM {_fmt(y)} ({best['name']}, best on {best['chosen_on']}; {gap})")
  peers = {n: r for n, r in routers.items() if r["role"] == "label-free peer"}
  if result["equal_costs"]:
    line += "; equal costs, so no AIQ"
    if peers:
      name = max(peers, key=lambda n: peers[n]["cost_weight_0"]["reward"])
      reward = peers[name]["cost_weight_0"]["reward"]
      line += f": best label-free peer {_fmt(reward)} at λ=0 ({name})"
    return line
  line += f", AIQ {_fmt(mine['aiq'])}"
  scored = {n: r for n, r in peers.items() if _finite(r["aiq"])}
  if scored:
    name = max(scored, key=lambda n: scored[n]["aiq"])
    line += f" vs best label-free peer {_fmt(scored[name]['aiq'])} ({name})"
  else:
    line += f" (oracle {_fmt(oracle['aiq'])})"
  return line


def markdown(result: dict) -> str:
  """The metrics of `evaluate` as a Markdown report, the headline first."""
  cpts = list(result["cpt_levels"])
  equal = result["equal_costs"]
  grid = ("All LLMs cost the same: λ changes no routing, so every figure is at λ = 0."
          if equal else
          f"Each router is swept over its own grid of {result['num_cost_weights']} cost weights λ, "
          "from 0 to the λ at which it sends every prompt to the cheapest LLM.")
  best = result["best_single_llm"]
  lines = [f"# Routing evaluation: {result['dataset']}", ""]
  if result["headline"]:
    lines += [f"**{result['headline']}**", ""]
  lines += [
      f"{result['num_prompts']} test prompts, {len(result['llms'])} LLMs. Costs: "
      f"{result['cost_measure']}. AIQ cost interval: [{_fmt(result['cost_interval'][0])}, "
      f"{_fmt(result['cost_interval'][1])}]. Weak (cheapest) LLM: {result['weak_llm']}; strong "
      f"(best on test) LLM: {result['strong_llm']}; best single LLM on {best['chosen_on']}: "
      f"{best['name']}. {grid}", "",
      "## Routers", "",
  ]
  if equal:
    lines += ["| router | role | reward (λ=0) | cost (λ=0) | regret (λ=0) | top-1 (λ=0) |",
              "|---" * 6 + "|"]
  else:
    lines += ["| router | role | reward (λ=0) | cost (λ=0) | regret (λ=0) | top-1 (λ=0) | AIQ | "
              "APGR | " + " | ".join(c.upper() for c in cpts) + " |",
              "|---" * (8 + len(cpts)) + "|"]
  notes: dict[str, list[str]] = {}  # note -> routers it applies to
  for name, r in result["routers"].items():
    l0 = r["cost_weight_0"]
    cells = [l0["reward"], l0["cost"], l0["regret"], l0["top1"]]
    if not equal:
      cells += [r["aiq"], r["apgr"]] + [r[c] for c in cpts]
      if r["gap_reason"]:
        notes.setdefault(f"APGR/CPT undefined or partial: {r['gap_reason']}", []).append(name)
      if r["aiq_uncovered"] > 0:
        notes.setdefault(f"the hull is extrapolated over {r['aiq_uncovered']:.1%} of the AIQ "
                         "cost interval", []).append(name)
    lines.append(f"| {name} | {r['role']} | " + " | ".join(_fmt(c) for c in cells) + " |")
  lines.append("")
  if notes:
    lines += [f"- {note} ({', '.join(names)})" for note, names in notes.items()] + [""]
  if result["budget"]:
    b = result["budget"]
    lines += [f"{b['router']} at a budget of {b['budget']:g} per prompt "
              f"(λ = {b['cost_weight']:.4g}, chosen on these prompts' predictions): "
              f"reward {_fmt(b['reward'])}, routing cost {_fmt(b['route_cost'])}, "
              f"cost {_fmt(b['cost'])}, regret {_fmt(b['regret'])}.", ""]
  predictors = {n: r["prediction"] for n, r in result["routers"].items() if "prediction" in r}
  if predictors:
    lines += ["## Reward prediction", "",
              "R² and Pearson/Spearman: mean of the per-LLM values; pairwise AUROC: mean over LLM "
              "pairs. Pooled: every (prompt, LLM) cell at once, which credits knowing each LLM's "
              "average.", "",
              "| router | R² | pairwise AUROC | Pearson | Spearman | R² (pooled) | "
              "pairwise AUROC (pooled) |", "|---" * 7 + "|"]
    lines += [f"| {n} | {_fmt(p['r2'])} | {_fmt(p['pairwise_auroc'])} | {_fmt(p['pearson'])} | "
              f"{_fmt(p['spearman'])} | {_fmt(p['r2_pooled'])} | "
              f"{_fmt(p['pairwise_auroc_pooled'])} |" for n, p in predictors.items()]
    lines += ["", "R² per LLM:", "", "| router | " + " | ".join(result["llms"]) + " |",
              "|---" * (1 + len(result["llms"])) + "|"]
    lines += [f"| {n} | " + " | ".join(_fmt(p["r2_per_llm"][m]) for m in result["llms"]) + " |"
              for n, p in predictors.items()]
    lines.append("")
  lines += ["## Single LLMs", "", "| LLM | cost | reward | regret | top-1 |",
            "|---|---|---|---|---|"]
  lines += [f"| {n} | {_fmt(s['cost'])} | {_fmt(s['reward'])} | {_fmt(s['regret'])} | "
            f"{_fmt(s['top1'])} |" for n, s in result["single_llms"].items()]
  if result["selection"]:
    columns = list(dict.fromkeys(k for row in result["selection"] for k in row))
    lines += ["", "## Predictor selection (cross-validation on the train split)", "",
              "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    lines += ["| " + " | ".join(v if isinstance(v, str) else _fmt(v)
                                for v in (row.get(c) for c in columns)) + " |"
              for row in result["selection"]]
  if result["notes"]:
    lines += ["", "## Data notes", ""] + [f"- {note}" for note in result["notes"]]
  return "\n".join(lines) + "\n"


def _png(fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120)
  return buf.getvalue()


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "router"


def write_report(out_dir, utilities: Mapping[str, np.ndarray], data: EvalSet, *,
                 scatter_router: str | None = None, **options) -> dict:
  """`evaluate`, then writes to `out_dir`: metrics.json (strict JSON, null for undefined values),
  report.md, and (with matplotlib) reward_vs_cost.png, regret_vs_cost.png and
  pred_vs_observed_<router>.png (the
  predicted-vs-observed scatter of `scatter_router`; default: the chosen router if it has
  predictions, else the first router with predictions). Each file is written atomically; each
  plot has a name of its own.

  Args:
    out_dir: the folder (created if missing).
    utilities, data: as for `evaluate`.
    scatter_router: the router whose predictions are scattered against the observed rewards.
    **options: `evaluate`'s keyword options.

  Returns:
    The metrics, as written to metrics.json (with None for nan).
  """
  predictions = options.get("predictions") or {}
  if scatter_router is None and predictions:
    chosen = options.get("chosen")
    scatter_router = chosen if chosen in predictions else next(iter(predictions))
  if scatter_router is not None and scatter_router not in predictions:
    raise ValueError(f"scatter_router {scatter_router!r} has no predictions")
  result, frontiers = evaluate(utilities, data, **options)
  result = _json_ready(result)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  atomic_write_bytes(out / "metrics.json", json.dumps(result, indent=2, allow_nan=False).encode())
  atomic_write_bytes(out / "report.md", markdown(result).encode())
  try:
    from erpjax.eval import plots  # matplotlib is the optional extra erpjax[plots]
  except ImportError:
    log.info("matplotlib not installed: plots skipped; pip install 'erpjax[plots]'")
    return result

  single = result["single_llms"]
  single_cost = np.array([s["cost"] for s in single.values()])
  chosen, budget = result["chosen"], result["budget"]

  def budget_point(field):
    if budget is None:
      return {}
    return {f"{chosen} at budget {budget['budget']:g}": (budget["cost"], budget[field])}

  title = (f"{result['dataset']}: {{}} vs cost, each router swept over its own λ grid"
           + (f" ({chosen} chosen)" if chosen else ""))
  fig = plots.reward_vs_cost(frontiers, single_cost, [s["reward"] for s in single.values()],
                             data.llm_names, chosen=chosen, points=budget_point("reward"))
  fig.suptitle(title.format("reward"))
  atomic_write_bytes(out / "reward_vs_cost.png", _png(fig))
  fig = plots.regret_vs_cost(frontiers, single_cost, [s["regret"] for s in single.values()],
                             data.llm_names, chosen=chosen, points=budget_point("regret"))
  fig.suptitle(title.format("regret"))
  atomic_write_bytes(out / "regret_vs_cost.png", _png(fig))
  if scatter_router is not None:
    fig = plots.predicted_vs_observed(predictions[scatter_router], data.rewards, data.llm_names,
                                      f"{scatter_router}: predicted vs observed reward")
    atomic_write_bytes(out / f"pred_vs_observed_{_slug(scatter_router)}.png", _png(fig))
  return result
