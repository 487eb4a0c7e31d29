"""Peer routers trained with optax on prompt embeddings: Zooter, RouteLLM's matrix factorisation,
and an MLP regression head.

All three train full batch with AdamW through `erpjax.routing._mlp` (one jitted `lax.scan`, so a
fit compiles once and is deterministic for a seed), and the MLP peer is the router's own
`erpjax.routing.MLPPredictor`. They follow `erpjax.eval.peers.PeerRouter`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from erpjax.eval.peers import RouterData
from erpjax.routing import MLPPredictor
from erpjax.routing._mlp import MLP, TrainConfig, masked_mse, train_full_batch, weighted_mean

__all__ = ["MLP", "MLPRouter", "MatrixFactorization", "MatrixFactorizationRouter", "TrainConfig",
           "Zooter"]


class MatrixFactorization(nnx.Module):
  """RouteLLM's matrix factorisation router (`MFModel`, arXiv 2406.18665 §3.2) for M LLMs.

  score[n, i] = w2 · (v̂_i ⊙ W x_n) + b_i, with v̂_i the L2-normalised learned embedding of LLM i
  (as RouteLLM normalises its model embeddings) and W a bias-free projection of the prompt
  embedding. RouteLLM scores a pair by sigmoid(score_a - score_b); here each score is fit to the
  LLM's own reward, so all M LLMs are ranked at once. b_i is added for per-LLM base rates.
  """

  def __init__(self, din: int, dim: int, num_llms: int, *, rngs: nnx.Rngs):
    self.llm_md = nnx.Param(jax.random.normal(rngs.params(), (num_llms, dim)))
    self.proj = nnx.Linear(din, dim, use_bias=False, rngs=rngs)
    self.w2_k = nnx.Param(jax.random.normal(rngs.params(), (dim,)) / np.sqrt(dim))
    self.bias_m = nnx.Param(jnp.zeros((num_llms,)))

  def __call__(self, x_nd: jax.Array) -> jax.Array:
    llm_mk = self.llm_md[...]
    llm_mk = llm_mk / jnp.linalg.norm(llm_mk, axis=1, keepdims=True)
    prompt_nk = self.proj(x_nd)
    return jnp.einsum("nk,mk,k->nm", prompt_nk, llm_mk, self.w2_k[...]) + self.bias_m[...]


@nnx.jit
def _apply(model: nnx.Module, x_nd: jax.Array) -> jax.Array:
  return model(x_nd)


def _forward(model: nnx.Module | None, name: str, test: RouterData) -> jax.Array:
  if model is None:
    raise ValueError(f"router {name!r} is not fitted: call fit(train) first")
  return _apply(model, jnp.asarray(test.embeddings))


def _soft_cross_entropy(logits_nm: jax.Array, target_nm: jax.Array,
                        weight_n: jax.Array) -> jax.Array:
  # KL(q || softmax(f)) = -Σ q log softmax(f) - H(q); H(q) does not depend on f.
  return -weighted_mean(jnp.sum(target_nm * jax.nn.log_softmax(logits_nm, axis=1), axis=1),
                        weight_n)


@dataclasses.dataclass(frozen=True, eq=False)
class Zooter:
  """Zooter's reward-distilled softmax router (Lu et al., arXiv 2311.08692, §3).

  Trains f(x) to minimise KL(softmax(r(x) / (τ·σ)) || softmax(f(x))) over the train rewards
  r(x) `[M]`; σ, the std of all train rewards, makes τ independent of the reward scale (for 0/1
  rewards with half right, τ = 0.2 gives an effective temperature of 0.1). Utilities are
  log softmax(f(x)): log-probabilities that each LLM is the best, not rewards.
  """

  hidden: int = 128
  temperature: float = 0.2
  training: TrainConfig = TrainConfig()
  name: str = "zooter"
  model: nnx.Module | None = dataclasses.field(default=None, repr=False)
  losses: np.ndarray | None = dataclasses.field(default=None, repr=False)

  def __post_init__(self):
    if self.hidden < 0 or not self.temperature > 0:
      raise ValueError(
          f"need hidden >= 0 and temperature > 0, got {self.hidden}, {self.temperature}")

  def fit(self, train: RouterData) -> "Zooter":
    rewards = train.labeled_rewards()
    scale = self.temperature * max(float(rewards.std()), 1e-6)
    target = jax.nn.softmax(jnp.asarray(rewards / scale, jnp.float32), axis=1)
    model = MLP(train.embeddings.shape[1], self.hidden, train.num_llms,
                rngs=nnx.Rngs(self.training.seed))
    model, losses = train_full_batch(model, _soft_cross_entropy, train.embeddings, target,
                                     self.training)
    return dataclasses.replace(self, model=model, losses=losses)

  def utilities(self, test: RouterData) -> np.ndarray:
    return np.asarray(jax.nn.log_softmax(_forward(self.model, self.name, test), axis=1),
                      dtype=np.float64)


def _bce(logits_nm, target_nm, weight_n):
  return weighted_mean(optax.sigmoid_binary_cross_entropy(logits_nm, target_nm), weight_n)


@dataclasses.dataclass(frozen=True, eq=False)
class MatrixFactorizationRouter:
  """`MatrixFactorization` fit to every train (prompt, LLM) reward.

  loss="bce" treats rewards in [0, 1] (0/1 correctness, pass rates) as probabilities and predicts
  sigmoid(score); loss="mse" regresses the score on the reward; loss="auto" picks bce when every
  train reward lies in [0, 1]. Utilities are the predicted rewards.
  """

  dim: int = 128
  loss: str = "auto"
  training: TrainConfig = TrainConfig()
  name: str = "mf"
  model: nnx.Module | None = dataclasses.field(default=None, repr=False)
  fitted_loss: str | None = None
  losses: np.ndarray | None = dataclasses.field(default=None, repr=False)

  def __post_init__(self):
    if self.dim < 1 or self.loss not in ("auto", "bce", "mse"):
      raise ValueError(f"need dim >= 1 and loss in auto/bce/mse, got {self.dim}, {self.loss!r}")

  def fit(self, train: RouterData) -> "MatrixFactorizationRouter":
    rewards = train.labeled_rewards()
    in_unit = bool(np.all((rewards >= 0) & (rewards <= 1)))
    if self.loss == "bce" and not in_unit:
      raise ValueError("loss='bce' needs rewards in [0, 1]")
    loss = self.loss if self.loss != "auto" else ("bce" if in_unit else "mse")
    model = MatrixFactorization(train.embeddings.shape[1], self.dim, train.num_llms,
                                rngs=nnx.Rngs(self.training.seed))
    model, losses = train_full_batch(model, _bce if loss == "bce" else masked_mse, train.embeddings,
                                     rewards, self.training)
    return dataclasses.replace(self, model=model, fitted_loss=loss, losses=losses)

  def utilities(self, test: RouterData) -> np.ndarray:
    score = _forward(self.model, self.name, test)
    return np.asarray(jax.nn.sigmoid(score) if self.fitted_loss == "bce" else score,
                      dtype=np.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class MLPRouter:
  """The router's `MLPPredictor` regressing the train rewards `[N, M]` with MSE; utilities are its
  predictions."""

  hidden: int = 128
  training: TrainConfig = TrainConfig()
  name: str = "mlp"
  state: dict | None = dataclasses.field(default=None, repr=False)
  losses: np.ndarray | None = dataclasses.field(default=None, repr=False)

  def __post_init__(self):
    self._predictor()  # validates hidden

  def _predictor(self) -> MLPPredictor:
    t = self.training
    return MLPPredictor(self.hidden, t.steps, t.learning_rate, t.weight_decay, t.seed)

  def fit(self, train: RouterData) -> "MLPRouter":
    state, losses = self._predictor().train(train.embeddings, train.labeled_rewards())
    return dataclasses.replace(self, state=state, losses=losses)

  def utilities(self, test: RouterData) -> np.ndarray:
    if self.state is None:
      raise ValueError(f"router {self.name!r} is not fitted: call fit(train) first")
    return np.asarray(self._predictor().predict(self.state, test.embeddings), dtype=np.float64)
