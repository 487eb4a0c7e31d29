"""Helpers shared by the benchmarks: thread pinning, timing, the JSON result line.

`pin_threads` must run before jax or torch is imported: XLA:CPU sizes its thread pools from the
CPUs the process may run on, once, when its backend starts.
"""

import json
import os
import pathlib
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def pin_threads(num_threads: int | None) -> int:
  """Restricts this process to its first `num_threads` allowed CPUs (default: all allowed) and
  tells OpenMP/MKL (torch) to use as many threads. Returns the thread count."""
  allowed = sorted(os.sched_getaffinity(0))
  num_threads = num_threads or len(allowed)
  if not 1 <= num_threads <= len(allowed):
    raise ValueError(f"{num_threads} threads requested; this process may use CPUs {allowed}")
  os.sched_setaffinity(0, allowed[:num_threads])
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(num_threads)
  return num_threads


def thread_counts(prefixes: tuple[str, ...]) -> dict[str, int]:
  """How many threads of this process have a name starting with each prefix (Linux only), e.g.
  XLA:CPU's Eigen pool ("tf_XLAEigen")."""
  names = [(p / "comm").read_text().strip() for p in pathlib.Path("/proc/self/task").iterdir()]
  return {prefix: sum(n.startswith(prefix) for n in names) for prefix in prefixes}


def cpu_model() -> str:
  for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
    if line.startswith("model name"):
      return line.split(":", 1)[1].strip()
  return "unknown"


def setup_fields(threads: int, peer_package: str) -> dict[str, Any]:
  """What every benchmark's result line records of its setup: thread counts as each side sees
  them (torch's, and XLA:CPU's Eigen pool read back from the process), the CPU and versions.

  Call it after both sides have run (XLA starts its pool on first use)."""
  import importlib

  import jax
  import torch

  return {
      "threads": threads,
      "torch_threads": torch.get_num_threads(),
      "xla_eigen_threads": thread_counts(("tf_XLAEigen",))["tf_XLAEigen"],
      "cpu": cpu_model(),
      "versions": {"jax": jax.__version__, "torch": torch.__version__,
                   peer_package: importlib.import_module(peer_package).__version__},
  }


def time_interleaved(runs: Mapping[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
  """Wall seconds of `repeats` calls of each run, taken in turns (a, b, a, b, ...) so that load
  from other processes on a shared machine falls on every contender alike."""
  times: dict[str, list[float]] = {name: [] for name in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  return times


def time_interleaved_steps(steps: Mapping[str, Sequence[Callable[[], Any]]],
                           repeats: int) -> dict[str, list[float]]:
  """Like `time_interleaved`, but each run is a sequence of steps (e.g. batches) and the
  contenders take turns step by step (a0, b0, a1, b1, ...): on a machine shared with other jobs
  whose load changes within a run, both sides see the same load. Returns, per contender, the
  wall seconds of each whole run (the sum of its steps)."""
  times: dict[str, list[float]] = {name: [] for name in steps}
  for _ in range(repeats):
    totals = dict.fromkeys(steps, 0.0)
    for i in range(max(len(s) for s in steps.values())):
      for name, sequence in steps.items():
        if i < len(sequence):
          start = time.perf_counter()
          sequence[i]()
          totals[name] += time.perf_counter() - start
    for name, total in totals.items():
      times[name].append(total)
  return times


def median(values: list[float]) -> float:
  return statistics.median(values)


def print_result(result: Mapping[str, Any]) -> None:
  """Prints the result as the last line of output: one JSON object."""
  print(json.dumps(result, sort_keys=True), flush=True)
