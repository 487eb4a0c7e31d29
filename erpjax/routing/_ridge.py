"""Closed-form ridge regression heads, one per (LLM, reward model), each with its own penalty.

Each head solves  min_w,b  sum_n (y_n - x_n.w - b)^2 + beta |w|^2  over the prompts where its target
is observed: with X, y centered, w = (Xc^T Xc + beta I)^-1 Xc^T yc and b = mean(y) - mean(X).w
(the intercept is not penalised). One eigendecomposition Xc^T Xc = V diag(s) V^T gives w for every
beta of a grid, w(beta) = V diag(1 / (s + beta)) V^T Xc^T yc, and with it two scores of each beta:

- exact leave-one-out: the hat matrix of ridge with an unpenalised intercept is
  H = 11^T / n + Xc (Xc^T Xc + beta I)^-1 Xc^T, and the LOO residual of prompt n is
  e_n / (1 - H_nn) exactly (a linear smoother fit by penalised least squares);
- GCV (Golub, Heath & Wahba 1979): n RSS / (n - 1 - df)^2 with df = sum_k s_k / (s_k + beta), which
  needs only the statistics (Gram, X^T y, y^T y, n), so that streamed or sharded statistics
  (`erpjax.routing._ridge_stats`) can choose beta too.

Everything here is float64 numpy: the solves are small (D x D) and run on the host, and float64
keeps the LOO identity exact to rounding. Heads are independent, so adding an LLM fits one more
head and leaves the others untouched.
"""

from __future__ import annotations

import numpy as np

# Penalties tried when a head chooses its own: log-spaced around the paper's beta = 1.
BETA_GRID = tuple(float(b) for b in np.geomspace(1e-3, 1e4, 22))


def _eigh(gram_dd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Eigenvalues [D] (clipped at 0: the Gram is PSD up to rounding) and eigenvectors [D, D]."""
  eigvals, eigvecs = np.linalg.eigh(np.asarray(gram_dd, np.float64))
  return np.maximum(eigvals, 0.0), eigvecs


def ridge_path(gram_dd, rhs_dm, yty_m, count, betas_k) -> tuple[np.ndarray, np.ndarray]:
  """Ridge weights and GCV scores for a grid of penalties, from centered statistics.

  Args:
    gram_dd: [D, D] Xc^T Xc of the centered features.
    rhs_dm: [D, M] Xc^T yc.
    yty_m: [M] yc^T yc.
    count: n, the number of prompts the statistics sum over.
    betas_k: [K] positive penalties.

  Returns:
    (weights [K, D, M], gcv [K, M]); the intercepts are mean(y) - mean(X).w, which the caller has.
  """
  betas = np.asarray(betas_k, np.float64)
  if betas.ndim != 1 or not np.all(betas > 0):
    raise ValueError(f"betas must be a [K] array of positive penalties, got {betas}")
  eigvals, eigvecs = _eigh(gram_dd)
  proj_dm = eigvecs.T @ np.asarray(rhs_dm, np.float64)  # V^T Xc^T yc
  shrink_kd = 1.0 / (eigvals[None, :] + betas[:, None])
  weights = np.einsum("ed,kd,dm->kem", eigvecs, shrink_kd, proj_dm)
  # RSS = yc^T yc - 2 w^T Xc^T yc + w^T G w, in the eigenbasis: sum_d p_d^2 (s_d f_d^2 - 2 f_d).
  rss_km = np.asarray(yty_m, np.float64)[None, :] + np.einsum(
      "dm,kd->km", proj_dm**2, eigvals[None, :] * shrink_kd**2 - 2 * shrink_kd)
  df_k = (eigvals[None, :] * shrink_kd).sum(axis=1)
  residual_df = count - 1.0 - df_k
  with np.errstate(divide="ignore", invalid="ignore"):
    gcv = np.where(residual_df[:, None] > 0,
                   count * np.maximum(rss_km, 0.0) / residual_df[:, None] ** 2, np.inf)
  return weights, gcv


def loo_errors(features_nd, targets_nm, betas_k) -> np.ndarray:
  """Exact leave-one-out mean squared error [K, M] of ridge heads with an unpenalised intercept.

  Args:
    features_nd: [N, D] features (all heads observed on all N prompts).
    targets_nm: [N, M] finite targets.
    betas_k: [K] positive penalties.
  """
  x = np.asarray(features_nd, np.float64)
  y = np.asarray(targets_nm, np.float64)
  xc, yc = x - x.mean(0), y - y.mean(0)
  return _loo_errors(xc, yc, *_eigh(xc.T @ xc), np.asarray(betas_k, np.float64))


def _loo_errors(xc, yc, eigvals, eigvecs, betas) -> np.ndarray:
  """`loo_errors` of centered xc [N, D], yc [N, M] given eigh(xc^T xc)."""
  n = xc.shape[0]
  p_nd = xc @ eigvecs  # Xc V: the fit and the hat diagonal are sums over its columns
  p2_nd = p_nd**2
  proj_dm = p_nd.T @ yc
  errors = []
  for beta in betas:
    shrink_d = 1.0 / (eigvals + beta)
    fitted = p_nd @ (proj_dm * shrink_d[:, None])
    hat_n = 1.0 / n + p2_nd @ shrink_d
    errors.append(np.mean(((yc - fitted) / (1.0 - hat_n)[:, None]) ** 2, axis=0))
  return np.stack(errors)


def _fit_group(x, y, betas):
  """Heads observed on the same prompts: x [n, D], y [n, m], betas [m] or None (choose by LOO).

  Returns (weights [D, m], bias [m], betas [m]) in float64.
  """
  x_mean, y_mean = x.mean(0), y.mean(0)
  xc, yc = x - x_mean, y - y_mean
  eigvals, eigvecs = _eigh(xc.T @ xc)
  if betas is None:
    if x.shape[0] < 3:
      betas = np.full(y.shape[1], 1.0)  # LOO of one or two prompts says nothing; the paper's beta
    else:
      grid = np.asarray(BETA_GRID)[::-1]
      # Ties (e.g. a constant target) go to the largest penalty: the simplest head.
      betas = grid[np.argmin(_loo_errors(xc, yc, eigvals, eigvecs, grid), axis=0)]
  proj_dm = eigvecs.T @ (xc.T @ yc)
  weights = eigvecs @ (proj_dm / (eigvals[:, None] + betas[None, :]))
  return weights, y_mean - x_mean @ weights, betas


def fit_ridge_heads(features, targets, beta=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Fits one head per target column, each on the prompts where its target is observed.

  Args:
    features: [N, D] prompt features.
    targets: [N, M] targets, NaN where unobserved.
    beta: a positive penalty for every head, or None: each head takes the penalty of `BETA_GRID`
      with the least exact leave-one-out error on its own prompts.

  Returns:
    (weights [D, M], bias [M]) float32 and the penalties [M] float64.
  """
  x = np.asarray(features, np.float64)
  y = np.asarray(targets, np.float64)
  if y.ndim != 2 or x.ndim != 2 or y.shape[0] != x.shape[0]:
    raise ValueError(f"need features [N, D] and targets [N, M], got {x.shape}, {y.shape}")
  observed = np.isfinite(y)
  for j in range(y.shape[1]):
    if not observed[:, j].any():
      raise ValueError(f"target column {j} has no observed value to fit a head on")
  if beta is not None and not beta > 0:
    raise ValueError(f"beta must be positive for a closed-form ridge solve, got {beta}")
  d, m = x.shape[1], y.shape[1]
  weights, bias, betas = np.zeros((d, m)), np.zeros(m), np.zeros(m)
  # Heads with the same observed prompts share one eigendecomposition; a head's result depends
  # only on its own column and prompts, so it is the same whichever heads are fit beside it.
  patterns: dict[bytes, list[int]] = {}
  for j in range(m):
    patterns.setdefault(np.packbits(observed[:, j]).tobytes(), []).append(j)
  for heads in patterns.values():
    rows = observed[:, heads[0]]
    group_betas = None if beta is None else np.full(len(heads), float(beta))
    w, b, chosen = _fit_group(x[rows], y[np.ix_(rows, heads)], group_betas)
    weights[:, heads], bias[heads], betas[heads] = w, b, chosen
  return weights.astype(np.float32), bias.astype(np.float32), betas


def fit_ridge(features, targets, beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """One head per target column at a fixed penalty (the paper's beta = 1).

  Args:
    features: [N, D] prompt features.
    targets: [N, M] targets, NaN where unobserved (a head uses only its observed prompts).
    beta: L2 penalty.

  Returns:
    (weights [D, M], bias [M]) float32 numpy arrays.
  """
  weights, bias, _ = fit_ridge_heads(features, targets, beta)
  return weights, bias
