"""A small MLP on prompt embeddings and its full-batch AdamW loop (optax).

One implementation serves the MLP predictor of the router (`erpjax.routing.MLPPredictor`) and the
optax-trained peer routers of `erpjax.eval.trained_peers` (Zooter, matrix factorisation, MLP).
Training runs `steps` full-batch AdamW steps inside one jitted `lax.scan`, so a fit compiles once
per shape and is deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Full-batch AdamW settings."""

  steps: int = 300
  learning_rate: float = 3e-3
  weight_decay: float = 1e-4
  seed: int = 0

  def __post_init__(self):
    if self.steps < 1 or not self.learning_rate > 0 or self.weight_decay < 0:
      raise ValueError(f"invalid TrainConfig: {self}")


class MLP(nnx.Module):
  """`[N, D] -> [N, M]`: one GELU hidden layer of `hidden` units, or linear if `hidden == 0`."""

  def __init__(self, din: int, hidden: int, dout: int, *, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(din, hidden, rngs=rngs) if hidden else None
    self.out = nnx.Linear(hidden or din, dout, rngs=rngs)

  def __call__(self, x_nd: jax.Array) -> jax.Array:
    h = jax.nn.gelu(self.hidden(x_nd)) if self.hidden is not None else x_nd
    return self.out(h)


LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def train_full_batch(model: nnx.Module, loss_fn: LossFn, x_nd, target_nm,
                     config: TrainConfig) -> tuple[nnx.Module, np.ndarray]:
  """Minimise `loss_fn(model(x), target)` with full-batch AdamW for `config.steps` steps.

  Returns:
    The trained model (a new object) and the loss before each step, `[steps]`.
  """
  graphdef, params = nnx.split(model)
  params, losses = _run_adamw(params, jnp.asarray(x_nd, jnp.float32),
                              jnp.asarray(target_nm, jnp.float32),
                              graphdef=graphdef, loss_fn=loss_fn, config=config)
  return nnx.merge(graphdef, params), np.asarray(losses)


# Static arguments are hashable (the graph definition, a module-level loss, a frozen config), so
# refits of the same model on same-shaped data reuse the compiled loop.
@functools.partial(jax.jit, static_argnames=("graphdef", "loss_fn", "config"))
def _run_adamw(params, x_nd, target_nm, *, graphdef, loss_fn: LossFn, config: TrainConfig):
  tx = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)

  def loss(params):
    return loss_fn(nnx.merge(graphdef, params)(x_nd), target_nm)

  def step(carry, _):
    params, opt_state = carry
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), value

  (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), length=config.steps)
  return params, losses


def masked_mse(pred_nm: jax.Array, target_nm: jax.Array) -> jax.Array:
  """Mean squared error over the finite targets only (NaN = unobserved (prompt, LLM) cell)."""
  observed = jnp.isfinite(target_nm)
  # Zero the NaNs before subtracting: a NaN inside `where` would still poison the gradient.
  residual = jnp.where(observed, pred_nm - jnp.where(observed, target_nm, 0.0), 0.0)
  return jnp.sum(residual**2) / jnp.maximum(observed.sum(), 1)
