"""Encoder reward models: the sequence-classification head, and BERT/RoBERTa classifiers.

transformers' encoder classifiers all read the first token of a sequence ([CLS] / <s>) through
dense -> activation -> linear: BERT's pooler (tanh) + `classifier`, RoBERTa's
`RobertaClassificationHead` (tanh), DeBERTa's `ContextPooler` (`pooler_hidden_act`) + `classifier`.
`ClassificationHead` is that head for every packed segment of a row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from erpjax import sharding as sh
from erpjax.models import _layers

# transformers' ACT2FN names -> functions ("gelu" is the exact erf form there).
ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}


class ClassificationHead(nnx.Module):
  """dense -> activation -> out on the hidden state at each segment's score index."""

  def __init__(self, hidden_size: int, num_labels: int, activation: str, *,
               dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
    if activation not in ACTIVATIONS:
      raise ValueError(f"activation {activation!r} unsupported; known: {sorted(ACTIVATIONS)}")
    self.activation = ACTIVATIONS[activation]
    self.dense = _layers.Projection("BSD,DE->BSE", (hidden_size,), (hidden_size,),
                                    in_names=(sh.EMBED,), out_names=(sh.EMBED,), use_bias=True,
                                    dtype=dtype, rngs=rngs)
    self.out = _layers.Projection("BSD,DL->BSL", (hidden_size,), (num_labels,),
                                  in_names=(sh.EMBED,), out_names=(sh.LABELS,), use_bias=True,
                                  dtype=dtype, rngs=rngs)

  def __call__(self, x_btd: jax.Array, score_index_bs: jax.Array) -> jax.Array:
    """Hidden states [B,T,D], int32[B,S] row indices -> float32[B,S,L]."""
    x_bsd = jnp.take_along_axis(x_btd, score_index_bs[:, :, None], axis=1)
    return self.out(self.activation(self.dense(x_bsd))).astype(jnp.float32)

