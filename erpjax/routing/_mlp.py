"""A small MLP on prompt embeddings and its full-batch, data-parallel AdamW loop (optax).

One implementation serves the MLP predictor of the router (`erpjax.routing.MLPPredictor`) and the
optax-trained peer routers of `erpjax.eval.trained_peers` (Zooter, matrix factorisation, MLP).
Training runs `steps` full-batch AdamW steps inside one jitted `lax.scan`, so a fit compiles once
per shape (and mesh) and is deterministic for a seed.

Data parallel (jit over a `NamedSharding`, no pmap): the rows of the features and targets are split
over the mesh's "data" axis; parameters and AdamW state are replicated. The loss is a mean over
the global batch, so XLA all-reduces the gradients across devices (and processes) and every device
takes the same step. Rows are padded to an even split with weight 0, which the losses leave out.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from erpjax import sharding
from erpjax.runtime import distributed


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


# loss_fn(prediction [N, M], target [N, M], weight [N]) -> scalar: a mean over the rows of weight
# 1; rows of weight 0 (padding) must not change it, e.g. through `weighted_mean`.
LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def weighted_mean(values_n: jax.Array, weight_n: jax.Array) -> jax.Array:
  """The mean of `values_n` [N, ...] over its rows of weight 1 (weight [N] is 0 or 1) and all
  other dims; equals `jnp.mean` of the weight-1 rows in exact arithmetic."""
  per_row = math.prod(values_n.shape[1:])
  weight = weight_n.reshape((-1,) + (1,) * (values_n.ndim - 1))
  return jnp.sum(values_n * weight) / (jnp.sum(weight_n) * per_row)


def train_full_batch(model: nnx.Module, loss_fn: LossFn, x_nd, target_nm, config: TrainConfig,
                     *, mesh: Mesh | None = None) -> tuple[nnx.Module, np.ndarray]:
  """Minimise `loss_fn(model(x), target, weight)` with full-batch AdamW for `config.steps` steps.

  The rows are split over the "data" axis of `mesh` (default `sharding.make_mesh(1)`: every
  device), each process's rows padded to an even split with weight 0; on one device no row is
  padded. The fit equals the one-device fit up to float summation order.

  Multi-process runs: every process calls this with only its own rows, `x_nd` [N_p, D] and
  `target_nm` [N_p, M] (N_p may differ between processes, even be 0), and the same `model`. The
  global batch, [P x max N_p (padded), D] for P processes, is assembled with
  `jax.make_array_from_process_local_data` from each process's block, so no process holds
  another's rows; besides the gradients' all-reduce, only the row counts are exchanged. The
  mesh's "data" devices must split evenly over the processes. Every process gets the same model
  and losses. Processes that each pass all rows (an in-memory run) count every row P times,
  which leaves the mean loss, and so the fit, as it is.

  Args:
    model: the initial model (not modified).
    loss_fn: see `LossFn`; a hashable module-level function, so refits reuse the compiled loop.
    x_nd: [N, D] features of this process's rows.
    target_nm: [N, M] targets of those rows (the loss decides what NaN means).
    config: AdamW settings.
    mesh: a mesh with a "data" axis; parameters are replicated over all of its devices.

  Returns:
    The trained model (a new object, its arrays on one local device) and the loss before each
    step, `[steps]`.
  """
  mesh = sharding.make_mesh(1) if mesh is None else mesh
  x_nd, target_nm = np.asarray(x_nd, np.float32), np.asarray(target_nm, np.float32)
  if x_nd.ndim != 2 or target_nm.ndim != 2 or x_nd.shape[0] != target_nm.shape[0]:
    raise ValueError(f"need x [N, D] and target [N, M], got {x_nd.shape} and {target_nm.shape}")
  data_devices = mesh.shape[sharding.DATA]
  if data_devices % jax.process_count():
    raise ValueError(f"{data_devices} devices on 'data' do not split over "
                     f"{jax.process_count()} processes")
  counts = distributed.allgather(np.array([x_nd.shape[0]]))[:, 0]
  if not counts.sum():
    raise ValueError("no rows to train on")
  # Every process contributes an equal block of whole per-device shards: the largest count sets it.
  local_devices = data_devices // jax.process_count()
  local_rows = -(-counts.max() // local_devices) * local_devices
  rows = NamedSharding(mesh, PartitionSpec(sharding.DATA))
  replicated = NamedSharding(mesh, PartitionSpec())

  def global_rows(local: np.ndarray) -> jax.Array:
    padded = np.zeros((local_rows,) + local.shape[1:], np.float32)
    padded[:local.shape[0]] = local
    return jax.make_array_from_process_local_data(rows, padded)

  weight_n = np.ones(x_nd.shape[0], np.float32)
  graphdef, params = nnx.split(model)
  # Every process holds the same initial parameters (same seed): each gives its copy.
  params = jax.tree.map(
      lambda p: jax.make_array_from_process_local_data(replicated, np.asarray(p)), params)
  params, losses = _run_adamw(params, global_rows(x_nd), global_rows(target_nm),
                              global_rows(weight_n), graphdef=graphdef, loss_fn=loss_fn,
                              config=config, out_sharding=replicated)
  # Replicated: every device holds the whole result; keep one local copy.
  local = jax.tree.map(lambda a: a.addressable_data(0), params)
  return nnx.merge(graphdef, local), np.asarray(losses.addressable_data(0))


# Static arguments are hashable (the graph definition, a module-level loss, a frozen config, a
# sharding), so refits of the same model on same-shaped data on the same mesh reuse the compiled
# loop. The inputs' shardings come with the arrays.
@functools.partial(jax.jit, static_argnames=("graphdef", "loss_fn", "config", "out_sharding"))
def _run_adamw(params, x_nd, target_nm, weight_n, *, graphdef, loss_fn: LossFn,
               config: TrainConfig, out_sharding: NamedSharding):
  tx = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)

  def loss(params):
    return loss_fn(nnx.merge(graphdef, params)(x_nd), target_nm, weight_n)

  def step(carry, _):
    params, opt_state = carry
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), value

  (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), length=config.steps)
  return jax.lax.with_sharding_constraint((params, losses), out_sharding)


def masked_mse(pred_nm: jax.Array, target_nm: jax.Array, weight_n: jax.Array) -> jax.Array:
  """Mean squared error over the finite targets of rows of weight 1 (NaN = unobserved (prompt,
  LLM) cell; weight 0 = padding row)."""
  observed = jnp.isfinite(target_nm) & (weight_n[:, None] > 0)
  # Zero the NaNs before subtracting: a NaN inside `where` would still poison the gradient.
  residual = jnp.where(observed, pred_nm - jnp.where(observed, target_nm, 0.0), 0.0)
  return jnp.sum(residual**2) / jnp.maximum(observed.sum(), 1)
