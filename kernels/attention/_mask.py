"""Which keys a query may attend to, from segment ids and positions (never a stored [T, S] mask).

A query attends a key iff both are in the same segment and the segment id is not 0 (padding),
and, if `causal`, the key's position is at most the query's, and, if `window` is set, the two
positions are less than `window` apart. Positions restart in each packed sequence, so these rules
see every sequence of a packed row as if it were alone, for left padding, right padding and
packing alike.
"""

import jax
import jax.numpy as jnp


def visible_b1ts(q_segment_ids_bt: jax.Array, kv_segment_ids_bs: jax.Array,
                 q_positions_bt: jax.Array, kv_positions_bs: jax.Array, *, causal: bool,
                 window: int | jax.Array | None) -> jax.Array:
  """bool[B, 1, T, S]: query t may attend key s (see the module docstring).

  Built by broadcasting [B, T] against [B, S] inside the caller's jit: XLA fuses the comparisons
  into the consumer of the logits, so no [B, T, S] array is materialized per layer.
  """
  q_seg_bt1 = q_segment_ids_bt[:, :, None]
  kv_seg_b1s = kv_segment_ids_bs[:, None, :]
  visible_bts = (q_seg_bt1 == kv_seg_b1s) & (kv_seg_b1s != 0)
  if causal or window is not None:
    distance_bts = q_positions_bt[:, :, None] - kv_positions_bs[:, None, :]
    if causal:
      visible_bts &= distance_bts >= 0
    if window is not None:
      visible_bts &= jnp.abs(distance_bts) < window
  return visible_bts[:, None]
