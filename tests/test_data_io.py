"""The on-disk dataset format: round trips in both formats, a located error for each bad input."""

import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from erpjax.data import DataError, RewardSamples, RoutingDataset, read_dataset, write_dataset
from erpjax.files import MARKER


def _dataset(response=True):
  samples = RewardSamples.build(
      prompt_index=[0, 0, 1, 2, 2, 2],
      llm_index=[0, 1, 1, 0, 0, 1],
      reward=[1.0, 0.5, 0.25, -3.5, 1e-300, 0.1 + 0.2],
      # The second reward model is used first, so its order comes from dataset.json alone.
      reward_model_index=[1, 0, 0, 1, 1, 0],
      cost=[0.1, np.nan, 0.3, 0.0, 2.5e-7, 1.0],
      response=["r1", "", "ünï\ncode", "a", "b", "c"] if response else None,
  )
  return RoutingDataset(
      name="tiny", prompt_ids=("p0", "p1", "p2"), prompts=("hello", "world \n", "x"),
      categories=("qa", None, "code"), llms=("m0", "m1"), costs=np.array([0.001, 0.02]),
      reward_models=("rm_a", "rm_b"), samples=samples, notes=("a note",),
  )


def _assert_same(a, b):
  for field in ("name", "prompt_ids", "prompts", "categories", "llms", "reward_models", "notes"):
    assert getattr(a, field) == getattr(b, field), field
  np.testing.assert_array_equal(a.costs, b.costs)
  for field in ("prompt_index", "llm_index", "reward_model_index", "reward", "cost"):
    np.testing.assert_array_equal(getattr(a.samples, field), getattr(b.samples, field), field)
  assert a.samples.response == b.samples.response


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
@pytest.mark.parametrize("response", [True, False])
def test_round_trip(tmp_path, fmt, response):
  ds = _dataset(response)
  folder = write_dataset(ds, tmp_path / "ds", format=fmt)
  assert sorted(os.listdir(folder)) == sorted(
      ["dataset.json", MARKER] + [f"{t}.{fmt}" for t in ("prompts", "llms", "samples")]
  )
  _assert_same(read_dataset(folder), ds)
  assert not [p for p in tmp_path.iterdir() if p.name != "ds"]  # no staging folder left


def test_overwrite_switches_format(tmp_path):
  ds = _dataset()
  write_dataset(ds, tmp_path / "ds", format="jsonl")
  write_dataset(ds.select_prompts(np.array([2, 0])), tmp_path / "ds", format="parquet")
  assert not list((tmp_path / "ds").glob("*.jsonl"))
  assert read_dataset(tmp_path / "ds").prompt_ids == ("p2", "p0")


def test_unknown_format(tmp_path):
  with pytest.raises(ValueError, match="format"):
    write_dataset(_dataset(), tmp_path / "ds", format="csv")


def _write_jsonl(path, records):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records))


def _good_tables():
  return {
      "prompts": [
          {"prompt_id": "p0", "text": "hello", "category": "qa"},
          {"prompt_id": "p1", "text": "world"},
      ],
      "llms": [{"llm": "m0", "cost": 0.5}, {"llm": "m1", "cost": 2}],
      "samples": [
          {"prompt_id": "p0", "llm": "m0", "reward": 1},
          {"prompt_id": "p1", "llm": "m1", "reward": 0.5, "cost": None},
          {"prompt_id": "p1", "llm": "m0", "reward": 0.0, "cost": 0.25, "response": "ok"},
      ],
  }


def _write_folder(folder, tables):
  for table, records in tables.items():
    _write_jsonl(folder / f"{table}.jsonl", records)
  return folder


def test_hand_written_jsonl_defaults(tmp_path):
  ds = read_dataset(_write_folder(tmp_path / "hand", _good_tables()))
  assert ds.name == "hand"
  assert ds.reward_models == ("reward",)
  assert ds.categories == ("qa", None)
  np.testing.assert_array_equal(ds.costs, [0.5, 2.0])
  np.testing.assert_array_equal(ds.samples.cost, [np.nan, np.nan, 0.25])
  assert ds.samples.response == (None, None, "ok")
  assert read_dataset(tmp_path / "hand", name="other").name == "other"


# (table, row index to change, change, expected row, expected field). Rows are 1-based lines.
_BAD_JSONL = {
    "unparseable line": ("samples", 1, '{"prompt_id": "p1", "llm": \n', 2, None),
    "not an object": ("llms", 0, "[1, 2]\n", 1, None),
    "missing prompt text": ("prompts", 1, {"prompt_id": "p1"}, 2, "text"),
    "missing reward": ("samples", 2, {"prompt_id": "p1", "llm": "m0"}, 3, "reward"),
    "null reward": ("samples", 0, {"prompt_id": "p0", "llm": "m0", "reward": None}, 1, "reward"),
    "empty prompt text": ("prompts", 0, {"prompt_id": "p0", "text": " \n\t"}, 1, "text"),
    "duplicate prompt_id": ("prompts", 1, {"prompt_id": "p0", "text": "again"}, 2, "prompt_id"),
    "duplicate llm": ("llms", 1, {"llm": "m0", "cost": 1.0}, 2, "llm"),
    "undeclared prompt": ("samples", 2, {"prompt_id": "p9", "llm": "m0", "reward": 1}, 3,
                          "prompt_id"),
    "undeclared llm": ("samples", 1, {"prompt_id": "p1", "llm": "gpt-9", "reward": 1}, 2, "llm"),
    "NaN reward": ("samples", 1, '{"prompt_id": "p1", "llm": "m1", "reward": NaN}\n', 2, "reward"),
    "inf reward": ("samples", 0, '{"prompt_id": "p0", "llm": "m0", "reward": -Infinity}\n', 1,
                   "reward"),
    "string reward": ("samples", 0, {"prompt_id": "p0", "llm": "m0", "reward": "1"}, 1, "reward"),
    "bool reward": ("samples", 0, {"prompt_id": "p0", "llm": "m0", "reward": True}, 1, "reward"),
    "negative llm cost": ("llms", 1, {"llm": "m1", "cost": -0.1}, 2, "cost"),
    "NaN llm cost": ("llms", 0, '{"llm": "m0", "cost": NaN}\n', 1, "cost"),
    "null llm cost": ("llms", 0, {"llm": "m0", "cost": None}, 1, "cost"),
    "negative sample cost": ("samples", 2, {"prompt_id": "p1", "llm": "m0", "reward": 0,
                                            "cost": -1e-9}, 3, "cost"),
    "NaN sample cost": ("samples", 2, '{"prompt_id": "p1", "llm": "m0", "reward": 0, '
                        '"cost": NaN}\n', 3, "cost"),
    "integer prompt_id": ("prompts", 0, {"prompt_id": 7, "text": "hello"}, 1, "prompt_id"),
    "null reward_model": ("samples", 0, {"prompt_id": "p0", "llm": "m0", "reward": 1,
                                         "reward_model": None}, 1, "reward_model"),
}


def _assert_located(error, file, row, field):
  assert error.file == str(file)
  assert error.row == row
  assert error.field == field
  message = str(error)
  assert str(file) in message
  if row is not None:
    assert f"row {row}" in message
  if field is not None:
    assert repr(field) in message


@pytest.mark.parametrize("case", list(_BAD_JSONL))
def test_bad_jsonl_is_located(tmp_path, case):
  table, index, change, row, field = _BAD_JSONL[case]
  tables = _good_tables()
  tables[table][index] = change
  folder = _write_folder(tmp_path / "bad", tables)
  with pytest.raises(DataError) as info:
    read_dataset(folder)
  _assert_located(info.value, folder / f"{table}.jsonl", row, field)


def test_blank_lines_keep_line_numbers(tmp_path):
  tables = _good_tables()
  tables["samples"].insert(1, "\n")
  tables["samples"][3] = {"prompt_id": "p1", "llm": "m1", "reward": math.inf}
  folder = _write_folder(tmp_path / "bad", tables)
  with pytest.raises(DataError) as info:
    read_dataset(folder)
  _assert_located(info.value, folder / "samples.jsonl", 4, "reward")


def _write_parquet_folder(folder, tables):
  folder.mkdir(parents=True)
  for table, columns in tables.items():
    pq.write_table(pa.table(columns), folder / f"{table}.parquet")
  return folder


def _good_parquet():
  return {
      "prompts": {"prompt_id": ["p0", "p1"], "text": ["a", "b"]},
      "llms": {"llm": ["m0"], "cost": [1]},  # an integer column is accepted as a number
      "samples": {"prompt_id": ["p0", "p1", "p1"], "llm": ["m0"] * 3, "reward": [1.0, 0.0, 1.0]},
  }


def test_parquet_defaults_and_dictionary_columns(tmp_path):
  tables = _good_parquet()
  tables["samples"]["llm"] = pa.array(["m0"] * 3).dictionary_encode()
  ds = read_dataset(_write_parquet_folder(tmp_path / "ds", tables))
  assert ds.reward_models == ("reward",)
  assert ds.categories == (None, None)
  np.testing.assert_array_equal(ds.samples.prompt_index, [0, 1, 1])
  assert ds.samples.response is None


_BAD_PARQUET = {
    "missing column": ("prompts", "text", None, None, "text"),
    "null text": ("prompts", "text", ["a", None], 2, "text"),
    "empty text": ("prompts", "text", ["a", ""], 2, "text"),
    "duplicate prompt_id": ("prompts", "prompt_id", ["p0", "p0"], 2, "prompt_id"),
    "string cost column": ("llms", "cost", ["1"], None, "cost"),
    "NaN reward": ("samples", "reward", [1.0, 0.0, math.nan], 3, "reward"),
    "undeclared llm": ("samples", "llm", ["m0", "m1", "m0"], 2, "llm"),
    "negative sample cost": ("samples", "cost", [None, -1.0, 0.5], 2, "cost"),
}


@pytest.mark.parametrize("case", list(_BAD_PARQUET))
def test_bad_parquet_is_located(tmp_path, case):
  table, column, values, row, field = _BAD_PARQUET[case]
  tables = _good_parquet()
  if values is None:
    del tables[table][column]
  else:
    tables[table][column] = values
  folder = _write_parquet_folder(tmp_path / "bad", tables)
  with pytest.raises(DataError) as info:
    read_dataset(folder)
  _assert_located(info.value, folder / f"{table}.parquet", row, field)


def test_missing_and_ambiguous_tables(tmp_path):
  folder = _write_folder(tmp_path / "ds", _good_tables())
  (folder / "llms.jsonl").unlink()
  with pytest.raises(DataError, match="missing table 'llms'"):
    read_dataset(folder)
  _write_folder(folder, _good_tables())
  pq.write_table(pa.table({"llm": ["m0"], "cost": [1.0]}), folder / "llms.parquet")
  with pytest.raises(DataError, match="both Parquet and JSONL"):
    read_dataset(folder)


def test_reward_model_not_in_metadata(tmp_path):
  folder = write_dataset(_dataset(), tmp_path / "ds", format="jsonl")
  meta = json.loads((folder / "dataset.json").read_text())
  meta["reward_models"] = ["rm_a"]
  (folder / "dataset.json").write_text(json.dumps(meta))
  with pytest.raises(DataError) as info:
    read_dataset(folder)
  _assert_located(info.value, folder / "samples.jsonl", 1, "reward_model")
  assert "dataset.json" in str(info.value)
