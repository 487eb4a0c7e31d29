"""The "splash" attention implementation (Pallas TPU splash attention) against the reference.

On CPU the kernel runs in Pallas' interpreter, the same kernel body a TPU compiles; the cases are
those of test_attention.py (padded, left-padded, packed, causal, sliding windows, GQA, softcap)
plus several tiles per row, gathered (bidirectional) query rows, the position contract that
causal and window masks rely on, and what the kernel refuses. Tolerance: 1e-5 in float32.
Without a TPU, `test_lowers_to_mosaic_tpu` checks the kernel lowers to Mosaic for TPU;
`test_compiled_on_tpu` runs it compiled where a TPU is the default backend.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from erpjax_kernels import attention
from erpjax_kernels.attention._splash import index_aligned_b
from test_attention import ATOL, CASES, H, _call, _qkv, _rows

B = 2


def _packed(parts_per_row: list[list[int]], t: int) -> tuple[np.ndarray, np.ndarray]:
  """Segment ids and positions [B, t]: each row's sequences back to back, then padding."""
  segments = np.zeros((len(parts_per_row), t), np.int32)
  positions = np.zeros_like(segments)
  for row, parts in enumerate(parts_per_row):
    start = 0
    for s, n in enumerate(parts, 1):
      segments[row, start:start + n], positions[row, start:start + n] = s, np.arange(n)
      start += n
  return segments, positions


def _close_on_real_tokens(got, want, segments):
  real = segments > 0
  assert np.isfinite(np.asarray(got)).all()
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_the_reference(case):
  layout, causal, window, softcap, (n, k) = CASES[case]
  segments, positions = _rows(layout)
  q, kk, v = _qkv(0, n=n, k=k)
  kwargs = dict(causal=causal, window=window, softcap=softcap)
  _close_on_real_tokens(_call(q, kk, v, segments, positions, "splash", **kwargs),
                        _call(q, kk, v, segments, positions, "reference", **kwargs), segments)


@pytest.mark.parametrize("causal, window", [(False, None), (True, None), (True, 24),
                                            (False, 24)])
def test_several_tiles_and_ragged_lengths(causal, window):
  """T = 300: three query tiles of 128 over three key tiles of 128 after padding to 384, with
  sequences straddling tile edges and GQA; splash's skipping of fully masked tiles (causal,
  window) must never drop a visible key."""
  t = 300
  segments, positions = _packed([[100, 150, 30], [290]], t)
  q, k, v = _qkv(6, t=t)
  ids = dict(q_segment_ids_bt=jnp.asarray(segments), kv_segment_ids_bs=jnp.asarray(segments),
             q_positions_bt=jnp.asarray(positions), kv_positions_bs=jnp.asarray(positions))
  want = attention.dot_product_attention(q, k, v, **ids, causal=causal, window=window,
                                         implementation="reference")
  got = attention.attention_splash(q, k, v, **ids, causal=causal, window=window,
                                   scale=H ** -0.5, softcap=None, interpret=True)
  _close_on_real_tokens(got, want, segments)


def test_gathered_query_rows_bidirectional():
  """Queries at a few gathered rows over all keys (T=3, S=64): exact without causal or window,
  where positions are not read."""
  segments, positions = _rows("packed")
  q, k, v = _qkv(4)
  rows = jnp.asarray([[19, 49, 54], [8, 53, 0]])  # real tokens (padding queries are garbage)
  take = lambda x: jnp.take_along_axis(jnp.asarray(x), rows.reshape(  # noqa: E731
      rows.shape + (1,) * (x.ndim - 2)), axis=1)
  full = _call(q, k, v, segments, positions, "reference", causal=False)
  got = attention.dot_product_attention(
      take(q), k, v, q_segment_ids_bt=take(segments), kv_segment_ids_bs=jnp.asarray(segments),
      causal=False, implementation="splash")
  assert (np.asarray(take(segments)) > 0).all()
  np.testing.assert_allclose(got, take(full), atol=ATOL, rtol=0)


def test_fully_padded_query_rows_are_finite():
  segments = np.zeros((B, 64), np.int32)
  segments[0, :10] = 1  # row 1 is all padding
  q, k, v = _qkv(5)
  for causal in (False, True):
    out = _call(q, k, v, segments, np.broadcast_to(np.arange(64), segments.shape), "splash",
                causal=causal)
    assert np.isfinite(np.asarray(out)).all()


def test_index_alignment():
  """Positions restarting in each packed sequence, or row indices (the default) even when an id
  repeats, are aligned; a sequence whose positions skip one, or queries whose positions differ
  from their keys', are not."""
  segments, positions = _packed([[20, 30, 5], [9, 40]], 64)
  aligned = lambda s, p, qs=None, qp=None: np.asarray(index_aligned_b(  # noqa: E731
      jnp.asarray(s if qs is None else qs), jnp.asarray(s), jnp.asarray(p if qp is None else qp),
      jnp.asarray(p)))
  np.testing.assert_array_equal(aligned(segments, positions), [True, True])
  left = np.zeros((1, 8), np.int32)
  left[0, 3:] = 1
  np.testing.assert_array_equal(aligned(left, np.maximum(np.arange(8) - 3, 0)[None]), [True])
  repeated = np.array([[1, 1, 2, 2, 1, 1]])
  np.testing.assert_array_equal(aligned(repeated, np.arange(6)[None]), [True])
  np.testing.assert_array_equal(aligned(repeated, np.array([[0, 1, 0, 1, 0, 1]])), [False])
  skipped = positions.copy()
  skipped[1, 20:49] += 1  # row 1, sequence 2: positions 0..10, 12..40
  np.testing.assert_array_equal(aligned(segments, skipped), [True, False])
  shifted = positions + 1  # queries one position ahead of their keys
  np.testing.assert_array_equal(aligned(segments, positions, segments, shifted), [False, False])
  # Padding (id 0) is never read, whatever its positions.
  noisy = positions.copy()
  noisy[segments == 0] = 7
  np.testing.assert_array_equal(aligned(segments, noisy), [True, True])


def test_misaligned_positions_are_refused_or_poisoned():
  """Causal attention over positions that are not row indices plus a constant: concrete ids
  raise; traced ones (inside jit) turn that batch row into NaN, the other row stays exact."""
  segments, positions = _rows("packed")
  skipped = positions.copy()
  skipped[1, 20:30] += 3  # row 1's second sequence jumps 3 positions at index 20
  q, k, v = _qkv(3)
  with pytest.raises(ValueError, match=r"row indices plus one constant \(rows \[1\]"):
    _call(q, k, v, segments, skipped, "splash", causal=True)
  got = np.asarray(jax.jit(lambda *a: _call(*a, "splash", causal=True))(
      q, k, v, segments, skipped))
  want = _call(q, k, v, segments, skipped, "reference", causal=True)
  assert np.isnan(got[1]).all()
  real = segments[0] > 0
  np.testing.assert_allclose(got[0][real], np.asarray(want)[0][real], atol=ATOL, rtol=0)
  # Without causal or window, positions are not read: the same ids are exact.
  _close_on_real_tokens(_call(q, k, v, segments, skipped, "splash", causal=False),
                        _call(q, k, v, segments, skipped, "reference", causal=False), segments)


def test_unsupported_options_are_refused():
  segments, positions = _rows("padded")
  q, k, v = _qkv(7)
  with pytest.raises(ValueError, match="splash attention kernel takes no logits bias"):
    _call(q, k, v, segments, positions, "splash", causal=False,
          bias=jnp.zeros((B, 8, 64, 64), jnp.float32))
  with pytest.raises(ValueError, match="static int window"):
    _call(q, k, v, segments, positions, "splash", causal=True, window=jnp.int32(4))
  with pytest.raises(ValueError, match=r"T == S\), got T=3, S=64"):
    attention.dot_product_attention(
        q[:, :3], k, v, q_segment_ids_bt=jnp.asarray(segments[:, :3]),
        kv_segment_ids_bs=jnp.asarray(segments), causal=True, implementation="splash")
  ids = dict(q_segment_ids_bt=jnp.asarray(segments), kv_segment_ids_bs=jnp.asarray(segments),
             q_positions_bt=jnp.asarray(positions), kv_positions_bs=jnp.asarray(positions))
  with pytest.raises(ValueError, match="multiples of 8 .queries. and 128 .keys."):
    attention.attention_splash(q, k, v, **ids, causal=False, scale=1.0, softcap=None,
                               window=None, block_kv=64)


def test_lowers_to_mosaic_tpu():
  """The kernel lowers through Pallas' Mosaic backend for TPU (checked without a TPU: lowering
  to StableHLO with a tpu_custom_call; compiling it needs one). bfloat16, GQA, H = 64, T = 200
  (padded to tiles), causal with a window and soft-capping."""
  q = jax.ShapeDtypeStruct((B, 200, 8, 64), jnp.bfloat16)
  kv = jax.ShapeDtypeStruct((B, 200, 2, 64), jnp.bfloat16)
  ids = jax.ShapeDtypeStruct((B, 200), jnp.int32)

  def run(q, k, v, segments, positions):
    return attention.attention_splash(
        q, k, v, q_segment_ids_bt=segments, kv_segment_ids_bs=segments,
        q_positions_bt=positions, kv_positions_bs=positions, causal=True, scale=0.125,
        softcap=30.0, window=16, interpret=False)

  text = jax.jit(run).trace(q, kv, kv, ids, ids).lower(lowering_platforms=("tpu",)).as_text()
  assert "tpu_custom_call" in text


# ------------------------------------------------------------------------------------------------
# On a TPU.


@pytest.mark.tpu
@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_on_tpu(case):
  layout, causal, window, softcap, (n, k) = CASES[case]
  segments, positions = _rows(layout)
  q, kk, v = _qkv(0, n=n, k=k)
  kwargs = dict(causal=causal, window=window, softcap=softcap)
  with jax.default_matmul_precision("highest"):
    want = _call(q, kk, v, segments, positions, "reference", **kwargs)
    got = _call(q, kk, v, segments, positions, "splash", **kwargs)
  _close_on_real_tokens(got, want, segments)
