"""Compute dtypes by name: the one list that configs, models and the runner accept.

Configs and CLI flags name a dtype as a string; code that computes turns the name into a numpy/jnp
dtype with `jnp.dtype(name)` ("bfloat16" is registered with numpy by ml_dtypes, which jax loads).
This module imports nothing heavy, so configs can validate without loading jax.
"""

from typing import Literal, get_args

Dtype = Literal["float32", "bfloat16"]
DTYPES: tuple[str, ...] = get_args(Dtype)


def check_dtype(name: str, what: str = "dtype") -> None:
  """Raises ValueError naming `what` unless `name` is one of `DTYPES`."""
  if name not in DTYPES:
    raise ValueError(f"{what} must be one of {DTYPES}, got {name!r}")
