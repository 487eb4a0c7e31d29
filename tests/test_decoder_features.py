"""DecoderFeaturizer: chat-template tokenization and truncation, pooled hidden states of packed
prompts equal to each prompt run alone, identifier and on-disk cache. A tiny random decoder and a
word-level tokenizer stand in for a real LLM (tests/test_gguf.py covers SmolLM2)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from flax import nnx
from tokenizers import models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from erpjax.encode import encode_cached
from erpjax.encode._decoder_features import ChatTokenizer, DecoderFeaturizer
from erpjax.models.decoder import DecoderConfig, DecoderModel
from erpjax.runtime import Tokenized, pack

WORDS = [f"w{i}" for i in range(40)]
SPECIALS = ["<pad>", "<|user|>", "<|end|>", "<|assistant|>"]
TEMPLATE = ("{% for m in messages %}<|user|> {{ m['content'] }} <|end|>{% endfor %}"
            "{% if add_generation_prompt %} <|assistant|>{% endif %}")
CONFIG = DecoderConfig(vocab_size=len(SPECIALS) + len(WORDS), embed_dim=16, mlp_dim=32,
                       num_layers=3, num_heads=4, num_kv_heads=2, head_dim=4)


def _tokenizer() -> PreTrainedTokenizerFast:
  vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
  backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
  backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                      chat_template=TEMPLATE)
  tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
  return tokenizer


def _prompt(rng, n: int) -> str:
  return " ".join(rng.choice(WORDS, n))


@pytest.fixture(scope="module")
def featurizer_parts():
  model = DecoderModel(CONFIG, rngs=nnx.Rngs(0))
  # Larger weights than the init's 0.02 so layers differ visibly.
  _, state = nnx.split(model)
  nnx.update(model, jax.tree.map(lambda x: x * 10 if x.ndim > 1 else x, state))
  return model, _tokenizer()


def test_chat_tokenizer_wraps_and_truncates_the_message_only():
  hf = _tokenizer()
  chat = ChatTokenizer(hf, max_length=8)
  short, long = "w1 w2", " ".join(WORDS[:20])
  ids_short, ids_long = chat([short, long])
  rendered = hf.apply_chat_template([{"role": "user", "content": short}], tokenize=False,
                                    add_generation_prompt=True)
  assert ids_short == hf(rendered, add_special_tokens=False)["input_ids"]
  user, end, assistant = (hf.convert_tokens_to_ids(t) for t in SPECIALS[1:])
  assert ids_short == [user, *hf.convert_tokens_to_ids(["w1", "w2"]), end, assistant]
  # Cut at the message's end: the template's tail survives.
  assert ids_long == [user, *hf.convert_tokens_to_ids(WORDS[:5]), end, assistant]
  assert chat.num_truncated([short, long, long]) == 2
  with pytest.raises(ValueError, match="leaves no room"):
    ChatTokenizer(hf, max_length=3)


def test_packed_features_equal_each_prompt_alone(featurizer_parts):
  model, hf = featurizer_parts
  layers = (3, 0, 2)
  rng = np.random.default_rng(0)
  texts = [_prompt(rng, n) for n in (3, 20, 1, 7, 12)]
  featurizers = {pooling: DecoderFeaturizer(model, ChatTokenizer(hf, 32), name="tiny", files=[],
                                            layers=layers, pooling=pooling, tokens_per_batch=64,
                                            max_segments=4)
                 for pooling in ("last", "mean")}
  ids = featurizers["last"].tokenizer(texts)
  batches = pack(range(len(texts)), Tokenized(ids), featurizers["last"].buckets, "last")
  assert any(len(b.ids) > b.shape[0] for b in batches)  # prompts do share rows
  got = {pooling: f.encode(texts, progress=False) for pooling, f in featurizers.items()}
  hidden_states = jax.jit(model.hidden_states, static_argnums=3)
  for i, row_ids in enumerate(ids):
    tokens = jnp.asarray([row_ids], jnp.int32)
    hidden = hidden_states(tokens, jnp.ones_like(tokens), jnp.arange(len(row_ids))[None], layers)
    expected = {"last": hidden[:, 0, -1], "mean": hidden[:, 0].mean(axis=1)}
    for pooling, features in got.items():
      assert features.shape == (len(texts), 3 * CONFIG.embed_dim)
      assert features.dtype == np.float32
      # float32 sums in other orders (other batch shapes, packed neighbours masked out): ~1e-5;
      # a wrong token, segment or layer is off by O(1).
      np.testing.assert_allclose(features[i], np.asarray(expected[pooling]).reshape(-1),
                                 rtol=1e-4, atol=1e-4)


def test_hidden_states_numbering_and_depth(featurizer_parts):
  model, _ = featurizer_parts
  tokens = jnp.asarray([[5, 6, 7, 8]], jnp.int32)
  segments, positions = jnp.ones_like(tokens), jnp.arange(4)[None]
  got = jax.jit(model.hidden_states, static_argnums=3)(tokens, segments, positions, (0, 1, 2, 3))
  # Reference: the blocks run one at a time; depth L = 3 is after the final norm.
  cos, sin = model._rope(positions)
  graphdef, stacked = nnx.split(model.layers)
  x = model.embedder(tokens)
  expected = [x]
  for i in range(CONFIG.num_layers):
    block = nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], stacked))
    x = block(x, segments, positions, None, cos, sin)
    expected.append(x)
  expected[-1] = model.final_norm(expected[-1])
  for depth in range(CONFIG.num_layers + 1):
    np.testing.assert_allclose(got[depth], expected[depth], rtol=1e-5, atol=1e-5)
  # Any order, and a shallow request alone.
  np.testing.assert_allclose(model.hidden_states(tokens, segments, positions, (2, 1)),
                             got[jnp.asarray([2, 1])], rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="depths in"):
    model.hidden_states(tokens, segments, positions, (4,))


def test_identifier_and_cache(featurizer_parts, tmp_path):
  model, hf = featurizer_parts
  file = tmp_path / "model.bin"
  file.write_bytes(b"weights")

  def make(layers, pooling):
    return DecoderFeaturizer(model, ChatTokenizer(hf, 32), name="tiny", files=[file],
                             layers=layers, pooling=pooling, tokens_per_batch=64)

  a = make((1, 3), "last")
  assert "layers=1,3" in a.identifier and "pooling=last" in a.identifier
  assert len({a.identifier, make((1, 2), "last").identifier,
              make((1, 3), "mean").identifier}) == 3
  texts = ["w1 w2", "w3", "w1 w2"]
  first = encode_cached(a, texts, tmp_path / "cache", progress=False)
  np.testing.assert_array_equal(first[0], first[2])
  a.encode = None  # A second call must read the cache only.
  np.testing.assert_array_equal(encode_cached(a, texts, tmp_path / "cache", progress=False), first)
  with pytest.raises(ValueError, match="distinct depths"):
    make((1, 4), "last")
  with pytest.raises(ValueError, match="pooling"):
    make((1,), "max")


def test_hf_causal_lm_folder_loads_as_trunk(featurizer_parts, tmp_path):
  """A `*ForCausalLM` folder (no score head, an LM head that is ignored) loads into the trunk with
  its tokenizer and chat template."""
  from erpjax.encode._decoder_features import load_decoder, trunk_key_map
  from erpjax.models import _hf

  model, hf = featurizer_parts
  tensors = _hf.export_state(model, trunk_key_map(CONFIG))
  tensors["lm_head.weight"] = np.zeros((CONFIG.vocab_size, CONFIG.embed_dim), np.float32)
  config = dict(model_type="llama", architectures=["LlamaForCausalLM"],
                vocab_size=CONFIG.vocab_size, hidden_size=CONFIG.embed_dim,
                intermediate_size=CONFIG.mlp_dim, num_hidden_layers=CONFIG.num_layers,
                num_attention_heads=CONFIG.num_heads, num_key_value_heads=CONFIG.num_kv_heads,
                head_dim=CONFIG.head_dim, rms_norm_eps=CONFIG.norm_eps,
                rope_theta=CONFIG.rope.theta, max_position_embeddings=64)
  _hf.write_safetensors(tensors, tmp_path)
  (tmp_path / _hf.CONFIG_FILE).write_text(json.dumps(config))
  hf.save_pretrained(tmp_path)
  loaded, tokenizer, name, files, context_length = load_decoder(tmp_path)
  assert context_length == 64 and name == tmp_path.name
  assert (tmp_path / "model.safetensors") in files
  for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(model)),
                               nnx.to_flat_state(nnx.state(loaded))):
    np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(path))
  assert ChatTokenizer(tokenizer, 16)(["w1 w2"]) == ChatTokenizer(hf, 16)(["w1 w2"])
