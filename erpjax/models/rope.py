"""Rotary position embeddings (RoPE) as transformers applies them, including Llama 3.x scaling.

Frequencies follow `transformers.modeling_rope_utils` ("default", "linear", "llama3"); rotation uses
the half-split layout of transformers' `rotate_half` (not the interleaved pairs of the original
paper), which is how the checkpoints' q/k projections are laid out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  """RoPE frequencies.

  Attributes:
    theta: base wavelength.
    type: "default"; "linear" (all frequencies divided by `factor`); or "llama3" (Llama 3.1:
      wavelengths beyond original_max_position_embeddings / low_freq_factor are divided by
      `factor`, below original / high_freq_factor kept, interpolated in between).
    factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: scaling
      parameters, as named in the HF config's `rope_scaling` / `rope_parameters`.
  """
  theta: float = 10_000.0
  type: str = "default"
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192

  def __post_init__(self):
    if self.type not in ROPE_TYPES:
      raise ValueError(f"RoPE type {self.type!r} is not supported; supported: {ROPE_TYPES}")
    if self.theta <= 0 or self.factor <= 0:
      raise ValueError(f"RoPE theta and factor must be positive, got {self.theta}, {self.factor}")
    if self.type == "llama3" and not (0 < self.low_freq_factor < self.high_freq_factor):
      raise ValueError("llama3 RoPE needs 0 < low_freq_factor < high_freq_factor, got "
                       f"{self.low_freq_factor}, {self.high_freq_factor}")

  @classmethod
  def from_hf_config(cls, hf: Mapping[str, Any], *, default_theta: float = 10_000.0,
                     ) -> RopeConfig:
    """Reads `rope_parameters` (transformers >= 5) or legacy `rope_theta` + `rope_scaling`."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    if params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
      raise ValueError("partial rotary embeddings are not supported")
    rope_type = params.get("rope_type", params.get("type", "default"))
    theta = params.get("rope_theta", hf.get("rope_theta", default_theta))
    if rope_type == "default":
      return cls(theta=theta)
    if rope_type == "linear":
      return cls(theta=theta, type="linear", factor=params["factor"])
    if rope_type == "llama3":
      return cls(theta=theta, type="llama3", factor=params["factor"],
                 low_freq_factor=params["low_freq_factor"],
                 high_freq_factor=params["high_freq_factor"],
                 original_max_position_embeddings=params.get(
                     "original_max_position_embeddings", hf.get("max_position_embeddings")))
    raise ValueError(f"RoPE type {rope_type!r} is not supported; supported: {ROPE_TYPES}")


def inverse_frequencies(head_dim: int, rope: RopeConfig) -> np.ndarray:
  """float32[head_dim // 2]: the rotation frequency of each pair of dims, in float32 as HF does."""
  if head_dim % 2:
    raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
  exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
  inv_freq = (np.float32(1.0) / np.power(np.float32(rope.theta), exponents)).astype(np.float32)
  if rope.type == "linear":
    return (inv_freq / np.float32(rope.factor)).astype(np.float32)
  if rope.type == "default":
    return inv_freq
  old_len = rope.original_max_position_embeddings
  low_freq_wavelen = old_len / rope.low_freq_factor
  high_freq_wavelen = old_len / rope.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq)
  smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor
                                                          - rope.low_freq_factor)
  smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
  is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
  return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rotation(positions_bt: jax.Array, inv_freq_f: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """cos and sin float32[B, T, F] of each position's angles (F = head_dim // 2)."""
  angles_btf = positions_bt.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq_f)
  return jnp.cos(angles_btf), jnp.sin(angles_btf)


def apply_rope(x_btnh: jax.Array, cos_btf: jax.Array, sin_btf: jax.Array) -> jax.Array:
  """Rotates [B, T, N, H] by the angles of `rotation`, pairing dim i with dim i + H/2."""
  x1, x2 = jnp.split(x_btnh.astype(jnp.float32), 2, axis=-1)
  cos, sin = cos_btf[:, :, None, :], sin_btf[:, :, None, :]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_btnh.dtype)
