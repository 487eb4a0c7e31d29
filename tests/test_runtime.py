"""The runner itself: bucket schedule, one-per-row batches on a data mesh, outputs read back at
their (row, segment) slots, tags passed through, compiled shapes bounded, errors surfaced.

The encoder and scoring tests run real models through it; here a step whose output is known in
closed form (each segment's token sum times a parameter) checks the plumbing exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from erpjax import runtime, sharding


class SegmentSum(nnx.Module):
  """outputs[b, s] = scale * sum of the tokens of segment s + 1 in row b."""

  def __init__(self, scale: float):
    self.scale = nnx.Param(jnp.float32(scale))


def _runner(mesh, **kwargs) -> runtime.Runner:
  graphdef, state = nnx.split(SegmentSum(0.5))

  def step(state, inputs):
    model = nnx.merge(graphdef, state)
    num_segments = inputs["score_index_bs"].shape[1]
    segment_s = jnp.arange(1, num_segments + 1)
    in_segment_bst = inputs["segment_ids_bt"][:, None, :] == segment_s[None, :, None]
    sums_bs = jnp.sum(jnp.where(in_segment_bst, inputs["tokens_bt"][:, None, :], 0), axis=-1)
    return model.scale[...] * sums_bs.astype(jnp.float32)

  return runtime.Runner(step, state, mesh=mesh, **kwargs)


def _sequences(n: int, seed: int) -> list[list[int]]:
  rng = np.random.default_rng(seed)
  return [rng.integers(1, 100, rng.integers(1, 30)).tolist() for _ in range(n)]


def test_bucket_lengths_subdivide_each_octave():
  assert runtime.bucket_lengths(128, 32, per_octave=4) == (32, 40, 48, 56, 64, 80, 96, 112, 128)
  assert runtime.bucket_lengths(512) == (128, 256, 512)
  with pytest.raises(ValueError, match="per_octave"):
    runtime.bucket_lengths(512, per_octave=0)


@pytest.mark.parametrize("packed", [False, True])
def test_outputs_come_back_per_sequence_on_a_data_mesh(packed):
  if len(jax.devices()) < 2:
    pytest.skip("needs 2 devices: tests/conftest.py emulates 8 CPU devices")
  seqs = _sequences(23, seed=0)
  want = {i: 0.5 * sum(seq) for i, seq in enumerate(seqs)}
  runner = _runner(sharding.make_mesh(1, jax.devices()[:2]))
  assert runner.data_parallel == 2
  if packed:
    buckets = runtime.Buckets((16, 32), tokens_per_batch=64, max_segments=3, row_multiple=2)
    batches = runtime.pack(range(len(seqs)), runtime.Tokenized(seqs), buckets, "first")
  else:
    batches = runtime.make_batches(seqs, batch_size=4, lengths=(8, 16, 32), row_multiple=2)
  assert all(b.shape[0] % 2 == 0 for b in batches)
  got = {}
  tags = []
  for batch, outputs, tag in runner.run(((b, i) for i, b in enumerate(batches)),
                                        progress=False):
    assert outputs.shape == (len(batch.ids),)
    got.update(zip(batch.ids, outputs.tolist()))
    tags.append(tag)
  assert tags == list(range(len(batches)))  # In order, tags passed through.
  assert got == pytest.approx(want, abs=1e-4)
  assert set(runner.compiled_shapes) == {b.shape for b in batches}
  assert len(runner.traced_shapes) == len(runner.compiled_shapes)


def test_rows_that_do_not_split_over_the_mesh_and_source_errors_are_raised():
  if len(jax.devices()) < 2:
    pytest.skip("needs 2 devices: tests/conftest.py emulates 8 CPU devices")
  runner = _runner(sharding.make_mesh(1, jax.devices()[:2]))
  (odd,) = runtime.make_batches([[1, 2, 3]], batch_size=4, lengths=(8,))
  with pytest.raises(ValueError, match="1 rows does not split over 2"):
    list(runner.run([(odd, None)], progress=False))

  def failing():
    yield from runtime.make_batches([[1, 2], [3]], 2, (8,), row_multiple=2)
    raise RuntimeError("tokenizer broke")

  with pytest.raises(RuntimeError, match="tokenizer broke"):
    list(runner.run(((b, None) for b in failing()), progress=False))


def test_a_rejected_compiler_option_falls_back_with_a_warning():
  runner = _runner(runtime.single_device_mesh(),
                   compiler_options={"xla_cpu_experimental_ynn_fusion_type": "NO_SUCH_TYPE"})
  batches = runtime.make_batches([[4, 5], [6]], 2, (8,))
  with pytest.warns(UserWarning, match="compiling without"):
    (result,) = runner.run(((b, None) for b in batches), progress=False)
  assert runner.compiler_options == {}
  np.testing.assert_allclose(result[1], [4.5, 3.0])
