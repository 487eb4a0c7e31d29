"""A tiny reward model for engine tests, independent of any model family.

`TinyRewardModel` implements the reward-model interface that the scoring engine feeds every model
family (tokens, segment ids, positions restarting per segment, score indices; see
`erpjax.models.decoder.DecoderRewardModel.__call__`) with one attention layer: segment-masked,
optionally causal attention through `erpjax_kernels.attention`, the score read at `score_index`.
Its parameters carry logical axis names, so sharded runs split them over "model". They are drawn
with numpy from a seed: jax.random would compile a sampler per parameter shape, seconds in every
test subprocess.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from erpjax_kernels import attention as attention_kernels
from flax import nnx

from erpjax import sharding


def _param(rng: np.random.Generator, shape: tuple[int, ...], names: tuple[str | None, ...],
           scale: float) -> nnx.Param:
  # eager_sharding=False: the module is built off-mesh; the engine places it.
  value = jnp.asarray((scale * rng.standard_normal(shape)).astype(np.float32))
  return nnx.Param(value, out_sharding=names, eager_sharding=False)


class TinyRewardModel(nnx.Module):
  """Embedding + one attention block + MLP + linear score head."""

  def __init__(self, vocab_size: int = 30522, dim: int = 32, num_heads: int = 4, mlp_dim: int = 64,
               max_positions: int = 512, num_labels: int = 1, causal: bool = False, *,
               seed: int, attention: str = "xla"):
    attention_kernels.check_implementation(attention)
    rng = np.random.default_rng(seed)
    head_dim = dim // num_heads
    self.causal = causal
    self.implementation = attention
    self.embed_vd = _param(rng, (vocab_size, dim), (sharding.VOCAB, sharding.EMBED), 1.0)
    self.position_pd = _param(rng, (max_positions, dim), (None, sharding.EMBED), 0.5)
    names = (sharding.EMBED, sharding.HEADS, sharding.HEAD_DIM)
    self.query_dnh = _param(rng, (dim, num_heads, head_dim), names, dim**-0.5)
    self.key_dnh = _param(rng, (dim, num_heads, head_dim), names, dim**-0.5)
    self.value_dnh = _param(rng, (dim, num_heads, head_dim), names, dim**-0.5)
    self.out_nhd = _param(rng, (num_heads, head_dim, dim),
                          (sharding.HEADS, sharding.HEAD_DIM, sharding.EMBED), dim**-0.5)
    self.mlp_in_df = _param(rng, (dim, mlp_dim), (sharding.EMBED, sharding.MLP), dim**-0.5)
    self.mlp_out_fd = _param(rng, (mlp_dim, dim), (sharding.MLP, sharding.EMBED), mlp_dim**-0.5)
    self.type_2d = _param(rng, (2, dim), (None, sharding.EMBED), 0.5)
    self.head_dl = _param(rng, (dim, num_labels), (sharding.EMBED, sharding.LABELS), dim**-0.5)

  def __call__(self, tokens_bt: jax.Array, segment_ids_bt: jax.Array, positions_bt: jax.Array,
               score_index_bs: jax.Array, token_types_bt: jax.Array | None = None) -> jax.Array:
    """int32 [B,T], [B,T], [B,T], [B,S] (and optional types [B,T]) -> float32 scores [B,S,L]."""
    x_btd = self.embed_vd[...][tokens_bt] + self.position_pd[...][positions_bt]
    if token_types_bt is not None:
      x_btd += self.type_2d[...][token_types_bt]
    q_btnh = jnp.einsum("BTD,DNH->BTNH", x_btd, self.query_dnh[...])
    k_btnh = jnp.einsum("BTD,DNH->BTNH", x_btd, self.key_dnh[...])
    v_btnh = jnp.einsum("BTD,DNH->BTNH", x_btd, self.value_dnh[...])
    attended_btnh = attention_kernels.dot_product_attention(
        q_btnh, k_btnh, v_btnh, q_segment_ids_bt=segment_ids_bt, kv_segment_ids_bs=segment_ids_bt,
        q_positions_bt=positions_bt, kv_positions_bs=positions_bt, causal=self.causal,
        implementation=self.implementation)
    x_btd = x_btd + jnp.einsum("BTNH,NHD->BTD", attended_btnh, self.out_nhd[...])
    x_btd = x_btd + jax.nn.gelu(x_btd @ self.mlp_in_df[...]) @ self.mlp_out_fd[...]
    h_bsd = jnp.take_along_axis(x_btd, score_index_bs[:, :, None], axis=1)
    return jnp.einsum("BSD,DL->BSL", h_bsd, self.head_dl[...])
