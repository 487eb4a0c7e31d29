"""Encoder reward models (DeBERTa-v2/v3, BERT, RoBERTa) against transformers, on tiny random models.

Each PyTorch `*ForSequenceClassification` is built with a fixed seed, its weights spread out (so
that biases, norms and relative terms all matter), saved as safetensors and loaded through the
erpjax registry. The reference score of a sequence is transformers' on that sequence alone; erpjax
must match it with right padding, left padding and two sequences packed in one row.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from erpjax_kernels import attention
from flax import nnx

from erpjax import sharding as sh
from erpjax.models import classifiers, deberta
from erpjax.models._registry import load_reward_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL = 1e-4
# Mixed lengths; the longest exceeds the tiny DeBERTa's bucketed span so relative distances clip.
LENGTHS = (21, 6, 13, 2)
VOCAB = 128


def _torch_model(architecture: str, config: dict, seed: int = 0):
  torch.manual_seed(seed)
  model_cls = getattr(transformers, architecture)
  config_cls = model_cls.config_class
  model = model_cls(config_cls(**config)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      # Default init leaves LayerNorms at 1/0 and biases at 0: spread every tensor so a
      # mis-mapped or mis-transposed one cannot go unnoticed.
      base = 1.0 if name.endswith("LayerNorm.weight") else 0.0
      p.copy_(base + 0.1 * torch.randn_like(p))
  return model


def _sequences(rng: np.random.Generator, lengths=LENGTHS) -> list[np.ndarray]:
  # Ids from 3 up: 0-2 are pad/CLS/SEP in the tiny configs, which does not matter to the math.
  return [rng.integers(3, VOCAB, size=n, dtype=np.int32) for n in lengths]


def _reference(model, seqs, types=None) -> np.ndarray:
  """transformers' score of each sequence alone (no padding): float[len(seqs), L]."""
  out = []
  with torch.no_grad():
    for i, seq in enumerate(seqs):
      kwargs = {}
      if types is not None:
        kwargs["token_type_ids"] = torch.tensor(types[i][None], dtype=torch.long)
      out.append(model(torch.tensor(seq[None], dtype=torch.long), **kwargs).logits[0].numpy())
  return np.stack(out)


def _batch(rows, t: int):
  """Interface arrays for `rows`, each a list of (start, tokens, token types) segments."""
  b, s = len(rows), max(len(r) for r in rows)
  tokens, segments, positions, token_types = (np.zeros((b, t), np.int32) for _ in range(4))
  first = np.zeros((b, s), np.int32)
  for i, row in enumerate(rows):
    for j, (start, seq, types) in enumerate(row):
      span = slice(start, start + len(seq))
      tokens[i, span] = seq
      segments[i, span] = j + 1
      positions[i, span] = np.arange(len(seq))
      token_types[i, span] = types
      first[i, j] = start
  return tuple(jnp.asarray(x) for x in (tokens, segments, positions, first, token_types))


def _layouts(seqs, types, t: int) -> dict[str, list]:
  """Right-padded, left-padded and packed rows (sequence i with i + n/2) of `seqs`."""
  half = len(seqs) // 2
  return {
      "right padding": [[(0, s, ty)] for s, ty in zip(seqs, types)],
      "left padding": [[(t - len(s), s, ty)] for s, ty in zip(seqs, types)],
      "packed": [[(0, seqs[i], types[i]), (len(seqs[i]), seqs[i + half], types[i + half])]
                 for i in range(half)],
  }


@nnx.jit
def _score(model, tokens, segments, positions, first, token_types):
  return model(tokens, segments, positions, first, token_types)


def _check_model(model, ref, seqs, types=None):
  """Right/left padded and packed erpjax scores against the per-sequence reference.

  All layouts go into one batch (one compilation), with trailing padding in the packed rows.
  """
  assert np.ptp(ref[:, 0]) > 1e-2, "reference scores barely differ: the test would be weak"
  types = types or [np.zeros_like(s) for s in seqs]
  half = len(seqs) // 2
  t = max(len(seqs[i]) + len(seqs[i + half]) for i in range(half)) + 2
  layouts = _layouts(seqs, types, t)
  got = np.asarray(_score(model, *_batch([r for rows in layouts.values() for r in rows], t)))
  n = len(seqs)
  np.testing.assert_allclose(got[:n, 0], ref, atol=ATOL, rtol=0, err_msg="right padding")
  np.testing.assert_allclose(got[n:2 * n, 0], ref, atol=ATOL, rtol=0, err_msg="left padding")
  np.testing.assert_allclose(got[2 * n:], np.stack([ref[:half], ref[half:]], axis=1), atol=ATOL,
                             rtol=0, err_msg="packed")


# ------------------------------------------------------------------------------------------------
# DeBERTa-v2/v3.

_DEBERTA_BASE = {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "intermediate_size": 128, "num_labels": 1,
                 "hidden_act": "gelu", "pad_token_id": 0}
DEBERTA_CONFIGS = {
    # OpenAssistant/reward-model-deberta-v3-large-v2's options, tiny sizes.
    "v3": dict(_DEBERTA_BASE, relative_attention=True, position_buckets=8,
               max_relative_positions=16, max_position_embeddings=32, pos_att_type=["p2c", "c2p"],
               share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
               type_vocab_size=0, layer_norm_eps=1e-7),
    # Older v2 style: absolute positions too, no buckets, separate position projections, token
    # types, a narrower embedding projected up, only c2p.
    "v2_legacy": dict(_DEBERTA_BASE, relative_attention=True, max_relative_positions=-1,
                      max_position_embeddings=24, pos_att_type="c2p", share_att_key=False,
                      position_biased_input=True, type_vocab_size=2, embedding_size=32,
                      pooler_hidden_act="tanh", hidden_act="gelu_new", layer_norm_eps=1e-5),
    # Only p2c with separate projections (the other relative term and scale factor 2).
    "p2c_only": dict(_DEBERTA_BASE, relative_attention=True, position_buckets=8,
                     max_relative_positions=16, max_position_embeddings=32, pos_att_type=["p2c"],
                     share_att_key=False, position_biased_input=False),
}


@pytest.mark.parametrize("name", sorted(DEBERTA_CONFIGS))
def test_deberta_matches_transformers(name, tmp_path):
  hf_config = DEBERTA_CONFIGS[name]
  torch_model = _torch_model("DebertaV2ForSequenceClassification", hf_config)
  torch_model.save_pretrained(tmp_path, safe_serialization=True)
  model = load_reward_model(tmp_path)
  assert isinstance(model, deberta.DebertaV2ForSequenceClassification)

  rng = np.random.default_rng(1)
  seqs = _sequences(rng)
  types = None
  if hf_config.get("type_vocab_size"):
    # A text pair: type 0 for the first half of each sequence, 1 for the rest.
    types = [(np.arange(len(s)) >= len(s) // 2).astype(np.int32) for s in seqs]
  _check_model(model, _reference(torch_model, seqs, types), seqs, types)


def _shard(model, mesh):
  """Places the model's parameters on `mesh` by their logical axis names (scoring rules)."""
  state = nnx.state(model)
  specs = nnx.get_partition_spec(state)
  shardings = jax.tree.map(lambda spec: sh.named_sharding(mesh, tuple(spec)), specs,
                           is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  nnx.update(model, jax.device_put(state, shardings))


def test_deberta_sharded_over_data_and_model(tmp_path):
  torch_model = _torch_model("DebertaV2ForSequenceClassification", DEBERTA_CONFIGS["v3"])
  torch_model.save_pretrained(tmp_path, safe_serialization=True)
  model = load_reward_model(tmp_path)
  mesh = sh.make_mesh(model_parallel=2)
  _shard(model, mesh)
  assert len(model.encoder.layers.attention.query_proj.kernel[...].sharding.device_set) == 8
  seqs = _sequences(np.random.default_rng(2))
  t = max(LENGTHS)
  rows = _layouts(seqs, [np.zeros_like(s) for s in seqs], t)["left padding"]
  batch = sh.named_sharding(mesh, (sh.BATCH, None))
  inputs = [jax.device_put(x, batch) for x in _batch(rows, t)]
  got = np.asarray(_score(model, *inputs))[:, 0]
  np.testing.assert_allclose(got, _reference(torch_model, seqs), atol=ATOL, rtol=0)


def test_deberta_bfloat16_stays_close_to_float32(tmp_path):
  torch_model = _torch_model("DebertaV2ForSequenceClassification", DEBERTA_CONFIGS["v3"])
  torch_model.save_pretrained(tmp_path, safe_serialization=True)
  seqs = _sequences(np.random.default_rng(4))
  t = max(LENGTHS)
  inputs = _batch(_layouts(seqs, [np.zeros_like(s) for s in seqs], t)["right padding"], t)
  f32 = np.asarray(_score(deberta.load_deberta_v2(tmp_path), *inputs))
  bf16_model = deberta.load_deberta_v2(tmp_path, dtype=jnp.bfloat16)
  assert bf16_model.encoder.layers.attention.query_proj.kernel[...].dtype == jnp.bfloat16
  bf16 = np.asarray(_score(bf16_model, *inputs))
  assert bf16.dtype == np.float32
  assert 0 < np.abs(bf16 - f32).max() < 0.05


def test_log_buckets_match_transformers():
  from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

  relative = np.arange(-700, 701)
  want = make_log_bucket_position(torch.tensor(relative), 256, 512).numpy()
  got = deberta.log_bucket_position(jnp.asarray(relative, jnp.int32), 256, 512)
  np.testing.assert_array_equal(np.asarray(got), want)


def test_deberta_config_from_hf_and_rejections():
  assert deberta.DebertaV2Config.from_hf_config(DEBERTA_CONFIGS["v3"]) == deberta.TINY
  v3 = deberta.DebertaV2Config.from_hf_config({
      "vocab_size": 128100, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
      "intermediate_size": 4096, "relative_attention": True, "position_buckets": 256,
      "max_relative_positions": -1, "max_position_embeddings": 512, "pos_att_type": "p2c|c2p",
      "share_att_key": True, "norm_rel_ebd": "layer_norm", "position_biased_input": False,
      "type_vocab_size": 0, "id2label": {"0": "LABEL_0"}})
  assert v3 == deberta.DEBERTA_V3_LARGE
  with pytest.raises(ValueError, match="conv_kernel_size"):
    deberta.DebertaV2Config.from_hf_config(dict(DEBERTA_CONFIGS["v3"], conv_kernel_size=3))
  with pytest.raises(ValueError, match="pos_att_type"):
    deberta.DebertaV2Config.from_hf_config(dict(DEBERTA_CONFIGS["v3"], pos_att_type=["p2p"]))
  with pytest.raises(ValueError, match="order-blind"):
    deberta.DebertaV2Config.from_hf_config(dict(DEBERTA_CONFIGS["v3"], relative_attention=False))



# ------------------------------------------------------------------------------------------------
# BERT, RoBERTa, XLM-R.

_BERT_BASE = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 4, "intermediate_size": 64, "num_labels": 1,
              "hidden_act": "gelu"}
BERT_CONFIGS = {
    "BertForSequenceClassification": dict(_BERT_BASE, max_position_embeddings=64,
                                          type_vocab_size=2, pad_token_id=0),
    # Position ids start at pad_token_id + 1; the head is classifier.dense/out_proj.
    "RobertaForSequenceClassification": dict(_BERT_BASE, max_position_embeddings=66,
                                             type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                                             eos_token_id=2, layer_norm_eps=1e-5),
    "XLMRobertaForSequenceClassification": dict(_BERT_BASE, max_position_embeddings=66,
                                                type_vocab_size=1, pad_token_id=1,
                                                bos_token_id=0, eos_token_id=2,
                                                layer_norm_eps=1e-5),
}


@pytest.mark.parametrize("architecture", sorted(BERT_CONFIGS))
def test_bert_classifiers_match_transformers(architecture, tmp_path):
  hf_config = BERT_CONFIGS[architecture]
  torch_model = _torch_model(architecture, hf_config)
  torch_model.save_pretrained(tmp_path, safe_serialization=True)
  model = load_reward_model(tmp_path)
  assert isinstance(model, classifiers.BertClassifier)

  seqs = _sequences(np.random.default_rng(3))
  types = None
  if hf_config["type_vocab_size"] > 1:
    types = [(np.arange(len(s)) >= len(s) // 2).astype(np.int32) for s in seqs]
  _check_model(model, _reference(torch_model, seqs, types), seqs, types)


def test_attention_kernels_take_per_query_masks():
  """Packed rows (segment ids per query and key); every implementation agrees with the jnp
  reference."""
  rng = np.random.default_rng(5)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 7, 2, 8)), jnp.float32) for _ in range(3))
  segments = jnp.array([[1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 2]], jnp.int32)

  def attend(q, k, v, segments, implementation):
    return attention.dot_product_attention(q, k, v, q_segment_ids_bt=segments,
                                           kv_segment_ids_bs=segments, causal=False,
                                           implementation=implementation)

  want = attend(q, k, v, segments, "reference")
  # Segment 2 of row 0 alone equals attention over just its two tokens.
  alone = attend(q[:1, 3:5], k[:1, 3:5], v[:1, 3:5], jnp.ones((1, 2), jnp.int32), "reference")
  np.testing.assert_allclose(want[:1, 3:5], alone, atol=1e-6)
  for implementation in attention.IMPLEMENTATIONS:
    if implementation == "cudnn":  # NVIDIA GPUs only (tests/test_attention.py)
      continue
    got = np.asarray(attend(q, k, v, segments, implementation))
    # Padding queries are garbage by contract; the dense implementations' garbage is the
    # reference's (uniform weights), the fused kernels' (flash, splash) is their own.
    rows = np.asarray(segments) > 0 if implementation in ("pallas", "splash") else np.s_[:]
    np.testing.assert_allclose(got[rows], np.asarray(want)[rows], atol=1e-5,
                               err_msg=implementation)


def test_bert_classifier_config_from_hf():
  from_hf = classifiers.BertClassifierConfig.from_hf_config
  assert from_hf({**BERT_CONFIGS["BertForSequenceClassification"], "model_type": "bert"}) == (
      classifiers.TINY_BERT)
  for model_type in ("roberta", "xlm-roberta"):
    hf = {**BERT_CONFIGS["RobertaForSequenceClassification"], "model_type": model_type}
    assert from_hf(hf) == classifiers.TINY_ROBERTA
  with pytest.raises(ValueError, match="model_type"):
    from_hf({**BERT_CONFIGS["BertForSequenceClassification"], "model_type": "electra"})


# ------------------------------------------------------------------------------------------------
# Full-size presets: parameter counts equal transformers' (built on the meta device, no memory).

PRESETS = {
    "deberta-v3-large": (
        lambda: deberta.DebertaV2ForSequenceClassification(deberta.DEBERTA_V3_LARGE,
                                                           rngs=nnx.Rngs(0)),
        "DebertaV2ForSequenceClassification",
        {"vocab_size": 128100, "hidden_size": 1024, "num_hidden_layers": 24,
         "num_attention_heads": 16, "intermediate_size": 4096, "relative_attention": True,
         "position_buckets": 256, "max_relative_positions": -1, "pos_att_type": ["p2c", "c2p"],
         "share_att_key": True, "norm_rel_ebd": "layer_norm", "position_biased_input": False,
         "type_vocab_size": 0}),
    "bert-base": (
        lambda: classifiers.BertClassifier(classifiers.BERT_BASE, rngs=nnx.Rngs(0)),
        "BertForSequenceClassification", {}),
    "roberta-large": (
        lambda: classifiers.BertClassifier(classifiers.ROBERTA_LARGE, rngs=nnx.Rngs(0)),
        "RobertaForSequenceClassification",
        {"vocab_size": 50265, "hidden_size": 1024, "num_hidden_layers": 24,
         "num_attention_heads": 16, "intermediate_size": 4096, "max_position_embeddings": 514,
         "type_vocab_size": 1}),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts_match_transformers(name):
  make, architecture, hf_config = PRESETS[name]
  abstract = nnx.eval_shape(make)
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  model_cls = getattr(transformers, architecture)
  with torch.device("meta"):
    torch_model = model_cls(model_cls.config_class(num_labels=1, **hf_config))
  assert count == sum(p.numel() for p in torch_model.parameters())
  if name == "deberta-v3-large":
    assert 434e6 < count < 436e6
