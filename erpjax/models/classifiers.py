"""Encoder reward models: the sequence-classification head, and BERT/RoBERTa classifiers.

transformers' encoder classifiers all read the first token of a sequence ([CLS] / <s>) through
dense -> activation -> linear: BERT's pooler (tanh) + `classifier`, RoBERTa's
`RobertaClassificationHead` (tanh), DeBERTa's `ContextPooler` (`pooler_hidden_act`) + `classifier`.
`ClassificationHead` is that head for every packed segment of a row.

`BertClassifier` is `erpjax.models.bert.BertModel` with that head: transformers'
`BertForSequenceClassification`, and `RobertaForSequenceClassification` /
`XLMRobertaForSequenceClassification` (the same encoder with position ids starting after the
padding index, and the head under other checkpoint names).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from erpjax import sharding as sh
from erpjax.models import _hf, _layers, bert
from erpjax.models._registry import register_reward_model

class ClassificationHead(nnx.Module):
  """dense -> activation -> out on the hidden state at each segment's score index."""

  def __init__(self, hidden_size: int, num_labels: int, activation: str, *,
               dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
    if activation not in _layers.ACTIVATIONS:
      raise ValueError(f"activation {activation!r} unsupported; known: "
                       f"{sorted(_layers.ACTIVATIONS)}")
    self.activation = _layers.ACTIVATIONS[activation]
    self.dense = _layers.Projection("BSD,DE->BSE", (hidden_size,), (hidden_size,),
                                    in_names=(sh.EMBED,), out_names=(sh.EMBED,), use_bias=True,
                                    dtype=dtype, rngs=rngs)
    self.out = _layers.Projection("BSD,DL->BSL", (hidden_size,), (num_labels,),
                                  in_names=(sh.EMBED,), out_names=(sh.LABELS,), use_bias=True,
                                  dtype=dtype, rngs=rngs)

  def __call__(self, x_bsd: jax.Array) -> jax.Array:
    """Hidden states [B,S,D] of the S score tokens of each row -> float32[B,S,L]."""
    return self.out(self.activation(self.dense(x_bsd))).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where a transformers classifier checkpoint keeps the encoder and the head's two Linears."""
  encoder_prefix: str
  dense: str
  out: str


_LAYOUTS = {
    "bert": _Layout("bert.", "bert.pooler.dense", "classifier"),
    "roberta": _Layout("roberta.", "classifier.dense", "classifier.out_proj"),
}

# transformers model_type -> checkpoint layout.
_MODEL_TYPES = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta"}


@dataclasses.dataclass(frozen=True)
class BertClassifierConfig:
  """A BERT-family encoder with a tanh classification head.

  Attributes:
    encoder: the encoder (RoBERTa: `position_offset` = pad_token_id + 1).
    num_labels: L, scores per sequence (1 for reward models).
    layout: "bert" or "roberta", the checkpoint's names for the encoder and head.
  """
  encoder: bert.BertConfig
  num_labels: int = 1
  layout: str = "bert"

  def __post_init__(self):
    if self.num_labels < 1:
      raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")
    if self.layout not in _LAYOUTS:
      raise ValueError(f"layout {self.layout!r} not in {sorted(_LAYOUTS)}")

  @classmethod
  def from_hf_config(cls, hf: Mapping[str, Any], **overrides: Any) -> BertClassifierConfig:
    """From a `BertConfig`/`RobertaConfig`/`XLMRobertaConfig` dict; `overrides` go to the encoder
    config (dtype, attention)."""
    model_type = hf.get("model_type", "bert")
    if model_type not in _MODEL_TYPES:
      raise ValueError(f"model_type {model_type!r} not in {sorted(_MODEL_TYPES)}")
    # RoBERTa's encoder is BERT's (same config fields) with shifted position ids.
    encoder = bert.BertConfig.from_hf_config({**hf, "model_type": "bert"}, **overrides)
    layout = _MODEL_TYPES[model_type]
    if layout == "roberta":
      encoder = dataclasses.replace(encoder, position_offset=hf.get("pad_token_id", 1) + 1)
    num_labels = len(hf["id2label"]) if "id2label" in hf else hf.get("num_labels", 2)
    return cls(encoder, num_labels, layout)


# Tiny models for tests.
TINY_BERT = BertClassifierConfig(bert.TINY)
TINY_ROBERTA = BertClassifierConfig(
    dataclasses.replace(bert.TINY, max_position_embeddings=66, type_vocab_size=1,
                        position_offset=2, layer_norm_eps=1e-5),
    layout="roberta")
# The shapes of bert-base-uncased and roberta-large with one score: for sizing and sharding plans.
BERT_BASE = BertClassifierConfig(bert.BertConfig(
    vocab_size=30522, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072))
ROBERTA_LARGE = BertClassifierConfig(
    bert.BertConfig(vocab_size=50265, hidden_size=1024, num_layers=24, num_heads=16,
                    intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1,
                    position_offset=2, layer_norm_eps=1e-5),
    layout="roberta")


class BertClassifier(nnx.Module):
  """transformers' `BertForSequenceClassification` / `RobertaForSequenceClassification` on the
  erpjax reward-model interface (`__call__` below; the one `erpjax.scoring` feeds every family)."""

  def __init__(self, cfg: BertClassifierConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.encoder = bert.BertModel(cfg.encoder, rngs=rngs)
    self.head = ClassificationHead(cfg.encoder.hidden_size, cfg.num_labels, "tanh", rngs=rngs)

  def __call__(self, tokens_bt: jax.Array, segment_ids_bt: jax.Array, positions_bt: jax.Array,
               score_index_bs: jax.Array, token_types_bt: jax.Array | None = None) -> jax.Array:
    """Scores float32[B,S,L] of the S segments packed in each row.

    Args:
      tokens_bt: int32[B,T] token ids.
      segment_ids_bt: int32[B,T]; 0 = padding, 1..S = the packed sequences.
      positions_bt: int32[B,T], restarting at 0 in each segment (RoBERTa's offset is added by
        the encoder).
      score_index_bs: int32[B,S], each segment's first ([CLS] / <s>) token.
      token_types_bt: int32[B,T] text-pair token types; zeros if None.
    """
    x_bsd = self.encoder(tokens_bt, segment_ids_bt, token_types_bt, positions_bt,
                         output_index_bs=score_index_bs)
    return self.head(x_bsd)


def hf_key_map(cfg: BertClassifierConfig) -> _hf.KeyMap:
  """Checkpoint keys of the transformers classifier <-> `BertClassifier` state paths.

  The encoder's rules are `bert.HF_KEY_MAP`'s, under the checkpoint's prefix and "encoder/".
  """
  layout = _LAYOUTS[cfg.layout]
  prefix = layout.encoder_prefix
  rules = [dataclasses.replace(rule, hf=prefix + rule.hf, nnx="encoder/" + rule.nnx)
           for rule in bert.HF_KEY_MAP.rules]
  for hf, path in ((layout.dense, "head/dense"), (layout.out, "head/out")):
    rules += [_hf.KeyRule(hf + ".weight", path + "/kernel", transform=_hf.linear()),
              _hf.KeyRule(hf + ".bias", path + "/bias")]
  # The encoder's ignored keys (old buffers; RoBERTa: an unused pooler). BERT's pooler is the
  # head's dense layer here: rules take precedence over the ignore list.
  ignore = tuple(re.escape(prefix) + pattern for pattern in bert.HF_KEY_MAP.ignore)
  return _hf.KeyMap(tuple(rules), ignore=ignore)


@register_reward_model("BertForSequenceClassification", "RobertaForSequenceClassification",
                       "XLMRobertaForSequenceClassification")
def load_bert_classifier(path: str | os.PathLike[str], *, dtype: jnp.dtype = jnp.float32,
                         attention: str = "xla") -> BertClassifier:
  """Loads a BERT/RoBERTa/XLM-R `*ForSequenceClassification` folder (config.json + safetensors).

  The encoder's and the head's parameters are float32 whatever `dtype`: `dtype=jnp.bfloat16`
  runs the encoder's matmuls in bfloat16 (float32 accumulation); the head computes in float32.
  `attention`: implementation of `erpjax_kernels.attention.dot_product_attention`.
  """
  cfg = BertClassifierConfig.from_hf_config(_hf.read_config(path), dtype=jnp.dtype(dtype).name,
                                            attention=attention)
  return _hf.load_pretrained(lambda: BertClassifier(cfg, rngs=nnx.Rngs(0)), path, hf_key_map(cfg))
