"""The safe rule: leave the best single LLM only where another's predicted advantage is trusted.

A router that argmaxes noisy predictions can do worse than sending every prompt to the LLM that is
best on average (issue 10: ERP at lambda = 0 below the best single LLM on RouterBench). The rule:
route on U_i(x) = ER_i(x) - margin_i, where margin_d = 0 for the default LLM d (best mean training
reward) and margin_i for every other LLM is calibrated on out-of-fold predictions of the training
split (each prompt predicted by a model fit without it), so that at lambda = 0 prompt x leaves d
for i only if ER_i(x) - ER_d(x) >= margin_i. Margins shift utilities by a constant per LLM, so the
rule is still an argmax of U_i - lambda c_i. The margins act at lambda = 0 only (`ERPRouter`): at
lambda > 0 the cost term moves prompts off d by itself.

Calibration of margin_i: sort the out-of-fold prompts by predicted advantage a = ER_i - ER_d and
take the threshold whose deviation set S (prompts with a >= threshold) maximises
L(S) = sum_S g - z sqrt(sum_S g^2), with g = r_i - r_d the observed gain of moving the prompt from d
to i. L(S) > 0 says the summed gain is more than z times its root-sum-of-squares: a one-sided
normal test that the gain is positive. Because the best of many thresholds is taken, z is not the
single-test 1.645 but the normal quantile at alpha / ceil(log2 N) (a Bonferroni bound over the
log2 N dyadic scales of |S|, the usual peeling argument for a maximum over a random walk): with
alpha = 0.05 and N = 2000, z = 2.61. An LLM with no S of L(S) > 0 gets a margin above every
out-of-fold advantage (no deviation at lambda = 0; cost can still move prompts to it at
lambda > 0).

Guarantee (tested): on the out-of-fold predictions the margins were calibrated on, the rule's mean
reward at lambda = 0 is >= the default LLM's: margins are raised, weakest LLM first, until it is.
On new prompts this is a CV estimate, not a bound: it holds to the extent that out-of-fold
predictions behave like predictions on new prompts.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from erpjax.routing._router import route


def confidence_multiplier(num_prompts: int, alpha: float = 0.05) -> float:
  """z of the bound L(S): the normal quantile at 1 - alpha / ceil(log2 N) (module docstring)."""
  if not 0 < alpha < 1:
    raise ValueError(f"alpha must be in (0, 1), got {alpha}")
  scales = max(1, math.ceil(math.log2(max(num_prompts, 2))))
  return statistics.NormalDist().inv_cdf(1.0 - alpha / scales)


def default_llm(targets_nm: np.ndarray, costs_m: np.ndarray) -> int:
  """The LLM with the best mean observed training reward; the cheaper one on a tie."""
  observed = np.isfinite(targets_nm)
  means = np.where(observed, targets_nm, 0.0).sum(0) / np.maximum(observed.sum(0), 1)
  return int(np.lexsort((np.asarray(costs_m), -means))[0])


def _margin(advantage_n: np.ndarray, gain_n: np.ndarray, z: float) -> tuple[float, float]:
  """(margin, bound L of the chosen deviation set; -inf when no set has L > 0)."""
  order = np.argsort(-advantage_n, kind="stable")
  a, g = advantage_n[order], gain_n[order]
  bound = np.cumsum(g) - z * np.sqrt(np.cumsum(g * g))
  # A cut between equal advantages cannot be realised by a threshold: only cut after the last of
  # a run of equal values.
  cut_ok = np.append(a[1:] < a[:-1], True)
  bound = np.where(cut_ok, bound, -np.inf)
  best = int(np.argmax(bound)) if a.size else 0
  if a.size == 0 or not bound[best] > 0:
    return _no_deviation(a), -np.inf
  below = a[best + 1] if best + 1 < a.size else a[best] - 1.0
  return float(0.5 * (a[best] + below)), float(bound[best])


def _no_deviation(advantage_n: np.ndarray) -> float:
  """A margin above every observed advantage by their whole range (at least 1), finite (checkpoints
  hold finite arrays only). The buffer is for new prompts, whose predicted advantage can exceed
  every out-of-fold one: with margins just above the largest, held-out folds of RouterBench's
  training split lost up to 0.023 reward against the default LLM; with this buffer, none."""
  if advantage_n.size == 0:
    return 1.0
  return float(advantage_n.max() + max(float(np.ptp(advantage_n)), 1.0))


def calibrate_margins(oof_pred_nm, rewards_nm, costs_m, default: int,
                      alpha: float = 0.05) -> np.ndarray:
  """[M] safe-rule margins from out-of-fold predictions (see the module docstring).

  Args:
    oof_pred_nm: [N, M] out-of-fold predicted expected rewards on the training prompts.
    rewards_nm: [N, M] their observed expected rewards; rows with a NaN are not used.
    costs_m: [M] routing costs (the lambda = 0 check breaks ties as routing does).
    default: index of the default LLM (margin 0).
    alpha: the level of the test each LLM's deviations must pass (`confidence_multiplier`);
      alpha -> 1 keeps every deviation set with a positive observed gain.

  Returns:
    [M] float64 margins, 0 at `default`.
  """
  pred = np.asarray(oof_pred_nm, np.float64)
  rewards = np.asarray(rewards_nm, np.float64)
  complete = np.all(np.isfinite(rewards), axis=1) & np.all(np.isfinite(pred), axis=1)
  pred, rewards = pred[complete], rewards[complete]
  m = pred.shape[1]
  z = confidence_multiplier(len(pred), alpha)
  margins, bounds = np.zeros(m), np.full(m, -np.inf)
  for i in range(m):
    if i == default:
      continue
    advantage = pred[:, i] - pred[:, default]
    margins[i], bounds[i] = _margin(advantage, rewards[:, i] - rewards[:, default], z)

  def reward(margins):
    choice = route(pred - margins, costs_m, 0.0)
    return rewards[np.arange(len(choice)), choice].mean()

  # Deviations calibrated one LLM at a time can compete for the same prompts; drop the weakest
  # until the combined rule is no worse than the default LLM on these predictions.
  baseline = rewards[:, default].mean() if len(rewards) else 0.0
  for i in np.argsort(bounds):
    if len(rewards) == 0 or reward(margins) >= baseline:
      break
    if np.isfinite(bounds[i]):
      margins[i] = _no_deviation(pred[:, i] - pred[:, default])
      bounds[i] = -np.inf
  return margins
