"""Logical axis names and the rules that map them onto a device mesh.

Modules name logical axes only (MaxText `logical_axis_rules`); a rule table maps them to the mesh
axes of `jax.make_mesh`. Scoring shards the batch over "data" and the large weight dims over
"model"; the same names serve any other table (e.g. fully data-parallel).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
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


def make_mesh(model_parallel: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, model) mesh over `devices` (default: all), `model_parallel` devices per model copy."""
  devices = list(jax.devices() if devices is None else devices)
  if len(devices) % model_parallel:
    raise ValueError(f"{len(devices)} devices do not split into model_parallel={model_parallel}")
  grid = np.array(devices).reshape(len(devices) // model_parallel, model_parallel)
  return Mesh(grid, (DATA, MODEL))


def logical_to_spec(
    names: Sequence[str | None], rules: Sequence[tuple[str, str | None]] = SCORING_RULES
) -> PartitionSpec:
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


def named_sharding(
    mesh: Mesh, names: Sequence[str | None], rules: Sequence[tuple[str, str | None]] = SCORING_RULES
) -> NamedSharding:
  """`NamedSharding` of an array with logical dim `names` on `mesh`."""
  return NamedSharding(mesh, logical_to_spec(names, rules))
