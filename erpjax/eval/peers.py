"""Peer routers behind one interface, and the simple (untrained) ones.

Every peer is fit on the same train split and gives utilities `[N, M]` on the test split: a
predicted reward-like score per prompt and LLM. Routing at λ is argmax_i u[n, i] - λ·c_i
(`erpjax.eval.frontier.route`), the rule ERP routes with; the report sweeps each router over its
own grid of λ (`erpjax.routing.cost_weight_grid` of its utilities).

Routers are frozen dataclasses: the constructor holds the configuration, `fit` returns a new
fitted instance, and `utilities` needs a fitted one. The optax-trained peers (Zooter, matrix
factorisation, MLP) live in `erpjax.eval.trained_peers`.
"""

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from erpjax.routing import KNN


@dataclasses.dataclass(frozen=True, eq=False)
class RouterData:
  """One split of routing data.

  Attributes:
    embeddings: `[N, D]` float32 prompt embeddings.
    costs: `[M]` routing cost per call of each LLM.
    rewards: `[N, M]` observed expected rewards, or None (e.g. unlabeled test prompts).
    categories: `[N]` category names, or None.
  """

  embeddings: np.ndarray
  costs: np.ndarray
  rewards: np.ndarray | None = None
  categories: np.ndarray | None = None

  def __post_init__(self):
    set_ = functools.partial(object.__setattr__, self)
    set_("embeddings", np.asarray(self.embeddings, dtype=np.float32))
    set_("costs", np.asarray(self.costs, dtype=np.float64))
    if self.embeddings.ndim != 2:
      raise ValueError(f"embeddings must be [N, D], got {self.embeddings.shape}")
    if self.costs.ndim != 1:
      raise ValueError(f"costs must be [M], got {self.costs.shape}")
    if self.rewards is not None:
      set_("rewards", np.asarray(self.rewards, dtype=np.float64))
      if self.rewards.shape != (self.num_prompts, self.num_llms):
        raise ValueError(f"rewards {self.rewards.shape} must be [N, M] = "
                         f"[{self.num_prompts}, {self.num_llms}]")
      if not np.all(np.isfinite(self.rewards)):
        raise ValueError("rewards must be finite")
    if self.categories is not None:
      set_("categories", np.asarray(self.categories, dtype=str))
      if self.categories.shape != (self.num_prompts,):
        raise ValueError(f"categories {self.categories.shape} must be [N] = [{self.num_prompts}]")

  @property
  def num_prompts(self) -> int:
    return self.embeddings.shape[0]

  @property
  def num_llms(self) -> int:
    return self.costs.shape[0]

  def labeled_rewards(self) -> np.ndarray:
    """`[N, M]` rewards; raises if this split has none."""
    if self.rewards is None:
      raise ValueError("this router needs rewards, but the data has none")
    return self.rewards


@runtime_checkable
class PeerRouter(Protocol):
  """A router: fit on a train split, then utilities `[N, M]` for a test split."""

  name: str

  def fit(self, train: RouterData) -> "PeerRouter":
    ...

  def utilities(self, test: RouterData) -> np.ndarray:
    ...


def _require_fitted(state, name: str):
  if state is None:
    raise ValueError(f"router {name!r} is not fitted: call fit(train) first")
  return state


@dataclasses.dataclass(frozen=True)
class SingleLLM:
  """Always the LLM `index`: utility 0 for it and -inf for the others, so no λ moves it."""

  index: int
  name: str = "single"

  def fit(self, train: RouterData) -> "SingleLLM":
    if not 0 <= self.index < train.num_llms:
      raise ValueError(f"LLM index {self.index} outside [0, {train.num_llms})")
    return self

  def utilities(self, test: RouterData) -> np.ndarray:
    u = np.full((test.num_prompts, test.num_llms), -np.inf)
    u[:, self.index] = 0.0
    return u


@dataclasses.dataclass(frozen=True)
class RandomRouter:
  """Uniform random utilities in [0, 1), seeded.

  At λ = 0 every prompt goes to a uniformly random LLM; a larger λ tilts the random choice toward
  cheaper LLMs, so the family spans the costs of random mixtures.
  """

  seed: int = 0
  name: str = "random"

  def fit(self, train: RouterData) -> "RandomRouter":
    return self

  def utilities(self, test: RouterData) -> np.ndarray:
    return np.random.default_rng(self.seed).random((test.num_prompts, test.num_llms))


def permute_choices(choice, seed: int = 0) -> np.ndarray:
  """A seeded random permutation of a router's choices `[N]`: the same mix of LLMs (so the same
  cost), assigned with no information about the prompts."""
  return np.random.default_rng(seed).permutation(np.asarray(choice))


@dataclasses.dataclass(frozen=True)
class Oracle:
  """Utilities are the observed test rewards: the best any router can do on them."""

  name: str = "oracle"

  def fit(self, train: RouterData) -> "Oracle":
    return self

  def utilities(self, test: RouterData) -> np.ndarray:
    return test.labeled_rewards()


@dataclasses.dataclass(frozen=True, eq=False)
class CategoryBest:
  """Mean train reward per (category, LLM); unseen or missing categories get the global mean."""

  name: str = "category_best"
  table: Mapping[str, np.ndarray] | None = dataclasses.field(default=None, repr=False)
  overall: np.ndarray | None = dataclasses.field(default=None, repr=False)

  def fit(self, train: RouterData) -> "CategoryBest":
    rewards = train.labeled_rewards()
    if train.categories is None:
      raise ValueError("category_best needs train categories")
    table = {str(c): rewards[train.categories == c].mean(axis=0)
             for c in np.unique(train.categories)}
    return dataclasses.replace(self, table=table, overall=rewards.mean(axis=0))

  def utilities(self, test: RouterData) -> np.ndarray:
    table = _require_fitted(self.table, self.name)
    if test.categories is None:
      return np.tile(self.overall, (test.num_prompts, 1))
    return np.stack([table.get(c, self.overall) for c in test.categories.tolist()])


@dataclasses.dataclass(frozen=True, eq=False)
class KNNRouter:
  """Mean reward of the k nearest train prompts by cosine similarity of embeddings: the router's
  own `erpjax.routing.KNN` predictor at a fixed k."""

  k: int = 10
  name: str = "knn"
  state: Mapping[str, np.ndarray] | None = dataclasses.field(default=None, repr=False)

  def __post_init__(self):
    KNN(k=self.k)  # validates k

  def fit(self, train: RouterData) -> "KNNRouter":
    return dataclasses.replace(self, state=KNN(k=self.k).fit(train.embeddings,
                                                             train.labeled_rewards()))

  def utilities(self, test: RouterData) -> np.ndarray:
    state = _require_fitted(self.state, self.name)
    return np.asarray(KNN(k=self.k).predict(state, test.embeddings), dtype=np.float64)


def peer_utilities(routers: Sequence[PeerRouter], train: RouterData,
                   test: RouterData) -> dict[str, np.ndarray]:
  """Fit each router on `train` and return {name: utilities `[N_test, M]`} (names must differ)."""
  names = [r.name for r in routers]
  if len(set(names)) != len(names):
    raise ValueError(f"router names must be unique, got {names}")
  return {r.name: np.asarray(r.fit(train).utilities(test)) for r in routers}
