"""Textbook softmax attention in plain jnp: the reference every other implementation must match."""

import jax
import jax.numpy as jnp


def mask_b1ts(mask: jax.Array) -> jax.Array:
  """A key padding mask bool[B, S] or a per-query mask bool[B, T, S] as bool[B, 1, T or 1, S]."""
  if mask.ndim not in (2, 3):
    raise ValueError(f"attention mask must be [B, S] or [B, T, S], got shape {mask.shape}")
  return mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]


def attention_reference(q_btnh: jax.Array, k_bsnh: jax.Array, v_bsnh: jax.Array,
                        mask: jax.Array) -> jax.Array:
  """softmax(q k^T / sqrt(H) + mask) v, as transformers' eager `BertSelfAttention` computes it.

  Args:
    q_btnh: queries [B, T, N, H].
    k_bsnh, v_bsnh: keys and values [B, S, N, H].
    mask: bool[B, S], False for padding keys; or bool[B, T, S], True where query t may attend
      key s (sequences packed in a row). Masked logits get float32's minimum (as in
      transformers), so a fully masked row averages all values instead of producing NaN.

  Returns:
    [B, T, N, H] in the dtype of `q_btnh`.
  """
  scale = q_btnh.shape[-1] ** -0.5
  logits_bnts = jnp.einsum("BTNH,BSNH->BNTS", q_btnh, k_bsnh,
                           preferred_element_type=jnp.float32) * scale
  logits_bnts = jnp.where(mask_b1ts(mask), logits_bnts, jnp.finfo(jnp.float32).min)
  probs_bnts = jax.nn.softmax(logits_bnts, axis=-1)
  out_btnh = jnp.einsum("BNTS,BSNH->BTNH", probs_bnts.astype(v_bsnh.dtype), v_bsnh,
                        preferred_element_type=jnp.float32)
  return out_btnh.astype(q_btnh.dtype)
