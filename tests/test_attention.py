"""erpjax_kernels.attention: every implementation against the float32 reference.

Rows are padded or packed (several sequences per row, positions restarting in each); attention is
bidirectional or causal, with sliding windows, grouped-query heads (N=8 over K=2), soft-capping,
a logits bias, and the "score rows" case (queries = a few gathered rows, keys = the whole row).
The Pallas kernel runs in Pallas' interpreter on CPU; the `gpu` tests run cuDNN and the compiled
kernel on a real GPU. Tolerance: 1e-5 in float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from erpjax_kernels import attention

ATOL = 1e-5
# Implementations that run on CPU and are compared with "reference".
ON_CPU = ("xla", "jax_nn", "pallas")
B, T, N, K, H = 2, 64, 8, 2, 16


def _rows(layout: str, t: int = T) -> tuple[np.ndarray, np.ndarray]:
  """int32 segment ids and positions [B, t] for a layout."""
  # Per row: (first token, sequence lengths).
  rows = {
      "padded": [(0, [t]), (0, [t - 23])],          # a full row and a right-padded one
      "left_padded": [(23, [t - 23]), (0, [t])],
      "packed": [(0, [20, 30, 5]), (0, [9, t - 19])],  # several sequences, trailing padding
  }[layout]
  segments = np.zeros((B, t), np.int32)
  positions = np.zeros((B, t), np.int32)
  for row, (start, parts) in enumerate(rows):
    for s, n in enumerate(parts, 1):
      segments[row, start:start + n] = s
      positions[row, start:start + n] = np.arange(n)
      start += n
  return segments, positions


def _qkv(seed: int, t: int = T, n: int = N, k: int = K, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.standard_normal((B, t, n, H)), dtype)
  kv = [jnp.asarray(rng.standard_normal((B, t, k, H)), dtype) for _ in range(2)]
  return q, *kv


# (layout, causal, window, softcap, heads (N, K)).
CASES = {
    "padded bidirectional": ("padded", False, None, None, (N, N)),
    "packed bidirectional": ("packed", False, None, None, (N, N)),
    "packed causal": ("packed", True, None, None, (N, N)),
    "left-padded causal": ("left_padded", True, None, None, (N, N)),
    "sliding window causal": ("packed", True, 7, None, (N, N)),
    "sliding window bidirectional": ("padded", False, 5, None, (N, N)),
    "gqa causal packed": ("packed", True, None, None, (N, K)),
    "gqa softcap window": ("packed", True, 9, 2.0, (N, K)),
}


def _call(q, k, v, segments, positions, implementation, *, causal, window=None, softcap=None,
          bias=None):
  return attention.dot_product_attention(
      q, k, v, q_segment_ids_bt=jnp.asarray(segments), kv_segment_ids_bs=jnp.asarray(segments),
      q_positions_bt=jnp.asarray(positions), kv_positions_bs=jnp.asarray(positions),
      causal=causal, window=window, softcap=softcap, logits_bias_bnts=bias,
      implementation=implementation)


@pytest.mark.parametrize("implementation", ON_CPU)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_the_reference(case, implementation):
  layout, causal, window, softcap, (n, k) = CASES[case]
  if softcap is not None and implementation == "jax_nn":
    pytest.skip("jax.nn has no soft-capping (test_unsupported_options_are_refused)")
  segments, positions = _rows(layout)
  q, kk, v = _qkv(0, n=n, k=k)
  want = _call(q, kk, v, segments, positions, "reference", causal=causal, window=window,
               softcap=softcap)
  got = _call(q, kk, v, segments, positions, implementation, causal=causal, window=window,
              softcap=softcap)
  real = segments > 0
  assert np.isfinite(np.asarray(got)).all()
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=ATOL, rtol=0)


def test_reference_semantics():
  """The reference itself: a packed sequence equals that sequence alone; causal attention of the
  first token is its own value; a window of 1 with causality attends to itself only."""
  segments, positions = _rows("packed")
  q, k, v = _qkv(1, n=N, k=N)
  packed = _call(q, k, v, segments, positions, "reference", causal=True)
  start, n = 20, 30  # sequence 2 of row 0
  alone = _call(q[:1, start:start + n], k[:1, start:start + n], v[:1, start:start + n],
                np.ones((1, n), np.int32), np.arange(n)[None], "reference", causal=True)
  np.testing.assert_allclose(packed[:1, start:start + n], alone, atol=1e-6)
  np.testing.assert_allclose(packed[:, 0], v[:, 0], atol=1e-6)
  own = _call(q, k, v, segments, positions, "reference", causal=True, window=1)
  real = segments > 0
  np.testing.assert_allclose(np.asarray(own)[real], np.asarray(v)[real], atol=1e-6)


@pytest.mark.parametrize("implementation", ["xla", "jax_nn"])
def test_logits_bias(implementation):
  segments, positions = _rows("packed")
  q, k, v = _qkv(2)
  bias = jnp.asarray(np.random.default_rng(3).standard_normal((B, N, T, T)), jnp.float32)
  want = _call(q, k, v, segments, positions, "reference", causal=False, bias=bias)
  got = _call(q, k, v, segments, positions, implementation, causal=False, bias=bias)
  real = segments > 0
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=ATOL, rtol=0)
  # The bias matters (the test would notice an implementation that dropped it).
  plain = _call(q, k, v, segments, positions, "reference", causal=False)
  assert np.abs(np.asarray(plain) - np.asarray(want))[real].max() > 0.1


@pytest.mark.parametrize("implementation", ON_CPU)
@pytest.mark.parametrize("causal", [False, True])
def test_score_rows_queries_over_all_keys(implementation, causal):
  """Queries at a few gathered rows (each sequence's last token), keys over the whole row: the
  gathered rows of the full computation."""
  segments, positions = _rows("packed")
  q, k, v = _qkv(4)
  rows = np.array([[19, 49, 54], [8, 63, 0]])  # last tokens; slot 3 of row 1 unused (row 0)
  full = _call(q, k, v, segments, positions, "reference", causal=causal)
  take = lambda x: jnp.take_along_axis(jnp.asarray(x), jnp.asarray(rows).reshape(  # noqa: E731
      rows.shape + (1,) * (x.ndim - 2)), axis=1)
  got = attention.dot_product_attention(
      take(q), k, v, q_segment_ids_bt=take(segments), kv_segment_ids_bs=jnp.asarray(segments),
      q_positions_bt=take(positions), kv_positions_bs=jnp.asarray(positions), causal=causal,
      implementation=implementation)
  np.testing.assert_allclose(got, take(full), atol=ATOL, rtol=0)


@pytest.mark.parametrize("implementation", ON_CPU + ("reference",))
def test_fully_padded_query_rows_are_finite(implementation):
  segments = np.zeros((B, T), np.int32)
  segments[0, :10] = 1  # row 1 is all padding
  q, k, v = _qkv(5)
  for causal in (False, True):
    out = _call(q, k, v, segments, np.zeros_like(segments), implementation, causal=causal)
    assert np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [None, 24])
def test_pallas_blocks_and_skipping(causal, window):
  """Several query and key blocks (T=128, blocks of 32), packed rows whose sequences straddle
  block edges, GQA: block skipping must never drop a visible key."""
  t = 128
  segments = np.zeros((B, t), np.int32)
  positions = np.zeros((B, t), np.int32)
  for row, parts in enumerate([[40, 50, 30], [100]]):
    start = 0
    for s, n in enumerate(parts, 1):
      segments[row, start:start + n], positions[row, start:start + n] = s, np.arange(n)
      start += n
  q, k, v = _qkv(6, t=t)
  ids = dict(q_segment_ids_bt=jnp.asarray(segments), kv_segment_ids_bs=jnp.asarray(segments),
             q_positions_bt=jnp.asarray(positions), kv_positions_bs=jnp.asarray(positions))
  want = attention.dot_product_attention(q, k, v, **ids, causal=causal, window=window,
                                         implementation="reference")
  got = attention.attention_pallas(q, k, v, **ids, causal=causal, window=window,
                                   scale=H ** -0.5, softcap=None, block_q=32, block_k=32,
                                   interpret=True)
  real = segments > 0
  assert np.isfinite(np.asarray(got)).all()
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=ATOL, rtol=0)


def test_pallas_lowers_to_triton():
  """The kernel lowers through Pallas' Triton backend for CUDA (checked without a GPU: lowering
  to StableHLO with a Triton custom call; compiling it needs one, see the gpu tests)."""
  q = jax.ShapeDtypeStruct((B, 200, N, 64), jnp.bfloat16)
  kv = jax.ShapeDtypeStruct((B, 200, K, 64), jnp.bfloat16)
  ids = jax.ShapeDtypeStruct((B, 200), jnp.int32)

  def run(q, k, v, segments, positions):
    return attention.attention_pallas(
        q, k, v, q_segment_ids_bt=segments, kv_segment_ids_bs=segments,
        q_positions_bt=positions, kv_positions_bs=positions, causal=True, scale=0.125,
        softcap=30.0, window=16, interpret=False)

  text = jax.jit(run).trace(q, kv, kv, ids, ids).lower(lowering_platforms=("cuda",)).as_text()
  assert "xla.gpu.triton" in text


def test_unsupported_options_are_refused():
  segments, positions = _rows("padded")
  q, k, v = _qkv(7)
  with pytest.raises(ValueError, match="soft-capping"):
    _call(q, k, v, segments, positions, "jax_nn", causal=True, softcap=2.0)
  with pytest.raises(ValueError, match="no logits bias"):
    _call(q, k, v, segments, positions, "pallas", causal=False,
          bias=jnp.zeros((B, N, T, T), jnp.float32))
  with pytest.raises(ValueError, match="static int window"):
    _call(q, k, v, segments, positions, "pallas", causal=True, window=jnp.int32(4))
  with pytest.raises(ValueError, match="do not group"):
    _call(q[:, :, :7], k, v, segments, positions, "xla", causal=False)
  with pytest.raises(ValueError, match="unknown attention implementation"):
    _call(q, k, v, segments, positions, "jnp", causal=False)


def test_cudnn_is_requested_from_jax_nn(monkeypatch):
  """"cudnn" really asks jax.nn for cuDNN's kernel (on CPU, JAX itself refuses)."""
  segments, positions = _rows("packed")
  q, k, v = _qkv(8, dtype=jnp.bfloat16)
  if jax.default_backend() == "cpu":
    with pytest.raises(Exception, match="(?i)cudnn"):
      _call(q, k, v, segments, positions, "cudnn", causal=True)
  seen = {}

  def spy(*args, implementation=None, **kwargs):
    seen["implementation"] = implementation
    return jnp.zeros_like(args[0])

  monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
  _call(q, k, v, segments, positions, "cudnn", causal=True)
  assert seen == {"implementation": "cudnn"}


# ------------------------------------------------------------------------------------------------
# On a GPU.


@pytest.mark.gpu
def test_cudnn_on_gpu():
  segments, positions = _rows("packed")
  q, k, v = _qkv(9, dtype=jnp.bfloat16)
  with jax.default_matmul_precision("highest"):
    want = _call(q, k, v, segments, positions, "reference", causal=True)
  got = _call(q, k, v, segments, positions, "cudnn", causal=True)
  real = segments > 0
  # bfloat16 inputs: ~3 significant digits.
  np.testing.assert_allclose(np.asarray(got, np.float32)[real],
                             np.asarray(want, np.float32)[real], atol=3e-2, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("case", sorted(CASES))
def test_pallas_compiled_on_gpu(case):
  layout, causal, window, softcap, (n, k) = CASES[case]
  segments, positions = _rows(layout)
  q, kk, v = _qkv(0, n=n, k=k)
  with jax.default_matmul_precision("highest"):
    want = _call(q, kk, v, segments, positions, "reference", causal=causal, window=window,
                 softcap=softcap)
  got = attention.attention_pallas(
      q, kk, v, q_segment_ids_bt=jnp.asarray(segments), kv_segment_ids_bs=jnp.asarray(segments),
      q_positions_bt=jnp.asarray(positions), kv_positions_bs=jnp.asarray(positions),
      causal=causal, scale=H ** -0.5, softcap=softcap, window=window, interpret=False)
  real = segments > 0
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=ATOL, rtol=0)
