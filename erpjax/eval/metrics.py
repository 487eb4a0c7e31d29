"""Prediction and per-prompt routing metrics on arrays.

Shapes: N prompts, M LLMs. `rewards: [N, M]` are observed (estimated) expected rewards on test
prompts (0/1 allowed), `pred: [N, M]` are predictions of them, `choice: [N]` is the index of the
LLM a router picked for each prompt.

Prediction metrics take `axis`: `axis=0` scores each LLM (column) on its own and returns `[M]`;
`axis=None` pools every cell and returns a float. A metric that is undefined on its input (zero
variance, no pairs) is nan, never an exception.

Headline figures average per-LLM (or per-pair) values, as the ERP paper does: a pooled R² credits
a predictor for knowing each LLM's average reward (the spread between columns), which says
nothing about routing prompt by prompt; pooled values are reported beside them, labelled.
"""

import math
from collections.abc import Sequence

import numpy as np


def _as_float(x) -> np.ndarray:
  return np.asarray(x, dtype=np.float64)


def _columns(pred, rewards, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
  """Both inputs as float64 `[K, C]`, one metric per column: C = M (axis=0) or 1 (pooled)."""
  pred, rewards = _as_float(pred), _as_float(rewards)
  if pred.shape != rewards.shape:
    raise ValueError(f"pred {pred.shape} and rewards {rewards.shape} differ in shape")
  if axis is None:
    return pred.reshape(-1, 1), rewards.reshape(-1, 1)
  if axis != 0 or pred.ndim != 2:
    raise ValueError(f"axis must be None or 0 on [N, M] arrays, got axis={axis}, ndim={pred.ndim}")
  return pred, rewards


def _squeeze(per_column: np.ndarray, axis: int | None):
  return float(per_column[0]) if axis is None else per_column


def r2(pred, rewards, axis: int | None = 0):
  """Coefficient of determination 1 - SSE/SST, with SST about the observed column mean.

  Args:
    pred: `[N, M]` predicted rewards.
    rewards: `[N, M]` observed rewards.
    axis: 0 for one R² per LLM (`[M]`), None for one R² pooled over all N*M cells (SST about the
      grand mean).

  Returns:
    `[M]` or float; nan where SST is 0 (a constant column).
  """
  p, r = _columns(pred, rewards, axis)
  sse = np.sum((r - p) ** 2, axis=0)
  sst = np.sum((r - r.mean(axis=0)) ** 2, axis=0)
  with np.errstate(divide="ignore", invalid="ignore"):
    out = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)
  return _squeeze(out, axis)


def mean_r2(pred, rewards) -> float:
  """The headline R²: the mean over LLMs of each LLM's own R² (`r2(axis=0)`), skipping constant
  columns; nan if every column is constant. `pred`, `rewards`: `[N, M]`."""
  per_llm = r2(pred, rewards, axis=0)
  return float(np.mean(per_llm[np.isfinite(per_llm)])) if np.isfinite(per_llm).any() else math.nan


def r2_by_category(pred, rewards, categories: Sequence[str]) -> dict[str, float]:
  """Pooled R² (all LLMs' cells) within each category. `categories: [N]`; keys sorted."""
  pred, rewards = _as_float(pred), _as_float(rewards)
  categories = np.asarray(categories)
  if categories.shape != pred.shape[:1]:
    raise ValueError(f"categories {categories.shape} do not match {pred.shape[0]} prompts")
  return {
      str(c): r2(pred[categories == c], rewards[categories == c], axis=None)
      for c in sorted(set(categories.tolist()))
  }


def _pearson_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
  denom = np.sqrt(np.sum(xc**2, axis=0) * np.sum(yc**2, axis=0))
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(denom > 0, np.sum(xc * yc, axis=0) / np.where(denom > 0, denom, 1.0), np.nan)


def pearson(pred, rewards, axis: int | None = None):
  """Pearson correlation of predictions and observations; nan if either is constant."""
  p, r = _columns(pred, rewards, axis)
  return _squeeze(_pearson_columns(p, r), axis)


def rankdata(x) -> np.ndarray:
  """1-based ranks of a 1-D array along its only axis, ties given their average rank."""
  x = np.asarray(x)
  order = np.argsort(x, kind="stable")
  sorted_x = x[order]
  # Each run of equal values [start, end) gets the mean of ranks start+1..end.
  new_run = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
  run_id = np.cumsum(new_run) - 1
  starts = np.flatnonzero(new_run)
  ends = np.concatenate([starts[1:], [x.size]])
  ranks = np.empty(x.size, dtype=np.float64)
  ranks[order] = ((starts + 1 + ends) / 2.0)[run_id]
  return ranks


def spearman(pred, rewards, axis: int | None = None):
  """Spearman correlation: Pearson on average ranks (ties share their mean rank)."""
  p, r = _columns(pred, rewards, axis)

  def rank(a):
    return np.stack([rankdata(col) for col in a.T], axis=1)

  return _squeeze(_pearson_columns(rank(p), rank(r)), axis)


def auroc(scores, labels) -> float:
  """Area under the ROC curve by Mann–Whitney U: P(s_pos > s_neg) + 1/2 P(s_pos = s_neg).

  Args:
    scores: `[K]` scores, higher meaning "more likely positive".
    labels: `[K]` bools.

  Returns:
    The AUROC; nan if there is no positive or no negative.
  """
  scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
  n_pos, n_neg = int(labels.sum()), int((~labels).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  # With average ranks, the positives' rank sum counts each tied (pos, neg) pair as 1/2.
  u = rankdata(scores)[labels].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def pooled_pairwise_auroc(pred, rewards) -> float:
  """How well predictions order the LLMs on each prompt, all LLM pairs pooled.

  For every prompt n and every ordered pair (i, j), i != j, of LLMs whose observed rewards differ,
  the score is sigmoid(pred[n, i] - pred[n, j]) and the label is [rewards[n, i] > rewards[n, j]].
  The result is the AUROC of all those (score, label) pairs, ties counted 1/2. The difference
  itself is ranked rather than its sigmoid: the AUROC is the same (sigmoid is increasing), without
  the ties that float saturation of the sigmoid would add for large differences.

  Args:
    pred: `[N, M]` predicted rewards (any utility whose differences order the LLMs).
    rewards: `[N, M]` observed rewards.

  Returns:
    The AUROC; nan if no prompt has two LLMs with different rewards.
  """
  p, r = _as_float(pred), _as_float(rewards)
  if p.shape != r.shape or p.ndim != 2:
    raise ValueError(f"pred {p.shape} and rewards {r.shape} must both be [N, M]")
  diff_p = p[:, :, None] - p[:, None, :]  # [N, M, M]: pred_i - pred_j
  diff_r = r[:, :, None] - r[:, None, :]
  keep = diff_r != 0  # also drops i == j
  return auroc(diff_p[keep], diff_r[keep] > 0)


def pairwise_auroc_per_pair(pred, rewards) -> np.ndarray:
  """`[M, M]` symmetric: entry (i, j) is `pooled_pairwise_auroc` of LLMs i and j alone (how well
  the predictions tell which of the two is better, over the prompts where they differ); nan on the
  diagonal and for pairs that never differ."""
  p, r = _as_float(pred), _as_float(rewards)
  if p.shape != r.shape or p.ndim != 2:
    raise ValueError(f"pred {p.shape} and rewards {r.shape} must both be [N, M]")
  m = p.shape[1]
  out = np.full((m, m), np.nan)
  for i in range(m):
    for j in range(i + 1, m):
      out[i, j] = out[j, i] = pooled_pairwise_auroc(p[:, [i, j]], r[:, [i, j]])
  return out


def pairwise_auroc(pred, rewards) -> float:
  """The headline pairwise AUROC: the mean over LLM pairs of `pairwise_auroc_per_pair`, skipping
  pairs that never differ (the ERP paper's per-pair average; pooling every pair instead lets the
  easy pairs, e.g. a weak LLM against a strong one, dominate). nan if no pair differs."""
  per_pair = pairwise_auroc_per_pair(pred, rewards)
  upper = per_pair[np.triu_indices(per_pair.shape[0], k=1)]
  return float(np.mean(upper[np.isfinite(upper)])) if np.isfinite(upper).any() else math.nan


def _check_choice(rewards, choice) -> tuple[np.ndarray, np.ndarray]:
  rewards, choice = _as_float(rewards), np.asarray(choice)
  if rewards.ndim != 2 or choice.shape != rewards.shape[:1]:
    raise ValueError(f"choice {choice.shape} must be [N] for rewards {rewards.shape}")
  if not np.issubdtype(choice.dtype, np.integer):
    raise ValueError(f"choice must hold integer LLM indices, got {choice.dtype}")
  if choice.size and (choice.min() < 0 or choice.max() >= rewards.shape[1]):
    raise ValueError(f"choice holds indices outside [0, {rewards.shape[1]})")
  return rewards, choice


def chosen(values, choice) -> np.ndarray:
  """`values[n, choice[n]]` for each prompt: `[N, M], [N] -> [N]`."""
  values, choice = _check_choice(values, choice)
  return np.take_along_axis(values, choice[:, None], axis=1)[:, 0]


def regret(rewards, choice) -> np.ndarray:
  """Per-prompt regret `max_i rewards[n, i] - rewards[n, choice[n]]`, `[N]`, never negative."""
  rewards = _as_float(rewards)
  return rewards.max(axis=1) - chosen(rewards, choice)


def mean_regret(rewards, choice) -> float:
  """Mean over prompts of `regret`."""
  return float(np.mean(regret(rewards, choice)))


def top1_accuracy(rewards, choice) -> float:
  """Fraction of prompts whose chosen LLM is in the argmax set of the observed rewards.

  With ties (e.g. 0/1 rewards where several LLMs are right) any of the tied best counts.
  """
  return float(np.mean(regret(rewards, choice) == 0))
