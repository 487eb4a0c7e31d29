"""The ERP router: ridge heads on a prompt embedding, and the cost-aware routing rule.

rho_lambda(x) = argmax_i  ER_i(x) - lambda * c_i   (paper, Sec. "Applications to model routing").
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from erpjax.routing._ridge import fit_ridge


@dataclasses.dataclass(frozen=True)
class RouterSpec:
  """What a router was built from; saved beside its weights and checked on load.

  Attributes:
    llms: [M] LLM names, in head order.
    encoder: identifier of the prompt encoder whose embeddings the heads read.
    reward_model: the reward model whose expected reward the heads predict.
    embedding_dim: D.
    beta: the ridge penalty the heads were fit with.
    standardize: whether features are standardized before the heads.
  """

  llms: tuple[str, ...]
  encoder: str
  reward_model: str
  embedding_dim: int
  beta: float = 1.0
  standardize: bool = False

  def __post_init__(self):
    if len(set(self.llms)) != len(self.llms):
      raise ValueError(f"duplicate LLM names in {self.llms}")
    if self.embedding_dim <= 0:
      raise ValueError(f"embedding_dim must be positive, got {self.embedding_dim}")
    if self.beta <= 0:
      raise ValueError(f"beta must be positive for a closed-form ridge solve, got {self.beta}")


class ERPRouter(nnx.Module):
  """Predicts ER_i(x) for M LLMs from a D-dim prompt embedding and routes under a cost penalty."""

  def __init__(self, spec: RouterSpec):
    d, m = spec.embedding_dim, len(spec.llms)
    self.spec = spec
    self.feature_mean = nnx.Variable(jnp.zeros((d,), jnp.float32))
    self.feature_scale = nnx.Variable(jnp.ones((d,), jnp.float32))
    self.kernel = nnx.Param(jnp.zeros((d, m), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((m,), jnp.float32))
    self.costs = nnx.Variable(jnp.zeros((m,), jnp.float32))

  def features(self, embeddings_bd: jnp.ndarray) -> jnp.ndarray:
    """[B, D] embeddings -> [B, D] standardized features (identity when not standardizing)."""
    return (embeddings_bd - self.feature_mean[...]) / self.feature_scale[...]

  def predict(self, embeddings_bd: jnp.ndarray) -> jnp.ndarray:
    """[B, D] embeddings -> [B, M] predicted expected rewards."""
    return self.features(embeddings_bd) @ self.kernel[...] + self.bias[...]

  def __call__(self, embeddings_bd: jnp.ndarray, cost_weight: float = 0.0) -> jnp.ndarray:
    """[B, D] embeddings -> [B] index of the LLM each prompt goes to at lambda = cost_weight."""
    return route(self.predict(embeddings_bd), self.costs[...], cost_weight)


def route(predicted_bm, costs_m, cost_weight):
  """[B] argmax_i predicted[b, i] - cost_weight * costs[i]; ties go to the cheaper LLM."""
  utility = predicted_bm - cost_weight * costs_m
  # Break exact ties towards the cheaper LLM by ranking on (utility, -cost).
  order = jnp.argsort(costs_m)
  return order[jnp.argmax(utility[:, order], axis=-1)]


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
) -> ERPRouter:
  """Fits an ERP router.

  Args:
    embeddings: [N, D] training prompt embeddings.
    expected_rewards: [N, M] estimated expected rewards (NaN where an LLM has no samples).
    costs: [M] routing cost per call.
    llms, encoder, reward_model, beta, standardize: see `RouterSpec`.
  """
  embeddings = np.asarray(embeddings, np.float32)
  spec = RouterSpec(
      llms=tuple(llms), encoder=encoder, reward_model=reward_model,
      embedding_dim=embeddings.shape[1], beta=beta, standardize=standardize,
  )
  if expected_rewards.shape != (len(embeddings), len(llms)) or np.shape(costs) != (len(llms),):
    raise ValueError(
        f"expected_rewards {expected_rewards.shape} and costs {np.shape(costs)} do not match "
        f"{len(embeddings)} prompts x {len(llms)} LLMs"
    )
  router = ERPRouter(spec)
  if standardize:
    router.feature_mean[...] = jnp.asarray(embeddings.mean(0))
    # A constant feature gets scale 1 rather than a division by zero.
    std = embeddings.std(0)
    router.feature_scale[...] = jnp.asarray(np.where(std > 0, std, 1.0), jnp.float32)
  kernel, bias = fit_ridge(np.asarray(router.features(embeddings)), expected_rewards, beta)
  router.kernel[...] = jnp.asarray(kernel)
  router.bias[...] = jnp.asarray(bias)
  router.costs[...] = jnp.asarray(costs, jnp.float32)
  return router


def add_llm(
    router: ERPRouter,
    name: str,
    embeddings: np.ndarray,
    expected_rewards: np.ndarray,
    cost: float,
) -> ERPRouter:
  """A new router with one more LLM: fits only its head; the other heads are copied bit for bit.

  Args:
    router: the trained router.
    name: the new LLM's name.
    embeddings: [N, D] embeddings of prompts the new LLM was sampled on.
    expected_rewards: [N] its estimated expected rewards on them.
    cost: its routing cost per call.
  """
  spec = router.spec
  if name in spec.llms:
    raise ValueError(f"LLM {name!r} is already routed to by this router")
  if np.shape(embeddings)[1:] != (spec.embedding_dim,):
    raise ValueError(f"embeddings {np.shape(embeddings)} do not have dim {spec.embedding_dim}")
  features = np.asarray(router.features(jnp.asarray(embeddings, jnp.float32)))
  kernel, bias = fit_ridge(features, np.asarray(expected_rewards)[:, None], spec.beta)
  grown = ERPRouter(dataclasses.replace(spec, llms=spec.llms + (name,)))
  grown.feature_mean[...] = router.feature_mean[...]
  grown.feature_scale[...] = router.feature_scale[...]
  grown.kernel[...] = jnp.concatenate([router.kernel[...], jnp.asarray(kernel)], axis=1)
  grown.bias[...] = jnp.concatenate([router.bias[...], jnp.asarray(bias)])
  grown.costs[...] = jnp.concatenate([router.costs[...], jnp.array([cost], jnp.float32)])
  return grown
