"""Multi-process runs: `initialize` from flags/environment, ownership of items by stable id, and
two real CPU processes on localhost (JAX's gloo collectives) that psum across each other and fit
ridge heads from their own shares of the rows, equal to one process's fit."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _processes import finish, free_port

from erpjax.routing._ridge import fit_ridge_heads
from erpjax.runtime import distributed


def test_owner_is_a_stable_hash_of_the_id():
  # Pinned values: a change of hash would reassign finished items after an upgrade.
  assert [distributed.owner(f"item-{i}", 7) for i in range(8)] == [4, 3, 4, 6, 3, 1, 3, 6]
  assert distributed.owners(["a", "b", "c", "d"], 1000).tolist() == [928, 668, 95, 725]
  assert distributed.owner("", 1) == 0


@pytest.mark.parametrize("num_processes", [1, 2, 3, 5])
def test_shares_partition_the_items(num_processes):
  ids = [f"prompt-{i}" for i in range(1000)]
  shares = [distributed.my_share(ids, p, num_processes) for p in range(num_processes)]
  assert sorted(i for share in shares for i in share) == list(range(1000))
  assert min(len(s) for s in shares) > 1000 / num_processes * 0.8  # Roughly balanced.


def test_a_restart_with_another_process_count_does_every_item_exactly_once():
  ids = [f"prompt-{i}" for i in range(500)]
  # A 2-process run: process 0 finished its share, process 1 was killed half way.
  share0, share1 = (distributed.my_share(ids, p, 2) for p in range(2))
  finished = [ids[i] for i in share0] + [ids[i] for i in share1[:len(share1) // 2]]
  # Restarted with 3 processes: each skips what any process of the earlier run finished.
  done = set(finished)
  redone = [ids[i] for p in range(3) for i in distributed.my_share(ids, p, 3)
            if ids[i] not in done]
  assert sorted(finished + redone) == sorted(ids)


def test_initialize_is_a_no_op_for_one_process_and_refuses_half_a_setting():
  assert distributed.initialize(env={}) == distributed.ProcessInfo(0, 1, "single")
  assert distributed.initialize(env={"ERPJAX_NUM_PROCESSES": "1"}).num_processes == 1
  with pytest.raises(ValueError, match="needs all of coordinator"):
    distributed.initialize(env={"ERPJAX_NUM_PROCESSES": "2", "ERPJAX_PROCESS_ID": "0"})
  with pytest.raises(ValueError, match="process_id 2 outside 0..1"):
    distributed.initialize("localhost:1", 2, 2, env={})


@pytest.mark.parametrize("env, launcher", [
    ({}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, "slurm"),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "openmpi"),
    ({"TPU_WORKER_HOSTNAMES": "t1v-0"}, None),
    ({"TPU_WORKER_HOSTNAMES": "t1v-0,t1v-1"}, "tpu"),
    ({"ERPJAX_DISTRIBUTED": "auto"}, "requested"),
])
def test_launchers_that_jax_detects(env, launcher):
  assert distributed._launcher(env) == launcher


_WORKER = textwrap.dedent("""
    import json, pathlib, sys
    import numpy as np
    from erpjax.runtime import distributed
    info = distributed.initialize(timeout_s=60)  # From ERPJAX_* variables, before any JAX work.
    assert distributed.initialize().how == "already"  # A second call changes nothing.
    import jax, jax.numpy as jnp
    from erpjax import sharding
    from erpjax.routing._ridge_stats import fit_ridge_streamed

    mesh = sharding.make_mesh(1)  # All 4 devices of both processes on "data".
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    local = np.arange(2, dtype=np.float32) + 10 * info.process_id  # 2 local devices, 1 row each
    total = jax.jit(jnp.sum, out_shardings=jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))(jax.make_array_from_process_local_data(rows, local))

    data = np.load(sys.argv[1])
    x, y, ids = data["x"], data["y"], [str(i) for i in data["ids"]]
    mine = distributed.my_share(ids)
    # Shares differ in size, so the processes' chunk counts differ.
    chunks = [(x[mine[i:i + 50]], y[mine[i:i + 50]]) for i in range(0, len(mine), 50)]
    fit = fit_ridge_streamed(chunks, x.shape[1], y.shape[1], betas=[2.0], mesh=mesh,
                             rows_per_device=16)
    (pathlib.Path(sys.argv[2]) / f"part-{info.process_id}").write_text("done")
    distributed.barrier("parts written")
    # After the barrier every process's part exists: process 0 could write a manifest now.
    parts = sorted(p.name for p in pathlib.Path(sys.argv[2]).glob("part-*"))
    print(json.dumps(dict(info=[info.process_id, info.num_processes, info.how],
                          devices=len(jax.devices()), local_devices=len(jax.local_devices()),
                          psum=float(total.addressable_data(0)), rows=len(mine),
                          chunks=len(chunks), parts=parts, weights=fit.weights.tolist(),
                          bias=fit.bias.tolist())))
""")


def test_two_processes_psum_and_fit_ridge_heads_like_one(tmp_path):
  rng = np.random.default_rng(0)
  x = (2.0 + rng.normal(size=(600, 8))).astype(np.float32)
  y = (x @ rng.normal(size=(8, 3)) + rng.normal(scale=0.3, size=(600, 3))).astype(np.float32)
  y[rng.random(600) < 0.3, 2] = np.nan  # A head with its own prompts: groups split across both.
  np.savez(tmp_path / "data.npz", x=x, y=y, ids=np.array([f"prompt-{i}" for i in range(600)]))
  (tmp_path / "worker.py").write_text(_WORKER)
  port = free_port()
  procs = []
  for p in range(2):
    env = dict(os.environ, ERPJAX_COORDINATOR=f"localhost:{port}", ERPJAX_NUM_PROCESSES="2",
               ERPJAX_PROCESS_ID=str(p),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs.append(subprocess.Popen([sys.executable, str(tmp_path / "worker.py"),
                                   str(tmp_path / "data.npz"), str(tmp_path)], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  outputs = finish(procs, timeout=120)
  for p, out in enumerate(outputs):
    assert out["info"] == [p, 2, "explicit"]
    assert (out["devices"], out["local_devices"]) == (4, 2)
    assert out["psum"] == 0 + 1 + 10 + 11
    assert out["parts"] == ["part-0", "part-1"]
  assert outputs[0]["rows"] + outputs[1]["rows"] == 600
  assert outputs[0]["chunks"] != outputs[1]["chunks"]
  # Both processes hold the same fit, and it is the fit of all rows in one process.
  assert outputs[0]["weights"] == outputs[1]["weights"] and outputs[0]["bias"] == outputs[1]["bias"]
  weights, bias, _ = fit_ridge_heads(x, y, beta=2.0)
  np.testing.assert_allclose(np.array(outputs[0]["weights"]), weights, atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.array(outputs[0]["bias"]), bias, atol=1e-5, rtol=0)
