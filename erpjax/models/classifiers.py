"""Encoder reward models: sequence-classification heads, and their inputs.

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


def first_token_index(segment_ids_bt: jax.Array, num_segments: int) -> jax.Array:
  """int32[B,S]: row index of the first token of segments 1..S (0 where a segment is absent).

  This is the encoders' `score_index_bs`: their heads read [CLS], the first token.
  """
  t = jnp.arange(segment_ids_bt.shape[1], dtype=jnp.int32)
  segments_s = jnp.arange(1, num_segments + 1, dtype=segment_ids_bt.dtype)
  in_segment_bst = segment_ids_bt[:, None, :] == segments_s[None, :, None]
  first_bs = jnp.min(jnp.where(in_segment_bst, t, segment_ids_bt.shape[1]), axis=-1)
  return jnp.where(jnp.any(in_segment_bst, axis=-1), first_bs, 0).astype(jnp.int32)


def encode_pair(tokenizer, prompt: str, response: str,
                max_length: int) -> tuple[list[int], list[int]]:
  """Token ids and token types of (prompt, response) as the text pair encoder reward models read.

  OpenAssistant's reward models are called as `tokenizer(question, answer)`: [CLS] prompt [SEP]
  response [SEP] for BERT/DeBERTa, <s> prompt </s></s> response </s> for RoBERTa. Pairs longer
  than `max_length` are cut by transformers' default `longest_first` truncation (tokens come off
  the longer side first). Token types are all 0 when the tokenizer does not produce them
  (RoBERTa), as transformers then passes none.

  Args:
    tokenizer: a `transformers` tokenizer, e.g. `AutoTokenizer.from_pretrained(folder,
      local_files_only=True)`.
  """
  encoded = tokenizer(prompt, response, truncation="longest_first", max_length=max_length)
  ids = list(encoded["input_ids"])
  types = encoded.get("token_type_ids")
  return ids, list(types) if types is not None else [0] * len(ids)
