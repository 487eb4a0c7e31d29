"""Decoder-only reward models: Llama 3.x, Mistral, Qwen2, Qwen3, Gemma and Gemma 2.

One pre-norm transformer parameterized by `DecoderConfig` covers the families; what differs is
data (norm offset, activation, biases, q/k norms, sandwich norms, soft-capping, embedding scale,
sliding-window layers). The reward is what transformers' `*ForSequenceClassification` computes:
the final-normed hidden state of a sequence's last token times the bias-free `score` matrix
(`GenericForSequenceClassification`). Gemma 2's `final_logit_softcapping` is not applied: in
transformers it caps only the LM head's logits, never the score.

Layers are stacked ([L, ...] parameters) and run with `nnx.scan`, so compile time does not grow
with depth; per-layer attention windows ride along the scan as data.

Inputs follow the reward-model interface that `erpjax.scoring` feeds every family: tokens, segment
ids (0 = padding, 1..S = sequences packed in a row), positions restarting at 0 in
each segment, and per segment the row index of its last token.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from erpjax_kernels import attention as attention_kernels
from flax import nnx

from erpjax import sharding
from erpjax.models import _hf
from erpjax.models._layers import (ACTIVATIONS, Embedder, Projection, RMSNorm, split_last_layer,
                                   take_rows)
from erpjax.models._registry import register_reward_model
from erpjax.models.rope import RopeConfig, apply_rope, inverse_frequencies, rotation

# A window no position difference reaches: full attention inside a scan over mixed layers.
_NO_WINDOW = np.iinfo(np.int32).max


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Architecture of a decoder reward model.

  Attributes:
    vocab_size, embed_dim, mlp_dim, num_layers: V, D, F, L.
    num_heads, num_kv_heads, head_dim: N query heads sharing K key/value heads, of H dims each.
    rope: rotary embedding frequencies.
    norm_eps: RMSNorm epsilon.
    norm_offset: RMSNorm multiplies by (norm_offset + weight): 0 for Llama, 1 for Gemma.
    activation: gate activation of the gated MLP, a transformers name (a key of
      `_layers.ACTIVATIONS`, e.g. "silu", "gelu_pytorch_tanh").
    qkv_bias, out_bias, mlp_bias: biases on the q/k/v projections, the attention output
      projection and the MLP projections (Qwen2: q/k/v only).
    qk_norm: RMSNorm over head_dim on queries and keys before RoPE (Qwen3).
    sandwich_norm: Gemma 2's extra norms after attention and around the MLP.
    scale_embeddings: multiply embeddings by sqrt(embed_dim) (Gemma).
    query_pre_attn_scalar: logits are scaled by its inverse square root; None = head_dim.
    attn_logit_softcap: cap attention logits with c * tanh(x / c) (Gemma 2).
    sliding_window: W, the number of most recent positions a sliding layer attends to.
    sliding_layers: indices of the layers that use the window (Mistral: all, Gemma 2: even ones).
    num_labels: outputs of the score head (1 for reward models).
    pad_token_id: the checkpoint's pad token; transformers scores the last token that is not it.
  """
  vocab_size: int
  embed_dim: int
  mlp_dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope: RopeConfig = RopeConfig()
  norm_eps: float = 1e-6
  norm_offset: float = 0.0
  activation: str = "silu"
  qkv_bias: bool = False
  out_bias: bool = False
  mlp_bias: bool = False
  qk_norm: bool = False
  sandwich_norm: bool = False
  scale_embeddings: bool = False
  query_pre_attn_scalar: float | None = None
  attn_logit_softcap: float | None = None
  sliding_window: int | None = None
  sliding_layers: tuple[int, ...] = ()
  num_labels: int = 1
  pad_token_id: int | None = None

  def __post_init__(self):
    sizes = dict(vocab_size=self.vocab_size, embed_dim=self.embed_dim, mlp_dim=self.mlp_dim,
                 num_layers=self.num_layers, num_heads=self.num_heads,
                 num_kv_heads=self.num_kv_heads, head_dim=self.head_dim,
                 num_labels=self.num_labels)
    for name, value in sizes.items():
      if not (isinstance(value, int) and value > 0):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation {self.activation!r} not in {sorted(ACTIVATIONS)}")
    if self.norm_eps <= 0:
      raise ValueError(f"norm_eps must be positive, got {self.norm_eps}")
    if self.norm_offset not in (0.0, 1.0):
      raise ValueError(f"norm_offset must be 0 or 1, got {self.norm_offset}")
    for name in ("query_pre_attn_scalar", "attn_logit_softcap"):
      value = getattr(self, name)
      if value is not None and value <= 0:
        raise ValueError(f"{name} must be positive or None, got {value}")
    if (self.sliding_window is None) != (not self.sliding_layers):
      raise ValueError("sliding_window and sliding_layers must be set together, got "
                       f"{self.sliding_window} and {self.sliding_layers}")
    if self.sliding_window is not None and self.sliding_window <= 0:
      raise ValueError(f"sliding_window must be positive, got {self.sliding_window}")
    if sorted(set(self.sliding_layers)) != list(self.sliding_layers) or any(
        not 0 <= i < self.num_layers for i in self.sliding_layers):
      raise ValueError(f"sliding_layers must be increasing layer indices below {self.num_layers},"
                       f" got {self.sliding_layers}")
    if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
      raise ValueError(f"pad_token_id {self.pad_token_id} outside the vocabulary")

  @property
  def attention_scale(self) -> float:
    return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

  def layer_windows(self) -> np.ndarray:
    """int32[L]: each layer's attention window (a huge value for full attention)."""
    windows = np.full(self.num_layers, _NO_WINDOW, np.int32)
    if self.sliding_layers:
      windows[list(self.sliding_layers)] = self.sliding_window
    return windows

  @classmethod
  def from_hf_config(cls, hf: Mapping[str, Any]) -> DecoderConfig:
    """The config of a transformers Llama/Mistral/Qwen2/Qwen3/Gemma/Gemma2 `config.json`.

    Missing optional keys take transformers' defaults for that model type.
    """
    model_type = hf.get("model_type")
    if model_type not in _FAMILY_OPTIONS:
      raise ValueError(f"model_type {model_type!r} is not a decoder family erpjax implements; "
                       f"supported: {sorted(_FAMILY_OPTIONS)}")
    num_layers = hf["num_hidden_layers"]
    num_heads = hf["num_attention_heads"]
    options = _FAMILY_OPTIONS[model_type](hf, num_layers)
    hf_activation = options.pop("hf_activation")
    if hf_activation not in ACTIVATIONS:
      raise ValueError(f"activation {hf_activation!r} is not supported; supported: "
                       f"{sorted(ACTIVATIONS)}")
    return cls(
        vocab_size=hf["vocab_size"],
        embed_dim=hf["hidden_size"],
        mlp_dim=hf["intermediate_size"],
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=hf.get("num_key_value_heads") or num_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
        rope=RopeConfig.from_hf_config(hf),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        activation=hf_activation,
        num_labels=hf.get("num_labels") or len(hf.get("id2label") or {}) or 2,
        pad_token_id=hf.get("pad_token_id"),
        **options,
    )


def _sliding_layers(hf: Mapping[str, Any], window: int | None,
                    default: list[bool]) -> dict[str, Any]:
  """`sliding_window`/`sliding_layers` from HF `layer_types`, else the family's default pattern."""
  if window is None:
    return {}
  layer_types = hf.get("layer_types")
  sliding = ([t == "sliding_attention" for t in layer_types] if layer_types else default)
  layers = tuple(i for i, s in enumerate(sliding) if s)
  return {"sliding_window": window, "sliding_layers": layers} if layers else {}


def _llama(hf, num_layers):
  bias = hf.get("attention_bias", False)
  return dict(hf_activation=hf.get("hidden_act", "silu"), qkv_bias=bias, out_bias=bias,
              mlp_bias=hf.get("mlp_bias", False))


def _mistral(hf, num_layers):
  # MistralModel windows every layer when sliding_window is set (default 4096); it ignores
  # `layer_types`, hence the empty dict.
  return dict(hf_activation=hf.get("hidden_act", "silu"),
              **_sliding_layers({}, hf.get("sliding_window", 4096), [True] * num_layers))


def _qwen_sliding(hf, num_layers):
  # Qwen2/3 slide only with use_sliding_window, on layers from max_window_layers on.
  window = hf.get("sliding_window", 4096) if hf.get("use_sliding_window", False) else None
  first = hf.get("max_window_layers", 28)
  return _sliding_layers(hf, window, [i >= first for i in range(num_layers)])


def _qwen2(hf, num_layers):
  return dict(hf_activation=hf.get("hidden_act", "silu"), qkv_bias=True,
              **_qwen_sliding(hf, num_layers))


def _qwen3(hf, num_layers):
  bias = hf.get("attention_bias", False)
  return dict(hf_activation=hf.get("hidden_act", "silu"), qkv_bias=bias, out_bias=bias,
              qk_norm=True, **_qwen_sliding(hf, num_layers))


def _gemma_common(hf):
  if hf.get("use_bidirectional_attention"):
    raise ValueError("Gemma with use_bidirectional_attention is not a causal reward model")
  bias = hf.get("attention_bias", False)
  return dict(norm_offset=1.0, scale_embeddings=True, qkv_bias=bias, out_bias=bias)


def _gemma(hf, num_layers):
  # transformers reads `hidden_act` only, and maps Gemma's legacy "gelu" to the tanh approximation.
  act = hf.get("hidden_act", "gelu_pytorch_tanh")
  return dict(hf_activation="gelu_pytorch_tanh" if act == "gelu" else act, **_gemma_common(hf))


def _gemma2(hf, num_layers):
  return dict(
      hf_activation=hf.get("hidden_activation", "gelu_pytorch_tanh"),
      sandwich_norm=True,
      query_pre_attn_scalar=hf.get("query_pre_attn_scalar", 256),
      attn_logit_softcap=hf.get("attn_logit_softcapping", 50.0),
      **_sliding_layers(hf, hf.get("sliding_window", 4096),
                        [(i + 1) % 2 == 1 for i in range(num_layers)]),
      **_gemma_common(hf))


_FAMILY_OPTIONS = {"llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3,
                   "gemma": _gemma, "gemma2": _gemma2}


# ------------------------------------------------------------------------------------------------
# Modules.


class Attention(nnx.Module):
  """Causal grouped-query self-attention with RoPE, optional q/k norms, window and soft-cap."""

  def __init__(self, config: DecoderConfig, *, dtype: jnp.dtype, attention: str,
               rngs: nnx.Rngs):
    c = config
    self.scale = c.attention_scale
    self.softcap = c.attn_logit_softcap
    self.implementation = attention
    common = dict(in_names=(sharding.EMBED,), dtype=dtype, rngs=rngs)
    self.q = Projection("BTD,DNH->BTNH", (c.embed_dim,), (c.num_heads, c.head_dim),
                        out_names=(sharding.HEADS, sharding.HEAD_DIM), use_bias=c.qkv_bias,
                        **common)
    self.k = Projection("BSD,DKH->BSKH", (c.embed_dim,), (c.num_kv_heads, c.head_dim),
                        out_names=(sharding.KV_HEADS, sharding.HEAD_DIM), use_bias=c.qkv_bias,
                        **common)
    self.v = Projection("BSD,DKH->BSKH", (c.embed_dim,), (c.num_kv_heads, c.head_dim),
                        out_names=(sharding.KV_HEADS, sharding.HEAD_DIM), use_bias=c.qkv_bias,
                        **common)
    self.out = Projection("BTNH,NHD->BTD", (c.num_heads, c.head_dim), (c.embed_dim,),
                          in_names=(sharding.HEADS, sharding.HEAD_DIM),
                          out_names=(sharding.EMBED,), use_bias=c.out_bias, dtype=dtype,
                          rngs=rngs)
    if c.qk_norm:
      norm = dict(name=sharding.HEAD_DIM, eps=c.norm_eps, offset=c.norm_offset, dtype=dtype,
                  rngs=rngs)
      self.q_norm = RMSNorm(c.head_dim, **norm)
      self.k_norm = RMSNorm(c.head_dim, **norm)
    else:
      self.q_norm = self.k_norm = None

  def __call__(self, x_btd: jax.Array, segment_ids_bt: jax.Array, positions_bt: jax.Array,
               window: int | jax.Array | None, cos_btf: jax.Array, sin_btf: jax.Array,
               query_index_bs: jax.Array | None = None) -> jax.Array:
    """[B, T, D] -> [B, T, D], or with int[B, S] `query_index_bs` only those rows, [B, S, D].

    Tokens attend causally within their segment (int[B, T] ids and positions, as the model
    takes them), within `window` positions if set.
    """
    cos_bqf, sin_bqf, x_bqd = cos_btf, sin_btf, x_btd
    segment_ids_bq, positions_bq = segment_ids_bt, positions_bt
    if query_index_bs is not None:
      cos_bqf, sin_bqf, x_bqd, segment_ids_bq, positions_bq = (
          take_rows(a, query_index_bs)
          for a in (cos_btf, sin_btf, x_btd, segment_ids_bt, positions_bt))
    q_bqnh, k_btkh, v_btkh = self.q(x_bqd), self.k(x_btd), self.v(x_btd)
    if self.q_norm is not None:
      q_bqnh, k_btkh = self.q_norm(q_bqnh), self.k_norm(k_btkh)
    q_bqnh = apply_rope(q_bqnh, cos_bqf, sin_bqf)
    k_btkh = apply_rope(k_btkh, cos_btf, sin_btf)
    implementation = self.implementation
    if query_index_bs is not None and implementation == "splash":
      # Splash's causal and window masks compare row indices, which gathered query rows do not
      # keep; these S rows per row attend densely ([S, T] logits: small).
      implementation = "xla"
    o_bqnh = attention_kernels.dot_product_attention(
        q_bqnh, k_btkh, v_btkh, q_segment_ids_bt=segment_ids_bq, kv_segment_ids_bs=segment_ids_bt,
        q_positions_bt=positions_bq, kv_positions_bs=positions_bt, causal=True, scale=self.scale,
        softcap=self.softcap, window=window, implementation=implementation)
    return self.out(o_bqnh)


class GatedMLP(nnx.Module):
  """down(act(gate(x)) * up(x))."""

  def __init__(self, config: DecoderConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    c = config
    self.activation = c.activation
    up = dict(in_names=(sharding.EMBED,), out_names=(sharding.MLP,), use_bias=c.mlp_bias,
              dtype=dtype, rngs=rngs)
    self.gate = Projection("BTD,DF->BTF", (c.embed_dim,), (c.mlp_dim,), **up)
    self.up = Projection("BTD,DF->BTF", (c.embed_dim,), (c.mlp_dim,), **up)
    self.down = Projection("BTF,FD->BTD", (c.mlp_dim,), (c.embed_dim,), in_names=(sharding.MLP,),
                           out_names=(sharding.EMBED,), use_bias=c.mlp_bias, dtype=dtype,
                           rngs=rngs)

  def __call__(self, x_btd: jax.Array) -> jax.Array:
    return self.down(ACTIVATIONS[self.activation](self.gate(x_btd)) * self.up(x_btd))


class Block(nnx.Module):
  """Pre-norm residual block; with `sandwich_norm` the branch outputs are normed too (Gemma 2)."""

  def __init__(self, config: DecoderConfig, *, dtype: jnp.dtype, attention: str,
               rngs: nnx.Rngs):
    c = config
    norm = dict(name=sharding.EMBED, eps=c.norm_eps, offset=c.norm_offset, dtype=dtype, rngs=rngs)
    self.pre_attn_norm = RMSNorm(c.embed_dim, **norm)
    self.attn = Attention(c, dtype=dtype, attention=attention, rngs=rngs)
    self.pre_ffw_norm = RMSNorm(c.embed_dim, **norm)
    self.mlp = GatedMLP(c, dtype=dtype, rngs=rngs)
    if c.sandwich_norm:
      self.post_attn_norm = RMSNorm(c.embed_dim, **norm)
      self.post_ffw_norm = RMSNorm(c.embed_dim, **norm)
    else:
      self.post_attn_norm = self.post_ffw_norm = None

  def __call__(self, x_btd: jax.Array, segment_ids_bt: jax.Array, positions_bt: jax.Array,
               window: int | jax.Array | None, cos_btf: jax.Array, sin_btf: jax.Array,
               query_index_bs: jax.Array | None = None) -> jax.Array:
    """[B, T, D] -> [B, T, D], or only the rows `query_index_bs` [B, S]: [B, S, D] (see
    `Attention`)."""
    h_btd = self.attn(self.pre_attn_norm(x_btd), segment_ids_bt, positions_bt, window, cos_btf,
                      sin_btf, query_index_bs)
    if query_index_bs is not None:
      x_btd = take_rows(x_btd, query_index_bs)
    if self.post_attn_norm is not None:
      h_btd = self.post_attn_norm(h_btd)
    x_btd = x_btd + h_btd
    h_btd = self.mlp(self.pre_ffw_norm(x_btd))
    if self.post_ffw_norm is not None:
      h_btd = self.post_ffw_norm(h_btd)
    return x_btd + h_btd


class DecoderModel(nnx.Module):
  """The decoder trunk: token embeddings, stacked blocks and the final norm, no head.

  Attributes:
    config: the architecture.
    dtype: parameter and activation dtype (float32, or bfloat16 with float32 accumulation,
      norms, softmax and RoPE).
  """

  def __init__(self, config: DecoderConfig, *, dtype: jnp.dtype = jnp.float32,
               attention: str = "xla", rngs: nnx.Rngs):
    """`attention`: implementation of `erpjax_kernels.attention.dot_product_attention`."""
    attention_kernels.check_implementation(attention)
    if attention in ("jax_nn", "cudnn") and config.attn_logit_softcap is not None:
      raise ValueError(f"attention logit soft-capping is not available with {attention!r}; "
                       "use 'xla', 'reference' or 'pallas'")
    if attention in ("pallas", "splash") and 0 < len(config.sliding_layers) < config.num_layers:
      raise ValueError(f"the {attention} attention kernel needs one window for every layer; this "
                       "model mixes sliding and full layers: use a dense implementation")
    self.config = config
    self.dtype = dtype
    multiplier = config.embed_dim ** 0.5 if config.scale_embeddings else None
    self.embedder = Embedder(config.vocab_size, config.embed_dim, multiplier=multiplier,
                             dtype=dtype, rngs=rngs)

    @nnx.split_rngs(splits=config.num_layers)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: sharding.LAYERS})
    def make_layers(rngs: nnx.Rngs) -> Block:
      return Block(config, dtype=dtype, attention=attention, rngs=rngs)

    self.layers = make_layers(rngs)
    self.final_norm = RMSNorm(config.embed_dim, name=sharding.EMBED, eps=config.norm_eps,
                              offset=config.norm_offset, dtype=dtype, rngs=rngs)

  def _rope(self, positions_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """RoPE cos, sin [B, T, H/2] of the positions, shared by every block."""
    return rotation(positions_bt, inverse_frequencies(self.config.head_dim, self.config.rope))

  def _static_window(self, window: jax.Array) -> int | jax.Array | None:
    """A layer's attention window as its block takes it: None without windows, a Python int
    where every layer has the same window (a fused kernel is shaped by it), else the layer's
    entry of the scanned windows (sliding and full layers mix)."""
    c = self.config
    if not c.sliding_layers:
      return None
    return c.sliding_window if len(c.sliding_layers) == c.num_layers else window

  def _run_layers(self, x_btd: jax.Array, layers: nnx.Module, windows: jax.Array,
                  segment_ids_bt: jax.Array, positions_bt: jax.Array, cos_btf: jax.Array,
                  sin_btf: jax.Array) -> jax.Array:
    """Stacked blocks ([L', ...] parameters, their windows int32[L']) in order, with `nnx.scan`:
    [B, T, D] -> [B, T, D]."""

    @nnx.scan(in_axes=(nnx.Carry, 0, 0), out_axes=nnx.Carry,
              transform_metadata={nnx.PARTITION_NAME: sharding.LAYERS})
    def run(x_btd, block: Block, window):
      return block(x_btd, segment_ids_bt, positions_bt, self._static_window(window), cos_btf,
                   sin_btf)

    return run(x_btd, layers, windows)

  def hidden_states(self, tokens_bt: jax.Array, segment_ids_bt: jax.Array,
                    positions_bt: jax.Array, layers: Sequence[int]) -> jax.Array:
    """The residual stream at chosen depths, numbered as transformers' `output_hidden_states`:
    0 = the embeddings, i = the output of block i, L = the last block's output after the final
    norm.

    Blocks run in chunks between the requested depths and stop at the deepest one, so shallow
    features cost only the blocks below them.

    Args:
      tokens_bt, segment_ids_bt, positions_bt: as `DecoderRewardModel.__call__`.
      layers: depths in [0, L], any order (static: one program per tuple).

    Returns:
      [len(layers), B, T, D] in the model's dtype.
    """
    c = self.config
    layers = tuple(int(i) for i in layers)
    if not layers or any(not 0 <= i <= c.num_layers for i in layers):
      raise ValueError(f"layers must be a non-empty list of depths in [0, {c.num_layers}], "
                       f"got {layers}")
    x_btd = self.embedder(tokens_bt)
    cos_btf, sin_btf = self._rope(positions_bt)
    windows = jnp.asarray(c.layer_windows())
    graphdef, stacked = nnx.split(self.layers)
    states = {0: x_btd}
    done = 0
    for stop in sorted(set(layers) - {0}):
      chunk = nnx.merge(graphdef, jax.tree.map(lambda a: a[done:stop], stacked))
      x_btd = self._run_layers(x_btd, chunk, windows[done:stop], segment_ids_bt, positions_bt,
                               cos_btf, sin_btf)
      states[stop] = x_btd
      done = stop
    if c.num_layers in states:
      states[c.num_layers] = self.final_norm(states[c.num_layers])
    return jnp.stack([states[i] for i in layers])


class DecoderRewardModel(DecoderModel):
  """A decoder transformer with a `score` head on each segment's last token (`DecoderModel`
  holds the trunk)."""

  def __init__(self, config: DecoderConfig, *, dtype: jnp.dtype = jnp.float32,
               attention: str = "xla", rngs: nnx.Rngs):
    super().__init__(config, dtype=dtype, attention=attention, rngs=rngs)
    self.score = Projection("BSD,DL->BSL", (config.embed_dim,), (config.num_labels,),
                            in_names=(sharding.EMBED,), out_names=(sharding.LABELS,),
                            use_bias=False, dtype=jnp.float32, rngs=rngs)

  def __call__(self, tokens_bt: jax.Array, segment_ids_bt: jax.Array, positions_bt: jax.Array,
               score_index_bs: jax.Array) -> jax.Array:
    """Scores every segment of every row.

    Args:
      tokens_bt: int32[B, T] token ids (any id at padding).
      segment_ids_bt: int32[B, T]; 0 = padding, 1..S = the sequences packed in the row.
      positions_bt: int32[B, T]; each token's position within its segment, from 0.
      score_index_bs: int32[B, S]; the row index of segment s's last token (0 if unused).

    Returns:
      float32[B, S, L] scores (garbage for unused segment slots).
    """
    x_btd = self.embedder(tokens_bt)
    cos_btf, sin_btf = self._rope(positions_bt)
    # The head reads S tokens per row, so the last layer computes those rows only (its keys and
    # values still cover every token), and so does the final norm.
    windows = jnp.asarray(self.config.layer_windows())
    first, last = split_last_layer(self.layers)
    if first is not None:
      x_btd = self._run_layers(x_btd, first, windows[:-1], segment_ids_bt, positions_bt,
                               cos_btf, sin_btf)
    h_bsd = last(x_btd, segment_ids_bt, positions_bt, self._static_window(windows[-1]), cos_btf,
                 sin_btf, score_index_bs)
    return self.score(self.final_norm(h_bsd))


# ------------------------------------------------------------------------------------------------
# Hugging Face checkpoints.


def hf_key_map(config: DecoderConfig) -> _hf.KeyMap:
  """Key map of a transformers `*ForSequenceClassification` checkpoint of this family."""
  layer = "model.layers.{layer}."
  idx = ("{layer}",)

  def linear(hf: str, nnx_path: str, in_ndim: int = 1) -> _hf.KeyRule:
    return _hf.KeyRule(layer + hf, "layers/" + nnx_path, idx, _hf.linear(in_ndim))

  def vector(hf: str, nnx_path: str, transform: _hf.Transform = _hf.IDENTITY) -> _hf.KeyRule:
    return _hf.KeyRule(layer + hf, "layers/" + nnx_path, idx, transform)

  rules = [
      _hf.KeyRule("model.embed_tokens.weight", "embedder/embedding"),
      _hf.KeyRule("model.norm.weight", "final_norm/scale"),
      _hf.KeyRule("score.weight", "score/kernel", transform=_hf.linear()),
      vector("input_layernorm.weight", "pre_attn_norm/scale"),
      linear("self_attn.q_proj.weight", "attn/q/kernel"),
      linear("self_attn.k_proj.weight", "attn/k/kernel"),
      linear("self_attn.v_proj.weight", "attn/v/kernel"),
      linear("self_attn.o_proj.weight", "attn/out/kernel", in_ndim=2),
      linear("mlp.gate_proj.weight", "mlp/gate/kernel"),
      linear("mlp.up_proj.weight", "mlp/up/kernel"),
      linear("mlp.down_proj.weight", "mlp/down/kernel"),
  ]
  if config.sandwich_norm:
    # Gemma 2 names its four norms by position; Llama's "post_attention_layernorm" is the pre-MLP
    # norm.
    rules += [vector("post_attention_layernorm.weight", "post_attn_norm/scale"),
              vector("pre_feedforward_layernorm.weight", "pre_ffw_norm/scale"),
              vector("post_feedforward_layernorm.weight", "post_ffw_norm/scale")]
  else:
    rules.append(vector("post_attention_layernorm.weight", "pre_ffw_norm/scale"))
  if config.qkv_bias:
    rules += [vector(f"self_attn.{p}_proj.bias", f"attn/{p}/bias", _hf.reshape())
              for p in "qkv"]
  if config.out_bias:
    rules.append(vector("self_attn.o_proj.bias", "attn/out/bias"))
  if config.mlp_bias:
    rules += [vector(f"mlp.{p}_proj.bias", f"mlp/{p}/bias") for p in ("gate", "up", "down")]
  if config.qk_norm:
    rules += [vector("self_attn.q_norm.weight", "attn/q_norm/scale"),
              vector("self_attn.k_norm.weight", "attn/k_norm/scale")]
  # Older checkpoints saved RoPE's inverse frequencies as buffers; they are recomputed.
  return _hf.KeyMap(tuple(rules), ignore=(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",))


@register_reward_model("LlamaForSequenceClassification", "MistralForSequenceClassification",
                       "Qwen2ForSequenceClassification", "Qwen3ForSequenceClassification",
                       "GemmaForSequenceClassification", "Gemma2ForSequenceClassification")
def load_decoder_reward_model(path: str | os.PathLike[str], *, dtype: jnp.dtype = jnp.float32,
                              attention: str = "xla") -> DecoderRewardModel:
  """Loads a transformers decoder `*ForSequenceClassification` folder (config.json + safetensors,
  single file or sharded with an index) without torch."""
  config = DecoderConfig.from_hf_config(_hf.read_config(path))
  return _hf.load_pretrained(
      lambda: DecoderRewardModel(config, dtype=dtype, attention=attention, rngs=nnx.Rngs(0)),
      path, hf_key_map(config))


# ------------------------------------------------------------------------------------------------
# Building inputs.


def positions_from_segments(segment_ids_bt: jax.Array) -> jax.Array:
  """int32[B, T]: each token's index within its segment (0 at padding).

  Segments must be contiguous runs (packing never interleaves sequences).
  """
  t = jnp.arange(segment_ids_bt.shape[1], dtype=jnp.int32)
  starts_bt = (segment_ids_bt != jnp.pad(segment_ids_bt, ((0, 0), (1, 0)))[:, :-1])
  # Index of the most recent segment start at or before each token.
  start_index_bt = jax.lax.cummax(jnp.where(starts_bt, t, 0), axis=1)
  return jnp.where(segment_ids_bt > 0, t - start_index_bt, 0).astype(jnp.int32)


def last_token_index(segment_ids_bt: jax.Array, num_segments: int, *,
                     tokens_bt: jax.Array | None = None,
                     pad_token_id: int | None = None) -> jax.Array:
  """int32[B, S]: row index of the last token of segments 1..S (0 where a segment is absent).

  With `tokens_bt` and `pad_token_id`, tokens equal to the pad id are skipped, reproducing
  transformers' "rightmost token that is not pad_token_id" when a sequence ends with a token that
  doubles as the pad token (e.g. an EOS used as pad).
  """
  keep_bt = segment_ids_bt > 0
  if pad_token_id is not None:
    keep_bt = keep_bt & (tokens_bt != pad_token_id)
  t = jnp.arange(segment_ids_bt.shape[1], dtype=jnp.int32)
  segments_s = jnp.arange(1, num_segments + 1, dtype=segment_ids_bt.dtype)
  in_segment_bst = keep_bt[:, None, :] & (segment_ids_bt[:, None, :] == segments_s[None, :, None])
  return jnp.max(jnp.where(in_segment_bst, t, 0), axis=-1).astype(jnp.int32)
