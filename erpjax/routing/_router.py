"""The ERP router: any predictor's state, the LLMs' costs and the cost-aware routing rule.

rho_lambda(x) = argmax_i  U_i(x) - lambda * c_i   (paper, Sec. "Applications to model routing"),
with U_i(x) the predicted expected reward ER_i(x), less a per-LLM margin at lambda = 0. The margins
are zero unless the safe rule (`erpjax.routing.calibrate_margins`) set them: then the cost-free
router leaves the LLM that is best on the training split only where another LLM's predicted
advantage exceeds a margin calibrated by cross-validation. At lambda > 0 the cost term itself moves
prompts off the default LLM, and the margins would only hold cheap LLMs back: the router routes on
its predictions there (on RouterBench's training split, out-of-fold AIQ 0.84 against 0.75-0.83
with the margins kept at every lambda).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from erpjax.routing import _predictors

# Router attributes that a predictor's state array may not be named after.
_RESERVED = ("spec", "predictor", "state_names", "feature_mean", "feature_scale", "costs",
             "margins")


@dataclasses.dataclass(frozen=True)
class RouterSpec:
  """What a router was built from; saved beside its arrays and checked on load.

  Attributes:
    llms: [M] LLM names, in the order of the predictions.
    encoder: identifier of the prompt encoder whose embeddings the router reads.
    reward_model: the reward model whose expected reward the router predicts.
    embedding_dim: D.
    predictor: the predictor's spec as canonical JSON (`_predictors.spec_json`).
    standardize: whether features are standardized before the predictor.
    default_llm: index of the LLM the safe rule falls back to (best on the training split), or
      None when the router routes on its raw predictions.
  """

  llms: tuple[str, ...]
  encoder: str
  reward_model: str
  embedding_dim: int
  predictor: str = '{"beta": 1.0, "kind": "ridge"}'
  standardize: bool = False
  default_llm: int | None = None

  def __post_init__(self):
    if len(set(self.llms)) != len(self.llms):
      raise ValueError(f"duplicate LLM names in {self.llms}")
    if self.embedding_dim <= 0:
      raise ValueError(f"embedding_dim must be positive, got {self.embedding_dim}")
    if self.default_llm is not None and not 0 <= self.default_llm < len(self.llms):
      raise ValueError(f"default_llm {self.default_llm} outside [0, {len(self.llms)})")
    _predictors.from_spec(json.loads(self.predictor))  # refuses unknown kinds and options

  def make_predictor(self):
    return _predictors.from_spec(json.loads(self.predictor))


class ERPRouter(nnx.Module):
  """Predicts ER_i(x) for M LLMs from a D-dim prompt embedding and routes under a cost penalty.

  The predictor's state arrays are attributes of the module under their own names (a ridge
  router has `kernel` [D, M] and `bias` [M]), so that `nnx.state` and the checkpoint hold them.
  """

  def __init__(self, spec: RouterSpec, state: Mapping[str, object]):
    d, m = spec.embedding_dim, len(spec.llms)
    clash = sorted(set(state) & set(_RESERVED))
    if clash:
      raise ValueError(f"predictor state names {clash} clash with the router's own attributes")
    self.spec = spec
    self.predictor = spec.make_predictor()
    self.state_names = tuple(sorted(state))
    self.feature_mean = nnx.Variable(jnp.zeros((d,), jnp.float32))
    self.feature_scale = nnx.Variable(jnp.ones((d,), jnp.float32))
    self.costs = nnx.Variable(jnp.zeros((m,), jnp.float32))
    self.margins = nnx.Variable(jnp.zeros((m,), jnp.float32))
    for name in self.state_names:
      setattr(self, name, nnx.Variable(jnp.asarray(state[name])))

  def predictor_state(self) -> dict[str, jnp.ndarray]:
    """{name: array} the predictor reads."""
    return {name: getattr(self, name)[...] for name in self.state_names}

  def features(self, embeddings_bd) -> jnp.ndarray:
    """[B, D] embeddings -> [B, D] standardized features (identity when not standardizing)."""
    x_bd = jnp.asarray(embeddings_bd, jnp.float32)
    return (x_bd - self.feature_mean[...]) / self.feature_scale[...]

  def predict(self, embeddings_bd) -> jnp.ndarray:
    """[B, D] embeddings -> [B, M] predicted expected rewards."""
    return self.predictor.predict(self.predictor_state(), self.features(embeddings_bd))

  def utilities(self, embeddings_bd, cost_weight: float = 0.0) -> np.ndarray:
    """[B, D] embeddings -> [B, M] float64 utilities the router routes on at `cost_weight`:
    predict - margins at cost weight 0, predict above it (see the module docstring)."""
    return safe_utilities(self.predict(embeddings_bd), self.margins[...], cost_weight)

  def __call__(self, embeddings_bd, cost_weight: float = 0.0) -> np.ndarray:
    """[B, D] embeddings -> [B] index of the LLM each prompt goes to at lambda = cost_weight."""
    return route(self.utilities(embeddings_bd, cost_weight), np.asarray(self.costs[...]),
                 cost_weight)


def safe_utilities(predicted_bm, margins_m, cost_weight: float) -> np.ndarray:
  """[B, M] float64 utilities at `cost_weight`: predicted - margins at 0, predicted above 0."""
  predicted = np.asarray(predicted_bm, np.float64)
  if cost_weight > 0:
    return predicted
  return predicted - np.asarray(margins_m, np.float64)


def route(utilities_bm, costs_m, cost_weight) -> np.ndarray:
  """[B] argmax_i utilities[b, i] - cost_weight * costs[i]; exact ties go to the cheaper LLM
  (among equally cheap ones, the lower index).

  One precision everywhere: float64 numpy, so that the budget search (`cost_weight_for_budget`)
  and the routing that follows it make the same choices, ties included.
  """
  utilities = np.asarray(utilities_bm, np.float64)
  costs = np.asarray(costs_m, np.float64)
  penalized = utilities - float(cost_weight) * costs
  order = np.argsort(costs, kind="stable")
  # argmax returns the first maximum: over LLMs sorted by cost, that is the cheapest of a tie.
  return order[np.argmax(penalized[:, order], axis=-1)]


def build_router(spec: RouterSpec, state: Mapping[str, np.ndarray], costs, *,
                 feature_mean=None, feature_scale=None, margins=None) -> ERPRouter:
  """An `ERPRouter` holding the given arrays."""
  router = ERPRouter(spec, state)
  m = len(spec.llms)
  if np.shape(costs) != (m,):
    raise ValueError(f"costs {np.shape(costs)} do not match {m} LLMs")
  router.costs[...] = jnp.asarray(costs, jnp.float32)
  if feature_mean is not None:
    router.feature_mean[...] = jnp.asarray(feature_mean, jnp.float32)
    router.feature_scale[...] = jnp.asarray(feature_scale, jnp.float32)
  if margins is not None:
    router.margins[...] = jnp.asarray(margins, jnp.float32)
  return router


def standardization(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """([D] mean, [D] scale) of the embeddings; a constant feature gets scale 1."""
  std = embeddings.std(0)
  return embeddings.mean(0), np.where(std > 0, std, 1.0)


def fit_router(
    embeddings: np.ndarray,
    expected_rewards: np.ndarray,
    costs: np.ndarray,
    *,
    llms: tuple[str, ...],
    encoder: str,
    reward_model: str,
    beta: float = 1.0,
    standardize: bool = False,
    predictor=None,
    margins: np.ndarray | None = None,
    default_llm: int | None = None,
) -> ERPRouter:
  """Fits an ERP router.

  Args:
    embeddings: [N, D] training prompt embeddings.
    expected_rewards: [N, M] estimated expected rewards (NaN where an LLM has no samples).
    costs: [M] routing cost per call.
    llms, encoder, reward_model, standardize: see `RouterSpec`.
    beta: the ridge penalty when `predictor` is None (the paper's ridge heads).
    predictor: any predictor of `erpjax.routing._predictors`; None = `Ridge(beta)`.
    margins: [M] safe-rule margins (see `calibrate_margins`), with `default_llm`; None = 0.
    default_llm: the LLM the margins protect.
  """
  embeddings = np.asarray(embeddings, np.float32)
  predictor = predictor if predictor is not None else _predictors.Ridge(beta)
  spec = RouterSpec(
      llms=tuple(llms), encoder=encoder, reward_model=reward_model,
      embedding_dim=embeddings.shape[1], predictor=_predictors.spec_json(predictor),
      standardize=standardize, default_llm=default_llm,
  )
  if np.shape(expected_rewards) != (len(embeddings), len(llms)):
    raise ValueError(
        f"expected_rewards {np.shape(expected_rewards)} does not match "
        f"{len(embeddings)} prompts x {len(llms)} LLMs")
  mean, scale = standardization(embeddings) if standardize else (None, None)
  features = embeddings if mean is None else (embeddings - mean) / scale
  return build_router(spec, predictor.fit(features, expected_rewards), costs,
                      feature_mean=mean, feature_scale=scale, margins=margins)


def add_llm(
    router: ERPRouter,
    name: str,
    embeddings: np.ndarray,
    expected_rewards: np.ndarray,
    cost: float,
    *,
    margin: float | None = None,
) -> ERPRouter:
  """A new router with one more LLM: fits only its parameters; the others are copied bit for bit.

  Args:
    router: the trained router.
    name: the new LLM's name.
    embeddings: [N, D] embeddings of prompts the new LLM was sampled on.
    expected_rewards: [N] its estimated expected rewards on them.
    cost: its routing cost per call.
    margin: its safe-rule margin; None = the largest margin of the other LLMs (no cross-validated
      comparison with the default LLM exists for it, so it gets the most cautious one).
  """
  spec = router.spec
  if name in spec.llms:
    raise ValueError(f"LLM {name!r} is already routed to by this router")
  if np.shape(embeddings)[1:] != (spec.embedding_dim,):
    raise ValueError(f"embeddings {np.shape(embeddings)} do not have dim {spec.embedding_dim}")
  features = np.asarray(router.features(embeddings))
  state = {k: np.asarray(v) for k, v in router.predictor_state().items()}
  state = router.predictor.add_llm(state, features, np.asarray(expected_rewards))
  margins = np.asarray(router.margins[...])
  if margin is None:
    margin = float(margins.max()) if margins.size else 0.0
  grown = ERPRouter(dataclasses.replace(spec, llms=spec.llms + (name,)), state)
  grown.feature_mean[...] = router.feature_mean[...]
  grown.feature_scale[...] = router.feature_scale[...]
  grown.costs[...] = jnp.concatenate([router.costs[...], jnp.array([cost], jnp.float32)])
  grown.margins[...] = jnp.concatenate([router.margins[...], jnp.array([margin], jnp.float32)])
  return grown
