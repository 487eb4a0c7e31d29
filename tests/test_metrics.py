"""Metrics and frontier area metrics on small cases computed by hand.

The arithmetic is in comments.
"""

import math

import numpy as np
import pytest

from erpjax.eval import frontier as fr
from erpjax.eval import metrics
from erpjax.routing import cost_weight_grid

PRED = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 1.0]])
OBS = np.array([[1.0, 0.0], [2.0, 0.0], [4.0, 2.0]])


def test_r2_per_llm_and_pooled():
  # Column 0: mean 7/3, SST = 16/9 + 1/9 + 25/9 = 14/3, SSE = 1 -> 1 - 3/14 = 11/14.
  # Column 1: mean 2/3, SST = 4/9 + 4/9 + 16/9 = 8/3, SSE = 2 -> 1 - 6/8 = 1/4.
  np.testing.assert_allclose(metrics.r2(PRED, OBS, axis=0), [11 / 14, 1 / 4], rtol=1e-12)
  # Pooled: grand mean 1.5, SST = 0.25 + 0.25 + 6.25 + 2.25 + 2.25 + 0.25 = 11.5, SSE = 3.
  assert metrics.r2(PRED, OBS, axis=None) == pytest.approx(1 - 3 / 11.5, rel=1e-12)


def test_r2_constant_column_is_nan_and_perfect_is_one():
  obs = np.array([[1.0, 0.0], [1.0, 2.0]])
  out = metrics.r2(obs, obs, axis=0)
  assert math.isnan(out[0]) and out[1] == 1.0


def test_r2_by_category():
  # Category a = rows 0, 1: cells obs [1, 0, 2, 0] (mean 0.75, SST 2.75), pred [1, 0, 2, 1], SSE 1.
  # Category b = row 2: obs [4, 2] (mean 3, SST 2), pred [3, 1], SSE 2 -> 0.
  out = metrics.r2_by_category(PRED, OBS, ["a", "a", "b"])
  assert out == pytest.approx({"a": 1 - 1 / 2.75, "b": 0.0}, rel=1e-12)


def test_pearson():
  # Centred x = [-1, 0, 1], y = [-1, 1, 0]: sum of products 1, norms sqrt(2) each -> 1/2.
  assert metrics.pearson([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(0.5, rel=1e-12)
  assert math.isnan(metrics.pearson([1.0, 1.0, 1.0], [1.0, 3.0, 2.0]))


def test_rankdata_averages_ties():
  np.testing.assert_array_equal(metrics.rankdata([3, 1, 3, 2]), [3.5, 1.0, 3.5, 2.0])
  np.testing.assert_array_equal(metrics.rankdata([5, 5, 5]), [2.0, 2.0, 2.0])


def test_spearman_with_ties():
  # Ranks x = [1, 2.5, 2.5, 4], y = [1, 2, 3, 4]; centred [-1.5, 0, 0, 1.5] and
  # [-1.5, -0.5, 0.5, 1.5]: products 4.5, squares 4.5 and 5 -> 4.5 / sqrt(22.5) = sqrt(0.9).
  x, y = np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0])
  assert metrics.spearman(x, y) == pytest.approx(math.sqrt(0.9), rel=1e-12)


def test_spearman_and_pearson_per_column():
  pred = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
  obs = np.array([[1.0, 1.0], [2.0, 2.0], [4.0, 3.0]])
  np.testing.assert_allclose(metrics.spearman(pred, obs, axis=0), [1.0, -1.0])
  assert metrics.pearson(pred, obs, axis=0)[1] == pytest.approx(-1.0)


def test_auroc_mann_whitney_with_ties():
  # Positives 0.35, 0.8; negatives 0.1, 0.4: pairs won 1 + 0 + 1 + 1 = 3 of 4.
  assert metrics.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
  assert metrics.auroc([0.5, 0.5], [1, 0]) == 0.5
  assert math.isnan(metrics.auroc([0.5, 0.7], [1, 1]))


def test_pairwise_auroc():
  obs = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # the second prompt has no differing pair
  # Prompt 0 pairs: positives (0,1), (0,2); negatives (1,0), (2,0).
  # pred [0.9, 0.5, 0.1]: positive differences 0.4, 0.8, negatives -0.4, -0.8 -> 1.
  assert metrics.pairwise_auroc(np.array([[0.9, 0.5, 0.1], [0, 5, 9]]), obs) == 1.0
  # pred [0.25, 0.5, 0] (exact in binary, so ties are exact): positives -0.25, 0.25; negatives
  # 0.25, -0.25: (-.25 vs .25) 0, (-.25 vs -.25) 1/2, (.25 vs .25) 1/2, (.25 vs -.25) 1 -> 2/4.
  assert metrics.pairwise_auroc(np.array([[0.25, 0.5, 0.0], [0, 5, 9]]), obs) == 0.5
  assert math.isnan(metrics.pairwise_auroc(np.zeros((1, 3)), np.ones((1, 3))))


def test_regret_and_top1():
  obs = np.array([[1.0, 0.0, 0.5], [0.2, 0.9, 0.9]])
  np.testing.assert_allclose(metrics.regret(obs, [2, 1]), [0.5, 0.0])
  assert metrics.mean_regret(obs, np.array([2, 1])) == pytest.approx(0.25)
  assert metrics.top1_accuracy(obs, np.array([2, 1])) == 0.5
  # Any of tied best LLMs counts as top-1.
  assert metrics.top1_accuracy(obs, np.array([0, 2])) == 1.0
  with pytest.raises(ValueError, match="outside"):
    metrics.regret(obs, np.array([0, 3]))


def test_route_trades_utility_against_cost():
  u = np.array([[1.0, 0.8], [0.5, 0.6]])
  costs = np.array([1.0, 0.0])
  np.testing.assert_array_equal(fr.route(u, costs, 0.0), [0, 1])
  # λ = 0.3: row 0 compares 0.7 with 0.8.
  np.testing.assert_array_equal(fr.route(u, costs, 0.3), [1, 1])
  # Exact ties go to the cheaper LLM, as ERP routes.
  np.testing.assert_array_equal(
      fr.route(np.array([[1.0, 1.0, 0.0]]), np.array([2.0, 1.0, 0.5]), 0.0), [1])


def test_sweep_measures_each_lambda():
  u = np.array([[1.0, 0.8], [0.5, 0.6]])
  obs = np.array([[1.0, 0.0], [0.0, 1.0]])
  f = fr.sweep(u, obs, np.array([1.0, 0.0]), [0.0, 0.3])
  np.testing.assert_allclose(f.cost, [0.5, 0.0])
  np.testing.assert_allclose(f.reward, [1.0, 0.5])
  np.testing.assert_allclose(f.regret, [0.0, 0.5])
  # Observed per-call costs replace the routing costs in the measurement.
  call = np.array([[2.0, 0.1], [3.0, 0.3]])
  f = fr.sweep(u, obs, np.array([1.0, 0.0]), [0.0], call_costs=call)
  np.testing.assert_allclose(f.cost, [(2.0 + 0.3) / 2])


def test_nondecreasing_hull():
  # (1.5, 0.5) lies under the hull; the hull falls after (2, 0.9), so (3, 0.85) becomes a flat tail.
  h = fr.nondecreasing_hull([0, 1, 2, 1.5, 3], [0, 0.8, 0.9, 0.5, 0.85])
  np.testing.assert_array_equal(h.cost, [0, 1, 2])
  np.testing.assert_array_equal(h.reward, [0, 0.8, 0.9])
  # A non-convex middle point and a duplicate cost (the better reward is kept).
  h = fr.nondecreasing_hull([0, 1, 2, 2], [0, 0.2, 0.7, 1.0])
  np.testing.assert_array_equal(h.cost, [0, 2])
  np.testing.assert_array_equal(h.reward, [0, 1.0])
  # Collinear points collapse to the segment's ends.
  h = fr.nondecreasing_hull([0, 1, 2], [0, 0.5, 1.0])
  np.testing.assert_array_equal(h.cost, [0, 2])


def test_hull_mean_and_first_cost_reaching():
  h = fr.nondecreasing_hull([0, 1, 2], [0, 0.8, 0.9])
  # Areas 0.4 + 0.85 + 0.9 (flat tail) over [0, 3].
  assert h.mean(0, 3) == pytest.approx(2.15 / 3)
  assert h.first_cost_reaching(0.4) == pytest.approx(0.5)
  assert h.first_cost_reaching(0.85) == pytest.approx(1.5)
  assert h.first_cost_reaching(-1) == 0
  assert h.first_cost_reaching(0.95) == math.inf


def test_aiq_over_explicit_interval():
  h = fr.nondecreasing_hull([0, 1, 2], [0, 0.8, 0.9])
  # Over [0.5, 2.5]: 0.3 + 0.85 + 0.45 = 1.6, width 2.
  out = fr.aiq(h, fr.CostInterval(0.5, 2.5))
  assert out.value == pytest.approx(0.8) and out.uncovered == 0 and out.reason is None
  assert out.interval == fr.CostInterval(0.5, 2.5)
  # Left of the cheapest point the curve is extrapolated: a quarter of [-1, 3].
  assert fr.aiq(h, fr.CostInterval(-1, 3)).uncovered == pytest.approx(0.25)
  assert math.isnan(fr.aiq(h, fr.CostInterval(1, 1)).value)
  assert fr.default_interval([0.3, 0.1, 2.0]) == fr.CostInterval(0.1, 2.0)


def test_gap_recovery():
  # Weak = LLM 0 (cost 0, reward 0.2), strong = LLM 1 (cost 2, reward 0.8): PGR span 0.6.
  single_cost, single_reward = [0.0, 2.0, 3.0], [0.2, 0.8, 0.6]
  h = fr.nondecreasing_hull([0, 1, 2], [0.2, 0.7, 0.8])
  out = fr.gap_recovery(h, single_cost, single_reward, levels=(0.5, 0.8, 1.0))
  assert (out.weak, out.strong) == (0, 1)
  # Mean hull reward over [0, 2] = (0.45 + 0.75) / 2 = 0.6 -> APGR = 0.4 / 0.6.
  assert out.apgr == pytest.approx(2 / 3)
  # PGR 0.5 = reward 0.5 at cost 0.6; PGR 0.8 = reward 0.68 at 0.96; PGR 1 at cost 2.
  assert out.cpt == pytest.approx({0.5: 0.3, 0.8: 0.48, 1.0: 1.0})
  assert out.reason is None


def test_gap_recovery_non_monotone_and_unreachable():
  single_cost, single_reward = [0.0, 2.0], [0.2, 0.8]
  # The router peaks at cost 1 then falls: the non-decreasing hull keeps 0.5 from cost 1 on.
  h = fr.nondecreasing_hull([0, 1, 2], [0.2, 0.5, 0.3])
  out = fr.gap_recovery(h, single_cost, single_reward, levels=(0.5, 0.8))
  assert out.cpt[0.5] == pytest.approx(0.5)
  assert math.isnan(out.cpt[0.8]) and "never reaches" in out.reason
  # Mean over [0, 2]: (0.35 + 0.5) / 2 = 0.425 -> (0.425 - 0.2) / 0.6.
  assert out.apgr == pytest.approx(0.375)


def test_gap_recovery_degenerate_is_nan_with_reason():
  h = fr.nondecreasing_hull([0, 1], [0.5, 0.6])
  out = fr.gap_recovery(h, [0.0, 1.0], [0.7, 0.7])
  assert (out.weak, out.strong) == (0, 0)
  assert math.isnan(out.apgr) and all(math.isnan(v) for v in out.cpt.values())
  assert "denominator" in out.reason


def test_cost_weight_grid_spans_to_all_cheapest():
  u = np.array([[1.0, 0.5], [0.2, 0.4]])
  costs = np.array([1.0, 0.0])
  grid = cost_weight_grid(u, costs, num=5)
  # The cheapest LLM (1) wins row 0 once λ > (1 - 0.5) / (1 - 0) = 0.5.
  assert grid[0] == 0 and grid[-1] == pytest.approx(0.505) and np.all(np.diff(grid) > 0)
  np.testing.assert_array_equal(fr.route(u, costs, grid[0]), [0, 1])
  np.testing.assert_array_equal(fr.route(u, costs, grid[-1]), [1, 1])
  # A router that never picks the cheapest LLM (-inf): the bound is over the LLMs it may pick.
  # Row 0 may pick LLMs 0 (cost 1) and 2 (cost 2): 2 loses once λ > (3 - 1) / (2 - 1) = 2.
  restricted = np.array([[1.0, -np.inf, 3.0], [0.0, -np.inf, -np.inf]])
  costs3 = np.array([1.0, 0.0, 2.0])
  assert cost_weight_grid(restricted, costs3, num=3)[-1] == pytest.approx(2.02)
  # A single LLM (no choice) and equal costs: no cost weight changes the routing.
  np.testing.assert_array_equal(cost_weight_grid(np.array([[0.0, -np.inf]]), costs, num=5), [0])
  np.testing.assert_array_equal(cost_weight_grid(u, np.array([0.3, 0.3]), num=5), [0])


def test_headline_r2_is_the_mean_of_per_llm_r2():
  # Two LLMs with very different average rewards: a predictor that knows only each LLM's average
  # (plus noise) gets a high pooled R² from the spread between columns, while each LLM's own R²
  # is negative, which is what matters for routing prompt by prompt.
  rng = np.random.default_rng(0)
  obs = np.stack([rng.normal(0.0, 1.0, 200), rng.normal(10.0, 1.0, 200)], axis=1)
  pred = np.array([0.0, 10.0]) + rng.normal(0.0, 1.0, (200, 2))
  per_llm = metrics.r2(pred, obs, axis=0)
  assert np.all(per_llm < 0)
  assert metrics.r2(pred, obs, axis=None) > 0.9
  assert metrics.mean_r2(pred, obs) == pytest.approx(per_llm.mean())
  # Constant columns are skipped; all constant: nan.
  obs_c = obs.copy()
  obs_c[:, 0] = 1.0
  assert metrics.mean_r2(pred, obs_c) == pytest.approx(metrics.r2(pred, obs_c, axis=0)[1])
  assert math.isnan(metrics.mean_r2(pred, np.ones_like(obs)))


def test_pairwise_auroc_averages_pairs():
  # Prompts 0-3: obs [1, 0, 1]; prompt 4: obs [1, 1, 0].
  # Pair (0, 1) differs on prompts 0-3, predicted right (0.9 > 0.1): AUROC 1.
  # Pair (0, 2) differs on prompt 4 only, predicted right (0.9 > 0.5): AUROC 1.
  # Pair (1, 2) differs on all five; right on 0-3 (0.1 < 0.2), wrong on 4 (0.1 < 0.5 but 1 wins).
  # Both orientations: positives {-0.4, 0.1 x4}, negatives {-0.1 x4, 0.4}: 16 of 25 won -> 0.64.
  obs = np.array([[1, 0, 1], [1, 0, 1], [1, 0, 1], [1, 0, 1], [1, 1, 0]], dtype=float)
  pred = np.array([[0.9, 0.1, 0.2]] * 4 + [[0.9, 0.1, 0.5]])
  per_pair = metrics.pairwise_auroc_per_pair(pred, obs)
  np.testing.assert_allclose(per_pair[[0, 0, 1], [1, 2, 2]], [1.0, 1.0, 0.64])
  np.testing.assert_array_equal(per_pair, per_pair.T)
  assert np.all(np.isnan(np.diag(per_pair)))
  # Each pair counts once: (1 + 1 + 0.64) / 3.
  assert metrics.pairwise_auroc(pred, obs) == pytest.approx(0.88)
  # Pooled, pair (0, 1)'s 8 comparisons weigh 4x pair (0, 2)'s 2: positives {0.8 x4, 0.4, -0.4,
  # 0.1 x4}, negatives {-0.8 x4, -0.4, -0.1 x4, 0.4}: won 40 + 9.5 + 4.5 + 36 = 90 of 100.
  assert metrics.pooled_pairwise_auroc(pred, obs) == pytest.approx(0.9)
  # One LLM pair that never differs is skipped; none differing: nan.
  assert math.isnan(metrics.pairwise_auroc(np.zeros((2, 3)), np.ones((2, 3))))
