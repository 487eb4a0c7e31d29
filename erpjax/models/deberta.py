"""DeBERTa-v2/v3 sequence classifiers (reward models) in Flax NNX.

Computes what `transformers`' `DebertaV2ForSequenceClassification` computes (He et al., "DeBERTa:
Decoding-enhanced BERT with Disentangled Attention", arXiv 2006.03654; v3: arXiv 2111.09543), e.g.
OpenAssistant/reward-model-deberta-v3-large-v2:

  * embeddings: word (+ absolute position if `position_biased_input`) (+ token type) -> LayerNorm;
  * post-LN encoder layers whose attention adds, to the content score q.k, the disentangled terms
    content->position (c2p: q . Kr[delta]) and position->content (p2c: k . Qr[-delta]), where
    delta is the (log-bucketed) relative position and Kr, Qr project one shared table of relative
    embeddings; every term is divided by sqrt(head_dim * (1 + #terms));
  * ContextPooler (dense + activation on the first token) -> classifier Linear.

Relative positions come from the per-segment `positions_bt` of the reward-model interface, so
packed sequences see exactly the distances they would see alone. The c2p/p2c terms are a
[B, N, T, T] logits bias by nature; they go to `erpjax_kernels.attention.dot_product_attention`
as `logits_bias_bnts`, so DeBERTa runs on the dense implementations ("xla", "reference",
"jax_nn", "cudnn"), not on the flash kernel, which takes no O(T^2) input.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from erpjax_kernels import attention as attention_kernels
from flax import nnx

from erpjax import sharding as sh
from erpjax.models import _hf, _layers
from erpjax.models._registry import register_reward_model
from erpjax.models._layers import ACTIVATIONS
from erpjax.models.classifiers import ClassificationHead

_POS_ATT_TYPES = ("c2p", "p2c")


@dataclasses.dataclass(frozen=True)
class DebertaV2Config:
  """Architecture of a DeBERTa-v2/v3 sequence classifier (names follow `DebertaV2Config`).

  Attributes:
    relative_attention: add the disentangled c2p/p2c terms of `pos_att_type`.
    max_relative_positions: largest relative distance with its own embedding (before bucketing).
    position_buckets: if > 0, distances are log-bucketed into this many buckets per side (v3: 256).
    position_biased_input: add absolute position embeddings to the input (v2 style; v3 has none).
    share_att_key: the relative embeddings are projected by the content query/key projections
      (v3); otherwise by separate `pos_key_proj`/`pos_query_proj`.
    rel_layer_norm: LayerNorm the relative embedding table (`norm_rel_ebd="layer_norm"`).
    embedding_size: width of the token embeddings; projected to `hidden_size` when different.
  """
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  head_dim: int
  intermediate_size: int
  num_labels: int = 1
  hidden_act: str = "gelu"
  pooler_hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-7
  max_position_embeddings: int = 512
  type_vocab_size: int = 0
  relative_attention: bool = True
  max_relative_positions: int = 512
  position_buckets: int = 256
  position_biased_input: bool = False
  pos_att_type: tuple[str, ...] = ("p2c", "c2p")
  share_att_key: bool = True
  rel_layer_norm: bool = True
  embedding_size: int | None = None

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "head_dim",
                 "intermediate_size", "num_labels", "max_position_embeddings"):
      if getattr(self, name) < 1:
        raise ValueError(f"DebertaV2Config.{name} must be >= 1, got {getattr(self, name)}")
    if self.type_vocab_size < 0:
      raise ValueError(f"type_vocab_size must be >= 0, got {self.type_vocab_size}")
    for name in ("hidden_act", "pooler_hidden_act"):
      if getattr(self, name) not in ACTIVATIONS:
        raise ValueError(f"{name}={getattr(self, name)!r} unsupported; "
                         f"known: {sorted(ACTIVATIONS)}")
    unknown = set(self.pos_att_type) - set(_POS_ATT_TYPES)
    if unknown:
      raise ValueError(f"pos_att_type {sorted(unknown)} unsupported; known: {list(_POS_ATT_TYPES)}")
    if self.relative_attention and self.max_relative_positions < 1:
      raise ValueError("relative attention needs max_relative_positions >= 1")
    if not self.relative_attention and not self.position_biased_input:
      raise ValueError("without relative attention or absolute positions the model is order-blind")

  @property
  def embed_dim(self) -> int:
    return self.embedding_size or self.hidden_size

  @property
  def att_span(self) -> int:
    """Relative embeddings per side: distances are clipped to [-att_span, att_span - 1]."""
    return self.position_buckets if self.position_buckets > 0 else self.max_relative_positions

  @property
  def score_scale(self) -> float:
    """Every attention term is divided by this (transformers' `scaled_size_sqrt`)."""
    return math.sqrt(self.head_dim * (1 + len(set(self.pos_att_type))))

  @classmethod
  def from_hf_config(cls, hf: Mapping[str, Any]) -> DebertaV2Config:
    """From a `config.json` dict, with `DebertaV2Config`'s defaults for missing keys.

    Raises:
      ValueError: options erpjax does not implement (the convolution of DeBERTa-v2-xlarge,
        a pooler wider than the encoder, unknown relative-embedding norms).
    """
    if hf.get("conv_kernel_size", 0) > 0:
      raise ValueError("DeBERTa's convolution layer (conv_kernel_size > 0) is not supported")
    hidden = hf.get("hidden_size", 1536)
    if hf.get("pooler_hidden_size", hidden) != hidden:
      raise ValueError(f"pooler_hidden_size {hf['pooler_hidden_size']} != hidden_size {hidden} "
                       "(transformers' ContextPooler needs them equal)")
    norms = {x.strip() for x in str(hf.get("norm_rel_ebd", "none")).lower().split("|")}
    if norms - {"none", "layer_norm"}:
      raise ValueError(f"norm_rel_ebd={hf['norm_rel_ebd']!r} unsupported")
    pos_att_type = hf.get("pos_att_type") or ()
    if isinstance(pos_att_type, str):
      pos_att_type = [x.strip() for x in pos_att_type.lower().split("|")]
    heads = hf.get("num_attention_heads", 24)
    max_positions = hf.get("max_position_embeddings", 512)
    max_relative = hf.get("max_relative_positions", -1)
    embedding_size = hf.get("embedding_size", hidden)
    return cls(
        vocab_size=hf.get("vocab_size", 128100),
        hidden_size=hidden,
        num_layers=hf.get("num_hidden_layers", 24),
        num_heads=heads,
        head_dim=hf.get("attention_head_size", hidden // heads),
        intermediate_size=hf.get("intermediate_size", 6144),
        num_labels=len(hf["id2label"]) if "id2label" in hf else hf.get("num_labels", 2),
        hidden_act=hf.get("hidden_act", "gelu"),
        pooler_hidden_act=hf.get("pooler_hidden_act", "gelu"),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-7),
        max_position_embeddings=max_positions,
        type_vocab_size=hf.get("type_vocab_size", 0),
        relative_attention=hf.get("relative_attention", False),
        max_relative_positions=max_relative if max_relative >= 1 else max_positions,
        position_buckets=hf.get("position_buckets", -1),
        position_biased_input=hf.get("position_biased_input", True),
        pos_att_type=tuple(pos_att_type),
        share_att_key=hf.get("share_att_key", False),
        rel_layer_norm="layer_norm" in norms,
        embedding_size=None if embedding_size == hidden else embedding_size,
    )


# microsoft/deberta-v3-large, as in OpenAssistant/reward-model-deberta-v3-large-v2 (~435M params).
DEBERTA_V3_LARGE = DebertaV2Config(
    vocab_size=128100, hidden_size=1024, num_layers=24, num_heads=16, head_dim=64,
    intermediate_size=4096)
# Same options as v3, tiny sizes (distances beyond 4 are log-bucketed, beyond ~16 clipped): tests.
TINY = DebertaV2Config(
    vocab_size=128, hidden_size=64, num_layers=2, num_heads=4, head_dim=16, intermediate_size=128,
    max_position_embeddings=32, max_relative_positions=16, position_buckets=8)


def _table(num: int, dim: int, dtype, rngs: nnx.Rngs) -> nnx.Param:
  """An embedding table [num, D] indexed by position, token type or relative distance."""
  return _layers.param(nnx.initializers.normal(0.02), rngs, (num, dim), (None, sh.EMBED), dtype)


def _heads_proj(cfg: DebertaV2Config, dtype, rngs: nnx.Rngs) -> _layers.Projection:
  """[..., D] -> [..., N, H] with bias (query/key/value and their relative-position twins)."""
  return _layers.Projection("...D,DNH->...NH", (cfg.hidden_size,), (cfg.num_heads, cfg.head_dim),
                            in_names=(sh.EMBED,), out_names=(sh.HEADS, sh.HEAD_DIM),
                            use_bias=True, dtype=dtype, rngs=rngs)


def _dense(d_in: int, d_out: int, names: tuple[str | None, str | None], dtype,
           rngs: nnx.Rngs, use_bias: bool = True) -> _layers.Projection:
  return _layers.Projection("...I,IO->...O", (d_in,), (d_out,), in_names=names[:1],
                            out_names=names[1:], use_bias=use_bias, dtype=dtype, rngs=rngs)


def log_bucket_position(relative: jax.Array, buckets: int, max_position: int) -> jax.Array:
  """transformers' `make_log_bucket_position`: distances beyond buckets/2 on a log scale.

  With mid = buckets/2, |delta| <= mid is kept; larger distances map to mid + ceil(log(|delta|/mid)
  / log((max_position-1)/mid) * (mid-1)), with the sign of delta (so the map is odd).
  """
  mid = buckets // 2
  sign = jnp.sign(relative)
  abs_pos = jnp.where((relative < mid) & (relative > -mid), mid - 1, jnp.abs(relative))
  log_pos = jnp.ceil(
      jnp.log(abs_pos.astype(jnp.float32) / mid)
      / jnp.log(jnp.float32((max_position - 1) / mid)) * (mid - 1)) + mid
  return jnp.where(abs_pos <= mid, relative, (log_pos * sign).astype(relative.dtype))


def relative_positions(cfg: DebertaV2Config, positions_bt: jax.Array) -> jax.Array:
  """int32[B,T,T] (bucketed) distance positions[q] - positions[k] between query and key."""
  relative_btt = positions_bt[:, :, None] - positions_bt[:, None, :]
  if cfg.position_buckets > 0:
    relative_btt = log_bucket_position(relative_btt, cfg.position_buckets,
                                       cfg.max_relative_positions)
  return relative_btt


class DisentangledSelfAttention(nnx.Module):
  """Multi-head attention with DeBERTa's c2p/p2c relative terms, then dense + residual + LN."""

  def __init__(self, cfg: DebertaV2Config, *, dtype=jnp.float32, attention: str, rngs: nnx.Rngs):
    self.cfg = cfg
    self.implementation = attention
    self.query_proj = _heads_proj(cfg, dtype, rngs)
    self.key_proj = _heads_proj(cfg, dtype, rngs)
    self.value_proj = _heads_proj(cfg, dtype, rngs)
    separate = cfg.relative_attention and not cfg.share_att_key
    types = cfg.pos_att_type
    self.pos_key_proj = _heads_proj(cfg, dtype, rngs) if separate and "c2p" in types else None
    self.pos_query_proj = _heads_proj(cfg, dtype, rngs) if separate and "p2c" in types else None
    n, h, d = cfg.num_heads, cfg.head_dim, cfg.hidden_size
    self.out = _layers.Projection("BTNH,NHD->BTD", (n, h), (d,), in_names=(sh.HEADS, sh.HEAD_DIM),
                                  out_names=(sh.EMBED,), use_bias=True, dtype=dtype, rngs=rngs)
    self.out_norm = _layers.layer_norm(d, eps=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)

  def __call__(self, x_btd: jax.Array, segment_ids_bt: jax.Array,
               relative_btt: jax.Array | None, rel_embed_pd: jax.Array | None) -> jax.Array:
    """x [B,T,D], segment ids int[B,T] (0 = padding), relative int[B,T,T],
    rel_embed [2*att_span,D] -> [B,T,D]."""
    cfg = self.cfg
    q_btnh = self.query_proj(x_btd)
    k_bsnh = self.key_proj(x_btd)
    v_bsnh = self.value_proj(x_btd)
    scale = cfg.score_scale
    # Like transformers, every term is scaled separately (q.k/s + c2p/s + p2c/s), in float32.
    f32 = jnp.float32
    relative_terms_bnts = []
    if cfg.relative_attention:
      span = cfg.att_span
      if "c2p" in cfg.pos_att_type:
        pos_key = self.key_proj if cfg.share_att_key else self.pos_key_proj
        pos_key_pnh = pos_key(rel_embed_pd)
        c2p_bntp = jnp.einsum("BTNH,PNH->BNTP", q_btnh, pos_key_pnh, preferred_element_type=f32)
        index_bts = jnp.clip(relative_btt + span, 0, 2 * span - 1)
        relative_terms_bnts.append(
            jnp.take_along_axis(c2p_bntp, index_bts[:, None], axis=-1) / scale)
      if "p2c" in cfg.pos_att_type:
        pos_query = self.query_proj if cfg.share_att_key else self.pos_query_proj
        pos_query_pnh = pos_query(rel_embed_pd)
        p2c_bnsp = jnp.einsum("BSNH,PNH->BNSP", k_bsnh, pos_query_pnh,
                              preferred_element_type=f32)
        # As in transformers: row s of the key gathers Qr[-delta(s, t)] for each query t, then
        # the result is transposed to [query, key].
        index_bst = jnp.clip(span - relative_btt, 0, 2 * span - 1)
        p2c_bnst = jnp.take_along_axis(p2c_bnsp, index_bst[:, None], axis=-1)
        relative_terms_bnts.append(jnp.swapaxes(p2c_bnst, -1, -2) / scale)
    context_btnh = attention_kernels.dot_product_attention(
        q_btnh, k_bsnh, v_bsnh, q_segment_ids_bt=segment_ids_bt, kv_segment_ids_bs=segment_ids_bt,
        causal=False, scale=1 / scale,
        logits_bias_bnts=sum(relative_terms_bnts) if relative_terms_bnts else None,
        implementation=self.implementation)
    return self.out_norm(self.out(context_btnh) + x_btd)


class DebertaV2Layer(nnx.Module):
  """Attention block, then the post-LN feed-forward block."""

  def __init__(self, cfg: DebertaV2Config, *, dtype=jnp.float32, attention: str, rngs: nnx.Rngs):
    self.attention = DisentangledSelfAttention(cfg, dtype=dtype, attention=attention, rngs=rngs)
    d, f = cfg.hidden_size, cfg.intermediate_size
    self.intermediate = _dense(d, f, (sh.EMBED, sh.MLP), dtype, rngs)
    self.output = _dense(f, d, (sh.MLP, sh.EMBED), dtype, rngs)
    self.output_norm = _layers.layer_norm(d, eps=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
    self.activation = ACTIVATIONS[cfg.hidden_act]

  def __call__(self, x_btd, segment_ids_bt, relative_btt, rel_embed_pd) -> jax.Array:
    x_btd = self.attention(x_btd, segment_ids_bt, relative_btt, rel_embed_pd)
    return self.output_norm(self.output(self.activation(self.intermediate(x_btd))) + x_btd)


class DebertaV2Embeddings(nnx.Module):
  """Token (+ absolute position) (+ token type) embeddings, projected to D, then LayerNorm."""

  def __init__(self, cfg: DebertaV2Config, *, dtype=jnp.float32, rngs: nnx.Rngs):
    e = cfg.embed_dim
    self.word = _layers.Embedder(cfg.vocab_size, e, multiplier=None, dtype=dtype, rngs=rngs)
    self.position = (_table(cfg.max_position_embeddings, e, dtype, rngs)
                     if cfg.position_biased_input else None)
    self.token_type = _table(cfg.type_vocab_size, e, dtype, rngs) if cfg.type_vocab_size else None
    self.proj = (_dense(e, cfg.hidden_size, (None, sh.EMBED), dtype, rngs, use_bias=False)
                 if e != cfg.hidden_size else None)
    self.norm = _layers.layer_norm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)

  def __call__(self, tokens_bt, positions_bt, token_types_bt) -> jax.Array:
    x_bte = self.word(tokens_bt)
    if self.position is not None:
      x_bte += jnp.take(self.position[...], positions_bt, axis=0)
    if self.token_type is not None:
      x_bte += jnp.take(self.token_type[...], token_types_bt, axis=0)
    if self.proj is not None:
      x_bte = self.proj(x_bte)
    return self.norm(x_bte)


class DebertaV2Encoder(nnx.Module):
  """Embeddings and a scanned stack of layers sharing one relative embedding table."""

  def __init__(self, cfg: DebertaV2Config, *, dtype=jnp.float32, attention: str, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embeddings = DebertaV2Embeddings(cfg, dtype=dtype, rngs=rngs)
    self.rel_embeddings = (_table(2 * cfg.att_span, cfg.hidden_size, dtype, rngs)
                           if cfg.relative_attention else None)
    self.rel_norm = (
        _layers.layer_norm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
        if cfg.relative_attention and cfg.rel_layer_norm else None)

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: sh.LAYERS})
    def make_layers(rngs: nnx.Rngs) -> DebertaV2Layer:
      return DebertaV2Layer(cfg, dtype=dtype, attention=attention, rngs=rngs)

    self.layers = make_layers(rngs)

  def __call__(self, tokens_bt, segment_ids_bt, positions_bt, token_types_bt=None) -> jax.Array:
    """Final hidden states [B,T,D] (padding rows are garbage: nothing attends to them)."""
    if token_types_bt is None:
      token_types_bt = jnp.zeros_like(tokens_bt)
    x_btd = self.embeddings(tokens_bt, positions_bt, token_types_bt)
    relative_btt = rel_embed_pd = None
    if self.rel_embeddings is not None:
      relative_btt = relative_positions(self.cfg, positions_bt)
      rel_embed_pd = self.rel_embeddings[...]
      if self.rel_norm is not None:
        rel_embed_pd = self.rel_norm(rel_embed_pd)

    @nnx.scan(in_axes=(0, nnx.Carry, None, None, None), out_axes=nnx.Carry)
    def run(layer: DebertaV2Layer, x_btd, segment_ids_bt, relative_btt, rel_embed_pd):
      return layer(x_btd, segment_ids_bt, relative_btt, rel_embed_pd)

    return run(self.layers, x_btd, segment_ids_bt, relative_btt, rel_embed_pd)


class DebertaV2ForSequenceClassification(nnx.Module):
  """A DeBERTa reward model on the erpjax reward-model interface (`__call__` below; the one
  `erpjax.scoring` feeds every family).

  `attention`: implementation of `erpjax_kernels.attention.dot_product_attention`; one that
  takes a logits bias when the model has relative attention (not "pallas").
  """

  def __init__(self, cfg: DebertaV2Config, *, dtype=jnp.float32, attention: str = "xla",
               rngs: nnx.Rngs):
    attention_kernels.check_implementation(attention)
    if cfg.relative_attention and attention == "pallas":
      raise ValueError("DeBERTa's relative attention is a logits bias, which the pallas kernel "
                       "does not take; use 'xla', 'reference', 'jax_nn' or 'cudnn'")
    self.cfg = cfg
    self.encoder = DebertaV2Encoder(cfg, dtype=dtype, attention=attention, rngs=rngs)
    # transformers' ContextPooler (dense + pooler_hidden_act) and classifier.
    self.head = ClassificationHead(cfg.hidden_size, cfg.num_labels, cfg.pooler_hidden_act,
                                   dtype=dtype, rngs=rngs)

  def __call__(self, tokens_bt: jax.Array, segment_ids_bt: jax.Array, positions_bt: jax.Array,
               score_index_bs: jax.Array, token_types_bt: jax.Array | None = None) -> jax.Array:
    """Scores float32[B,S,L] of the S segments packed in each row.

    Args:
      tokens_bt: int32[B,T] token ids.
      segment_ids_bt: int32[B,T]; 0 = padding, 1..S = the packed sequences.
      positions_bt: int32[B,T], restarting at 0 in each segment.
      score_index_bs: int32[B,S], each segment's first ([CLS]) token.
      token_types_bt: int32[B,T] text-pair token types; zeros if None (unused by DeBERTa-v3,
        whose type_vocab_size is 0).
    """
    x_btd = self.encoder(tokens_bt, segment_ids_bt, positions_bt, token_types_bt)
    return self.head(_layers.take_rows(x_btd, score_index_bs))


def _layer_rules(cfg: DebertaV2Config) -> list[_hf.KeyRule]:
  """Per-layer checkpoint tensors -> slice [layer] of the stacked layer parameters."""
  hf = "deberta.encoder.layer.{layer}."
  at = "encoder/layers/"
  heads = ["query_proj", "key_proj", "value_proj"]
  if cfg.relative_attention and not cfg.share_att_key:
    heads += [name for name, kind in (("pos_key_proj", "c2p"), ("pos_query_proj", "p2c"))
              if kind in cfg.pos_att_type]
  pairs = [(f"attention.self.{name}", f"attention/{name}", _hf.linear(), _hf.reshape())
           for name in heads]
  pairs += [
      ("attention.output.dense", "attention/out", _hf.linear(in_ndim=2), _hf.IDENTITY),
      ("intermediate.dense", "intermediate", _hf.linear(), _hf.IDENTITY),
      ("output.dense", "output", _hf.linear(), _hf.IDENTITY),
  ]
  rules = []
  for hf_name, nnx_name, kernel, bias in pairs:
    rules += [
        _hf.KeyRule(hf + hf_name + ".weight", at + nnx_name + "/kernel", ("{layer}",), kernel),
        _hf.KeyRule(hf + hf_name + ".bias", at + nnx_name + "/bias", ("{layer}",), bias),
    ]
  for hf_name, nnx_name in (("attention.output.LayerNorm", "attention/out_norm"),
                            ("output.LayerNorm", "output_norm")):
    rules += [
        _hf.KeyRule(hf + hf_name + ".weight", at + nnx_name + "/scale", ("{layer}",)),
        _hf.KeyRule(hf + hf_name + ".bias", at + nnx_name + "/bias", ("{layer}",)),
    ]
  return rules


def hf_key_map(cfg: DebertaV2Config) -> _hf.KeyMap:
  """`DebertaV2ForSequenceClassification` checkpoint keys <-> this module's state paths."""
  emb_hf, emb = "deberta.embeddings.", "encoder/embeddings/"
  rules = [
      _hf.KeyRule(emb_hf + "word_embeddings.weight", emb + "word/embedding"),
      _hf.KeyRule(emb_hf + "LayerNorm.weight", emb + "norm/scale"),
      _hf.KeyRule(emb_hf + "LayerNorm.bias", emb + "norm/bias"),
      _hf.KeyRule("pooler.dense.weight", "head/dense/kernel", transform=_hf.linear()),
      _hf.KeyRule("pooler.dense.bias", "head/dense/bias"),
      _hf.KeyRule("classifier.weight", "head/out/kernel", transform=_hf.linear()),
      _hf.KeyRule("classifier.bias", "head/out/bias"),
      *_layer_rules(cfg),
  ]
  # transformers drops an unused absolute position table on load; so do we.
  ignore = () if cfg.position_biased_input else (r"deberta\.embeddings\.position_embeddings\..*",)
  if cfg.position_biased_input:
    rules.append(_hf.KeyRule(emb_hf + "position_embeddings.weight", emb + "position"))
  if cfg.type_vocab_size:
    rules.append(_hf.KeyRule(emb_hf + "token_type_embeddings.weight", emb + "token_type"))
  if cfg.embedding_size is not None:
    rules.append(_hf.KeyRule(emb_hf + "embed_proj.weight", emb + "proj/kernel",
                             transform=_hf.linear()))
  if cfg.relative_attention:
    rules.append(_hf.KeyRule("deberta.encoder.rel_embeddings.weight",
                             "encoder/rel_embeddings"))
  if cfg.relative_attention and cfg.rel_layer_norm:
    rules += [_hf.KeyRule("deberta.encoder.LayerNorm.weight", "encoder/rel_norm/scale"),
              _hf.KeyRule("deberta.encoder.LayerNorm.bias", "encoder/rel_norm/bias")]
  return _hf.KeyMap(tuple(rules), ignore=ignore)


@register_reward_model("DebertaV2ForSequenceClassification")
def load_deberta_v2(path: str | os.PathLike[str], *, dtype=jnp.float32,
                    attention: str = "xla") -> DebertaV2ForSequenceClassification:
  """Loads a `DebertaV2ForSequenceClassification` folder (config.json + safetensors)."""
  cfg = DebertaV2Config.from_hf_config(_hf.read_config(path))
  return _hf.load_pretrained(
      lambda: DebertaV2ForSequenceClassification(cfg, dtype=dtype, attention=attention,
                                                 rngs=nnx.Rngs(0)),
      path, hf_key_map(cfg))
