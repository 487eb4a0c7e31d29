"""The evaluation report on random data.

Checks the files, strict JSON, and values equal to the metric functions.
"""

import json
import math

import numpy as np
import pytest

from erpjax.eval import frontier as fr
from erpjax.eval import metrics
from erpjax.eval import peers
from erpjax.eval import report

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
  lambdas = fr.lambda_grid(utilities.values(), data.route_costs, num=20)
  out = tmp_path / "eval"
  written = report.write_report(out, utilities, data, lambdas, reward_predictors=["erp", "knn"],
                                permuted="erp")

  names = sorted(p.name for p in out.iterdir())
  assert names == sorted(["metrics.json", "report.md", "reward_vs_cost.png", "regret_vs_cost.png",
                          "pred_vs_observed_erp.png"])  # and no temporary files left behind
  for png in out.glob("*.png"):
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  result = _strict_json((out / "metrics.json").read_text())
  assert result == written
  assert result["lambdas"] == pytest.approx(lambdas.tolist())
  assert set(result["routers"]) == {
      "erp", "knn", "random", "always large", "oracle", "erp (permuted)"}

  single_cost, single_reward = fr.single_llm_points(data.rewards, data.route_costs, data.call_costs)
  interval = fr.default_interval(single_cost)
  assert result["cost_interval"] == pytest.approx([interval.lo, interval.hi])
  assert result["weak_llm"] == "tiny"
  assert result["strong_llm"] == LLMS[int(np.argmax(single_reward))]
  for name, u in {**utilities, "oracle": data.rewards}.items():
    r = result["routers"][name]
    f = fr.sweep(u, data.rewards, data.route_costs, lambdas, data.call_costs)
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
    assert r["lambda0"]["reward"] == pytest.approx(metrics.chosen(data.rewards, choice).mean())
    assert r["lambda0"]["regret"] == pytest.approx(metrics.mean_regret(data.rewards, choice))
    assert r["lambda0"]["top1"] == pytest.approx(metrics.top1_accuracy(data.rewards, choice))
    assert r["lambda0"]["cost"] == pytest.approx(
        fr.realized_costs(choice, data.route_costs, data.call_costs).mean())
    math_rows = data.categories == "math"
    assert r["lambda0"]["by_category"]["math"]["reward"] == pytest.approx(
        metrics.chosen(data.rewards[math_rows], choice[math_rows]).mean())
  assert result["routers"]["oracle"]["lambda0"]["regret"] == 0
  assert result["routers"]["always large"]["frontier"]["reward"] == pytest.approx(
      [data.rewards[:, 3].mean()] * len(lambdas))

  pred = result["routers"]["erp"]["prediction"]
  erp = utilities["erp"]
  assert list(pred["r2_per_llm"].values()) == pytest.approx(metrics.r2(erp, data.rewards).tolist())
  assert pred["r2"] == pytest.approx(metrics.r2(erp, data.rewards, axis=None))
  assert pred["pearson"] == pytest.approx(metrics.pearson(erp, data.rewards))
  assert pred["spearman"] == pytest.approx(metrics.spearman(erp, data.rewards))
  assert pred["pairwise_auroc"] == pytest.approx(metrics.pairwise_auroc(erp, data.rewards))
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


def test_report_rejects_bad_arguments(tmp_path):
  utilities, data = _data(False)
  with pytest.raises(ValueError, match="oracle"):
    report.evaluate({"oracle": data.rewards}, data, [0.0])
  with pytest.raises(ValueError, match="unknown router"):
    report.evaluate(utilities, data, [0.0], reward_predictors=["mlp"])
  with pytest.raises(ValueError, match="lambdas"):
    report.evaluate(utilities, data, [-1.0])
  with pytest.raises(ValueError, match="LLM names"):
    report.EvalSet(data.rewards, data.route_costs, llm_names=["a", "b"])
  with pytest.raises(ValueError, match="finite"):
    report.EvalSet(np.where(data.rewards > 0, np.nan, 0.0), data.route_costs)


def test_degenerate_gap_is_null_with_a_reason(tmp_path):
  # The cheapest LLM is also the best: APGR and CPT are undefined, reported as null with a reason.
  rewards = np.tile([1.0, 0.0], (10, 1))
  data = report.EvalSet(rewards, np.array([0.1, 1.0]))
  result = report.write_report(tmp_path, {"r": np.zeros((10, 2))}, data, [0.0, 1.0])
  r = _strict_json((tmp_path / "metrics.json").read_text())["routers"]["r"]
  assert r["apgr"] is None and r["cpt50"] is None and "denominator" in r["gap_reason"]
  assert result["routers"]["r"]["gap_reason"] == r["gap_reason"]
  assert "denominator" in (tmp_path / "report.md").read_text()
