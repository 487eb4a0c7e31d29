"""One entry point for every attention implementation, chosen by name."""

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from erpjax_kernels.attention._jax_nn import attention_jax_nn
from erpjax_kernels.attention._mask import visible_b1ts
from erpjax_kernels.attention._pallas import attention_pallas
from erpjax_kernels.attention._reference import attention_reference
from erpjax_kernels.attention._splash import attention_splash
from erpjax_kernels.attention._xla import attention_xla

Implementation = Literal["xla", "reference", "jax_nn", "cudnn", "pallas", "splash"]
IMPLEMENTATIONS: tuple[str, ...] = ("xla", "reference", "jax_nn", "cudnn", "pallas", "splash")

# Implementations that take the [B, 1, T, S] visibility mask (built by broadcasting inside jit).
_DENSE = {
    "xla": attention_xla,
    "reference": attention_reference,
    "jax_nn": attention_jax_nn,
    "cudnn": functools.partial(attention_jax_nn, backend="cudnn"),
}
# Fused kernels: they read segment ids and positions, never a [T, S] array.
_FUSED = {"pallas": attention_pallas, "splash": attention_splash}


def check_implementation(implementation: str) -> None:
  """Raises ValueError naming the known implementations if `implementation` is not one."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; "
                     f"known: {IMPLEMENTATIONS}")


def dot_product_attention(q_btnh: jax.Array, k_bskh: jax.Array, v_bskh: jax.Array, *,
                          q_segment_ids_bt: jax.Array, kv_segment_ids_bs: jax.Array,
                          q_positions_bt: jax.Array | None = None,
                          kv_positions_bs: jax.Array | None = None,
                          causal: bool, scale: float | None = None,
                          softcap: float | None = None, window: int | jax.Array | None = None,
                          logits_bias_bnts: jax.Array | None = None,
                          implementation: Implementation = "xla") -> jax.Array:
  """Multi-head (or grouped-query) softmax attention over packed or padded rows.

  Query t attends key s iff they have the same segment id and it is not 0 (padding); and, if
  `causal`, kv position <= q position; and, if `window` is set, |q position - kv position| <
  window (with `causal`: the `window` most recent positions, itself included, as transformers'
  sliding windows). Positions restart in each packed sequence, so packed sequences see what they
  would see alone. Queries and keys have their own ids and positions, so the queries can be a
  few gathered rows (T = a row's score tokens) over all S tokens of the row.

  Args:
    q_btnh: queries [B, T, N, H].
    k_bskh, v_bskh: keys and values [B, S, K, H]; N % K == 0, query head n reads key/value head
      n // (N / K).
    q_segment_ids_bt, kv_segment_ids_bs: int[B, T] and int[B, S]; 0 = padding, 1.. = sequences.
    q_positions_bt, kv_positions_bs: int[B, T] and int[B, S], each token's position in its
      sequence; None = 0..T-1 / 0..S-1 (row indices). Only read with `causal` or `window`.
    causal: decoder (True) or encoder (False) attention.
    scale: multiplies q.k; None = H ** -0.5.
    softcap: if set, logits -> softcap * tanh(logits / softcap) (Gemma 2). Not "jax_nn"/"cudnn".
    window: sliding-window width in positions; a Python int, or (dense implementations) an int
      scalar array, e.g. a per-layer window carried through a scan.
    logits_bias_bnts: float[B, N, T, S] added to the logits after soft-capping (DeBERTa's
      relative-position terms). Dense implementations only: a fused kernel cannot take an
      O(T * S) input without losing its point.
    implementation:
      "xla": tuned for XLA:CPU (the default);
      "reference": textbook jnp in float32;
      "jax_nn": `jax.nn.dot_product_attention` on its XLA path;
      "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, cuDNN's fused kernel
        (NVIDIA GPUs, float16/bfloat16; JAX raises elsewhere);
      "pallas": a Pallas flash-attention kernel (Triton on GPU, interpreted on CPU; forward only,
        no [T, S] array at all; see `attention_pallas`);
      "splash": Pallas TPU's splash attention (compiled on TPUs, interpreted on CPU; forward
        only; causal/window only for self-attention whose positions count up by one within
        each sequence; see `attention_splash`).
      The dense ones build a [B, 1, T, S] bool mask by broadcasting the ids inside jit. All but
      "pallas" and "splash" are differentiable: training goes through them.

  Returns:
    [B, T, N, H] in the dtype of `q_btnh`. Query rows that see no key (padding) are finite
    garbage, never NaN (the dense implementations average all values; "pallas" gives zeros or
    an average over the key blocks it could not skip).

  Raises:
    ValueError: an unknown implementation, heads that do not group, or an option the chosen
      implementation does not support.
  """
  check_implementation(implementation)
  b, t, n, h = q_btnh.shape
  s, k = k_bskh.shape[1:3]
  if n % k:
    raise ValueError(f"{n} query heads do not group over {k} key/value heads")
  if q_segment_ids_bt.shape != (b, t) or kv_segment_ids_bs.shape != (b, s):
    raise ValueError(f"segment ids {q_segment_ids_bt.shape} / {kv_segment_ids_bs.shape} do not "
                     f"match queries [B, T] = {(b, t)} / keys [B, S] = {(b, s)}")
  if q_positions_bt is None:
    q_positions_bt = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  if kv_positions_bs is None:
    kv_positions_bs = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
  scale = h ** -0.5 if scale is None else scale
  if implementation in _FUSED:
    if logits_bias_bnts is not None:
      raise ValueError(f"the {implementation} attention kernel takes no logits bias; use 'xla' "
                       "or 'reference'")
    return _FUSED[implementation](
        q_btnh, k_bskh, v_bskh, q_segment_ids_bt=q_segment_ids_bt,
        kv_segment_ids_bs=kv_segment_ids_bs, q_positions_bt=q_positions_bt,
        kv_positions_bs=kv_positions_bs, causal=causal, scale=scale, softcap=softcap,
        window=window)
  visible = visible_b1ts(q_segment_ids_bt, kv_segment_ids_bs, q_positions_bt, kv_positions_bs,
                         causal=causal, window=window)
  return _DENSE[implementation](q_btnh, k_bskh, v_bskh, visible, scale=scale, softcap=softcap,
                                logits_bias_bnts=logits_bias_bnts)
