"""Textbook softmax attention in jnp, in float32: the reference every implementation matches."""

import jax
import jax.numpy as jnp


def attention_reference(q_btnh: jax.Array, k_bskh: jax.Array, v_bskh: jax.Array,
                        visible_b1ts: jax.Array, *, scale: float, softcap: float | None,
                        logits_bias_bnts: jax.Array | None) -> jax.Array:
  """softmax(softcap(q k^T * scale) + bias, masked) v, as transformers' eager attention computes it.

  Args:
    q_btnh: queries [B, T, N, H].
    k_bskh, v_bskh: keys and values [B, S, K, H]; query head n reads key/value head n // (N / K).
    visible_b1ts: bool[B, 1, T, S], True where query t may attend key s. Masked logits get
      float32's minimum (as in transformers), so a fully masked row averages all values
      (uniform weights) instead of producing NaN.
    scale: multiplies q k^T.
    softcap: if set, logits -> softcap * tanh(logits / softcap) (Gemma 2), before the bias.
    logits_bias_bnts: float32[B, N, T, S] added to the logits (DeBERTa's relative terms).

  Returns:
    [B, T, N, H] in the dtype of `q_btnh`.
  """
  b, t, n, h = q_btnh.shape
  k = k_bskh.shape[2]
  q_btkgh = q_btnh.reshape(b, t, k, n // k, h)
  logits_bkgts = jnp.einsum("BTKGH,BSKH->BKGTS", q_btkgh, k_bskh,
                            preferred_element_type=jnp.float32) * scale
  if softcap is not None:
    logits_bkgts = softcap * jnp.tanh(logits_bkgts / softcap)
  if logits_bias_bnts is not None:
    logits_bkgts += logits_bias_bnts.reshape(logits_bkgts.shape).astype(jnp.float32)
  logits_bkgts = jnp.where(visible_b1ts[:, :, None], logits_bkgts, jnp.finfo(jnp.float32).min)
  probs_bkgts = jax.nn.softmax(logits_bkgts, axis=-1)
  out_btkgh = jnp.einsum("BKGTS,BSKH->BTKGH", probs_bkgts.astype(v_bskh.dtype), v_bskh,
                         preferred_element_type=jnp.float32)
  return out_btkgh.reshape(b, t, n, h).astype(q_btnh.dtype)
