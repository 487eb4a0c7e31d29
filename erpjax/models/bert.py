"""BERT-family encoder (transformers' `BertModel` without the pooler) in Flax NNX.

Embeddings (word + absolute position + token type, LayerNorm), then L post-LN layers of
self-attention and a GELU feed-forward block; the output is the last hidden state [B, T, D], which
is what sentence-transformers pools. Parameters are float32; `dtype="bfloat16"` runs the matmuls
in bfloat16 with float32 accumulation and keeps residuals, LayerNorms and softmax in float32.

Layers are stacked ([L, ...] parameters) and run with `nnx.scan` rather than a Python loop: on a
2-core CPU the scanned 6-layer MiniLM forward ran as fast as the unrolled one (within run-to-run
noise: both spend ~70% of their time in the same GEMMs, which XLA cannot fuse across layers
anyway) and compiled 4x faster (0.4 s vs 1.7 s per shape), and the encoder compiles one program
per length bucket.
"""

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
from erpjax_kernels import attention as attention_kernels
from flax import nnx

from erpjax import sharding as sh
from erpjax.dtypes import Dtype, check_dtype
from erpjax.models import _hf, _layers



@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Shape and numerics of a BERT encoder.

  Attributes:
    vocab_size: V. hidden_size: D. num_layers: L. num_heads: N (head_dim H = D / N).
    intermediate_size: F, the feed-forward width.
    max_position_embeddings: P, the longest input.
    type_vocab_size: number of token types (segment A/B).
    position_offset: row of the position table for position 0: 0 for BERT, pad_token_id + 1 for
      RoBERTa (its position ids start after the padding index).
    layer_norm_eps: LayerNorm epsilon (BERT: 1e-12).
    dtype: matmul input dtype, "float32" or "bfloat16" (parameters stay float32).
    attention: implementation of `erpjax_kernels.attention.dot_product_attention` ("xla",
      "reference", "jax_nn", "cudnn", "pallas"; training needs a differentiable one).
  """
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  position_offset: int = 0
  layer_norm_eps: float = 1e-12
  dtype: Dtype = "float32"
  attention: str = "xla"

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size"):
      if getattr(self, name) <= 0:
        raise ValueError(f"BertConfig.{name} must be positive, got {getattr(self, name)}")
    if not 0 <= self.position_offset < self.max_position_embeddings:
      raise ValueError(f"position_offset {self.position_offset} outside the position table "
                       f"[0, {self.max_position_embeddings})")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads "
                       f"{self.num_heads}")
    if not self.layer_norm_eps > 0:
      raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps}")
    check_dtype(self.dtype, "BertConfig.dtype")
    attention_kernels.check_implementation(self.attention)

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @classmethod
  def from_hf_config(cls, hf: dict[str, Any], **overrides: Any) -> "BertConfig":
    """From a transformers `BertConfig` dict (config.json); `overrides` set dtype/attention.

    Raises:
      ValueError: for configs this module would compute differently (another model type,
        activation or position embedding scheme).
    """
    if hf.get("model_type", "bert") != "bert":
      raise ValueError(f"model_type {hf.get('model_type')!r} is not 'bert'")
    if hf.get("hidden_act", "gelu") != "gelu":
      raise ValueError(f"hidden_act {hf['hidden_act']!r} unsupported; BERT uses exact 'gelu'")
    if hf.get("position_embedding_type", "absolute") != "absolute":
      raise ValueError(f"position_embedding_type {hf['position_embedding_type']!r} unsupported")
    return cls(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        **overrides)


# A few-KB model for tests.
TINY = BertConfig(vocab_size=128, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                  max_position_embeddings=64)
# sentence-transformers/all-MiniLM-L6-v2 (nreimers/MiniLM-L6-H384-uncased).
MINILM_L6 = BertConfig(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12,
                       intermediate_size=1536)


def _matmul(eqn: str, x: jax.Array, kernel: nnx.Param, dtype: jnp.dtype) -> jax.Array:
  """einsum in `dtype` with float32 accumulation and a float32 result."""
  return jnp.einsum(eqn, x.astype(dtype), kernel[...].astype(dtype),
                    preferred_element_type=jnp.float32)


class SelfAttention(nnx.Module):
  """Multi-head self-attention: query, key and value projections, attention, output projection."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    d, n, h = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    normal, zeros = nnx.initializers.normal(0.02), nnx.initializers.zeros_init()
    self.dtype = cfg.compute_dtype
    self.implementation = cfg.attention
    # Three [D, N, H] projections rather than one fused [3, D, N, H]: on XLA:CPU the fused GEMM
    # came out as [3*N*H, B*T] plus transposes, and the encoder ran ~4% slower (MiniLM-L6,
    # [64, 256], 2 cores; benchmarks/embed_throughput.py).
    for name in ("query", "key", "value"):
      setattr(self, f"{name}_kernel", _layers.param(
          normal, rngs, (d, n, h), (sh.EMBED, sh.HEADS, sh.HEAD_DIM), jnp.float32))
      setattr(self, f"{name}_bias", _layers.param(
          zeros, rngs, (n, h), (sh.HEADS, sh.HEAD_DIM), jnp.float32))
    self.out_kernel = _layers.param(normal, rngs, (n, h, d), (sh.HEADS, sh.HEAD_DIM, sh.EMBED),
                                    jnp.float32)
    self.out_bias = _layers.param(zeros, rngs, (d,), (sh.EMBED,), jnp.float32)

  def __call__(self, x_bqd: jax.Array, x_btd: jax.Array, q_segment_ids_bq: jax.Array,
               kv_segment_ids_bt: jax.Array) -> jax.Array:
    """Attention of queries from float32[B, Q, D] (Q = T: every token) over the keys and values
    of float32[B, T, D] -> float32[B, Q, D], before the residual.

    A query attends the keys of its own segment (int[B, Q] and int[B, T] ids, 0 = padding).
    """
    def project(x, kernel, bias):
      return (_matmul("BTD,DNH->BTNH", x, kernel, self.dtype) + bias[...]).astype(self.dtype)

    q_bqnh = project(x_bqd, self.query_kernel, self.query_bias)
    k_btnh = project(x_btd, self.key_kernel, self.key_bias)
    v_btnh = project(x_btd, self.value_kernel, self.value_bias)
    out_bqnh = attention_kernels.dot_product_attention(
        q_bqnh, k_btnh, v_btnh, q_segment_ids_bt=q_segment_ids_bq,
        kv_segment_ids_bs=kv_segment_ids_bt, causal=False, implementation=self.implementation)
    return _matmul("BTNH,NHD->BTD", out_bqnh, self.out_kernel, self.dtype) + self.out_bias[...]


class FeedForward(nnx.Module):
  """D -> F -> D with exact (erf) GELU, BERT's `intermediate` and `output.dense`."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    d, f = cfg.hidden_size, cfg.intermediate_size
    normal, zeros = nnx.initializers.normal(0.02), nnx.initializers.zeros_init()
    self.dtype = cfg.compute_dtype
    self.in_kernel = _layers.param(normal, rngs, (d, f), (sh.EMBED, sh.MLP), jnp.float32)
    self.in_bias = _layers.param(zeros, rngs, (f,), (sh.MLP,), jnp.float32)
    self.out_kernel = _layers.param(normal, rngs, (f, d), (sh.MLP, sh.EMBED), jnp.float32)
    self.out_bias = _layers.param(zeros, rngs, (d,), (sh.EMBED,), jnp.float32)

  def __call__(self, x_btd: jax.Array) -> jax.Array:
    """float32[B, T, D] -> float32[B, T, D] (before the residual)."""
    h_btf = _matmul("BTD,DF->BTF", x_btd, self.in_kernel, self.dtype) + self.in_bias[...]
    h_btf = jax.nn.gelu(h_btf, approximate=False)
    return _matmul("BTF,FD->BTD", h_btf, self.out_kernel, self.dtype) + self.out_bias[...]


class Layer(nnx.Module):
  """Post-LN transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    norm = dict(eps=cfg.layer_norm_eps, dtype=jnp.float32, rngs=rngs)
    self.attention = SelfAttention(cfg, rngs=rngs)
    self.attention_norm = _layers.layer_norm(cfg.hidden_size, **norm)
    self.ffn = FeedForward(cfg, rngs=rngs)
    self.ffn_norm = _layers.layer_norm(cfg.hidden_size, **norm)

  def __call__(self, x_btd: jax.Array, segment_ids_bt: jax.Array,
               query_index_bs: jax.Array | None = None) -> jax.Array:
    """float32[B, T, D] -> float32[B, T, D], or with int[B, S] `query_index_bs` only those
    rows' outputs, float32[B, S, D] (the attention still reads every token).

    `segment_ids_bt`: int[B, T], 0 = padding; tokens attend within their segment.
    """
    x_bqd, q_segment_ids_bq = x_btd, segment_ids_bt
    if query_index_bs is not None:
      x_bqd = _layers.take_rows(x_btd, query_index_bs)
      q_segment_ids_bq = _layers.take_rows(segment_ids_bt, query_index_bs)
    x_bqd = self.attention_norm(
        x_bqd + self.attention(x_bqd, x_btd, q_segment_ids_bq, segment_ids_bt))
    return self.ffn_norm(x_bqd + self.ffn(x_bqd))


class Embeddings(nnx.Module):
  """Word + absolute position + token type embeddings, then LayerNorm."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    normal = nnx.initializers.normal(0.02)
    d = cfg.hidden_size
    self.position_offset = cfg.position_offset
    self.word = _layers.param(normal, rngs, (cfg.vocab_size, d), (sh.VOCAB, sh.EMBED),
                              jnp.float32)
    self.position = _layers.param(normal, rngs, (cfg.max_position_embeddings, d),
                                  (None, sh.EMBED), jnp.float32)
    self.token_type = _layers.param(normal, rngs, (cfg.type_vocab_size, d), (None, sh.EMBED),
                                    jnp.float32)
    self.norm = _layers.layer_norm(d, eps=cfg.layer_norm_eps, dtype=jnp.float32, rngs=rngs)

  def __call__(self, tokens_bt: jax.Array, token_types_bt: jax.Array,
               positions_bt: jax.Array | None = None) -> jax.Array:
    """int[B, T] tokens, token types and positions (None: 0..T-1) -> float32[B, T, D]."""
    if positions_bt is None:
      start = self.position_offset
      position_btd = self.position[...][None, start:start + tokens_bt.shape[1]]
    else:
      position_btd = jnp.take(self.position[...], positions_bt + self.position_offset, axis=0)
    x_btd = (jnp.take(self.word[...], tokens_bt, axis=0)
             + position_btd
             + jnp.take(self.token_type[...], token_types_bt, axis=0))
    return self.norm(x_btd)


class BertModel(nnx.Module):
  """The encoder: token ids -> last hidden state."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.embeddings = Embeddings(cfg, rngs=rngs)

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: sh.LAYERS})
    def make_layers(rngs: nnx.Rngs) -> Layer:
      return Layer(cfg, rngs=rngs)

    self.layers = make_layers(rngs)

  def __call__(self, tokens_bt: jax.Array, segment_ids_bt: jax.Array,
               token_types_bt: jax.Array | None = None,
               positions_bt: jax.Array | None = None,
               output_index_bs: jax.Array | None = None) -> jax.Array:
    """Encodes a right- or left-padded batch, or rows of packed sequences.

    Args:
      tokens_bt: int[B, T] token ids, T <= max_position_embeddings - position_offset.
      segment_ids_bt: int[B, T], 0 for padding and 1.. for the sequences packed in a row
        (tokens attend within their sequence); a padded batch's int or bool `attention_mask`
        (1/True = real token) is the one-sequence case.
      token_types_bt: int[B, T] token types (text A/B); zeros when None.
      positions_bt: int[B, T] position of each token in its sequence; 0..T-1 when None.
      output_index_bs: int[B, S], the only rows of the output to compute (e.g. the [CLS] token
        of each packed sequence); None = all.

    Returns:
      float32[B, T, D] last hidden state (padding positions hold finite garbage), or its rows at
      `output_index_bs`, float32[B, S, D].
    """
    limit = self.config.max_position_embeddings - self.config.position_offset
    if tokens_bt.shape[1] > limit:
      raise ValueError(f"sequence length {tokens_bt.shape[1]} exceeds the {limit} positions of "
                       "the position table")
    if token_types_bt is None:
      token_types_bt = jnp.zeros_like(tokens_bt)
    if segment_ids_bt.ndim != 2:
      raise ValueError(f"segment ids must be [B, T], got shape {segment_ids_bt.shape}")
    segment_ids_bt = segment_ids_bt.astype(jnp.int32)
    x_btd = self.embeddings(tokens_bt, token_types_bt, positions_bt)

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry,
              transform_metadata={nnx.PARTITION_NAME: sh.LAYERS})
    def run_layers(x_btd: jax.Array, layer: Layer) -> jax.Array:
      return layer(x_btd, segment_ids_bt)

    if output_index_bs is None:
      return run_layers(x_btd, self.layers)
    # The last layer only computes the requested rows: it still needs every token's keys and
    # values, but its queries, output projection and feed-forward block run on S rows instead
    # of T (5/6 of a layer: 14% of MiniLM-L6's matmul work when scoring [CLS] tokens).
    first, last = _layers.split_last_layer(self.layers)
    if first is not None:
      x_btd = run_layers(x_btd, first)
    return last(x_btd, segment_ids_bt, output_index_bs)


# ------------------------------------------------------------------------------------------------
# Hugging Face checkpoints.


def _hf_key_map() -> _hf.KeyMap:
  layer = "encoder.layer.{layer}."
  idx = ("{layer}",)
  rules = [
      _hf.KeyRule("embeddings.word_embeddings.weight", "embeddings/word"),
      _hf.KeyRule("embeddings.position_embeddings.weight", "embeddings/position"),
      _hf.KeyRule("embeddings.token_type_embeddings.weight", "embeddings/token_type"),
      _hf.KeyRule("embeddings.LayerNorm.weight", "embeddings/norm/scale"),
      _hf.KeyRule("embeddings.LayerNorm.bias", "embeddings/norm/bias"),
  ]
  for name in ("query", "key", "value"):
    rules += [
        _hf.KeyRule(f"{layer}attention.self.{name}.weight", f"layers/attention/{name}_kernel",
                    idx, _hf.linear()),
        _hf.KeyRule(f"{layer}attention.self.{name}.bias", f"layers/attention/{name}_bias", idx,
                    _hf.reshape()),
    ]
  for hf, nnx_path, transform in [
      ("attention.output.dense.weight", "attention/out_kernel", _hf.linear(in_ndim=2)),
      ("attention.output.dense.bias", "attention/out_bias", _hf.IDENTITY),
      ("attention.output.LayerNorm.weight", "attention_norm/scale", _hf.IDENTITY),
      ("attention.output.LayerNorm.bias", "attention_norm/bias", _hf.IDENTITY),
      ("intermediate.dense.weight", "ffn/in_kernel", _hf.linear()),
      ("intermediate.dense.bias", "ffn/in_bias", _hf.IDENTITY),
      ("output.dense.weight", "ffn/out_kernel", _hf.linear()),
      ("output.dense.bias", "ffn/out_bias", _hf.IDENTITY),
      ("output.LayerNorm.weight", "ffn_norm/scale", _hf.IDENTITY),
      ("output.LayerNorm.bias", "ffn_norm/bias", _hf.IDENTITY),
  ]:
    rules.append(_hf.KeyRule(layer + hf, "layers/" + nnx_path, idx, transform))
  return _hf.KeyMap(
      tuple(rules),
      # position_ids: a buffer old transformers saved (all-MiniLM-L6-v2 has it); the pooler:
      # BertModel's [CLS] head, unused by sentence embeddings and not implemented here.
      ignore=(r"embeddings\.position_ids", r"pooler\.dense\.(weight|bias)"),
      # Checkpoints of BertFor* heads nest the encoder under "bert."; their heads must be added
      # to `ignore` by the caller (see `dataclasses.replace`).
      prefixes=("bert.",))


HF_KEY_MAP = _hf_key_map()


def load_bert(path: str | os.PathLike[str], *, key_map: _hf.KeyMap = HF_KEY_MAP,
              **overrides: Any) -> BertModel:
  """Loads a transformers BERT checkpoint folder (config.json + safetensors) without torch.

  `overrides` go to `BertConfig.from_hf_config` (e.g. dtype="bfloat16").
  """
  cfg = BertConfig.from_hf_config(_hf.read_config(path), **overrides)
  return _hf.load_pretrained(lambda: BertModel(cfg, rngs=nnx.Rngs(0)), path, key_map)


def save_bert(model: BertModel, folder: str | os.PathLike[str], *,
              max_shard_bytes: int | None = None) -> None:
  """Writes `model` as a transformers `BertModel` folder (config.json + safetensors)."""
  c = model.config
  config = {
      "architectures": ["BertModel"], "model_type": "bert", "vocab_size": c.vocab_size,
      "hidden_size": c.hidden_size, "num_hidden_layers": c.num_layers,
      "num_attention_heads": c.num_heads, "intermediate_size": c.intermediate_size,
      "hidden_act": "gelu", "max_position_embeddings": c.max_position_embeddings,
      "type_vocab_size": c.type_vocab_size, "layer_norm_eps": c.layer_norm_eps,
      "position_embedding_type": "absolute", "pad_token_id": 0,
      "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
  }
  _hf.save_pretrained(model, HF_KEY_MAP, folder, config=config, max_shard_bytes=max_shard_bytes)
