"""Decoder reward models against transformers' `*ForSequenceClassification`, family by family.

Each family gets a tiny random PyTorch model that exercises its particular features (GQA, biases,
q/k norms, sliding windows shorter than the sequences, soft-capping, head_dim != hidden/heads).
All weights, norms included, are redrawn with a large spread so that wrong key mappings, swapped
norms or a missing feature change the scores by far more than the 1e-4 tolerance.
"""

import functools
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from erpjax.models import decoder, rope
from erpjax.models._registry import load_reward_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
PAD = 0
VOCAB = 128
T = 12
LENGTHS = (12, 7, 3, 10, 5, 6)
# Rows of the packed batch: indices into LENGTHS, packed left to right. As many rows as LENGTHS
# so that every call has one shape [6, T] and compiles once per model.
PACKS = ((0,), (1, 2), (3,), (4, 5), (2, 1), (5, 4))
S = 2

_COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
               num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=PAD,
               max_position_embeddings=64, attn_implementation="eager")
FAMILIES = {
    # Llama 3.x RoPE scaling, with an original length short enough that it changes frequencies;
    # biases everywhere Llama allows them.
    "llama": (transformers.LlamaConfig, transformers.LlamaForSequenceClassification, dict(
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
        rope_theta=500000.0, attention_bias=True, mlp_bias=True)),
    "mistral": (transformers.MistralConfig, transformers.MistralForSequenceClassification,
                dict(sliding_window=4)),
    # Sliding window from layer 1 on: mixed full and sliding layers in one scan.
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForSequenceClassification,
              dict(use_sliding_window=True, sliding_window=5, max_window_layers=1)),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForSequenceClassification,
              dict(head_dim=32)),
    "gemma": (transformers.GemmaConfig, transformers.GemmaForSequenceClassification,
              dict(head_dim=32, num_key_value_heads=1, hidden_act="gelu")),
    # A small attention soft-cap so that tanh bites; a final soft-cap that would change every
    # score if it were (wrongly) applied to the score head.
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForSequenceClassification,
               dict(head_dim=32, sliding_window=4, query_pre_attn_scalar=24,
                    attn_logit_softcapping=3.0, final_logit_softcapping=0.5)),
}


def _randomize(model, seed: int) -> None:
  """Redraws every parameter: matrices ~ N(0, 0.15^2), vectors around their init."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if p.ndim == 2:
        p.copy_(0.15 * noise)
      else:  # norm weights (1 for Llama-style, 0 for Gemma-style) and biases
        p.copy_(p + 0.3 * noise)


@pytest.fixture(scope="module")
def sequences():
  rng = np.random.default_rng(0)
  return [rng.integers(1, VOCAB, n) for n in LENGTHS]  # never the pad id


def _padded(sequences, side: str):
  tokens = np.full((len(sequences), T), PAD, np.int64)
  mask = np.zeros_like(tokens)
  for i, seq in enumerate(sequences):
    sl = slice(0, len(seq)) if side == "right" else slice(T - len(seq), T)
    tokens[i, sl], mask[i, sl] = seq, 1
  return tokens, mask


def _save_family(name: str, folder, num_layers: int = 3, **save_options):
  """A randomized torch model of the family, saved to `folder`; returns (folder, model)."""
  config_cls, model_cls, extra = FAMILIES[name]
  torch.manual_seed(0)
  config = config_cls(**{**_COMMON, **extra, "num_hidden_layers": num_layers})
  model = model_cls(config).eval()
  _randomize(model, seed=1)
  model.save_pretrained(folder, safe_serialization=True, **save_options)
  return folder, model


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory, sequences):
  """(name, checkpoint folder, torch model, reference scores float[len(LENGTHS)], erpjax model)."""
  name = request.param
  folder, model = _save_family(name, tmp_path_factory.mktemp(name))
  tokens, mask = _padded(sequences, "right")
  with torch.no_grad():
    ref = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits
  return name, folder, model, ref.numpy()[:, 0], load_reward_model(folder)


@functools.partial(nnx.jit, static_argnames="num_segments")
def _score(model, tokens_bt, segment_ids_bt, num_segments):
  positions_bt = decoder.positions_from_segments(segment_ids_bt)
  index_bs = decoder.last_token_index(segment_ids_bt, num_segments)
  return model(tokens_bt, segment_ids_bt, positions_bt, index_bs)


def _run(model, tokens, segment_ids) -> np.ndarray:
  """float[B, S]: the scores of every segment slot."""
  out = _score(model, jnp.asarray(tokens, jnp.int32), jnp.asarray(segment_ids, jnp.int32),
               num_segments=S)
  return np.asarray(out)[..., 0]


def test_scores_match_transformers_both_padding_sides(family, sequences):
  name, _, model, ref, jmodel = family
  assert np.std(ref) > 0.3, "scores too uniform for the test to discriminate"
  assert isinstance(jmodel, decoder.DecoderRewardModel)
  for side in ("right", "left"):
    tokens, mask = _padded(sequences, side)
    if side == "left":  # transformers itself agrees across padding sides
      with torch.no_grad():
        ref_left = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask))
      np.testing.assert_allclose(ref_left.logits.numpy()[:, 0], ref, atol=TOL)
    got = _run(jmodel, tokens, mask)[:, 0]
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0, err_msg=f"{name}, {side} padding")


def test_packed_sequences_score_as_alone(family, sequences):
  name, _, _, ref, jmodel = family
  tokens = np.full((len(PACKS), T), PAD, np.int64)
  segment_ids = np.zeros_like(tokens)
  for row, pack in enumerate(PACKS):
    start = 0
    for s, i in enumerate(pack, 1):
      n = len(sequences[i])
      tokens[row, start:start + n], segment_ids[row, start:start + n] = sequences[i], s
      start += n
  got = _run(jmodel, tokens, segment_ids)
  for row, pack in enumerate(PACKS):
    for s, i in enumerate(pack):
      assert abs(got[row, s] - ref[i]) <= TOL, f"{name}: row {row} segment {s + 1}"


@pytest.mark.parametrize("name", ["llama", "gemma2"])
def test_one_layer_model_matches(name, tmp_path, sequences):
  """A single layer is both the first and the last (score-rows-only) layer."""
  folder, model = _save_family(name, tmp_path, num_layers=1)
  tokens, mask = _padded(sequences, "right")
  with torch.no_grad():
    ref = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits
  got = _run(load_reward_model(folder), tokens, mask)[:, 0]
  np.testing.assert_allclose(got, ref.numpy()[:, 0], atol=TOL, rtol=0)


def test_sharded_checkpoint_loads(tmp_path, sequences):
  folder, model = _save_family("qwen2", tmp_path, max_shard_size="40KB")
  assert (folder / "model.safetensors.index.json").is_file()
  assert len(list(folder.glob("model-*-of-*.safetensors"))) > 2
  tokens, mask = _padded(sequences, "right")
  with torch.no_grad():
    ref = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
  got = _run(load_reward_model(folder), tokens, mask)
  np.testing.assert_allclose(got[:, 0], ref[:, 0], atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["llama", "qwen3"])
def test_jax_nn_attention_matches(name, tmp_path, sequences):
  """`jax.nn.dot_product_attention` equals the jnp reference (GQA, q/k norms)."""
  folder, model = _save_family(name, tmp_path)
  tokens, mask = _padded(sequences, "left")
  ref = _run(decoder.load_decoder_reward_model(folder), tokens, mask)[:, 0]
  fused = _run(decoder.load_decoder_reward_model(folder, attention="jax_nn"), tokens, mask)
  np.testing.assert_allclose(fused[:, 0], ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["llama", "qwen3"])
def test_splash_attention_matches(name, tmp_path, sequences):
  """Pallas TPU splash attention (interpreted on CPU) in every layer but the last, whose gathered
  score rows attend densely; left- and right-padded rows."""
  folder, _ = _save_family(name, tmp_path)
  dense = decoder.load_decoder_reward_model(folder)
  splash = decoder.load_decoder_reward_model(folder, attention="splash")
  for side in ("left", "right"):
    tokens, mask = _padded(sequences, side)
    np.testing.assert_allclose(_run(splash, tokens, mask)[:, 0], _run(dense, tokens, mask)[:, 0],
                               atol=TOL, rtol=0, err_msg=side)


def test_jax_nn_attention_refuses_softcap(tmp_path):
  folder, _ = _save_family("gemma2", tmp_path)
  with pytest.raises(ValueError, match="soft-capping"):
    decoder.load_decoder_reward_model(folder, attention="jax_nn")


@pytest.mark.parametrize("name", ["llama", "gemma2"])
def test_bfloat16_close_to_float32(name, tmp_path, sequences):
  folder, _ = _save_family(name, tmp_path)
  tokens, mask = _padded(sequences, "right")
  ref = _run(decoder.load_decoder_reward_model(folder), tokens, mask)[:, 0]
  bf16 = decoder.load_decoder_reward_model(folder, dtype=jnp.bfloat16)
  assert bf16.layers.attn.q.kernel[...].dtype == jnp.bfloat16
  got = _run(bf16, tokens, mask)[:, 0]
  # bf16 keeps ~3 significant digits per op; over 3 layers errors stay well under 10% of spread.
  assert np.max(np.abs(got - ref)) < 0.1 * np.std(ref), (got, ref)


def test_config_from_hf_matches_transformers_layer_types():
  for name in ("mistral", "qwen2", "gemma2"):
    config_cls, _, extra = FAMILIES[name]
    hf = config_cls(**{**_COMMON, **extra})
    ours = decoder.DecoderConfig.from_hf_config(hf.to_dict())
    sliding = tuple(i for i, t in enumerate(getattr(hf, "layer_types", None)
                                             or ["sliding_attention"] * hf.num_hidden_layers)
                    if t == "sliding_attention")
    assert ours.sliding_layers == sliding, name
    assert ours.sliding_window == hf.sliding_window, name


def test_legacy_llama31_config_json():
  """A transformers-4 era config.json (rope_theta + rope_scaling with "rope_type")."""
  hf = json.loads("""{"architectures": ["LlamaForSequenceClassification"], "model_type": "llama",
    "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "max_position_embeddings": 131072,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "hidden_act": "silu", "pad_token_id": 128256, "num_labels": 1}""")
  hf["vocab_size"] += 1  # reward models often add a pad token
  config = decoder.DecoderConfig.from_hf_config(hf)
  assert config.rope == rope.RopeConfig(theta=500000.0, type="llama3", factor=8.0,
                                        original_max_position_embeddings=8192)
  assert (config.num_kv_heads, config.head_dim, config.norm_eps) == (8, 128, 1e-5)
  assert config.pad_token_id == 128256 and config.num_labels == 1


@pytest.mark.parametrize("rope_parameters", [
    {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
])
def test_rope_frequencies_match_transformers(rope_parameters):
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  hf = transformers.LlamaConfig(hidden_size=4096, num_attention_heads=32,
                                max_position_embeddings=131072, rope_parameters=rope_parameters)
  expected, attention_factor = ROPE_INIT_FUNCTIONS[rope_parameters["rope_type"]](hf)
  assert attention_factor == 1.0
  got = rope.inverse_frequencies(128, rope.RopeConfig.from_hf_config(hf.to_dict()))
  np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6)


def test_input_helpers():
  segment_ids = jnp.asarray([[0, 0, 1, 1, 1], [1, 1, 2, 2, 0]], jnp.int32)
  np.testing.assert_array_equal(decoder.positions_from_segments(segment_ids),
                                [[0, 0, 0, 1, 2], [0, 1, 0, 1, 0]])
  np.testing.assert_array_equal(decoder.last_token_index(segment_ids, 2), [[4, 0], [1, 3]])
  tokens = jnp.asarray([[5, 5, 7, 8, 2], [3, 2, 4, 2, 0]], jnp.int32)
  # Trailing tokens equal to the pad id are skipped, as transformers does.
  np.testing.assert_array_equal(
      decoder.last_token_index(segment_ids, 2, tokens_bt=tokens, pad_token_id=2), [[3, 0], [0, 2]])
