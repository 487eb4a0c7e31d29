"""Ridge heads fit from streamed, sharded sufficient statistics: N never sits on one device.

Each chunk of prompts is split by rows over the mesh's "data" axis (and over processes: every
process passes its own rows); each device sums its rows' statistics and one psum over "data"
adds them up, so a chunk costs [D, D] per device whatever its length. The host adds the chunks'
sums in float64. From the totals, `ridge_path` (one eigendecomposition of the centered Gram)
gives each head's weights for a grid of penalties and their GCV scores, so the penalty is chosen
from the same statistics (exact LOO needs each prompt's hat value, which sums do not keep).

Statistics of head m over the prompts where its target is observed (NaN = unobserved):
count n_m, sum x, sum y, X^T X, X^T y, y^T y. X^T y and the sums of y are [D, M] and [M] for all
heads at once (an unobserved target contributes 0). The Gram differs between heads observed on
different prompts, so Grams are kept per *observation pattern*: heads start in one group and a
group splits when a chunk observes its heads on different prompts (partition refinement by a
digest of each head's observed-row mask). All heads observed on all prompts, the common case,
keep one Gram; M heads with M different patterns keep M, and each Gram costs one [n, D] x [n, D]
product per chunk, so those fits cost M times as much.

Features and targets are shifted by the first chunk's means before summing (the "shifted data"
algorithm): the centered Gram X^T X - n mean mean^T then cancels little in float32.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from erpjax import sharding
from erpjax.runtime import distributed
from erpjax.routing._ridge import BETA_GRID, ridge_path

_HIGHEST = jax.lax.Precision.HIGHEST  # TPUs multiply float32 in bfloat16 passes by default.


@dataclasses.dataclass(frozen=True)
class RidgeFit:
  """Ridge heads chosen by GCV.

  Attributes:
    weights: [D, M] float32.
    bias: [M] float32.
    betas: [M] the chosen penalty of each head.
    gcv: [K, M] GCV score of each penalty of `grid` for each head.
    grid: [K] the penalties tried.
    counts: [M] prompts each head was fit on.
  """

  weights: np.ndarray
  bias: np.ndarray
  betas: np.ndarray
  gcv: np.ndarray
  grid: np.ndarray
  counts: np.ndarray


# One jitted function per mesh, so fits on the same mesh share their compiled steps.
@functools.cache
def _chunk_means(mesh: Mesh):
  """Jitted (x [n, D], y [n, M], observed [n, M], valid [n]) -> (sum x, rows, sum y, count)."""

  def local(x_nd, y_nm, observed_nm, valid_n):
    sums = (valid_n @ x_nd, valid_n.sum(), jnp.where(observed_nm, y_nm, 0.0).sum(0),
            observed_nm.sum(0, dtype=jnp.float32))
    return jax.lax.psum(sums, sharding.DATA)

  rows = PartitionSpec(sharding.DATA)
  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(rows, rows, rows, rows),
                               out_specs=PartitionSpec()))


@functools.cache
def _chunk_moments(mesh: Mesh):
  """Jitted sums of one chunk's shifted moments, psum'd over "data".

  Args of the jitted function:
    x_nd: [n, D] features, y_nm: [n, M] targets (anything where unobserved),
    observed_nm: bool[n, M], groups_ng: [n, G] 1.0 where group g's heads are observed,
    shift_d: [D], shift_m: [M].

  Returns:
    (count_m [M], sum_x_gd [G, D], gram_gde [G, D, D], sum_y_m [M], sum_yy_m [M], xty_dm [D, M]).
  """

  def local(x_nd, y_nm, observed_nm, groups_ng, shift_d, shift_m):
    xs_nd = x_nd - shift_d
    ys_nm = jnp.where(observed_nm, y_nm - shift_m, 0.0)
    # One group at a time: an einsum over all groups would materialize [n, G, D].
    gram_gde = jax.lax.map(
        lambda o_n: jnp.dot((xs_nd * o_n[:, None]).T, xs_nd, precision=_HIGHEST), groups_ng.T)
    sums = (observed_nm.sum(0, dtype=jnp.float32),
            jnp.dot(groups_ng.T, xs_nd, precision=_HIGHEST),
            gram_gde,
            ys_nm.sum(0),
            (ys_nm * ys_nm).sum(0),
            jnp.dot(xs_nd.T, ys_nm, precision=_HIGHEST))
    return jax.lax.psum(sums, sharding.DATA)

  rows, whole = PartitionSpec(sharding.DATA), PartitionSpec()
  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(rows,) * 4 + (whole, whole),
                               out_specs=whole))


def _column_digests(observed_nm: np.ndarray) -> np.ndarray:
  """uint8[M, 16]: a digest of each column's observed-row mask."""
  packed = np.packbits(observed_nm, axis=0)
  return np.stack([np.frombuffer(hashlib.blake2b(packed[:, j].tobytes(), digest_size=16).digest(),
                                 np.uint8) for j in range(observed_nm.shape[1])])


class RidgeStatistics:
  """Streams (features, targets) chunks into the sufficient statistics of M ridge heads.

  In a multi-process run every process calls `add` equally often with its own rows (the row
  counts may differ; an empty chunk is fine; `fit_ridge_streamed` arranges it) and `solve` on all
  processes gives the same fit.
  """

  def __init__(self, num_features: int, num_heads: int, *, mesh: Mesh | None = None,
               rows_per_device: int = 4096):
    """Empty statistics of `num_heads` heads on `num_features` features.

    Args:
      num_features: D.
      num_heads: M.
      mesh: a mesh with a "data" axis; default: every device on "data".
      rows_per_device: rows each device sums per step; a chunk is cut into steps of
        rows_per_device x (devices on "data") rows, the last one padded.
    """
    self.mesh = sharding.make_mesh(1) if mesh is None else mesh
    self.num_features, self.num_heads = num_features, num_heads
    data_devices = self.mesh.shape[sharding.DATA]
    if data_devices % jax.process_count():
      raise ValueError(f"{data_devices} devices on 'data' do not split over "
                       f"{jax.process_count()} processes")
    # Each process feeds its own rows: its share of a step.
    self._local_rows = rows_per_device * data_devices // jax.process_count()
    self._rows_sharding = NamedSharding(self.mesh, PartitionSpec(sharding.DATA))
    self._means = _chunk_means(self.mesh)
    self._moments = _chunk_moments(self.mesh)
    self.shift_d: np.ndarray | None = None
    self.shift_m: np.ndarray | None = None
    self.count_m = np.zeros(num_heads, np.int64)
    self.group_of_head = np.zeros(num_heads, np.int64)
    self.sum_x_gd = np.zeros((1, num_features))
    self.gram_gde = np.zeros((1, num_features, num_features))
    self.sum_y_m = np.zeros(num_heads)
    self.sum_yy_m = np.zeros(num_heads)
    self.xty_dm = np.zeros((num_features, num_heads))

  @property
  def num_groups(self) -> int:
    """Distinct observation patterns so far (Grams kept)."""
    return self.gram_gde.shape[0]

  def add(self, features_nd: np.ndarray, targets_nm: np.ndarray) -> None:
    """Adds this process's rows: features [n, D], targets [n, M] with NaN where unobserved."""
    x = np.asarray(features_nd, np.float32)
    y = np.asarray(targets_nm, np.float32)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or (
        (x.shape[1], y.shape[1]) != (self.num_features, self.num_heads)):
      raise ValueError(f"need features [n, {self.num_features}] and targets "
                       f"[n, {self.num_heads}], got {x.shape} and {y.shape}")
    observed = ~np.isnan(y)
    if not (np.isfinite(x).all() and np.isfinite(y[observed]).all()):
      raise ValueError("features and observed targets must be finite (NaN = unobserved target)")
    # Every process must run the same number of steps: the longest chunk sets it.
    rows = max(distributed.allgather(np.array([x.shape[0]]))[:, 0])
    for start in range(0, rows, self._local_rows):
      self._add_step(x[start:start + self._local_rows], y[start:start + self._local_rows],
                     observed[start:start + self._local_rows])

  def _global(self, local: np.ndarray) -> jax.Array:
    """This process's [local_rows, ...] block of a global array split by rows over "data"."""
    padded = np.zeros((self._local_rows,) + local.shape[1:], local.dtype)
    padded[:local.shape[0]] = local
    return jax.make_array_from_process_local_data(self._rows_sharding, padded)

  def _add_step(self, x: np.ndarray, y: np.ndarray, observed: np.ndarray) -> None:
    if self.shift_d is None:
      valid = np.ones(x.shape[0], np.float32)
      sum_x, rows, sum_y, count = jax.device_get(self._means(
          *(self._global(a) for a in (x, y, observed, valid))))
      if rows == 0:
        return  # Nothing to shift by yet, nor to add.
      self.shift_d = sum_x / rows
      self.shift_m = np.where(count > 0, sum_y / np.maximum(count, 1), 0.0).astype(np.float32)
    self._refine_groups(observed)
    # Group g's mask in this chunk is that of any of its heads (they share it now).
    first_head = np.array([np.flatnonzero(self.group_of_head == g)[0]
                           for g in range(self.num_groups)])
    groups_ng = observed[:, first_head].astype(np.float32)
    sums = jax.device_get(self._moments(
        *(self._global(a) for a in (x, y, observed, groups_ng)), self.shift_d, self.shift_m))
    count_m, sum_x_gd, gram_gde, sum_y_m, sum_yy_m, xty_dm = (
        np.asarray(s, np.float64) for s in sums)
    self.count_m += np.rint(count_m).astype(np.int64)
    self.sum_x_gd += sum_x_gd
    self.gram_gde += gram_gde
    self.sum_y_m += sum_y_m
    self.sum_yy_m += sum_yy_m
    self.xty_dm += xty_dm

  def _refine_groups(self, observed: np.ndarray) -> None:
    """Splits groups whose heads this chunk observes on different rows (of any process)."""
    digests = distributed.allgather(_column_digests(observed))  # [P, M, 16]
    keys = [(int(self.group_of_head[m]), digests[:, m].tobytes()) for m in range(self.num_heads)]
    new_ids: dict[tuple[int, bytes], int] = {}
    group_of_head = np.array([new_ids.setdefault(key, len(new_ids)) for key in keys])
    if len(new_ids) == self.num_groups:
      return  # Same partition (refinement never merges, so equal counts mean equal groups).
    # A new group inherits the sums of the group it split from: its heads shared those prompts.
    parent = np.array([old for old, _ in new_ids])
    self.sum_x_gd = self.sum_x_gd[parent]
    self.gram_gde = self.gram_gde[parent]
    self.group_of_head = group_of_head

  def solve(self, betas=BETA_GRID) -> RidgeFit:
    """Each head's weights at the penalty of `betas` with the least GCV (ties: the larger)."""
    grid = np.asarray(betas, np.float64)
    if not self.count_m.all():
      raise ValueError(f"heads {np.flatnonzero(self.count_m == 0).tolist()} have no observed "
                       "target to fit on")
    shift_d = np.asarray(self.shift_d, np.float64)
    shift_m = np.asarray(self.shift_m, np.float64)
    d, m, k = self.num_features, self.num_heads, grid.size
    weights, bias = np.zeros((d, m)), np.zeros(m)
    chosen, gcv = np.zeros(m), np.zeros((k, m))
    for g in range(self.num_groups):
      heads = np.flatnonzero(self.group_of_head == g)
      n = float(self.count_m[heads[0]])
      mean_x = self.sum_x_gd[g] / n
      mean_y = self.sum_y_m[heads] / n
      gram = self.gram_gde[g] - n * np.outer(mean_x, mean_x)
      rhs = self.xty_dm[:, heads] - n * np.outer(mean_x, mean_y)
      yty = self.sum_yy_m[heads] - n * mean_y**2
      path_kdh, gcv_kh = ridge_path(gram, rhs, yty, n, grid)
      # Ties (e.g. a constant target) go to the largest penalty, as `fit_ridge_heads` does.
      best = k - 1 - np.argmin(gcv_kh[::-1], axis=0)
      w_dh = path_kdh[best, :, np.arange(heads.size)].T
      weights[:, heads], chosen[heads], gcv[:, heads] = w_dh, grid[best], gcv_kh
      bias[heads] = (mean_y + shift_m[heads]) - (mean_x + shift_d) @ w_dh
    return RidgeFit(weights.astype(np.float32), bias.astype(np.float32), chosen, gcv, grid,
                    self.count_m.copy())


def fit_ridge_streamed(chunks, num_features: int, num_heads: int, betas=BETA_GRID, *,
                       mesh: Mesh | None = None, rows_per_device: int = 4096) -> RidgeFit:
  """Ridge heads from an iterable of (features [n, D], targets [n, M]) chunks (NaN = unobserved).

  See `RidgeStatistics`; with one penalty in `betas` every head uses it. In a multi-process run
  each process passes its own chunks, as many as it has.
  """
  stats = RidgeStatistics(num_features, num_heads, mesh=mesh, rows_per_device=rows_per_device)
  chunks = iter(chunks)
  empty = (np.zeros((0, num_features), np.float32), np.zeros((0, num_heads), np.float32))
  while True:
    chunk = next(chunks, None)
    # Processes whose chunks ran out add empty ones until every process's have.
    if not distributed.allgather(np.array([chunk is not None])).any():
      return stats.solve(betas)
    stats.add(*(empty if chunk is None else chunk))
