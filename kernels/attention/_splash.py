"""Pallas TPU's splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`), forward.

Splash attention is JAX's block-sparse flash-attention kernel for TPUs (Mosaic). It takes one
batch row at a time as q [N, T, H] and k, v [K, S, H] (query head n reads key/value head
n // (N / K), erpjax's grouping), segment ids [T] / [S], and a static mask (`CausalMask`,
`LocalMask`, `FullMask`) whose fully masked blocks it skips. erpjax's rules map onto it like this:

  - segment ids: splash lets tokens with equal ids attend each other, including id 0. A real
    query (id != 0) therefore never sees padding, as in erpjax; padding queries see padding keys,
    which only changes their (garbage) rows.
  - causal / window: splash's masks compare row indices, erpjax's compare positions. They agree
    when every segment's positions are its row indices plus one constant, the same for its query
    and key tokens: self-attention (T == S) over padded or packed rows whose positions count up
    by one from wherever each sequence starts. Gathered query rows (T != S) cannot be expressed
    and are refused; the position contract is checked (see `attention_splash`).
  - scale: splash does not scale; q is multiplied by `scale` before the kernel, in q's dtype
    (exact for power-of-two scales, e.g. H = 64 or 256; one more rounding in bfloat16 otherwise).
  - softcap: splash's `attn_logits_soft_cap` caps the scaled logits, as erpjax does.
  - logits bias: none (refused by the entry point).

It runs compiled on TPUs and, on any backend, in Pallas' interpreter (how the tests check it on
CPU). Forward only: the kernel is built without backward block sizes, so it has no gradient here.
"""

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash

# Mosaic's TPU tiles: key blocks are lane-aligned (splash requires multiples of 128); query
# blocks only need whole sublane groups of 8.
_LANES = 128
_SUBLANES = 8


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _pad_axis(x: jax.Array, axis: int, size: int) -> jax.Array:
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths)


def index_aligned_b(q_segment_ids_bt: jax.Array, kv_segment_ids_bs: jax.Array,
                    q_positions_bt: jax.Array, kv_positions_bs: jax.Array) -> jax.Array:
  """bool[B]: in row b, position minus row index is one constant per nonzero segment id, over
  its query and key tokens together, so index-based causal and window masks equal erpjax's
  position-based ones for every pair that shares a segment.

  One sort per row of the T + S (segment id, position - index) pairs: equal ids end up adjacent
  and must carry equal offsets.
  """
  t, s = q_segment_ids_bt.shape[1], kv_segment_ids_bs.shape[1]
  ids_bu = jnp.concatenate([q_segment_ids_bt, kv_segment_ids_bs], axis=1).astype(jnp.int32)
  offsets_bu = jnp.concatenate([q_positions_bt - jnp.arange(t), kv_positions_bs - jnp.arange(s)],
                               axis=1).astype(jnp.int32)
  ids_bu, offsets_bu = jax.lax.sort((ids_bu, offsets_bu), dimension=1, num_keys=2)
  same_segment = (ids_bu[:, 1:] == ids_bu[:, :-1]) & (ids_bu[:, 1:] != 0)
  return ~jnp.any(same_segment & (offsets_bu[:, 1:] != offsets_bu[:, :-1]), axis=1)


def attention_splash(q_btnh: jax.Array, k_bskh: jax.Array, v_bskh: jax.Array, *,
                     q_segment_ids_bt: jax.Array, kv_segment_ids_bs: jax.Array,
                     q_positions_bt: jax.Array, kv_positions_bs: jax.Array, causal: bool,
                     scale: float, softcap: float | None, window: int | None,
                     block_q: int = 128, block_kv: int = 128,
                     interpret: bool | None = None) -> jax.Array:
  """Splash attention with the visibility rules of `visible_b1ts` (see the module docstring).

  Args:
    q_btnh: queries [B, T, N, H]. k_bskh, v_bskh: keys and values [B, S, K, H], N % K == 0.
    q_segment_ids_bt, kv_segment_ids_bs: int[B, T] / int[B, S], 0 = padding.
    q_positions_bt, kv_positions_bs: int[B, T] / int[B, S]; read only with `causal` or
      `window`, and then each segment's positions must be its row indices plus a constant
      shared by its query and key tokens (`index_aligned_b`). Called with concrete arrays, a
      violation raises ValueError; traced (inside jit), a violating batch row comes back NaN, so
      it cannot pass unnoticed.
    causal, scale, softcap, window: as in `dot_product_attention`; `window` must be a Python int
      (it shapes the static mask) or None.
    block_q, block_kv: query and key tiles (`splash.BlockSizes`); block_q a multiple of 8,
      block_kv of 128. Shorter sequences use one tile; T and S are zero-padded (segment id 0)
      to multiples of them.
    interpret: run in Pallas' interpreter; None = only when JAX's default backend is the CPU.

  Returns:
    [B, T, N, H] in the dtype of `q_btnh`. Query rows that see no key are finite garbage.

  Raises:
    ValueError: a traced window, causal or window attention with T != S (gathered query rows),
      concrete positions that break the contract above, or block sizes the kernel cannot tile.
      (Compiling for a backend other than TPU fails in JAX's Pallas lowering.)
  """
  if window is not None and not isinstance(window, int):
    raise ValueError(f"the splash attention kernel needs a static int window, got {window!r}; "
                     "per-layer (traced) windows need a dense implementation")
  if block_q % _SUBLANES or block_kv % _LANES:
    raise ValueError(f"splash block sizes must be multiples of {_SUBLANES} (queries) and "
                     f"{_LANES} (keys), got block_q={block_q}, block_kv={block_kv}")
  if interpret is None:
    interpret = jax.default_backend() == "cpu"
  t, n = q_btnh.shape[1:3]
  s = k_bskh.shape[1]
  positional = causal or window is not None
  if positional and t != s:
    raise ValueError(f"splash attention's causal and window masks compare row indices, so the "
                     f"queries must be the keys' rows (T == S), got T={t}, S={s}; gathered "
                     "query rows need 'pallas' or a dense implementation")
  aligned_b = None
  if positional:
    aligned_b = index_aligned_b(q_segment_ids_bt, kv_segment_ids_bs, q_positions_bt,
                                kv_positions_bs)
    if not isinstance(aligned_b, jax.core.Tracer) and not bool(jnp.all(aligned_b)):
      raise ValueError("splash attention with causal or window needs each segment's positions "
                       "to be its row indices plus one constant (rows "
                       f"{jnp.flatnonzero(~aligned_b).tolist()} are not); use 'pallas' or a "
                       "dense implementation")

  block_q = min(block_q, _round_up(t, _SUBLANES))
  block_kv = min(block_kv, _round_up(s, _LANES))
  t_pad, s_pad = _round_up(t, block_q), _round_up(s, block_kv)
  # With T == S, queries and keys share row indices; the padded tails only add masked slots.
  # LocalMask keeps keys within (left, right) indices of the query: (window - 1, 0) is causal.
  if window is not None:
    head_mask = splash.LocalMask((t_pad, s_pad), (window - 1, 0 if causal else window - 1),
                                 offset=0)
  elif causal:
    head_mask = splash.CausalMask((t_pad, s_pad))
  else:
    head_mask = splash.FullMask((t_pad, s_pad))
  kernel = splash.make_splash_mha(
      splash.MultiHeadMask([head_mask] * n),
      block_sizes=splash.BlockSizes(block_q=block_q, block_kv=block_kv),
      head_shards=1, q_seq_shards=1, attn_logits_soft_cap=softcap, interpret=interpret)

  # [B, T, N, H] -> [B, N, T, H] (splash's head-major layout, one batch row per vmapped call).
  q_bnth = _pad_axis((q_btnh * jnp.asarray(scale, q_btnh.dtype)).transpose(0, 2, 1, 3), 2, t_pad)
  k_bksh = _pad_axis(k_bskh.transpose(0, 2, 1, 3), 2, s_pad)
  v_bksh = _pad_axis(v_bskh.transpose(0, 2, 1, 3), 2, s_pad)
  segment_ids = splash.SegmentIds(q=_pad_axis(q_segment_ids_bt.astype(jnp.int32), 1, t_pad),
                                  kv=_pad_axis(kv_segment_ids_bs.astype(jnp.int32), 1, s_pad))
  out_bnth = jax.vmap(kernel)(q_bnth, k_bksh, v_bksh, segment_ids)
  out_btnh = out_bnth[:, :, :t].transpose(0, 2, 1, 3)
  if aligned_b is not None:
    out_btnh = jnp.where(aligned_b[:, None, None, None], out_btnh, jnp.nan)
  return out_btnh
