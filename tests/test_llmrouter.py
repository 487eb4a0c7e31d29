"""LLMRouter adapter and train/test overlap: small files written here, then the real data."""

import hashlib
import json
import time

import numpy as np
import pytest

from erpjax import paths
from erpjax.data import DataError, drop_overlap, find_overlap, load_llmrouter

PRICES = {"small": {"input_price": 0.1, "output_price": 0.2},
          "big": {"input_price": 1.0, "output_price": 3.0},
          "unused": {"input_price": 9.0, "output_price": 9.0}}


def _write(root, train, test, query_train=(), query_test=(), prices=PRICES):
  root.mkdir(exist_ok=True)
  (root / "dcrouter_train.json").write_text(json.dumps(train))
  (root / "dcrouter_test.json").write_text(json.dumps(test))
  (root / "llm_candidates.json").write_text(json.dumps(prices))
  for name, rows in (("query_train.jsonl", query_train), ("query_test.jsonl", query_test)):
    (root / name).write_text("".join(json.dumps({"task_name": t, "query": q}) + "\n"
                                     for q, t in rows))
  return root


def _q(question, small, big):
  return {"question": question, "scores": {"small": small, "big": big}, "cluster_id": 0}


@pytest.fixture
def toy(tmp_path):
  train = [_q("a" * 40, 1.0, 0.0), _q("b" * 80, 0.0, 1.0), _q("dup", 0.5, 1.0),
           _q("dup", 0.0, 0.0), _q("c" * 8, None, 1.0), _q("d" * 8, "0.5", 1.0),
           {"question": "e" * 8, "scores": {"small": 1.0}}]
  test = [_q("Fresh  question", 0.25, 1.0), _q("A" * 40, 1, 1)]  # the second is train's first
  return _write(
      tmp_path / "llmrouter", train, test,
      query_train=[("a" * 40, "t1"), ("b" * 80, "t1"), ("b" * 80, "t1"), ("dup", "t1"),
                   ("dup", "t2")],
      query_test=[("Fresh  question", "t3"), ("A" * 40, "t1")],
  )


def test_costs_and_samples(toy):
  ds = load_llmrouter("train", toy)
  assert ds.llms == ("small", "big")
  assert ds.prompts == ("a" * 40, "b" * 80, "dup")  # dup once; c, d, e have unusable scores
  assert ds.reward_models == ("score",)
  np.testing.assert_array_equal(ds.samples.reward, [1.0, 0.0, 0.0, 1.0, 0.5, 1.0])
  # 40 characters = 10 tokens: small (0.1 * 10 + 0.2 * 256) / 1e6, big (1 * 10 + 3 * 256) / 1e6.
  np.testing.assert_allclose(ds.samples.cost[:2], [52.2e-6, 778e-6])
  tokens = np.mean([10, 20, 0.75])
  np.testing.assert_allclose(ds.costs, [(0.1 * tokens + 51.2) / 1e6, (tokens + 768) / 1e6])
  assert ds.prompt_ids[0] == "llmrouter-" + hashlib.sha1(b"a" * 40).hexdigest()[:16]
  notes = " | ".join(ds.notes)
  assert "dropped 1 rows repeating an earlier question" in notes
  assert "3 scores are missing, null or not numbers ({'small': 2, 'big': 1}) in 3 rows" in notes
  assert "1 questions occur in query_train.jsonl under several tasks ({'t1/t2': 1})" in notes
  assert ds.categories == ("t1", "t1", None)


def test_keep_incomplete_and_assumptions(toy):
  ds = load_llmrouter("train", toy, incomplete="keep", assumed_output_tokens=0, chars_per_token=8)
  assert ds.num_prompts == 6
  assert len(ds.samples) == 9
  assert ds.categories[3:] == (None, None, None)
  assert "3 questions are not in query_train.jsonl" in " ".join(ds.notes)
  np.testing.assert_allclose(ds.samples.cost[:2], [0.5e-6, 5e-6])


def test_test_split_overlap(toy):
  test = load_llmrouter("test", toy)
  assert test.categories == ("t3", "t1")
  assert "1 of 2 test prompts also occur in train" in " ".join(test.notes)
  train = load_llmrouter("train", toy)
  np.testing.assert_array_equal(test.costs, train.costs)
  overlap = find_overlap(train, test)
  np.testing.assert_array_equal(overlap.test_rows, [1])
  np.testing.assert_array_equal(overlap.train_rows, [0])
  for deduped in (load_llmrouter("test", toy, dedupe=True), drop_overlap(test, train)):
    assert deduped.prompts == ("Fresh  question",)
    np.testing.assert_array_equal(deduped.samples.prompt_index, [0, 0])
    assert "dropped (dedupe=True)" in deduped.notes[-1]


def test_routing_costs_override(toy):
  ds = load_llmrouter("test", toy, routing_costs={"small": 1, "big": 2, "other": 3})
  np.testing.assert_array_equal(ds.costs, [1.0, 2.0])


@pytest.mark.parametrize("change, file, row, field", [
    (lambda t, p: t.__setitem__(1, {"question": " ", "scores": {}}), "dcrouter_train.json", 2,
     "question"),
    (lambda t, p: t.__setitem__(0, {"question": "q"}), "dcrouter_train.json", 1, "scores"),
    (lambda t, p: p.pop("big"), "llm_candidates.json", None, "big"),
    (lambda t, p: p["small"].__setitem__("output_price", -1), "llm_candidates.json", None,
     "small.output_price"),
])
def test_bad_input_is_located(tmp_path, change, file, row, field):
  train, prices = [_q("x", 1, 0), _q("y", 0, 1)], json.loads(json.dumps(PRICES))
  change(train, prices)
  root = _write(tmp_path / "d", train, [], prices=prices)
  with pytest.raises(DataError) as info:
    load_llmrouter("train", root)
  assert (info.value.file, info.value.row, info.value.field) == (str(root / file), row, field)


def test_test_model_not_in_train(tmp_path):
  root = _write(tmp_path / "d", [_q("x", 1, 0)],
                [{"question": "y", "scores": {"small": 1, "unused": 0}}])
  with pytest.raises(DataError, match="not in train") as info:
    load_llmrouter("test", root)
  assert info.value.row == 1


# The real data.

ROOT = paths.shared_data_dir() / "llmrouter"
real = pytest.mark.skipif(
    not ROOT.is_dir(), reason=f"real LLMRouter data not found at {ROOT} (set ERPJAX_SHARED_DATA)"
)


@real
def test_real_facts():
  start = time.perf_counter()
  train, test = load_llmrouter("train"), load_llmrouter("test")
  assert time.perf_counter() - start < 5
  for ds, n in ((train, 5608), (test, 500)):
    assert ds.num_llms == 9
    assert ds.num_prompts == n
    assert len(ds.samples) == 9 * n  # no unusable scores in the real files
    assert np.all((ds.samples.reward >= 0) & (ds.samples.reward <= 1))
  assert len(set(train.categories) - {None}) == 14
  assert len(set(test.categories)) == 10
  assert train.categories.count(None) == 6  # under two tasks in query_train.jsonl
  assert None not in test.categories
  assert train.llms[int(np.argmin(train.costs))] == "gemma-2-9b-it"  # the lowest price
  overlap = find_overlap(train, test)
  assert len(overlap) == 119
  assert sorted({test.categories[i] for i in overlap.test_rows}) == ["gpqa", "human_eval", "mbpp"]
  assert "119 of 500 test prompts also occur in train" in " ".join(test.notes)
  deduped = load_llmrouter("test", dedupe=True)
  assert deduped.num_prompts == 381
  assert not len(find_overlap(train, deduped))
