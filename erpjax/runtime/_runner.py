"""The transformer runner: batches of tokenized text -> a jitted step on a device mesh -> one output
per sequence, back on the host.

Data flows one way:

  caller's batches (a generator: tokenizing and batching run lazily on the prefetch thread)
    -> placed on the mesh, rows split over "data" (prefetch thread, `prefetch` batches ahead)
    -> the step, compiled once per batch shape (`ShapeCache`), dispatched asynchronously
    -> each sequence's output read at its (row, segment slot) while the next batch runs.

The mesh may be a single device (a 1 x 1 mesh) or span many. Two methods touch the batch's
placement, `_to_mesh` and `_to_host`; everything else is independent of where the rows live.
Which items this process runs is the caller's decision, made before it builds batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import jax
import numpy as np
import tqdm
from flax import nnx
from jax.sharding import Mesh

from erpjax import sharding
from erpjax.runtime._batching import Batch
from erpjax.runtime._compile import ShapeCache, default_compiler_options
from erpjax.runtime._prefetch import prefetch

Tag = TypeVar("Tag")
# step(state, inputs) -> outputs [B, S, ...]: one output per (row, segment slot); `inputs` are a
# Batch's `model_inputs()` on the mesh.
Step = Callable[[nnx.State, Mapping[str, jax.Array]], jax.Array]


def single_device_mesh() -> Mesh:
  """The 1 x 1 ("data", "model") mesh of the default device."""
  return sharding.make_mesh(1, jax.devices()[:1])


class Runner:
  """Runs one step function over batches of tokenized text on a ("data", "model") mesh."""

  def __init__(self, step: Step, state: nnx.State, *, mesh: Mesh,
               rules: Sequence[tuple[str, str | None]] = sharding.SCORING_RULES,
               dtype: str = "float32", compiler_options: Mapping[str, Any] | None = None,
               prefetch: int = 2):
    """Places `state` on `mesh`; compiles `step` lazily, once per batch shape.

    Args:
      step: (state, inputs) -> float32[B, S, ...] outputs, where inputs are `Batch.model_inputs()`
        (int32 tokens_bt, segment_ids_bt, positions_bt [B, T], score_index_bs [B, S], maybe
        token_types_bt [B, T]); it reads what it needs.
      state: the model's parameters, placed by their logical axis names and `rules`.
      mesh: a ("data", "model") mesh (`erpjax.sharding.make_mesh`); batch rows split over "data".
      rules: logical axis -> mesh axis table for the parameters.
      dtype: the model's compute dtype, for the default compiler options.
      compiler_options: XLA options of the step; None = the fastest measured for the mesh's
        platform and `dtype` (`default_compiler_options`).
      prefetch: batches prepared ahead of the device.
    """
    self.mesh = mesh
    self.prefetch = prefetch
    state_shardings = sharding.param_shardings(state, mesh, rules)
    self.state = jax.device_put(state, state_shardings)
    self._batch_sharding = sharding.named_sharding(mesh, (sharding.BATCH, sharding.LENGTH))
    # Batch shapes in the order the step was traced: each trace is one compilation.
    self.traced_shapes: list[tuple[int, int]] = []

    def traced_step(state: nnx.State, inputs: Mapping[str, jax.Array]) -> jax.Array:
      self.traced_shapes.append(inputs["tokens_bt"].shape)
      return step(state, inputs)

    if compiler_options is None:
      compiler_options = default_compiler_options(mesh.devices.flat[0].platform, dtype)
    # The batch is not donated: XLA reuses a donated buffer only for an output of the same shape
    # and dtype, which the outputs never are (JAX would ignore the donation, with a warning).
    # Batch buffers are freed once the host drops them after the step.
    self._programs = ShapeCache(
        jax.jit(traced_step,
                in_shardings=(state_shardings, self._batch_sharding),
                out_shardings=sharding.named_sharding(mesh, (sharding.BATCH,))),
        compiler_options)

  @property
  def data_parallel(self) -> int:
    """Devices the rows of a batch split over: batch rows must be a multiple of it."""
    return self.mesh.shape[sharding.DATA]

  @property
  def compiler_options(self) -> dict[str, Any]:
    """The XLA options the step is compiled with."""
    return self._programs.compiler_options

  @property
  def compiled_shapes(self) -> tuple[tuple[int, int], ...]:
    """The [B, T] batch shapes compiled so far, sorted."""
    return tuple(sorted({dict(key)["tokens_bt"] for key in self._programs.keys}))

  def run(self, batches: Iterable[tuple[Batch, Tag]], *, total: int | None = None,
          progress: bool = True, desc: str = "run") -> Iterator[tuple[Batch, np.ndarray, Tag]]:
    """Runs the step over `batches` and yields, per batch, its n sequences' outputs.

    Args:
      batches: (batch, tag) pairs; the tag is any caller's note passed through (e.g. whether
        the batch ends a unit of work). Iterated on the prefetch thread, so a generator that
        tokenizes and batches lazily overlaps the device.
      total: sequences in all, for the progress bar.
      progress: show a tqdm bar of sequences, with real tokens per second.
      desc: the bar's label.

    Yields:
      (batch, outputs [n, ...] of its sequences in `batch.ids` order, tag), in input order; the
      device runs one batch ahead of the host reading outputs.
    """
    start = time.perf_counter()
    num_tokens = 0
    placed = prefetch(((batch, tag, self._to_mesh(batch)) for batch, tag in batches),
                      self.prefetch)
    in_flight = None
    with tqdm.tqdm(total=total, unit="seq", desc=desc, disable=not progress) as bar:

      def collect(batch: Batch, outputs_bs: jax.Array, tag: Tag):
        nonlocal num_tokens
        outputs = self._to_host(outputs_bs)[batch.slot_b, batch.slot_s]
        num_tokens += batch.num_tokens
        bar.update(len(batch.ids))
        bar.set_postfix(tok_per_s=f"{num_tokens / (time.perf_counter() - start):,.0f}",
                        refresh=False)
        return batch, outputs, tag

      try:
        for batch, tag, inputs in placed:
          outputs_bs = self._dispatch(inputs)
          if in_flight is not None:
            yield collect(*in_flight)
          in_flight = batch, outputs_bs, tag
        if in_flight is not None:
          yield collect(*in_flight)
      finally:
        placed.close()

  def _dispatch(self, inputs: Mapping[str, jax.Array]) -> jax.Array:
    """Starts the step on placed `inputs` (asynchronously), compiling for a new shape."""
    key = tuple((name, x.shape) for name, x in sorted(inputs.items()))
    # Traced under the mesh, so models may constrain activations with bare PartitionSpecs.
    with jax.set_mesh(self.mesh):
      program = self._programs(key, self.state, inputs)
    return program(self.state, inputs)

  def _to_mesh(self, batch: Batch) -> dict[str, jax.Array]:
    """The batch's inputs on the mesh, rows split over "data" (runs on the prefetch thread)."""
    if batch.shape[0] % self.data_parallel:
      raise ValueError(f"a batch of {batch.shape[0]} rows does not split over "
                       f"{self.data_parallel} data-parallel devices")
    return jax.device_put(batch.model_inputs(), self._batch_sharding)

  def _to_host(self, outputs_bs: jax.Array) -> np.ndarray:
    """All rows of the step's outputs on the host (waits for the step)."""
    return np.asarray(outputs_bs)
