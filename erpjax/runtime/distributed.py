"""Multi-process runs: starting JAX's distributed system, and which process owns which item.

`initialize` must run before any JAX computation. It starts `jax.distributed.initialize` when

  - a coordinator / process count / process id is given, as arguments or as the environment
    variables ERPJAX_COORDINATOR ("host:port" of process 0), ERPJAX_NUM_PROCESSES and
    ERPJAX_PROCESS_ID (arguments win); or
  - ERPJAX_DISTRIBUTED=auto, or a launcher that JAX detects by itself started several processes:
    a Slurm step of several tasks (SLURM_NTASKS > 1), Open MPI's mpirun (OMPI_COMM_WORLD_SIZE > 1)
    or a multi-host TPU slice on GKE (TPU_WORKER_HOSTNAMES lists several hosts). Then JAX finds the
    coordinator, count and id itself (`jax.distributed.initialize()` without arguments). A
    multi-host TPU VM slice (queued resources, `gcloud ... ssh --worker=all`) shows nothing in the
    environment before JAX asks the metadata server, so it needs ERPJAX_DISTRIBUTED=auto;

and does nothing for a single process, so the same command runs on a laptop and on a pod.

Work is split by stable item id, not by position: `owner(id, n)` is a hash of the id modulo the
process count, so the split depends only on the ids and n. After a restart with another process
count, every process reads which items are finished from all processes' earlier output (not only
its own), takes its new share and skips the finished ones: every item is done exactly once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

ENV_COORDINATOR = "ERPJAX_COORDINATOR"
ENV_NUM_PROCESSES = "ERPJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "ERPJAX_PROCESS_ID"
ENV_DISTRIBUTED = "ERPJAX_DISTRIBUTED"


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
  """This process's place in the run: `process_id` of `num_processes`, and how it got there."""

  process_id: int
  num_processes: int
  how: str  # "single", "explicit", "auto:<launcher>" or "already" (started before this call)


def _launcher(env: Mapping[str, str]) -> str | None:
  """The multi-process launcher JAX's own cluster detection will recognise, if any."""
  if env.get(ENV_DISTRIBUTED) == "auto":
    return "requested"
  if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env:
    return "slurm"
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "openmpi"
  if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
    return "tpu"
  return None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: int = 300,
               env: Mapping[str, str] | None = None) -> ProcessInfo:
  """Starts JAX's distributed system when the arguments or the environment ask for it.

  Args:
    coordinator: "host:port" of process 0's coordinator service (default: $ERPJAX_COORDINATOR).
    num_processes: processes in the run (default: $ERPJAX_NUM_PROCESSES).
    process_id: this process's index, 0 .. num_processes-1 (default: $ERPJAX_PROCESS_ID).
    timeout_s: how long to wait for every process to join.
    env: the environment to read (default: os.environ).

  Returns:
    this process's id and the process count (0 of 1 when nothing was started).

  Raises:
    ValueError: an explicit setting that is incomplete or inconsistent.
  """
  if jax.distributed.is_initialized():  # A second call (e.g. the CLI's, then a library's).
    return ProcessInfo(jax.process_index(), jax.process_count(), "already")
  env = os.environ if env is None else env
  coordinator = coordinator or env.get(ENV_COORDINATOR)
  if num_processes is None and env.get(ENV_NUM_PROCESSES):
    num_processes = int(env[ENV_NUM_PROCESSES])
  if process_id is None and env.get(ENV_PROCESS_ID):
    process_id = int(env[ENV_PROCESS_ID])
  explicit = (coordinator, num_processes, process_id)
  if any(v is not None for v in explicit):
    if num_processes == 1 and coordinator is None:
      return ProcessInfo(0, 1, "single")
    if any(v is None for v in explicit):
      raise ValueError(f"a multi-process run needs all of coordinator ({ENV_COORDINATOR}), "
                       f"num_processes ({ENV_NUM_PROCESSES}) and process_id ({ENV_PROCESS_ID}); "
                       f"got {coordinator!r}, {num_processes!r}, {process_id!r}")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"process_id {process_id} outside 0..{num_processes - 1}")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=timeout_s)
    return ProcessInfo(jax.process_index(), jax.process_count(), "explicit")
  launcher = _launcher(env)
  if launcher is None:
    return ProcessInfo(0, 1, "single")
  jax.distributed.initialize(initialization_timeout=timeout_s)
  return ProcessInfo(jax.process_index(), jax.process_count(), f"auto:{launcher}")


def owner(item_id: str, num_processes: int) -> int:
  """The process that handles `item_id` in a run of `num_processes`: a hash of the id (stable
  across runs, machines and Python versions, unlike `hash`) modulo the count."""
  digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest()
  return int.from_bytes(digest, "little") % num_processes


def owners(item_ids: Sequence[str], num_processes: int) -> np.ndarray:
  """int64[N]: `owner` of each id."""
  return np.fromiter((owner(i, num_processes) for i in item_ids), np.int64, len(item_ids))


def my_share(item_ids: Iterable[str], process_id: int | None = None,
             num_processes: int | None = None) -> list[int]:
  """Indices of the ids this process owns (default: this JAX process of the run)."""
  process_id = jax.process_index() if process_id is None else process_id
  num_processes = jax.process_count() if num_processes is None else num_processes
  return [i for i, item_id in enumerate(item_ids) if owner(item_id, num_processes) == process_id]


def allgather(local: np.ndarray) -> np.ndarray:
  """[P, ...]: `local` of every process of the run (no communication for one process)."""
  if jax.process_count() == 1:
    return local[None]
  return np.asarray(multihost_utils.process_allgather(local))


def barrier(name: str) -> None:
  """Waits until every process of the run reaches the barrier `name` (no-op for one process),
  e.g. before process 0 writes a manifest of every process's shards."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
