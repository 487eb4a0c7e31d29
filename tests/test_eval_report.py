"""The evaluation report on random data.

Checks the files, strict JSON, values equal to the metric functions, each router's own cost-weight
grid, the equal-cost case and the headline line.
"""

import json
import math

import numpy as np
import pytest

from erpjax.eval import frontier as fr
from erpjax.eval import metrics
from erpjax.eval import peers
from erpjax.eval import report
from erpjax.routing import cost_weight_grid

N, M = 80, 4
LLMS = ["tiny", "small", "medium", "large"]


def _data(call_costs: bool) -> tuple[dict, report.EvalSet]:
  rng = np.random.default_rng(0)
  rewards = (rng.random((N, M)) < np.array([0.3, 0.45, 0.6, 0.7])).astype(np.float64)
  route_costs = np.array([0.1, 0.4, 1.0, 3.0])
  data = report.EvalSet(
      rewards=rewards,
      route_costs=route_costs,
      call_costs=route_costs * rng.uniform(0.5, 1.5, (N, M)) if call_costs else None,
      categories=rng.choice(["math", "code"], N),
      llm_names=LLMS,
  )
  utilities = {
      "erp": np.clip(rewards + rng.normal(0, 0.4, (N, M)), 0, 1),
      "knn": rng.random((N, M)),
      "random": peers.RandomRouter(seed=1).utilities(
          peers.RouterData(np.zeros((N, 1)), route_costs)),
      "always large": peers.SingleLLM(3).utilities(peers.RouterData(np.zeros((N, 1)), route_costs)),
  }
  return utilities, data


def _strict_json(text: str):
  def reject(token):
    raise ValueError(f"non-standard JSON constant {token}")
  return json.loads(text, parse_constant=reject)


@pytest.mark.parametrize("call_costs", [False, True])
def test_write_report_files_and_values(tmp_path, call_costs):
  utilities, data = _data(call_costs)
  out = tmp_path / "eval"
  written = report.write_report(out, utilities, data, num_cost_weights=20,
                                predictions={n: utilities[n] for n in ("erp", "knn")},
                                permuted="erp")

  names = sorted(p.name for p in out.iterdir())
  assert names == sorted(["metrics.json", "report.md", "reward_vs_cost.png", "regret_vs_cost.png",
                          "pred_vs_observed_erp.png"])  # and no temporary files left behind
  for png in out.glob("*.png"):
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  result = _strict_json((out / "metrics.json").read_text())
  assert result == written
  assert set(result["routers"]) == {
      "erp", "knn", "random", "always large", "oracle", "erp (permuted)"}

  single_cost, single_reward = fr.single_llm_points(data.rewards, data.route_costs, data.call_costs)
  interval = fr.default_interval(single_cost)
  assert result["cost_interval"] == pytest.approx([interval.lo, interval.hi])
  assert result["weak_llm"] == "tiny"
  assert result["strong_llm"] == LLMS[int(np.argmax(single_reward))]
  for name, u in {**utilities, "oracle": data.rewards}.items():
    r = result["routers"][name]
    # Each router is swept over its own grid, from its own utilities.
    grid = cost_weight_grid(u, data.route_costs, num=20)
    assert r["cost_weights"] == pytest.approx(grid.tolist())
    f = fr.sweep(u, data.rewards, data.route_costs, grid, data.call_costs)
    assert r["frontier"]["cost"] == pytest.approx(f.cost.tolist())
    assert r["frontier"]["reward"] == pytest.approx(f.reward.tolist())
    assert r["frontier"]["regret"] == pytest.approx(f.regret.tolist())
    hull = fr.nondecreasing_hull(f.cost, f.reward)
    assert r["aiq"] == pytest.approx(fr.aiq(hull, interval).value)
    gap = fr.gap_recovery(hull, single_cost, single_reward)
    assert r["apgr"] == pytest.approx(gap.apgr)
    for key, p in [("cpt50", 0.5), ("cpt80", 0.8)]:
      expected = gap.cpt[p]
      assert (r[key] is None) if math.isnan(expected) else r[key] == pytest.approx(expected)
    choice = fr.route(u, data.route_costs, 0.0)
    at0 = r["cost_weight_0"]
    assert at0["reward"] == pytest.approx(metrics.chosen(data.rewards, choice).mean())
    assert r["cost_weight_0"]["regret"] == pytest.approx(metrics.mean_regret(data.rewards, choice))
    assert r["cost_weight_0"]["top1"] == pytest.approx(metrics.top1_accuracy(data.rewards, choice))
    assert r["cost_weight_0"]["cost"] == pytest.approx(
        fr.realized_costs(choice, data.route_costs, data.call_costs).mean())
    math_rows = data.categories == "math"
    assert r["cost_weight_0"]["by_category"]["math"]["reward"] == pytest.approx(
        metrics.chosen(data.rewards[math_rows], choice[math_rows]).mean())
  assert result["routers"]["oracle"]["cost_weight_0"]["regret"] == 0
  # A single LLM's routing changes with no λ: its grid is [0] and its frontier one point.
  assert result["routers"]["always large"]["cost_weights"] == [0.0]
  assert result["routers"]["always large"]["frontier"]["reward"] == pytest.approx(
      [data.rewards[:, 3].mean()])

  pred = result["routers"]["erp"]["prediction"]
  erp = utilities["erp"]
  assert list(pred["r2_per_llm"].values()) == pytest.approx(metrics.r2(erp, data.rewards).tolist())
  # Headline R² = the mean of the per-LLM values; the pooled one beside it.
  assert pred["r2"] == pytest.approx(np.mean(metrics.r2(erp, data.rewards)))
  assert pred["r2_pooled"] == pytest.approx(metrics.r2(erp, data.rewards, axis=None))
  assert pred["pearson_pooled"] == pytest.approx(metrics.pearson(erp, data.rewards))
  assert pred["spearman_pooled"] == pytest.approx(metrics.spearman(erp, data.rewards))
  assert pred["pearson"] == pytest.approx(np.mean(metrics.pearson(erp, data.rewards, axis=0)))
  assert pred["pairwise_auroc"] == pytest.approx(metrics.pairwise_auroc(erp, data.rewards))
  assert pred["pairwise_auroc_pooled"] == pytest.approx(
      metrics.pooled_pairwise_auroc(erp, data.rewards))
  assert len(pred["pairwise_auroc_per_pair"]) == M * (M - 1) // 2
  assert pred["r2_by_category"] == pytest.approx(
      metrics.r2_by_category(erp, data.rewards, data.categories))
  assert "prediction" not in result["routers"]["random"]

  # The permuted router sends the same number of prompts to each LLM as ERP at every λ.
  permuted = result["routers"]["erp (permuted)"]
  if not call_costs:
    assert permuted["frontier"]["cost"] == pytest.approx(
        result["routers"]["erp"]["frontier"]["cost"])

  md = (out / "report.md").read_text()
  for name in result["routers"]:
    assert f"| {name} |" in md
  assert "AIQ" in md and "pairwise AUROC" in md and "| large |" in md
  assert "R² (pooled)" in md
  # Without a chosen router there is no headline.
  assert result["headline"] is None and result["chosen"] is None


def test_report_rejects_bad_arguments(tmp_path):
  utilities, data = _data(False)
  with pytest.raises(ValueError, match="oracle"):
    report.evaluate({"oracle": data.rewards}, data)
  with pytest.raises(ValueError, match="unknown router"):
    report.evaluate(utilities, data, predictions={"mlp": utilities["knn"]})
  with pytest.raises(ValueError, match="num >= 1"):
    report.evaluate(utilities, data, num_cost_weights=0)
  with pytest.raises(ValueError, match="budget"):
    report.evaluate(utilities, data, budget=1.0)
  with pytest.raises(ValueError, match="unknown LLM"):
    report.evaluate(utilities, data, best_single_llm="huge")
  with pytest.raises(ValueError, match="LLM names"):
    report.EvalSet(data.rewards, data.route_costs, llm_names=["a", "b"])
  with pytest.raises(ValueError, match="finite"):
    report.EvalSet(np.where(data.rewards > 0, np.nan, 0.0), data.route_costs)


def test_degenerate_gap_is_null_with_a_reason(tmp_path):
  # The cheapest LLM is also the best: APGR and CPT are undefined, reported as null with a reason.
  rewards = np.tile([1.0, 0.0], (10, 1))
  data = report.EvalSet(rewards, np.array([0.1, 1.0]))
  result = report.write_report(tmp_path, {"r": np.zeros((10, 2))}, data)
  r = _strict_json((tmp_path / "metrics.json").read_text())["routers"]["r"]
  assert r["apgr"] is None and r["cpt50"] is None and "denominator" in r["gap_reason"]
  assert result["routers"]["r"]["gap_reason"] == r["gap_reason"]
  assert "denominator" in (tmp_path / "report.md").read_text()


def test_each_router_has_its_own_grid_so_a_wide_peer_changes_nothing(tmp_path):
  # A peer whose utilities are a million times wider would stretch a shared λ grid so far that
  # ERP's sweep jumps from λ = 0 to the all-cheapest routing; with per-router grids ERP's frontier
  # and AIQ are the same with or without it.
  utilities, data = _data(False)
  alone, _ = report.evaluate({"erp": utilities["erp"]}, data, num_cost_weights=20)
  wide = {"erp": utilities["erp"], "wide": 1e6 * utilities["knn"]}
  beside, _ = report.evaluate(wide, data, num_cost_weights=20)
  erp_alone, erp_beside = alone["routers"]["erp"], beside["routers"]["erp"]
  assert erp_beside["cost_weights"] == erp_alone["cost_weights"]
  assert erp_beside["aiq"] == erp_alone["aiq"]
  assert erp_beside["frontier"] == erp_alone["frontier"]
  # The sweep is not degenerate: ERP passes through several distinct routings.
  assert len(set(erp_alone["frontier"]["cost"])) > 5
  assert beside["routers"]["wide"]["cost_weights"][-1] > 1e5 * erp_alone["cost_weights"][-1]


def test_equal_costs_report_cost_weight_0_and_say_why(tmp_path):
  utilities, data = _data(False)
  equal = report.EvalSet(data.rewards, np.full(M, 0.5), llm_names=LLMS, name="flat")
  result = report.write_report(tmp_path, utilities, equal, chosen="erp",
                               label_free_peers=["knn", "random"], best_single_llm="large")
  assert result["equal_costs"]
  for name, r in result["routers"].items():
    assert r["cost_weights"] == [0.0], name
    assert r["aiq"] is None and r["apgr"] is None and r["cpt50"] is None
    assert r["aiq_reason"] == r["gap_reason"] == report.EQUAL_COSTS
    choice = fr.route(utilities.get(name, data.rewards), equal.route_costs, 0.0)
    at0 = r["cost_weight_0"]
    assert at0["reward"] == pytest.approx(metrics.chosen(data.rewards, choice).mean())
  md = (tmp_path / "report.md").read_text()
  assert "All LLMs cost the same" in md and "| AIQ |" not in md and "n/a" not in md
  knn = result["routers"]["knn"]["cost_weight_0"]["reward"]
  random = result["routers"]["random"]["cost_weight_0"]["reward"]
  best_peer = "knn" if knn >= random else "random"
  assert result["headline"].endswith(f"at λ=0 ({best_peer})")
  assert "equal costs, so no AIQ" in result["headline"]


def test_headline_budget_and_marked_frontier(tmp_path):
  utilities, data = _data(False)
  result = report.write_report(
      tmp_path, utilities, data, chosen="erp", predictions={"erp": utilities["erp"]},
      label_free_peers=["knn", "random"], best_single_llm="medium", budget=0.5)
  routers = result["routers"]
  x = routers["erp"]["cost_weight_0"]["reward"]
  y = data.rewards[:, 2].mean()
  o = routers["oracle"]["cost_weight_0"]["reward"]
  assert result["best_single_llm"]["name"] == "medium"
  assert result["best_single_llm"]["chosen_on"] == "train"
  assert result["best_single_llm"]["reward"] == pytest.approx(y)
  peer = max(["knn", "random"], key=lambda n: routers[n]["aiq"])
  line = result["headline"]
  assert line.startswith(f"test: default router erp: reward {x:.4g} at λ=0 vs best single LLM "
                         f"{y:.4g} (medium, best on train; {100 * (x - y) / (o - y):+.0f}% of the "
                         "oracle gap)")
  assert line.endswith(f"AIQ {routers['erp']['aiq']:.4g} vs best label-free peer "
                       f"{routers[peer]['aiq']:.4g} ({peer})")
  md = (tmp_path / "report.md").read_text()
  assert md.splitlines()[2] == f"**{line}**"  # right under the title
  assert routers["erp"]["role"] == "chosen" and routers["knn"]["role"] == "label-free peer"
  assert routers["always large"]["role"] == "peer"

  budget = result["budget"]
  assert budget["route_cost"] <= 0.5
  assert budget["cost_weight"] == pytest.approx(
      report.cost_weight_for_budget(utilities["erp"], data.route_costs, 0.5))
  choice = fr.route(utilities["erp"], data.route_costs, budget["cost_weight"])
  assert budget["reward"] == pytest.approx(metrics.chosen(data.rewards, choice).mean())

  # The frontier plot marks the chosen router and its budget point.
  _, frontiers = report.evaluate(utilities, data, chosen="erp", budget=0.5)
  single_cost, single_reward = fr.single_llm_points(data.rewards, data.route_costs)
  from erpjax.eval import plots

  fig = plots.reward_vs_cost(frontiers, single_cost, single_reward, LLMS, chosen="erp",
                                    points={"erp at budget": (0.4, 0.5)})
  labels = fig.axes[0].get_legend_handles_labels()[1]
  assert {"erp (chosen)", "erp at λ=0", "erp at budget", "knn", "oracle"} <= set(labels)
  assert "erp" not in labels
  assert sorted(p.name for p in tmp_path.glob("*.png")) == [
      "pred_vs_observed_erp.png", "regret_vs_cost.png", "reward_vs_cost.png"]


def test_candidates_and_selection_table(tmp_path):
  # The chosen router's candidate predictors are reported beside it, each with its own grid and
  # prediction metrics, and the selection table as given.
  utilities, data = _data(False)
  candidates = {"candidate ridge": utilities["erp"], "candidate knn": utilities["knn"]}
  selection = [{"name": "ridge", "cv_reward0": 0.61, "chosen": "yes"},
               {"name": "knn", "cv_reward0": 0.58, "chosen": ""}]
  result = report.write_report(
      tmp_path, {"erp": utilities["erp"], **candidates}, data, chosen="erp",
      predictions={"erp": utilities["erp"], **candidates}, candidates=list(candidates),
      selection=selection)
  for name in candidates:
    r = result["routers"][name]
    assert r["role"] == "candidate" and "prediction" in r
    assert r["cost_weights"] == pytest.approx(
        cost_weight_grid(candidates[name], data.route_costs, num=50).tolist())
  assert result["routers"]["candidate ridge"]["aiq"] == result["routers"]["erp"]["aiq"]
  assert result["selection"] == selection
  md = (tmp_path / "report.md").read_text()
  assert "| name | cv_reward0 | chosen |" in md and "| ridge | 0.61 | yes |" in md


def test_without_matplotlib_the_report_skips_only_the_plots(tmp_path, monkeypatch, caplog):
  import sys

  # A None entry makes `import` raise ImportError, as an environment without the extra would.
  monkeypatch.setitem(sys.modules, "matplotlib", None)
  monkeypatch.setitem(sys.modules, "erpjax.eval.plots", None)
  import erpjax.eval

  monkeypatch.delattr(erpjax.eval, "plots", raising=False)  # set by an earlier import
  utilities, data = _data(False)
  with caplog.at_level("INFO", logger="erpjax.eval.report"):
    result = report.write_report(tmp_path, utilities, data, chosen="erp")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "report.md"]
  assert result["routers"]["erp"]["aiq"] is not None
  assert "plots skipped" in caplog.text


def test_at_zero_utilities_route_the_first_grid_point_only():
  # ERP's safe rule: predictions less per-LLM margins at λ = 0, the predictions above it.
  utilities, data = _data(False)
  raw = utilities["erp"]
  safe = raw - np.array([0.0, 0.2, 0.2, 0.5])
  result, _ = report.evaluate({"erp": raw}, data, num_cost_weights=20, at_zero={"erp": safe},
                              chosen="erp", budget=5.0)
  r = result["routers"]["erp"]
  grid = cost_weight_grid(raw, data.route_costs, num=20)
  assert r["cost_weights"] == pytest.approx(grid.tolist())
  choice0 = fr.route(safe, data.route_costs, 0.0)
  assert np.any(choice0 != fr.route(raw, data.route_costs, 0.0))  # the margins matter here
  reward0 = metrics.chosen(data.rewards, choice0).mean()
  assert r["cost_weight_0"]["reward"] == pytest.approx(reward0)
  assert r["frontier"]["reward"][0] == pytest.approx(reward0)
  above = fr.sweep(raw, data.rewards, data.route_costs, grid[1:])
  assert r["frontier"]["reward"][1:] == pytest.approx(above.reward.tolist())
  # A budget every LLM meets keeps cost weight 0, so the budget routing is the safe one too.
  assert result["budget"]["cost_weight"] == 0
  assert result["budget"]["reward"] == pytest.approx(reward0)
  with pytest.raises(ValueError, match="unknown router"):
    report.evaluate({"erp": raw}, data, at_zero={"knn": safe})
