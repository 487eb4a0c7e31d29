"""Flash attention (forward only) as a Pallas kernel: segment ids and positions, no [T, S] mask.

FlashAttention (Dao et al., arXiv 2205.14135; FlashAttention-2, arXiv 2307.08691): one program
per (batch row, query head, block of `block_q` queries) keeps its queries, a running row maximum,
a running row sum and an unnormalized [block_q, H] output in registers, and walks the keys and
values in blocks of `block_k` with an online softmax. Masking is computed per block from the
segment ids and positions (the same rules as `visible_b1ts`), so memory is O(T + S) per row, not
O(T * S). A key block that no query of the block can see (another segment, padding, the causal
future, outside the window) is skipped, judged from the blocks' min/max segment ids and
positions: a conservative test that never skips a visible key, so packed and causal rows do
roughly the work their visible pairs need. Grouped-query attention maps query head n to key/value
head n // (N / K) in the key/value index maps; nothing is repeated in memory.

Laid out after `jax.experimental.pallas.ops.gpu.attention.mha` (which has segment ids but neither
positions, windows, GQA nor soft-capping). It lowers to Triton on NVIDIA GPUs (`compiler_params`
select Pallas' Triton backend) and runs in Pallas' interpreter on CPU, which is how the tests
check it; TPU would use Pallas TPU's splash attention with the same segment ids (not wired here).

Forward only: there is no custom VJP, so training must use "xla" or "reference". Scoring and
embedding are inference.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

# Finite (not -inf), with headroom below zero, as in jax's Pallas attention: a query whose keys
# are all masked in a block then gets exp(0) = 1 weights, never exp(-inf + inf) = NaN.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
# Triton's dot needs every dimension of a tile to be a power of two of at least 16.
_MIN_TILE = 16


def _flash_kernel(q_seg_ref, kv_seg_ref, q_pos_ref, kv_pos_ref, q_ref, k_ref, v_ref, o_ref, *,
                  scale: float, softcap: float | None, causal: bool, window: int | None,
                  block_k: int):
  """One (row, query head, query block) program; refs are [block_q, Hp], [Sp, Hp], [block_q],
  [Sp] with Sp a multiple of `block_k`."""
  block_q, head_dim = q_ref.shape
  q = q_ref[...]
  q_seg, q_pos = q_seg_ref[...], q_pos_ref[...]
  q_seg_lo, q_seg_hi = jnp.min(q_seg), jnp.max(q_seg)
  q_pos_lo, q_pos_hi = jnp.min(q_pos), jnp.max(q_pos)

  def body(j, carry):
    keys = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
    kv_seg, kv_pos = kv_seg_ref[keys], kv_pos_ref[keys]
    kv_pos_lo, kv_pos_hi = jnp.min(kv_pos), jnp.max(kv_pos)
    # Some query and key of the blocks share a nonzero segment id only if this holds.
    maybe_visible = (jnp.maximum(jnp.maximum(q_seg_lo, jnp.min(kv_seg)), 1)
                     <= jnp.minimum(q_seg_hi, jnp.max(kv_seg)))
    if causal:
      maybe_visible &= kv_pos_lo <= q_pos_hi
    if window is not None:
      maybe_visible &= (kv_pos_lo - q_pos_hi < window) & (q_pos_lo - kv_pos_hi < window)

    def update(carry):
      out, row_max, row_sum = carry
      logits = jax.lax.dot_general(q, k_ref[keys, :], (((1,), (1,)), ((), ())),
                                   preferred_element_type=jnp.float32) * scale
      if softcap is not None:
        logits = softcap * jnp.tanh(logits / softcap)
      visible = (q_seg[:, None] == kv_seg[None, :]) & (kv_seg[None, :] != 0)
      distance = q_pos[:, None] - kv_pos[None, :]
      if causal:
        visible &= distance >= 0
      if window is not None:
        visible &= (distance < window) & (distance > -window)
      logits = jnp.where(visible, logits, _MASK_VALUE)
      new_max = jnp.maximum(row_max, jnp.max(logits, axis=1))
      correction = jnp.exp(row_max - new_max)
      weights = jnp.exp(logits - new_max[:, None])
      v = v_ref[keys, :]
      out = correction[:, None] * out + jax.lax.dot_general(
          weights.astype(v.dtype), v, (((1,), (0,)), ((), ())),
          preferred_element_type=jnp.float32)
      return out, new_max, correction * row_sum + jnp.sum(weights, axis=1)

    return jax.lax.cond(maybe_visible, update, lambda carry: carry, carry)

  init = (jnp.zeros((block_q, head_dim), jnp.float32),
          jnp.full((block_q,), -jnp.inf, jnp.float32),
          jnp.zeros((block_q,), jnp.float32))
  out, _, row_sum = jax.lax.fori_loop(0, k_ref.shape[0] // block_k, body, init)
  # Rows whose every key block was skipped (padding queries) have a zero sum: output zeros.
  o_ref[...] = (out / jnp.where(row_sum == 0.0, 1.0, row_sum)[:, None]).astype(o_ref.dtype)


def _pad_axis(x: jax.Array, axis: int, size: int) -> jax.Array:
  if x.shape[axis] == size:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _tile(block: int, length: int) -> int:
  """`block`, or the smallest power of two >= max(length, 16) when the sequence is shorter."""
  return min(block, max(_MIN_TILE, pl.next_power_of_2(length)))


def attention_pallas(q_btnh: jax.Array, k_bskh: jax.Array, v_bskh: jax.Array, *,
                     q_segment_ids_bt: jax.Array, kv_segment_ids_bs: jax.Array,
                     q_positions_bt: jax.Array, kv_positions_bs: jax.Array, causal: bool,
                     scale: float, softcap: float | None, window: int | None,
                     block_q: int = 64, block_k: int = 64,
                     interpret: bool | None = None) -> jax.Array:
  """Flash attention with the visibility rules of `visible_b1ts`, forward only.

  Args:
    q_btnh: queries [B, T, N, H]. k_bskh, v_bskh: keys and values [B, S, K, H], N % K == 0.
    q_segment_ids_bt, kv_segment_ids_bs: int[B, T] / int[B, S], 0 = padding.
    q_positions_bt, kv_positions_bs: int[B, T] / int[B, S].
    causal, scale, softcap, window: as in `dot_product_attention`; `window` must be a Python int
      (it shapes the kernel) or None.
    block_q, block_k: query and key tile sizes (powers of two >= 16; shorter sequences use
      smaller tiles). T and S are zero-padded (segment id 0) to multiples of them, and H to a
      power of two >= 16, as Triton's tiles need.
    interpret: run in Pallas' interpreter; None = only when JAX's default backend is the CPU.

  Returns:
    [B, T, N, H] in the dtype of `q_btnh`. Query rows that see no key are finite garbage (zeros,
    or uniform weights over the keys of the blocks their query block could not skip).
  """
  if window is not None and not isinstance(window, int):
    raise ValueError(f"the pallas attention kernel needs a static int window, got {window!r}; "
                     "per-layer (traced) windows need a dense implementation")
  if interpret is None:
    interpret = jax.default_backend() == "cpu"
  b, t, n, h = q_btnh.shape
  s, k = k_bskh.shape[1:3]
  block_q, block_k = _tile(block_q, t), _tile(block_k, s)
  t_pad, s_pad = _round_up(t, block_q), _round_up(s, block_k)
  h_pad = max(_MIN_TILE, pl.next_power_of_2(h))
  q_btnh_p = _pad_axis(_pad_axis(q_btnh, 1, t_pad), 3, h_pad)
  k_bskh_p = _pad_axis(_pad_axis(k_bskh, 1, s_pad), 3, h_pad)
  v_bskh_p = _pad_axis(_pad_axis(v_bskh, 1, s_pad), 3, h_pad)
  ids = [_pad_axis(x.astype(jnp.int32), 1, size) for x, size in (
      (q_segment_ids_bt, t_pad), (kv_segment_ids_bs, s_pad), (q_positions_bt, t_pad),
      (kv_positions_bs, s_pad))]
  groups = n // k
  kernel = functools.partial(_flash_kernel, scale=scale, softcap=softcap, causal=causal,
                             window=window, block_k=block_k)
  q_rows = pl.BlockSpec((None, block_q), lambda i, j, m: (i, m))
  kv_rows = pl.BlockSpec((None, s_pad), lambda i, j, m: (i, 0))
  q_tile = pl.BlockSpec((None, block_q, None, h_pad), lambda i, j, m: (i, m, j, 0))
  kv_tile = pl.BlockSpec((None, s_pad, None, h_pad), lambda i, j, m: (i, 0, j // groups, 0))
  out = pl.pallas_call(
      kernel,
      grid=(b, n, t_pad // block_q),
      in_specs=[q_rows, kv_rows, q_rows, kv_rows, q_tile, kv_tile, kv_tile],
      out_specs=q_tile,
      out_shape=jax.ShapeDtypeStruct(q_btnh_p.shape, q_btnh.dtype),
      compiler_params=pl_triton.CompilerParams(num_warps=4 if h_pad <= 64 else 8,
                                               num_stages=2),
      interpret=interpret,
      name="erpjax_flash_attention",
  )(*ids, q_btnh_p, k_bskh_p, v_bskh_p)
  return out[:, :t, :, :h]
