"""Closed-form ridge regression heads: one per (LLM, reward model), as in the paper (beta = 1).

Each head solves  min_w,b  sum_n (y_n - x_n.w - b)^2 + beta |w|^2  over the prompts where its target
is observed, in closed form: w = (Xc^T Xc + beta I)^-1 Xc^T yc with X, y centered, and
b = mean(y) - mean(X).w.
Heads are independent, so adding an LLM fits one more head and leaves the others untouched.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def fit_ridge_head(features, target, observed, beta):
  """Fits one ridge head.

  Args:
    features: [N, D] float32 prompt features.
    target: [N] float32 targets; entries where `observed` is False are ignored (may be NaN).
    observed: [N] bool.
    beta: scalar L2 penalty (not applied to the intercept).

  Returns:
    (weights [D], bias []) float32.
  """
  weight = observed.astype(features.dtype)
  count = jnp.maximum(weight.sum(), 1.0)
  target = jnp.where(observed, target, 0.0)
  feature_mean = weight @ features / count
  target_mean = weight @ target / count
  centered = (features - feature_mean) * weight[:, None]
  gram = centered.T @ centered + beta * jnp.eye(features.shape[1], dtype=features.dtype)
  rhs = centered.T @ (target - target_mean)
  # The Gram matrix is symmetric positive definite for beta > 0: a Cholesky solve is the stable
  # and cheap choice.
  weights = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram), rhs)
  return weights, target_mean - feature_mean @ weights


def fit_ridge(features: np.ndarray, targets: np.ndarray, beta: float = 1.0):
  """Fits one head per target column.

  Args:
    features: [N, D] prompt features.
    targets: [N, M] targets, NaN where unobserved (a head uses only its observed prompts).
    beta: L2 penalty.

  Returns:
    (weights [D, M], bias [M]) float32 numpy arrays.
  """
  targets = np.asarray(targets, np.float64)
  for j, column in enumerate(targets.T):
    if not np.isfinite(column).any():
      raise ValueError(f"target column {j} has no observed value to fit a head on")
  features = jnp.asarray(features, jnp.float32)
  # One jitted solve per head (not a vmap over heads): a head's weights then do not depend on
  # which other heads were fit with it, so fitting M heads at once or one at a time is identical.
  heads = [
      fit_ridge_head(
          features, jnp.asarray(column, jnp.float32), jnp.asarray(np.isfinite(column)), beta
      )
      for column in targets.T
  ]
  weights = np.stack([np.asarray(w) for w, _ in heads], axis=1)
  bias = np.array([float(b) for _, b in heads], np.float32)
  return weights, bias
