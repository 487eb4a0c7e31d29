"""Logical axis names, the rules that map them onto a device mesh, and parameter memory plans.

Modules name logical axes only (MaxText `logical_axis_rules`); a rule table maps them to the
("data", "model") axes of the mesh `make_mesh` builds. Three tables share the names:

  REPLICATED_RULES  every parameter on every device; the batch split over "data".
  SCORING_RULES     tensor parallel: heads, MLP and vocabulary split over "model" (Megatron).
  FSDP_RULES        SCORING_RULES plus the embedding dim of every weight split over "data"
                    (ZeRO-3 / FSDP): on a (n, 1) mesh each device holds 1/n of the weights, on an
                    (n, m) mesh 1/(n m); XLA gathers a layer's weights where a matmul needs them.

`param_shardings` places a model's state by a table; `plan_memory` says before anything is loaded
what each device will hold, and `check_sufficiently_sharded` refuses a table that leaves large
parameters replicated (MaxText `assert_params_sufficiently_sharded`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# Logical axes.
BATCH = "batch"
LENGTH = "length"
EMBED = "embed"
HEADS = "heads"
KV_HEADS = "kv_heads"
HEAD_DIM = "head_dim"
MLP = "mlp"
VOCAB = "vocab"
LAYERS = "layers"
LABELS = "labels"

# Mesh axes.
DATA = "data"
MODEL = "model"

# Logical axis -> mesh axis (None = replicated). Tensor parallel over heads and MLP, as in
# Megatron-style sharding; the vocabulary is split too since embedding tables dominate small models.
SCORING_RULES: tuple[tuple[str, str | None], ...] = (
    (BATCH, DATA),
    (LENGTH, None),
    (EMBED, None),
    (HEADS, MODEL),
    (KV_HEADS, MODEL),
    (HEAD_DIM, None),
    (MLP, MODEL),
    (VOCAB, MODEL),
    (LAYERS, None),
    (LABELS, None),
)

Rules = Sequence[tuple[str, str | None]]


def _override(rules: Rules, changes: dict[str, str | None]) -> tuple[tuple[str, str | None], ...]:
  return tuple((name, changes.get(name, axis)) for name, axis in rules)


# Parameters whole on every device; only the batch is split. Fits models far below device memory.
REPLICATED_RULES = _override(SCORING_RULES, {HEADS: None, KV_HEADS: None, MLP: None, VOCAB: None})

# Every large weight (embeddings, attention and MLP kernels) has an "embed" dim; splitting it over
# "data" shards every weight over all devices together with the "model" split of the other dim.
# The batch keeps "data" too: no parameter has a batch dim, and in an activation [B, T, D] the
# batch dim claims "data" first (a mesh axis shards one dim per array, see `logical_to_spec`).
FSDP_RULES = _override(SCORING_RULES, {EMBED: DATA})

RULE_TABLES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "replicated": REPLICATED_RULES,
    "tp": SCORING_RULES,
    "fsdp": FSDP_RULES,
}


def make_mesh(model_parallel: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, model) mesh over `devices` (default: all), `model_parallel` devices per model copy."""
  devices = list(jax.devices() if devices is None else devices)
  if len(devices) % model_parallel:
    raise ValueError(f"{len(devices)} devices do not split into model_parallel={model_parallel}")
  grid = np.array(devices).reshape(len(devices) // model_parallel, model_parallel)
  return Mesh(grid, (DATA, MODEL))


def logical_to_spec(names: Sequence[str | None], rules: Rules = SCORING_RULES) -> PartitionSpec:
  """The PartitionSpec for an array whose dims carry logical `names` (None = replicated dim)."""
  table = dict(rules)
  mesh_axes = []
  for name in names:
    if name is not None and name not in table:
      raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(table)}")
    axis = None if name is None else table[name]
    # A mesh axis may shard only one dim of an array: later dims with the same axis stay replicated.
    mesh_axes.append(axis if axis not in mesh_axes else None)
  return PartitionSpec(*mesh_axes)


def named_sharding(mesh: Mesh, names: Sequence[str | None],
                   rules: Rules = SCORING_RULES) -> NamedSharding:
  """`NamedSharding` of an array with logical dim `names` on `mesh`."""
  return NamedSharding(mesh, logical_to_spec(names, rules))


def param_shardings(state: nnx.State, mesh: Mesh, rules: Rules = SCORING_RULES) -> Any:
  """`NamedSharding`s for `state` (concrete or abstract) from its parameters' logical axis names.

  The one place parameters get their placement: the scoring runner, benchmarks and tests call it.
  A dim whose size the mesh axis does not divide stays replicated (e.g. BERT's vocabulary of
  30,522 rows over 4 devices), since `jax.device_put` only accepts even splits;
  `check_sufficiently_sharded` catches when that leaves too much on each device.

  Returns:
    a pytree of `state`'s structure with a `NamedSharding` per array.
  """

  def place(spec: PartitionSpec, value) -> NamedSharding:
    mesh_spec = logical_to_spec(tuple(spec) + (None,) * (value.ndim - len(spec)), rules)
    axes = [axis if axis is None or dim % mesh.shape[axis] == 0 else None
            for axis, dim in zip(mesh_spec, value.shape)]
    return NamedSharding(mesh, PartitionSpec(*axes))

  return jax.tree.map(place, nnx.get_partition_spec(state), state,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


@dataclasses.dataclass(frozen=True)
class ParamPlacement:
  """One parameter's placement: `nbytes` in all, `device_bytes` on each device holding a shard."""

  path: str
  shape: tuple[int, ...]
  dtype: str
  spec: PartitionSpec
  nbytes: int
  device_bytes: int

  @property
  def replicated(self) -> bool:
    """Whole on every device."""
    return self.device_bytes == self.nbytes


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
  """What each device of a mesh holds of a model's parameters under one rule table.

  Shards are even (`param_shardings` replicates a dim rather than split it unevenly), so every
  device holds the same bytes.
  """

  params: tuple[ParamPlacement, ...]
  num_devices: int

  @property
  def total_bytes(self) -> int:
    return sum(p.nbytes for p in self.params)

  @property
  def device_bytes(self) -> int:
    return sum(p.device_bytes for p in self.params)

  def largest_replicated(self, k: int = 5) -> list[ParamPlacement]:
    """The `k` largest parameters held whole by every device."""
    return sorted((p for p in self.params if p.replicated), key=lambda p: -p.nbytes)[:k]

  def summary(self, k: int = 5) -> str:
    """A few lines: total and per-device bytes, and the largest replicated tensors."""
    lines = [f"parameters: {len(self.params)} arrays, {_gib(self.total_bytes)} in all; "
             f"{_gib(self.device_bytes)} on each of {self.num_devices} devices "
             f"(ideal {_gib(self.total_bytes / self.num_devices)})"]
    for p in self.largest_replicated(k):
      lines.append(f"  replicated: {p.path} {p.shape} {p.dtype} {_gib(p.nbytes)}")
    return "\n".join(lines)


def _gib(n: float) -> str:
  return f"{n / 2**30:.3f} GiB"


def plan_memory(state: nnx.State, mesh: Mesh, rules: Rules = SCORING_RULES) -> MemoryPlan:
  """The memory plan of `state` placed on `mesh` by `rules`.

  `state` may be abstract (`nnx.eval_shape` of the model's constructor, then `nnx.state`), so a
  plan costs no memory and can be printed before a checkpoint is loaded.
  """
  shardings = param_shardings(state, mesh, rules)
  flat_shardings = dict(jax.tree_util.tree_leaves_with_path(shardings))
  params = []
  for path, value in jax.tree_util.tree_leaves_with_path(state):
    placed: NamedSharding = flat_shardings[path]
    itemsize = np.dtype(value.dtype).itemsize
    # An nnx.Variable's array sits under a last "value" key, which names nothing of the model.
    name = jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value")
    params.append(ParamPlacement(
        path=name,
        shape=tuple(value.shape),
        dtype=str(np.dtype(value.dtype)),
        spec=placed.spec,
        nbytes=math.prod(value.shape) * itemsize,
        device_bytes=math.prod(placed.shard_shape(tuple(value.shape))) * itemsize))
  return MemoryPlan(tuple(params), mesh.size)


def check_sufficiently_sharded(plan: MemoryPlan, tolerance: float = 0.05) -> None:
  """Refuses a placement whose per-device bytes exceed 1/num_devices of the whole by more than
  `tolerance` (MaxText `assert_params_sufficiently_sharded`).

  Raises:
    ValueError listing the parameters that hold more than their share, largest first, with their
    per-device bytes.
  """
  ideal = plan.total_bytes / plan.num_devices
  if plan.device_bytes <= (1.0 + tolerance) * ideal:
    return
  excess = sorted((p for p in plan.params if p.device_bytes * plan.num_devices > p.nbytes),
                  key=lambda p: -p.device_bytes)
  rows = [f"  {p.path} {p.shape} {p.dtype} spec={tuple(p.spec)}: {_gib(p.device_bytes)} per "
          f"device of {_gib(p.nbytes)}" for p in excess[:20]]
  more = [f"  ... and {len(excess) - 20} more"] if len(excess) > 20 else []
  raise ValueError(
      f"parameters not sufficiently sharded: {_gib(plan.device_bytes)} per device, more than "
      f"{1 + tolerance:.2f} x the ideal {_gib(ideal)} ({plan.num_devices} devices); use a rule "
      f"table that splits these (e.g. sharding.FSDP_RULES):\n" + "\n".join(rows + more))
