"""Full-size decoder presets, checked without memory (`nnx.eval_shape`).

Parameter counts are checked against the public counts of the base causal LMs (a reward model
drops an untied LM head and adds a [D, 1] score head), against transformers' own
`*ForSequenceClassification` built on the meta device, and presets against `from_hf_config` of
the base model's config.json, both as published and as transformers writes it back (the format a
fine-tuned reward model's checkpoint carries). Every preset of `presets.PRESETS` is checked: the
parameterization runs over the library's table, so a preset without a published config fails.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from erpjax import sharding
from erpjax.models import _hf, decoder, presets

# config.json of each base model as published (keys that matter), legacy (transformers 4) format.
_LLAMA3_ROPE = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192, "rope_type": "llama3"}
HUB_CONFIGS = {
    "llama-3.1-8b": dict(
        model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5,
        rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE, max_position_embeddings=131072,
        hidden_act="silu", attention_bias=False, mlp_bias=False, tie_word_embeddings=False),
    "llama-3.2-1b": dict(
        model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192,
        num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
        rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling={**_LLAMA3_ROPE, "factor": 32.0},
        max_position_embeddings=131072, hidden_act="silu", tie_word_embeddings=True),
    "mistral-7b": dict(
        model_type="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5,
        rope_theta=10000.0, sliding_window=4096, max_position_embeddings=32768,
        hidden_act="silu", tie_word_embeddings=False),
    "qwen2.5-7b": dict(
        model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
        num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6,
        rope_theta=1000000.0, use_sliding_window=False, sliding_window=131072,
        max_window_layers=28, max_position_embeddings=131072, hidden_act="silu",
        tie_word_embeddings=False),
    "qwen3-8b": dict(
        model_type="qwen3", vocab_size=151936, hidden_size=4096, intermediate_size=12288,
        num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        rms_norm_eps=1e-6, rope_theta=1000000.0, use_sliding_window=False,
        sliding_window=None, max_window_layers=36, max_position_embeddings=40960,
        attention_bias=False, hidden_act="silu", tie_word_embeddings=False),
    "gemma-2b": dict(
        model_type="gemma", vocab_size=256000, hidden_size=2048, intermediate_size=16384,
        num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1, head_dim=256,
        rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="gelu", pad_token_id=0,
        max_position_embeddings=8192),
    "gemma-2-2b": dict(
        model_type="gemma2", vocab_size=256000, hidden_size=2304, intermediate_size=9216,
        num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
        rms_norm_eps=1e-6, rope_theta=10000.0, hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=256, sliding_window=4096, attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0, pad_token_id=0, max_position_embeddings=8192),
    "internlm2-7b-like": dict(
        model_type="llama", vocab_size=92544, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5,
        rope_theta=1000000.0, hidden_act="silu", tie_word_embeddings=False),
}
# Published parameter counts of the base causal LMs (model cards / safetensors metadata).
CAUSAL_LM_PARAMS = {
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.2-1b": 1_235_814_400,
    "mistral-7b": 7_241_732_096,
    "qwen2.5-7b": 7_615_616_512,
    "qwen3-8b": 8_190_735_360,
    "gemma-2b": 2_506_172_416,
    "gemma-2-2b": 2_614_341_888,
    "internlm2-7b-like": 7_737_708_544,  # InternLM2-7B, output layer untied
}
FULL_SIZE = sorted(n for n in presets.PRESETS if not n.startswith("tiny"))


def _reward_config(name):
  return {**HUB_CONFIGS[name], "id2label": {"0": "LABEL_0"}}


def _abstract(config):
  return nnx.eval_shape(lambda: decoder.DecoderRewardModel(config, rngs=nnx.Rngs(0)))


def _num_params(model) -> int:
  return sum(math.prod(v.get_value().shape)
             for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("name", FULL_SIZE)
def test_preset_is_the_hub_config(name, tmp_path):
  preset = presets.get_preset(name)
  assert decoder.DecoderConfig.from_hf_config(_reward_config(name)) == preset
  # The same config as transformers normalizes and saves it (e.g. rope_scaling becomes
  # rope_parameters): what a checkpoint fine-tuned today carries, read as loading reads it.
  transformers = pytest.importorskip("transformers")
  transformers.AutoConfig.for_model(**_reward_config(name)).save_pretrained(tmp_path)
  assert decoder.DecoderConfig.from_hf_config(_hf.read_config(tmp_path)) == preset


@pytest.mark.parametrize("name", FULL_SIZE)
def test_parameter_count_matches_published_figure(name):
  config = presets.get_preset(name)
  lm_head = 0 if HUB_CONFIGS[name].get("tie_word_embeddings", True) else (
      config.vocab_size * config.embed_dim)
  expected = CAUSAL_LM_PARAMS[name] - lm_head + config.embed_dim * config.num_labels
  assert _num_params(_abstract(config)) == expected


def test_parameter_count_matches_transformers_meta_model():
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  for name in FULL_SIZE:
    hub = _reward_config(name)
    hf_config = transformers.AutoConfig.for_model(**hub)
    with torch.device("meta"):
      model = transformers.AutoModelForSequenceClassification.from_config(hf_config)
    expected = sum(p.numel() for p in model.parameters())
    assert _num_params(_abstract(presets.get_preset(name))) == expected, name


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_parameters_carry_known_logical_axes(name):
  rules = dict(sharding.SCORING_RULES)
  specs = nnx.get_partition_spec(nnx.state(_abstract(presets.get_preset(name)), nnx.Param))
  flat = dict(nnx.to_flat_state(nnx.state(_abstract(presets.get_preset(name)), nnx.Param)))
  for path, spec in nnx.to_flat_state(specs):
    names = tuple(spec.get_value())
    assert len(names) == flat[path].get_value().ndim, path
    assert all(n in rules for n in names), (path, names)
    if path[0] == "layers":
      assert names[0] == sharding.LAYERS, path


def test_bfloat16_preset_halves_the_bytes():
  model = nnx.eval_shape(lambda: decoder.DecoderRewardModel(
      presets.LLAMA_3_1_8B, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
  dtypes = {v.get_value().dtype for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  # The [D, 1] score head stays float32; everything else is bf16.
  assert dtypes == {jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)}
  assert model.score.kernel.get_value().dtype == jnp.float32


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma2"])
def test_tiny_presets_run(name):
  # Random weights drawn with numpy into the abstract model: XLA's compile of threefry init
  # takes seconds on CPU, which tests need not pay.
  graphdef, state = nnx.split(_abstract(presets.get_preset(name)))
  rng = np.random.default_rng(0)
  model = nnx.merge(graphdef, jax.tree.map(
      lambda x: jnp.asarray(rng.normal(0.0, 0.2, x.shape), x.dtype), state))
  segment_ids = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 0], [0, 0, 1, 1, 1, 1, 1, 1]], jnp.int32)
  tokens = jnp.where(segment_ids > 0, 5 + jnp.arange(8), 0)
  out = nnx.jit(lambda m: m(tokens, segment_ids, decoder.positions_from_segments(segment_ids),
                            decoder.last_token_index(segment_ids, 2)))(model)
  assert out.shape == (2, 2, 1) and out.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(out)))


def test_unknown_preset_names_the_known_ones():
  with pytest.raises(KeyError, match="llama-3.1-8b"):
    presets.get_preset("llama-9")


def test_tiny_gemma2_sharded_over_a_mesh_matches_one_device():
  """Parameters placed by their logical axes on a (data=4, model=2) mesh give the same scores."""
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 (emulated) devices; tests/conftest.py sets them up")
  graphdef, state = nnx.split(_abstract(presets.TINY_GEMMA2))
  rng = np.random.default_rng(1)
  state = jax.tree.map(lambda x: jnp.asarray(rng.normal(0.0, 0.2, x.shape), x.dtype), state)
  segment_ids = jnp.asarray(np.tile([[1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0]], (8, 1)), jnp.int32)
  tokens = jnp.asarray(rng.integers(1, 128, segment_ids.shape), jnp.int32)
  batch = (tokens, segment_ids, decoder.positions_from_segments(segment_ids),
           decoder.last_token_index(segment_ids, 2))

  def forward(state, *batch):
    return nnx.merge(graphdef, state)(*batch)

  expected = jax.jit(forward)(state, *batch)

  mesh = sharding.make_mesh(model_parallel=2)
  specs = nnx.get_partition_spec(state)
  state_shardings = jax.tree.map(lambda spec: sharding.named_sharding(mesh, tuple(spec)), specs,
                                 is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  sharded_state = jax.device_put(state, state_shardings)
  assert sharded_state["layers"]["attn"]["q"]["kernel"].get_value().sharding.spec[2] == "model"
  batch_sharding = sharding.named_sharding(mesh, (sharding.BATCH, sharding.LENGTH))
  got = jax.jit(forward)(sharded_state, *jax.device_put(batch, batch_sharding))
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5, rtol=0)
