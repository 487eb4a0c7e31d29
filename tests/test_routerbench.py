"""RouterBench adapter: parsing, merging, prefixes, costs on small CSVs; facts on the real data."""

import collections
import csv
import time

import numpy as np
import pytest

from erpjax import paths
from erpjax.data import DataError, keep_tail, shared_prefix, strip_prefix
from erpjax.data._routerbench import load_routerbench

MODELS = ("m-cheap", "m-dear")
FEW_SHOT = "Q: 1+1?\nAnswer:\n2\n\nQ: 2+2?\nAnswer:\n4\n\n"


# Prompt prefix helpers.


def test_shared_prefix_cuts_at_a_line_boundary():
  texts = [FEW_SHOT + "Which is red?", FEW_SHOT + "Which is blue?", FEW_SHOT + "Whales?"]
  assert shared_prefix(texts) == FEW_SHOT  # not FEW_SHOT + "Wh"
  assert shared_prefix(["Task: add 1", "Task: add 12"]) == "Task: add "  # no newline: a space
  assert shared_prefix(["same\ntext", "same\ntext"]) == "same\n"  # never a whole prompt
  assert shared_prefix(["abc\n", "abc\n"]) == ""
  assert shared_prefix([FEW_SHOT + "x"]) == ""
  assert shared_prefix(["x y", "z y"]) == ""


def test_strip_prefix_counts_texts_without_it():
  texts, missed = strip_prefix([FEW_SHOT + "a", "other", FEW_SHOT + "b"], FEW_SHOT)
  assert texts == ["a", "other", "b"]
  assert missed == 1
  assert strip_prefix(["a"], "") == (["a"], 0)


def test_keep_tail():
  assert keep_tail("short", 10) == "short"
  assert keep_tail("one two three", 7) == "three"  # "o three" cut inside a word
  assert keep_tail("one two three", 9) == "two three"  # cut right after a space
  assert keep_tail("abcdefgh", 3) == "fgh"  # no whitespace to cut at
  with pytest.raises(ValueError):
    keep_tail("x", 0)


# The adapter on small CSVs written here.


def _row(sample_id, prompt, scores, costs, repeats=1, task="toy"):
  row = {"": "0", "sample_id": sample_id, "prompt": repr([prompt] * repeats), "eval_name": task,
         "oracle_model_to_route_to": MODELS[0]}
  for model, score, cost in zip(MODELS, scores, costs):
    row[model] = "" if score is None else str(float(score))
    row[f"{model}|model_response"] = repr([f"{model} says {sample_id}"])
    row[f"{model}|total_cost"] = repr(cost)
  return row


def _write_csv(path, rows):
  header = ["", "sample_id", "prompt", "eval_name", *MODELS,
            *(f"{m}|model_response" for m in MODELS), *(f"{m}|total_cost" for m in MODELS),
            "oracle_model_to_route_to"]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, header)
    writer.writeheader()
    writer.writerows(rows)


@pytest.fixture
def toy(tmp_path):
  """A task "arc_challenge" with a few-shot prefix, a split-up sample and a missing score."""
  _write_csv(tmp_path / "arc_challenge_train.csv", [
      _row("s1", FEW_SHOT + "Which is red?", (1, 1), (0.001, 0.01)),
      _row("s2", FEW_SHOT + "Which is blue?", (None, 0), (0.002, 0.02)),
      # s2 again, its prompt listed twice and its costs doubled, scored for m-cheap only.
      _row("s2", FEW_SHOT + "Which is blue?", (1, None), (0.004, 0.04), repeats=2),
      _row("s3", FEW_SHOT + "Whales?", (0, None), (0.003, 0.03)),  # m-dear never scored
  ])
  _write_csv(tmp_path / "arc_challenge_test.csv", [
      _row("t1", FEW_SHOT + "Which is green?", (0, 1), (0.005, 0.05)),
      _row("t2", "No few-shot here?", (1, 1), (0.006, 0.06)),
      _row("t3", FEW_SHOT + "which  is RED?", (1, 0), (0.007, 0.07)),  # train's s1, normalized
  ])
  return tmp_path


def test_merges_rows_of_a_sample_and_drops_incomplete(toy):
  ds = load_routerbench("train", toy, tasks=["arc_challenge"])
  assert ds.prompt_ids == ("s1", "s2")
  assert ds.prompts == ("Which is red?", "Which is blue?")
  assert ds.llms == MODELS
  assert ds.reward_models == ("correctness",)
  s = ds.samples
  np.testing.assert_array_equal(s.prompt_index, [0, 0, 1, 1])
  np.testing.assert_array_equal(s.llm_index, [0, 1, 0, 1])
  np.testing.assert_array_equal(s.reward, [1, 1, 1, 0])
  # s2's m-cheap score comes from the doubled row, whose cost is halved.
  np.testing.assert_allclose(s.cost, [0.001, 0.01, 0.002, 0.02])
  assert s.response[2] == "m-cheap says s2"
  np.testing.assert_allclose(ds.costs, [0.0015, 0.015])
  notes = " ".join(ds.notes)
  assert "1 rows repeat the sample_id" in notes
  assert "1 of 3 prompts lack a score" in notes
  assert f"stripped a {len(FEW_SHOT)}-character prefix" in notes


def test_keep_incomplete(toy):
  ds = load_routerbench("train", toy, tasks=["arc_challenge"], incomplete="keep", prefix="keep")
  assert ds.prompt_ids == ("s1", "s2", "s3")
  assert ds.prompts[2] == FEW_SHOT + "Whales?"
  np.testing.assert_array_equal(ds.samples.prompt_index, [0, 0, 1, 1, 2])
  np.testing.assert_allclose(ds.costs, [0.002, 0.015])  # m-cheap: (0.001 + 0.002 + 0.003) / 3


def test_test_split_uses_train_prefix_and_costs(toy):
  ds = load_routerbench("test", toy, tasks=["arc_challenge"])
  assert ds.prompts == ("Which is green?", "No few-shot here?", "which  is RED?")
  np.testing.assert_allclose(ds.costs, [0.0015, 0.015])  # from train, not from test's calls
  np.testing.assert_allclose(ds.samples.cost[:2], [0.005, 0.05])
  notes = " ".join(ds.notes)
  assert "1 prompts do not start with it" in notes
  assert "1 of 3 test prompts also occur in train" in notes
  deduped = load_routerbench("test", toy, tasks=["arc_challenge"], dedupe=True)
  assert deduped.prompt_ids == ("t1", "t2")


def test_routing_costs_override(toy):
  ds = load_routerbench("test", toy, tasks=["arc_challenge"],
                        routing_costs={"m-dear": 3.0, "m-cheap": 1.0})
  np.testing.assert_array_equal(ds.costs, [1.0, 3.0])
  with pytest.raises(ValueError, match="lacks"):
    load_routerbench("test", toy, tasks=["arc_challenge"], routing_costs={"m-dear": 3.0})


def test_tail(toy):
  ds = load_routerbench("train", toy, tasks=["arc_challenge"], prefix="tail", tail_chars=20)
  assert ds.prompts == ("4\n\nWhich is red?", "4\n\nWhich is blue?")


@pytest.mark.parametrize("field, value, message", [
    ("prompt", "__import__('os').getcwd()", "not a Python literal"),
    ("prompt", "['a', 'b']", "2 different texts"),
    ("prompt", "[]", "non-empty list"),
    ("m-dear", "yes", "finite non-negative"),
    ("m-dear|total_cost", "-1", "finite non-negative"),
    ("m-dear|model_response", "['unclosed", "not a Python literal"),
])
def test_bad_cells_are_located(tmp_path, field, value, message):
  rows = [_row("s1", "Q1?", (1, 1), (0.1, 0.2)), _row("s2", "Q2?", (1, 1), (0.1, 0.2))]
  rows[1][field] = value
  _write_csv(tmp_path / "mbpp_train.csv", rows)
  with pytest.raises(DataError, match=message) as info:
    load_routerbench("train", tmp_path, tasks=["mbpp"])
  assert (info.value.file, info.value.row, info.value.field) == (
      str(tmp_path / "mbpp_train.csv"), 2, field)


def test_sample_id_with_two_prompts(tmp_path):
  _write_csv(tmp_path / "mbpp_train.csv",
             [_row("s1", "Q1?", (1, None), (0.1, 0.2)), _row("s1", "Q2?", (None, 1), (0.1, 0.2))])
  with pytest.raises(DataError, match="different prompt"):
    load_routerbench("train", tmp_path, tasks=["mbpp"])


def test_bad_arguments(toy):
  with pytest.raises(ValueError, match="split"):
    load_routerbench("dev", toy)
  with pytest.raises(ValueError, match="task"):
    load_routerbench("train", toy, tasks=["gsm8k"])
  with pytest.raises(ValueError, match="prefix"):
    load_routerbench("train", toy, prefix="head")


# The real data.

ROOT = paths.shared_data_dir() / "routerbench_subset"
real = pytest.mark.skipif(
    not ROOT.is_dir(), reason=f"real RouterBench data not found at {ROOT} (set ERPJAX_SHARED_DATA)"
)


@pytest.fixture(scope="module")
def splits():
  start = time.perf_counter()
  loaded = {split: load_routerbench(split) for split in ("train", "test")}
  return loaded, time.perf_counter() - start


@real
def test_real_counts(splits):
  (train, test), seconds = splits[0].values(), splits[1]
  assert seconds < 10
  rows = 0
  for path in ROOT.glob("*.csv"):
    with open(path, newline="") as f:
      rows += sum(1 for _ in csv.reader(f)) - 1
  assert rows == 3178
  for ds, expected in ((train, {"arc-challenge": 1026, "mbpp": 299, "winogrande": 887}),
                       (test, {"arc-challenge": 438, "mbpp": 128, "winogrande": 380})):
    assert ds.num_llms == 11
    assert dict(collections.Counter(ds.categories)) == expected
    assert len(ds.samples) == 11 * ds.num_prompts  # every kept prompt has every LLM
    assert set(np.unique(ds.samples.reward)) == {0.0, 1.0}
    assert np.all(ds.samples.cost > 0)
    assert all(ds.samples.response)
  np.testing.assert_array_equal(train.costs, test.costs)
  assert train.llms[int(np.argmax(train.costs))] == "gpt-4-1106-preview"


@real
def test_real_notes(splits):
  train, test = splits[0].values()
  notes = " | ".join(train.notes)
  assert "arc_challenge_train.csv: 7 rows repeat the sample_id" in notes
  assert "arc_challenge_train.csv: 6 of 1032 prompts lack a score" in notes
  assert "arc_challenge: stripped a 1653-character prefix" in notes
  assert "winograde: stripped a 1221-character prefix" in notes
  assert "mbpp: the train prompts share no prefix" in notes
  notes = " | ".join(test.notes)
  assert "arc_challenge_test.csv: 1 rows repeat the sample_id" in notes
  assert "arc_challenge_test.csv: 6 of 444 prompts lack a score" in notes
  assert "2 of 946 test prompts also occur in train" in notes
  assert "do not start with it" not in notes


@real
def test_real_prefix_makes_prompts_distinct(splits):
  _, test = splits[0].values()
  kept = load_routerbench("test", prefix="keep", tasks=["arc_challenge", "winograde"])
  for task in ("arc-challenge", "winogrande"):
    rows = [i for i, c in enumerate(test.categories) if c == task]
    stripped = [test.prompts[i] for i in rows]
    full = [kept.prompts[kept.prompt_ids.index(test.prompt_ids[i])] for i in rows]
    assert len({text[:1000] for text in full}) == 1  # what a truncating encoder would see
    assert len({text[:1000] for text in stripped}) == len(rows)
    assert all(f.endswith(s) for f, s in zip(full, stripped))


@real
def test_real_dedupe():
  ds = load_routerbench("test", tasks=["mbpp"], dedupe=True)
  assert ds.num_prompts == 126
  kept = load_routerbench("test", tasks=["arc_challenge"], incomplete="keep")
  # The six sample_ids whose two rows sit in different splits make train/test overlap.
  assert "6 of 444 test prompts also occur in train" in " ".join(kept.notes)
