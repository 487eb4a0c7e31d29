"""Expected-reward predictors behind one interface: ridge, kNN, soft clusters, MLP, shrinkage.

A predictor is a frozen dataclass of hyper-parameters (`spec()`: JSON-able, saved in a router's
checkpoint metadata) whose `fit` returns its learned state: a flat dict of finite numpy arrays
(saved with orbax beside the spec). `predict(state, features)` maps `[B, D]` features to `[B, M]`
predicted expected rewards. `add_llm(state, features, target)` returns the state with one more LLM:
only the new LLM's parameters are fit; every array entry of the others is copied bit for bit.

Targets are `[N, M]` with NaN where an LLM has no sample on a prompt; each LLM's parameters are fit
on its observed prompts only. Shapes: N training prompts, B query prompts, D features, M LLMs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from erpjax.routing import _ridge

State = dict[str, np.ndarray]


class Predictor(Protocol):
  """The interface every predictor follows (see the module docstring)."""

  kind: ClassVar[str]

  def fit(self, features_nd: np.ndarray, targets_nm: np.ndarray) -> State:
    """Learns the state from `[N, D]` features and `[N, M]` targets (NaN = unobserved)."""
    ...

  def predict(self, state: Mapping[str, Any], features_bd) -> jax.Array:
    """`[B, D]` features -> `[B, M]` predicted expected rewards."""
    ...

  def add_llm(self, state: Mapping[str, Any], features_nd: np.ndarray,
              target_n: np.ndarray) -> State:
    """The state with one more LLM fit on `[N, D]` features and its `[N]` targets."""
    ...

  def llm_axes(self) -> dict[str, int]:
    """{state array name: its LLM axis} for the arrays with one entry per LLM."""
    ...


def spec(predictor) -> dict[str, Any]:
  """The JSON-able description of `predictor`: its kind and hyper-parameters."""
  out = {"kind": predictor.kind}
  for field in dataclasses.fields(predictor):
    value = getattr(predictor, field.name)
    out[field.name] = spec(value) if hasattr(value, "kind") else value
  return out


def from_spec(raw: Mapping[str, Any]):
  """The predictor `spec` described."""
  raw = dict(raw)
  kind = raw.pop("kind", None)
  if kind not in PREDICTORS:
    raise ValueError(f"unknown predictor kind {kind!r}; known: {sorted(PREDICTORS)}")
  cls = PREDICTORS[kind]
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(raw) - known)
  if unknown:
    raise ValueError(f"predictor {kind!r}: unknown option(s) {unknown}; known: {sorted(known)}")
  values = {k: from_spec(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
  return cls(**values)


def spec_json(predictor) -> str:
  """`spec` as canonical JSON (sorted keys): hashable, and equal for equal predictors."""
  return json.dumps(spec(predictor), sort_keys=True)


def _check_fit_inputs(features, targets) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(features, np.float32)
  y = np.asarray(targets, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
    raise ValueError(f"need features [N, D] and targets [N, M], got {x.shape}, {y.shape}")
  empty = [j for j in range(y.shape[1]) if not np.isfinite(y[:, j]).any()]
  if empty:
    raise ValueError(f"target column(s) {empty} have no observed value to fit on")
  return x, y


def _column(target_n) -> np.ndarray:
  return np.asarray(target_n, np.float64).reshape(-1, 1)


def _observed_means(y_nm: np.ndarray) -> np.ndarray:
  """[M] mean of each column's finite entries."""
  observed = np.isfinite(y_nm)
  return np.where(observed, y_nm, 0.0).sum(0) / observed.sum(0)


# Ridge.


@dataclasses.dataclass(frozen=True)
class Ridge:
  """Linear heads, one per LLM (the paper's ERP predictor).

  Attributes:
    beta: the L2 penalty of every head; None = each head chooses its own from `_ridge.BETA_GRID`
      by exact leave-one-out error (one eigendecomposition per set of observed prompts).
  """

  kind: ClassVar[str] = "ridge"
  beta: float | None = None

  def __post_init__(self):
    if self.beta is not None and not self.beta > 0:
      raise ValueError(f"ridge beta must be positive, got {self.beta}")

  def fit(self, features_nd, targets_nm) -> State:
    x, y = _check_fit_inputs(features_nd, targets_nm)
    kernel, bias, betas = _ridge.fit_ridge_heads(x, y, self.beta)
    return {"kernel": kernel, "bias": bias, "beta": betas}

  def predict(self, state, features_bd) -> jax.Array:
    return jnp.asarray(features_bd, jnp.float32) @ state["kernel"] + state["bias"]

  def add_llm(self, state, features_nd, target_n) -> State:
    new = self.fit(features_nd, _column(target_n))
    return {k: np.concatenate([np.asarray(state[k]), new[k]], axis=-1) for k in new}

  def llm_axes(self) -> dict[str, int]:
    return {"kernel": 1, "bias": 0, "beta": 0}


# kNN.

KNN_GRID = (2, 5, 10, 20, 40, 80, 160, 320)


def unit_rows(x: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm (a zero row stays zero): cosine similarity is then a dot."""
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("top", "shared"))
def _knn_means(query_bd, points_nd, values_nm, observed_nm, valid_n, ks_km, exclude_b, *, top: int,
               shared: bool):
  """[K, B, M] mean of each LLM's values over the query's k most cosine-similar observed points,
  for each row of k values `ks_km` [K, M].

  Each LLM ranks only the points where it is observed (`shared`: every LLM is observed on every
  point, so one ranking serves all). `exclude_b` (an index, or -1) removes one point per query
  (leave-one-out on the training points); padding points (`valid_n` False) are never
  neighbours. `top` >= every k, static.
  """
  sims_bn = query_bd @ points_nd.T
  n, m = values_nm.shape
  drop_bn = (jnp.arange(n)[None, :] == exclude_b[:, None]) | ~valid_n[None, :]
  sims_bn = jnp.where(drop_bn, -jnp.inf, sims_bn)
  if shared:
    top_sims_bt, idx_bt = jax.lax.top_k(sims_bn, top)
    values_btm = values_nm[idx_bt]
    valid_btm = jnp.broadcast_to(jnp.isfinite(top_sims_bt)[..., None], values_btm.shape)
  else:
    def one_llm(values_n, observed_n):
      top_sims_bt, idx_bt = jax.lax.top_k(jnp.where(observed_n > 0, sims_bn, -jnp.inf), top)
      return values_n[idx_bt], jnp.isfinite(top_sims_bt)

    values_btm, valid_btm = jax.vmap(one_llm, in_axes=1, out_axes=2)(values_nm, observed_nm)
  # Cumulative sums over the ranking give the mean at every k at once.
  total_btm = jnp.cumsum(jnp.where(valid_btm, values_btm, 0.0), axis=1)
  count_btm = jnp.cumsum(valid_btm, axis=1)
  at_km = jnp.clip(ks_km - 1, 0, top - 1)
  llm_1m = jnp.arange(m)[None, :]
  means_bkm = total_btm[:, at_km, llm_1m] / jnp.maximum(count_btm[:, at_km, llm_1m], 1)
  return jnp.transpose(means_bkm, (1, 0, 2))


def _pad_rows(x: np.ndarray, rows: int, value=0) -> np.ndarray:
  return np.concatenate([x, np.full((rows - x.shape[0], *x.shape[1:]), value, x.dtype)])


def _padded_size(n: int, multiple: int = 256) -> int:
  return -(-max(n, 1) // multiple) * multiple


def _knn_batched(query_bd, points_nd, values_nm, observed_nm, ks_km, exclude_b=None,
                 batch_size: int = 256) -> np.ndarray:
  """`_knn_means` [K, B, M] over query batches (memory: batch_size x N similarities per LLM).

  Points are padded to a multiple of 256 and queries to whole batches, so that fits on folds of
  slightly different sizes share one compiled program.
  """
  query_bd = np.asarray(query_bd, np.float32)
  ks_km = np.atleast_2d(np.asarray(ks_km, np.int32))
  b, n = query_bd.shape[0], np.shape(points_nd)[0]
  exclude_b = np.full(b, -1, np.int32) if exclude_b is None else np.asarray(exclude_b, np.int32)
  top = min(int(ks_km.max()), n)
  shared = bool(np.all(np.asarray(observed_nm) > 0))
  rows = _padded_size(n)
  points, values, observed = (_pad_rows(np.asarray(a, np.float32), rows)
                              for a in (points_nd, values_nm, observed_nm))
  valid = np.arange(rows) < n
  query = _pad_rows(query_bd, _padded_size(b, batch_size))
  exclude = _pad_rows(exclude_b, query.shape[0], -1)
  out = [np.asarray(_knn_means(query[s:s + batch_size], points, values, observed, valid, ks_km,
                               exclude[s:s + batch_size], top=top, shared=shared))
         for s in range(0, query.shape[0], batch_size)]
  return np.concatenate(out, axis=1)[:, :b]


@dataclasses.dataclass(frozen=True)
class KNN:
  """Mean reward of the k most cosine-similar training prompts, per LLM over its observed prompts.

  Attributes:
    k: neighbours; None = each LLM takes the k of `KNN_GRID` with the least leave-one-out squared
      error on the training prompts.
  """

  kind: ClassVar[str] = "knn"
  k: int | None = None

  def __post_init__(self):
    if self.k is not None and self.k < 1:
      raise ValueError(f"knn k must be >= 1, got {self.k}")

  def fit(self, features_nd, targets_nm) -> State:
    x, y = _check_fit_inputs(features_nd, targets_nm)
    points = unit_rows(x)
    observed = np.isfinite(y)
    values = np.where(observed, y, 0.0).astype(np.float32)
    observed = observed.astype(np.float32)
    m = y.shape[1]
    if self.k is not None:
      k = np.full(m, self.k, np.int32)
    else:
      k = self._loo_k(points, values, observed, y)
    return {"points": points, "values": values, "observed": observed, "k": k}

  @staticmethod
  def _loo_k(points, values, observed, y) -> np.ndarray:
    grid = np.asarray([g for g in KNN_GRID if g < points.shape[0]] or [1], np.int32)
    ks = np.repeat(grid[:, None], y.shape[1], axis=1)
    pred = _knn_batched(points, points, values, observed, ks, np.arange(points.shape[0]))
    errors = np.nanmean((pred - y[None]) ** 2, axis=1)  # [K, M]
    return grid[np.argmin(errors, axis=0)]

  def predict(self, state, features_bd) -> jax.Array:
    state = {k: np.asarray(v) for k, v in state.items()}
    return jnp.asarray(_knn_batched(unit_rows(features_bd), state["points"], state["values"],
                                    state["observed"], state["k"])[0])

  def add_llm(self, state, features_nd, target_n) -> State:
    # The new LLM's prompts join the neighbour set, unobserved for the other LLMs (which therefore
    # rank exactly the same points as before).
    new = self.fit(features_nd, _column(target_n))
    n_old, m_old = np.shape(state["values"])
    n_new = new["points"].shape[0]
    pad_old = np.zeros((n_old, 1), np.float32)
    pad_new = np.zeros((n_new, m_old), np.float32)
    return {
        "points": np.concatenate([state["points"], new["points"]]),
        "values": np.block([[np.asarray(state["values"]), pad_old], [pad_new, new["values"]]]),
        "observed": np.block([[np.asarray(state["observed"]), pad_old],
                              [pad_new, new["observed"]]]),
        "k": np.concatenate([state["k"], new["k"]]),
    }

  def llm_axes(self) -> dict[str, int]:
    return {"values": 1, "observed": 1, "k": 0}


# Soft clusters.


def spherical_kmeans(x_nd: np.ndarray, clusters: int, *, seed: int = 0,
                     iterations: int = 30) -> np.ndarray:
  """[C, D] unit centroids of k-means on the unit sphere (cosine), k-means++ seeding, seeded."""
  x = unit_rows(x_nd).astype(np.float64)
  n = x.shape[0]
  clusters = min(clusters, n)
  rng = np.random.default_rng(seed)
  centroids = [x[rng.integers(n)]]
  dist = 1.0 - x @ centroids[0]
  for _ in range(1, clusters):
    p = np.maximum(dist, 0.0)
    idx = rng.choice(n, p=p / p.sum()) if p.sum() > 0 else rng.integers(n)
    centroids.append(x[idx])
    dist = np.minimum(dist, 1.0 - x @ x[idx])
  c = np.stack(centroids)
  for _ in range(iterations):
    assign = np.argmax(x @ c.T, axis=1)
    sums = np.zeros_like(c)
    np.add.at(sums, assign, x)
    empty = np.linalg.norm(sums, axis=1) == 0
    sums[empty] = c[empty]  # an empty cluster keeps its centroid
    new = unit_rows(sums).astype(np.float64)
    if np.allclose(new, c):
      break
    c = new
  return c.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SoftCluster:
  """Per-cluster per-LLM mean rewards, mixed by a softmax over the query's nearest centroids.

  Clusters are spherical k-means clusters of the training embeddings. A cluster's mean for an LLM
  is shrunk toward that LLM's global mean by `prior` pseudo-prompts, so small clusters do not
  trust a handful of 0/1 rewards. A query's prediction is the softmax(cosine / `temperature`)
  weighted mean over its `nearest` centroids.
  """

  kind: ClassVar[str] = "cluster"
  clusters: int = 32
  temperature: float = 0.05
  nearest: int = 3
  prior: float = 5.0
  seed: int = 0

  def __post_init__(self):
    if self.clusters < 1 or self.nearest < 1 or not self.temperature > 0 or self.prior < 0:
      raise ValueError(f"invalid cluster predictor {self}")

  @staticmethod
  def _cluster_means(centroids, x, y, prior) -> np.ndarray:
    """[C, M] shrunk means of y's finite entries per nearest centroid of each row of x."""
    assign = np.argmax(unit_rows(x) @ centroids.T, axis=1)
    observed = np.isfinite(y)
    c = centroids.shape[0]
    sums = np.zeros((c, y.shape[1]))
    counts = np.zeros((c, y.shape[1]))
    np.add.at(sums, assign, np.where(observed, y, 0.0))
    np.add.at(counts, assign, observed)
    overall = _observed_means(y)
    return ((sums + prior * overall) / np.maximum(counts + prior, 1e-12)).astype(np.float32)

  def fit(self, features_nd, targets_nm) -> State:
    x, y = _check_fit_inputs(features_nd, targets_nm)
    centroids = spherical_kmeans(x, self.clusters, seed=self.seed)
    return {"centroids": centroids, "cluster_values": self._cluster_means(centroids, x, y,
                                                                          self.prior)}

  def predict(self, state, features_bd) -> jax.Array:
    return _soft_cluster(jnp.asarray(unit_rows(features_bd)), jnp.asarray(state["centroids"]),
                         jnp.asarray(state["cluster_values"]),
                         min(self.nearest, np.shape(state["centroids"])[0]), self.temperature)

  def add_llm(self, state, features_nd, target_n) -> State:
    x, y = _check_fit_inputs(features_nd, _column(target_n))
    column = self._cluster_means(np.asarray(state["centroids"]), x, y, self.prior)
    return {"centroids": np.asarray(state["centroids"]),
            "cluster_values": np.concatenate([np.asarray(state["cluster_values"]), column], 1)}

  def llm_axes(self) -> dict[str, int]:
    return {"cluster_values": 1}


@functools.partial(jax.jit, static_argnames=("nearest",))
def _soft_cluster(query_bd, centroids_cd, values_cm, nearest, temperature):
  top_sims, idx = jax.lax.top_k(query_bd @ centroids_cd.T, nearest)
  weights = jax.nn.softmax(top_sims / temperature, axis=1)
  return jnp.einsum("bt,btm->bm", weights, values_cm[idx])


# MLP.


@dataclasses.dataclass(frozen=True)
class MLPPredictor:
  """A one-hidden-layer GELU MLP (`_mlp.MLP`) regressing all LLMs' rewards at once, trained with
  AdamW on the mean squared error over observed cells. A new LLM gets a ridge head (penalty by
  leave-one-out) on the frozen hidden layer, so the other LLMs' weights do not move."""

  kind: ClassVar[str] = "mlp"
  hidden: int = 128
  steps: int = 300
  learning_rate: float = 3e-3
  weight_decay: float = 1e-4
  seed: int = 0

  def __post_init__(self):
    if self.hidden < 0:
      raise ValueError(f"mlp hidden must be >= 0, got {self.hidden}")

  def train(self, features_nd, targets_nm, *, mesh=None) -> tuple[State, np.ndarray]:
    """`fit`, also returning the loss before each step `[steps]`.

    Trains data parallel over the "data" axis of `mesh` (default: every device); in a
    multi-process run each process passes its own rows and gets the same state
    (`_mlp.train_full_batch`).
    """
    from flax import nnx

    from erpjax.routing import _mlp

    x, y = _check_fit_inputs(features_nd, targets_nm)
    config = _mlp.TrainConfig(self.steps, self.learning_rate, self.weight_decay, self.seed)
    model = _mlp.MLP(x.shape[1], self.hidden, y.shape[1], rngs=nnx.Rngs(self.seed))
    # Padding rows with unobserved (NaN) targets leaves the masked loss as it is and lets folds of
    # slightly different sizes share one compiled training loop.
    rows = _padded_size(x.shape[0])
    model, losses = _mlp.train_full_batch(model, _mlp.masked_mse, _pad_rows(x, rows),
                                          _pad_rows(y, rows, np.nan), config, mesh=mesh)
    state = {"out_kernel": np.asarray(model.out.kernel[...]),
             "out_bias": np.asarray(model.out.bias[...])}
    if self.hidden:
      state["hidden_kernel"] = np.asarray(model.hidden.kernel[...])
      state["hidden_bias"] = np.asarray(model.hidden.bias[...])
    return state, losses

  def fit(self, features_nd, targets_nm, *, mesh=None) -> State:
    return self.train(features_nd, targets_nm, mesh=mesh)[0]

  def _hidden(self, state, features_bd) -> jax.Array:
    x = jnp.asarray(features_bd, jnp.float32)
    if not self.hidden:
      return x
    return jax.nn.gelu(x @ state["hidden_kernel"] + state["hidden_bias"])

  def predict(self, state, features_bd) -> jax.Array:
    return self._hidden(state, features_bd) @ state["out_kernel"] + state["out_bias"]

  def add_llm(self, state, features_nd, target_n) -> State:
    h = np.asarray(self._hidden(state, features_nd))
    kernel, bias, _ = _ridge.fit_ridge_heads(h, _column(target_n), None)
    out = {k: np.asarray(v) for k, v in state.items()}
    out["out_kernel"] = np.concatenate([out["out_kernel"], kernel], axis=1)
    out["out_bias"] = np.concatenate([out["out_bias"], bias])
    return out

  def llm_axes(self) -> dict[str, int]:
    return {"out_kernel": 1, "out_bias": 0}


# Shrinkage.


@dataclasses.dataclass(frozen=True)
class GlobalMean:
  """Each LLM's mean training reward, whatever the prompt: the best-single-LLM view."""

  kind: ClassVar[str] = "mean"

  def fit(self, features_nd, targets_nm) -> State:
    _, y = _check_fit_inputs(features_nd, targets_nm)
    return {"mean": _observed_means(y).astype(np.float32)}

  def predict(self, state, features_bd) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(state["mean"]),
                            (np.shape(features_bd)[0], np.shape(state["mean"])[0]))

  def add_llm(self, state, features_nd, target_n) -> State:
    return {"mean": np.concatenate([np.asarray(state["mean"]),
                                    self.fit(features_nd, _column(target_n))["mean"]])}

  def llm_axes(self) -> dict[str, int]:
    return {"mean": 0}


@dataclasses.dataclass(frozen=True)
class Shrunk:
  """(1 - weight) * base + weight * anchor: a per-prompt estimate shrunk toward a coarser one
  (its soft cluster's mean, or each LLM's global mean). State arrays are those of both parts,
  prefixed "base_" and "anchor_"."""

  kind: ClassVar[str] = "shrunk"
  base: Any = dataclasses.field(default_factory=KNN)
  anchor: Any = dataclasses.field(default_factory=GlobalMean)
  weight: float = 0.5

  def __post_init__(self):
    if not 0.0 <= self.weight <= 1.0:
      raise ValueError(f"shrinkage weight must be in [0, 1], got {self.weight}")

  @staticmethod
  def _split(state) -> tuple[dict, dict]:
    parts: tuple[dict, dict] = ({}, {})
    for key, value in state.items():
      part, name = key.split("_", 1)
      parts[part == "anchor"][name] = value
    return parts

  @staticmethod
  def _join(base, anchor) -> State:
    return {**{f"base_{k}": v for k, v in base.items()},
            **{f"anchor_{k}": v for k, v in anchor.items()}}

  def fit(self, features_nd, targets_nm) -> State:
    return self._join(self.base.fit(features_nd, targets_nm),
                      self.anchor.fit(features_nd, targets_nm))

  def predict(self, state, features_bd) -> jax.Array:
    base, anchor = self._split(state)
    return ((1.0 - self.weight) * self.base.predict(base, features_bd)
            + self.weight * self.anchor.predict(anchor, features_bd))

  def add_llm(self, state, features_nd, target_n) -> State:
    base, anchor = self._split(state)
    return self._join(self.base.add_llm(base, features_nd, target_n),
                      self.anchor.add_llm(anchor, features_nd, target_n))

  def llm_axes(self) -> dict[str, int]:
    return {**{f"base_{k}": a for k, a in self.base.llm_axes().items()},
            **{f"anchor_{k}": a for k, a in self.anchor.llm_axes().items()}}


PREDICTORS = {cls.kind: cls for cls in (Ridge, KNN, SoftCluster, MLPPredictor, GlobalMean, Shrunk)}
