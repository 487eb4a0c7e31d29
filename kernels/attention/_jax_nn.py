"""`jax.nn.dot_product_attention`: XLA's own formulation, or cuDNN's fused kernel on NVIDIA GPUs."""

from typing import Literal

import jax


def attention_jax_nn(q_btnh: jax.Array, k_bskh: jax.Array, v_bskh: jax.Array,
                     visible_b1ts: jax.Array, *, scale: float, softcap: float | None,
                     logits_bias_bnts: jax.Array | None,
                     backend: Literal["cudnn"] | None = None) -> jax.Array:
  """Same contract as `attention_reference` (jax.nn also fills masked logits with a finite value).

  `backend` is `jax.nn.dot_product_attention`'s `implementation`: None is its XLA path; "cudnn"
  is cuDNN's fused flash attention (GPU only, float16/bfloat16; JAX raises on other platforms
  and shapes). cuDNN receives the mask as an additive bias, so it still reads a [B, 1, T, S]
  array; the flash kernel that needs no such array is "pallas".

  Raises:
    ValueError: `softcap` is set (jax.nn has no logit soft-capping).
  """
  if softcap is not None:
    raise ValueError("jax.nn.dot_product_attention has no logit soft-capping; use the 'xla', "
                     "'reference' or 'pallas' attention implementation")
  return jax.nn.dot_product_attention(q_btnh, k_bskh, v_bskh, bias=logits_bias_bnts,
                                      mask=visible_b1ts, scale=scale, implementation=backend)
