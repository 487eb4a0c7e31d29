"""The MLP training loop is data parallel: rows split over the 8 emulated devices' "data" axis
(padded with weight 0 when they do not divide), parameters replicated, and the fit equals the
1-device fit up to float summation order; so does a fit by 2 CPU processes on localhost, each
passing only its own rows."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from _processes import finish, free_port
from flax import nnx
from jax.sharding import PartitionSpec

from erpjax import sharding
from erpjax.eval import trained_peers
from erpjax.routing import MLPPredictor, _mlp

N, D, M = 203, 12, 5  # 203 rows over 8 devices: 26 per device, 5 rows of padding.

LOSSES = {"mse": _mlp.masked_mse, "soft_ce": trained_peers._soft_cross_entropy,
          "bce": trained_peers._bce}


def _data(loss: str):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, D)).astype(np.float32)
  y = x @ rng.normal(size=(D, M)).astype(np.float32)
  if loss == "mse":
    y[rng.random((N, M)) < 0.2] = np.nan  # Unobserved cells, as the router's targets have.
  else:
    y = 1 / (1 + np.exp(-y))  # Probabilities for bce; rows normalised for the soft labels.
    y = y / y.sum(1, keepdims=True) if loss == "soft_ce" else y
  return x, y.astype(np.float32)


def _train(loss: str, mesh):
  x, y = _data(loss)
  model = _mlp.MLP(D, 16, M, rngs=nnx.Rngs(0))
  return _mlp.train_full_batch(model, LOSSES[loss], x, y, _mlp.TrainConfig(steps=40), mesh=mesh)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_padding_rows_of_weight_zero_leave_the_loss_as_it_is(loss):
  x, y = _data(loss)
  pred = x @ np.random.default_rng(1).normal(size=(D, M)).astype(np.float32)
  pad = 11
  # Padding targets are zeros, as train_full_batch pads; NaN would poison 0 * NaN.
  padded = [np.concatenate([a, np.zeros((pad, a.shape[1]), np.float32)]) for a in (pred, y)]
  weight = np.concatenate([np.ones(N), np.zeros(pad)]).astype(np.float32)
  np.testing.assert_allclose(LOSSES[loss](*padded, weight),
                             LOSSES[loss](pred, y, np.ones(N, np.float32)), rtol=1e-6)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_eight_devices_fit_like_one(loss, monkeypatch):
  assert len(jax.devices()) == 8  # conftest's emulated devices
  seen = {}
  run = _mlp._run_adamw

  def spy(params, x, target, weight, **kw):
    seen.update(params=params, x=x, target=target, weight=weight)
    return run(params, x, target, weight, **kw)

  monkeypatch.setattr(_mlp, "_run_adamw", spy)
  model8, losses8 = _train(loss, sharding.make_mesh(1))  # All 8 devices on "data".
  # The rows really are split: 26 per device (203 padded to 208), the parameters whole on each.
  for name in ("x", "target", "weight"):
    array = seen[name]
    assert array.sharding.spec == PartitionSpec(sharding.DATA), name
    assert array.shape[0] == 208
    assert sorted(s.device.id for s in array.addressable_shards) == list(range(8))
    assert {s.data.shape[0] for s in array.addressable_shards} == {26}
  assert float(seen["weight"].sum()) == N
  assert all(p.sharding.is_fully_replicated and len(p.sharding.device_set) == 8
             for p in jax.tree.leaves(seen["params"]))

  model1, losses1 = _train(loss, sharding.make_mesh(1, jax.devices()[:1]))
  assert seen["x"].shape[0] == N and len(seen["x"].sharding.device_set) == 1  # No padding.
  assert losses8.shape == (40,) and losses8[-1] < 0.9 * losses8[0]  # It did train.
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  for p8, p1 in zip(jax.tree.leaves(nnx.state(model8)), jax.tree.leaves(nnx.state(model1))):
    np.testing.assert_allclose(p8, p1, rtol=1e-5, atol=1e-6)


def test_the_predictor_trains_on_all_devices_by_default(monkeypatch):
  devices = []
  run = _mlp._run_adamw
  monkeypatch.setattr(_mlp, "_run_adamw", lambda params, x, *args, **kw: (
      devices.append(len(x.sharding.device_set)), run(params, x, *args, **kw))[1])
  x, y = _data("mse")
  predictor = MLPPredictor(hidden=16, steps=40)
  state, losses = predictor.train(x, y)
  state1, losses1 = predictor.train(x, y, mesh=sharding.make_mesh(1, jax.devices()[:1]))
  np.testing.assert_allclose(losses, losses1, rtol=1e-5)
  for name in state:
    np.testing.assert_allclose(state[name], state1[name], rtol=1e-5, atol=1e-6)
  assert devices == [8, 1]


_WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from erpjax.runtime import distributed
    info = distributed.initialize(timeout_s=60)  # From ERPJAX_* variables, before any JAX work.
    import jax
    from flax import nnx
    from erpjax.routing import _mlp

    data = np.load(sys.argv[1])
    mine = distributed.my_share([str(i) for i in data["ids"]])  # Shares differ in size.
    init = _mlp.MLP(data["x"].shape[1], 16, data["y"].shape[1], rngs=nnx.Rngs(0))
    model, losses = _mlp.train_full_batch(init, _mlp.masked_mse, data["x"][mine],
                                          data["y"][mine], _mlp.TrainConfig(steps=40))
    # Every process passing all rows (as the in-memory pipeline does) counts each row twice,
    # which leaves the mean loss as it is.
    _, all_losses = _mlp.train_full_batch(init, _mlp.masked_mse, data["x"], data["y"],
                                          _mlp.TrainConfig(steps=40))
    print(json.dumps(dict(rows=len(mine), losses=losses.tolist(), all_losses=all_losses.tolist(),
                          params=[np.asarray(p).tolist() for p in jax.tree.leaves(
                              nnx.state(model))])))
""")


def test_two_processes_each_passing_its_rows_fit_like_one(tmp_path):
  x, y = _data("mse")
  np.savez(tmp_path / "data.npz", x=x, y=y, ids=np.array([f"prompt-{i}" for i in range(N)]))
  (tmp_path / "worker.py").write_text(_WORKER)
  port = free_port()
  procs = []
  for p in range(2):
    env = dict(os.environ, ERPJAX_COORDINATOR=f"localhost:{port}", ERPJAX_NUM_PROCESSES="2",
               ERPJAX_PROCESS_ID=str(p), XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs.append(subprocess.Popen([sys.executable, str(tmp_path / "worker.py"),
                                   str(tmp_path / "data.npz")], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  outputs = finish(procs, timeout=120)
  rows = [out["rows"] for out in outputs]
  assert sum(rows) == N and rows[0] != rows[1]  # Unequal shares: both processes pad.
  assert outputs[0]["losses"] == outputs[1]["losses"]
  assert outputs[0]["params"] == outputs[1]["params"]
  model, losses = _train("mse", None)  # This process, all rows, 8 devices.
  np.testing.assert_allclose(outputs[0]["losses"], losses, rtol=1e-5)
  np.testing.assert_allclose(outputs[0]["all_losses"], losses, rtol=1e-5)
  for p2, p1 in zip(outputs[0]["params"], jax.tree.leaves(nnx.state(model))):
    np.testing.assert_allclose(np.array(p2, np.float32), p1, rtol=1e-5, atol=1e-6)
