"""Compiling a step: XLA options per backend and dtype, one program per batch shape."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax

# XLA:CPU options for float32 programs: YNNPACK reduce fusions only. They fuse the softmax and
# LayerNorm reductions with the matmuls around them, while the other GEMMs stay on Eigen, which ran
# them ~25% faster than YNNPACK's float32 GEMMs. MiniLM-L6 at [64, 256] on a 2-core AMD EPYC
# (Zen 4), CPU seconds per batch: 5.0-5.3 with these, 5.3-5.4 with XLA's default fusions, 5.2-5.3
# without YNNPACK (benchmarks/embed_throughput.py).
CPU_COMPILER_OPTIONS: Mapping[str, Any] = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE",
}


def cpu_compiler_options(dtype: str) -> dict[str, Any]:
  """XLA:CPU options for a model computing in `dtype` ("float32" or "bfloat16").

  bfloat16 keeps XLA's defaults, whose YNNPACK dot fusions use the CPU's bf16 dot instructions:
  3.4 CPU seconds in the setting above, vs 5.2-5.3 with the float32 options (Eigen's bf16 GEMMs
  gain nothing over float32).
  """
  return dict(CPU_COMPILER_OPTIONS) if dtype == "float32" else {}


def default_compiler_options(platform: str, dtype: str) -> dict[str, Any]:
  """The fastest measured options for `platform` ("cpu", "gpu", "tpu"): XLA's defaults except
  on CPU."""
  return cpu_compiler_options(dtype) if platform == "cpu" else {}


class ShapeCache:
  """One compiled program of a jitted function per distinct input shape.

  Compiled ahead of time (`lower(...).compile(options)`), so the options apply per program and a
  rejected option (an XLA build without it) falls back to XLA's defaults with a warning instead
  of failing the job. Callers keep the shapes few (bucketed batches): each costs a compilation.
  """

  def __init__(self, jitted: Callable, compiler_options: Mapping[str, Any]):
    """`jitted`: a `jax.jit` function; its programs are compiled with `compiler_options`."""
    self._jitted = jitted
    self._options = dict(compiler_options)
    self._programs: dict[Any, Any] = {}

  @property
  def compiler_options(self) -> dict[str, Any]:
    """The options of the programs compiled so far (those of later ones unless one failed)."""
    return dict(self._options)

  @property
  def keys(self) -> tuple[Any, ...]:
    """The keys of the programs compiled so far, in compilation order."""
    return tuple(self._programs)

  def __call__(self, key: Any, *args):
    """The program for inputs `args` of shape `key` (any hashable that determines the shapes),
    compiled on first use. Trace the function under the caller's mesh context if it needs one."""
    program = self._programs.get(key)
    if program is None:
      lowered = self._jitted.lower(*args)
      try:
        program = lowered.compile(self._options)
      except jax.errors.JaxRuntimeError as e:
        warnings.warn(f"compiling without {self._options}: {e}", stacklevel=3)
        self._options = {}
        program = lowered.compile()
      self._programs[key] = program
    return program
