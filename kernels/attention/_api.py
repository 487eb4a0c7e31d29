"""One entry point for every attention implementation, chosen by name."""

from typing import Literal

import jax
from erpjax_kernels.attention._reference import attention_reference, mask_b1ts
from erpjax_kernels.attention._xla import attention_xla

Implementation = Literal["xla", "reference", "jax_nn"]
IMPLEMENTATIONS: tuple[str, ...] = ("xla", "reference", "jax_nn")


def _jax_nn(q_btnh, k_bsnh, v_bsnh, mask):
  return jax.nn.dot_product_attention(q_btnh, k_bsnh, v_bsnh, mask=mask_b1ts(mask))


_BY_NAME = {"xla": attention_xla, "reference": attention_reference, "jax_nn": _jax_nn}


def dot_product_attention(q_btnh: jax.Array, k_bsnh: jax.Array, v_bsnh: jax.Array,
                          mask: jax.Array, *,
                          implementation: Implementation = "xla") -> jax.Array:
  """Bidirectional multi-head attention with a key padding (or per-query) mask.

  Args:
    q_btnh: queries [B, T, N, H].
    k_bsnh, v_bsnh: keys and values [B, S, N, H].
    mask: bool[B, S], False for padding keys; or bool[B, T, S], True where query t may attend
      key s (several sequences packed in a row).
    implementation: "xla" (tuned for XLA:CPU, the default), "reference" (textbook jnp), or
      "jax_nn" (`jax.nn.dot_product_attention`, which may pick a fused GPU kernel).

  Returns:
    [B, T, N, H] in the dtype of `q_btnh`.
  """
  if implementation not in _BY_NAME:
    raise ValueError(f"unknown attention implementation {implementation!r}; "
                     f"known: {IMPLEMENTATIONS}")
  return _BY_NAME[implementation](q_btnh, k_bsnh, v_bsnh, mask)
