"""open-perfectblend-style prompt files, Parquet and JSONL, written here."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from erpjax.data import DataError, read_dataset, read_perfectblend, write_dataset

ROWS = [
    {"conversations": [{"from": "system", "value": "Be brief."},
                       {"from": "human", "value": "What is 2+2?"},
                       {"from": "gpt", "value": "4"},
                       {"from": "human", "value": "And 3+3?"}],
     "source": "math"},
    {"conversations": [{"from": "human", "value": "Write a haiku."},
                       {"from": "gpt", "value": "..."}],
     "source": "creative"},
    {"conversations": [{"from": "human", "value": "What is 2+2?"}], "source": None},
]


def _write(path, rows):
  if path.suffix == ".parquet":
    pq.write_table(pa.Table.from_pylist(rows), path)
  else:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
  return path


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_reads_first_user_turn(tmp_path, suffix):
  ds = read_perfectblend(_write(tmp_path / f"blend{suffix}", ROWS))
  assert ds.prompts == ("What is 2+2?", "Write a haiku.", "What is 2+2?")
  assert ds.prompt_ids == ("blend:1", "blend:2", "blend:3")
  assert ds.categories == ("math", "creative", None)
  assert ds.llms == () and len(ds.samples) == 0 and ds.costs.shape == (0,)
  assert ds.notes == ("1 prompts repeat the text of an earlier prompt",)
  assert read_perfectblend(tmp_path / f"blend{suffix}", max_prompts=2).num_prompts == 2
  back = read_dataset(write_dataset(ds, tmp_path / "out", format=suffix[1:]))
  assert (back.prompt_ids, back.prompts, back.categories) == (
      ds.prompt_ids, ds.prompts, ds.categories)
  assert back.llms == () and len(back.samples) == 0


def test_role_content_turns_and_shard_folder(tmp_path):
  (tmp_path / "data").mkdir()
  _write(tmp_path / "data" / "train-00000-of-00002.parquet",
         [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
           "source": "chat"}])
  _write(tmp_path / "data" / "train-00001-of-00002.parquet",
         [{"messages": [{"role": "user", "content": "bye"}], "source": "chat"}] * 3)
  ds = read_perfectblend(tmp_path / "data")
  assert ds.prompts == ("hi", "bye", "bye", "bye")
  assert ds.prompt_ids[:2] == ("train-00000-of-00002:1", "train-00001-of-00002:1")
  assert read_perfectblend(tmp_path / "data", max_prompts=2).prompts == ("hi", "bye")


_BAD = {
    "no user turn": ({"conversations": [{"from": "gpt", "value": "unprompted"}]},
                     "conversations", "no user turn"),
    "empty user turn": ({"conversations": [{"from": "system", "value": "s"},
                                           {"from": "human", "value": "  "}]},
                        "conversations[1].value", "empty user turn"),
    "null conversation": ({"conversations": None, "source": "x"}, "conversations",
                          "missing conversation"),
    "turn without role": ({"conversations": [{"value": "who?"}]}, "conversations[0]",
                          "expected"),
}


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
@pytest.mark.parametrize("case", list(_BAD))
def test_bad_rows_are_located(tmp_path, suffix, case):
  bad, field, message = _BAD[case]
  path = _write(tmp_path / f"bad{suffix}", [ROWS[1], ROWS[1], bad])
  with pytest.raises(DataError, match=message) as info:
    read_perfectblend(path)
  assert (info.value.file, info.value.row, info.value.field) == (str(path), 3, field)
  assert "row 3" in str(info.value) and repr(field) in str(info.value)


def test_missing_conversation_key(tmp_path):
  path = _write(tmp_path / "p.jsonl", [ROWS[1], {"source": "x"}])
  with pytest.raises(DataError, match="missing conversation") as info:
    read_perfectblend(path)
  assert (info.value.row, info.value.field) == (2, "conversations")


def test_jsonl_line_numbers_and_bad_json(tmp_path):
  path = tmp_path / "p.jsonl"
  path.write_text(json.dumps(ROWS[0]) + "\n\n" + "{not json\n")
  with pytest.raises(DataError, match="not valid JSON") as info:
    read_perfectblend(path)
  assert info.value.row == 3
