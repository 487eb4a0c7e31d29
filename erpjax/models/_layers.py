"""Small NNX layers of the model families: einsum projections, RMSNorm, embeddings, row gathers.

Attention itself is `erpjax_kernels.attention.dot_product_attention`.

Parameters carry logical axis names from `erpjax.sharding` as `out_sharding` metadata, so
`nnx.get_partition_spec(state)` gives their specs; `eager_sharding=False` keeps construction free
of any mesh (the caller shards the state afterwards with its own rule table).

Matmuls ask for float32 accumulation (`preferred_element_type`) and cast back to the activation
dtype: that is what torch does for bfloat16 `Linear`s, and XLA on CPU needs it for bf16 dots.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from erpjax import sharding

# transformers' ACT2FN names -> functions ("gelu" is the exact erf form there, "swish" is SiLU).
ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def param(init: nnx.Initializer, rngs: nnx.Rngs, shape: Sequence[int],
          names: Sequence[str | None], dtype: jnp.dtype) -> nnx.Param:
  """A parameter of `shape` whose dims carry the logical axis `names`."""
  if len(shape) != len(names):
    raise ValueError(f"shape {tuple(shape)} and axis names {tuple(names)} differ in rank")
  return nnx.Param(init(rngs.params(), tuple(shape), dtype), out_sharding=tuple(names),
                   eager_sharding=False)


class Projection(nnx.Module):
  """A linear map as one einsum, e.g. `"BTD,DNH->BTNH"`, with an optional bias on the outputs.

  The kernel is [*in_shape, *out_shape] (the layout `_hf.linear(len(in_shape))` converts torch
  `Linear` weights to); the bias is [*out_shape].
  """

  def __init__(self, eqn: str, in_shape: Sequence[int], out_shape: Sequence[int], *,
               in_names: Sequence[str | None], out_names: Sequence[str | None], use_bias: bool,
               dtype: jnp.dtype, rngs: nnx.Rngs):
    self.eqn = eqn
    self.dtype = dtype
    self.kernel = param(nnx.initializers.normal(0.02), rngs, (*in_shape, *out_shape),
                        (*in_names, *out_names), dtype)
    self.bias = (param(nnx.initializers.zeros_init(), rngs, out_shape, out_names, dtype)
                 if use_bias else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jnp.einsum(self.eqn, x, self.kernel[...], preferred_element_type=jnp.float32)
    if self.bias is not None:
      y = y + self.bias[...].astype(jnp.float32)
    return y.astype(self.dtype)


def layer_norm(dim: int, *, eps: float, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  """transformers' LayerNorm over the last axis [D], with `dtype` parameters and computation."""
  # Two-pass variance (mean of squared deviations), as torch computes it: the one-pass form
  # E[x^2] - E[x]^2 loses digits on hidden states with large means.
  return nnx.LayerNorm(
      dim, epsilon=eps, use_fast_variance=False, dtype=dtype, param_dtype=dtype,
      scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (sharding.EMBED,),
                                       eager_sharding=False),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (sharding.EMBED,),
                                      eager_sharding=False),
      rngs=rngs)


class RMSNorm(nnx.Module):
  """x / rms(x) * (offset + scale) over the last axis, computed in float32.

  `offset=1` is Gemma's parameterization (weights stored as deviations from 1, initialized to 0).
  Llama rounds the normalized value to the input dtype before scaling; Gemma scales in float32.
  Both agree in float32; in bfloat16 this follows Gemma (one rounding instead of two).
  """

  def __init__(self, dim: int, *, name: str | None, eps: float, offset: float, dtype: jnp.dtype,
               rngs: nnx.Rngs):
    self.eps = eps
    self.offset = offset
    init = nnx.initializers.zeros_init() if offset else nnx.initializers.ones_init()
    self.scale = param(init, rngs, (dim,), (name,), dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * (self.offset + self.scale[...].astype(jnp.float32))).astype(x.dtype)


class Embedder(nnx.Module):
  """Token embeddings [V, D], optionally multiplied by `multiplier` (Gemma: sqrt(D))."""

  def __init__(self, vocab_size: int, dim: int, *, multiplier: float | None,
               dtype: jnp.dtype, rngs: nnx.Rngs):
    self.multiplier = multiplier
    self.embedding = param(nnx.initializers.normal(0.02), rngs, (vocab_size, dim),
                           (sharding.VOCAB, sharding.EMBED), dtype)

  def __call__(self, tokens_bt: jax.Array) -> jax.Array:
    """int[B, T] -> [B, T, D]."""
    x_btd = jnp.take(self.embedding[...], tokens_bt, axis=0)
    if self.multiplier is not None:
      # transformers casts the multiplier to the weight dtype before multiplying.
      x_btd = x_btd * jnp.asarray(self.multiplier, x_btd.dtype)
    return x_btd


def take_rows(x_btd: jax.Array, index_bs: jax.Array) -> jax.Array:
  """[B, T, ...] rows at int[B, S] indices -> [B, S, ...] (e.g. each packed sequence's score
  token)."""
  index = index_bs.reshape(index_bs.shape + (1,) * (x_btd.ndim - 2))
  return jnp.take_along_axis(x_btd, index, axis=1)


def split_last_layer(layers: nnx.Module) -> tuple[nnx.Module | None, nnx.Module]:
  """Stacked layers ([L, ...] parameters, as `nnx.vmap` builds them) -> the first L-1 (still
  stacked; None when L = 1) and the last one (unstacked).

  Models that score a few tokens per row run the last layer on those rows only.
  """
  graphdef, stacked = nnx.split(layers)
  last = nnx.merge(graphdef, jax.tree.map(lambda x: x[-1], stacked))
  if jax.tree.leaves(stacked)[0].shape[0] == 1:
    return None, last
  return nnx.merge(graphdef, jax.tree.map(lambda x: x[:-1], stacked)), last
