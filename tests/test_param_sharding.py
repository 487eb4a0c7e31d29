"""Parameter rule tables on 8 emulated devices: per-device bytes of a 7B-shaped Llama (abstract,
no memory) and scores of a small random Llama under every table equal to one device's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from erpjax import sharding
from erpjax.models import decoder

# Llama-2-7B's shapes with 2 of its 32 layers: per-layer and embedding shapes are what matter.
LLAMA_7B_SHAPED = decoder.DecoderConfig(
    vocab_size=32000, embed_dim=4096, mlp_dim=11008, num_layers=2, num_heads=32, num_kv_heads=32,
    head_dim=128, norm_eps=1e-5)
# Small, with every sharded dim divisible by 8 so no table falls back to replication.
SMALL_LLAMA = decoder.DecoderConfig(
    vocab_size=256, embed_dim=64, mlp_dim=128, num_layers=2, num_heads=8, num_kv_heads=4,
    head_dim=8, norm_eps=1e-5, pad_token_id=0)

MESHES = {"8x1": 1, "4x2": 2}


def _needs_8_devices():
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 (emulated) devices; tests/conftest.py sets them up")


def _abstract_params(config, dtype=jnp.float32):
  model = nnx.eval_shape(lambda: decoder.DecoderRewardModel(config, dtype=dtype,
                                                            rngs=nnx.Rngs(0)))
  return nnx.state(model, nnx.Param)


@pytest.mark.parametrize("mesh_name", sorted(MESHES))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fsdp_puts_an_eighth_of_a_7b_shaped_model_on_each_device(mesh_name, dtype):
  _needs_8_devices()
  mesh = sharding.make_mesh(MESHES[mesh_name])
  plan = sharding.plan_memory(_abstract_params(LLAMA_7B_SHAPED, dtype), mesh, sharding.FSDP_RULES)
  assert plan.num_devices == 8
  assert plan.total_bytes > 1.5e9 * jnp.dtype(dtype).itemsize / 4  # ~0.5 G parameters.
  assert plan.device_bytes == pytest.approx(plan.total_bytes / 8, rel=0.05)
  sharding.check_sufficiently_sharded(plan)
  # The big matrices are split over both mesh axes (on 8x1, "model" has size 1).
  by_path = {p.path: p for p in plan.params}
  assert by_path["layers/mlp/up/kernel"].spec == jax.sharding.PartitionSpec(
      None, "data", "model")
  assert by_path["embedder/embedding"].device_bytes * 8 == by_path["embedder/embedding"].nbytes


@pytest.mark.parametrize("rules_name", ["replicated", "tp"])
def test_a_table_that_leaves_large_parameters_replicated_is_refused(rules_name):
  _needs_8_devices()
  plan = sharding.plan_memory(_abstract_params(LLAMA_7B_SHAPED), sharding.make_mesh(2),
                              sharding.RULE_TABLES[rules_name])
  expected = 8 if rules_name == "replicated" else 4
  assert plan.device_bytes * 8 / plan.total_bytes == pytest.approx(expected, rel=1e-3)
  with pytest.raises(ValueError, match="not sufficiently sharded") as error:
    sharding.check_sufficiently_sharded(plan)
  # Each offending parameter is named with its per-device bytes; the largest comes first.
  lines = str(error.value).splitlines()
  assert lines[1].startswith("  embedder/embedding (32000, 4096) float32")
  assert "GiB per device of 0.488 GiB" in lines[1]
  assert any(line.startswith("  layers/mlp/down/kernel") for line in lines)


def test_memory_plan_summary_names_the_largest_replicated_tensors():
  _needs_8_devices()
  params = _abstract_params(LLAMA_7B_SHAPED)
  replicated = sharding.plan_memory(params, sharding.make_mesh(1), sharding.REPLICATED_RULES)
  text = replicated.summary(k=2)
  assert text.splitlines()[0] == ("parameters: 12 arrays, 1.996 GiB in all; 1.996 GiB on each of "
                                  "8 devices (ideal 0.250 GiB)")
  assert text.splitlines()[1:] == [
      "  replicated: embedder/embedding (32000, 4096) float32 0.488 GiB",
      "  replicated: layers/mlp/down/kernel (2, 11008, 4096) float32 0.336 GiB"]
  fsdp = sharding.plan_memory(params, sharding.make_mesh(1), sharding.FSDP_RULES)
  assert fsdp.largest_replicated() == [] and len(fsdp.summary().splitlines()) == 1


def test_scores_under_every_table_equal_one_devices():
  _needs_8_devices()
  graphdef, state = nnx.split(nnx.eval_shape(
      lambda: decoder.DecoderRewardModel(SMALL_LLAMA, rngs=nnx.Rngs(0))))
  # Random weights drawn with numpy: XLA's compile of threefry init takes seconds on CPU.
  rng = np.random.default_rng(0)
  state = jax.tree.map(lambda x: jnp.asarray(rng.normal(0.0, 0.2, x.shape), x.dtype), state)
  segment_ids = np.tile([[1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0], [1] * 9 + [0] * 3], (4, 1))
  segment_ids = jnp.asarray(segment_ids, jnp.int32)
  tokens = jnp.asarray(rng.integers(1, SMALL_LLAMA.vocab_size, segment_ids.shape), jnp.int32)
  batch = (tokens, segment_ids, decoder.positions_from_segments(segment_ids),
           decoder.last_token_index(segment_ids, 2))

  def forward(state, *batch):
    return nnx.merge(graphdef, state)(*batch)

  one_device = jax.devices()[0]
  expected = np.asarray(jax.jit(forward)(jax.device_put(state, one_device),
                                         *jax.device_put(batch, one_device)))
  # FSDP, FSDP x TP, and TP alone (the scoring default). Each is one compile: a few seconds.
  for rules_name, mesh_name in [("fsdp", "8x1"), ("fsdp", "4x2"), ("tp", "4x2")]:
    mesh = sharding.make_mesh(MESHES[mesh_name])
    rules = sharding.RULE_TABLES[rules_name]
    placed = jax.device_put(state, sharding.param_shardings(state, mesh, rules))
    plan = sharding.plan_memory(placed, mesh, rules)
    kernel = placed["layers"]["attn"]["q"]["kernel"].get_value()
    if rules_name == "fsdp":
      assert plan.device_bytes == pytest.approx(plan.total_bytes / 8, rel=0.05)
      assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "data", "model", None)
      assert kernel.addressable_shards[0].data.nbytes * 8 == kernel.nbytes
    else:
      assert kernel.addressable_shards[0].data.nbytes * 2 == kernel.nbytes
    sharded_batch = jax.device_put(
        batch, sharding.named_sharding(mesh, (sharding.BATCH, sharding.LENGTH)))
    with jax.set_mesh(mesh):
      got = jax.jit(forward)(placed, *sharded_batch)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=0,
                               err_msg=f"{rules_name} on {mesh_name}")
