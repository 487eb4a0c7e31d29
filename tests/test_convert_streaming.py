"""`erpjax convert` streamed (erpjax/data/_convert.py): the records folder of the in-memory path,
read_dataset's error messages, and memory bounded by one batch and one shard."""

import gc
import json
import pathlib
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from erpjax import cli
from erpjax.data import (DataError, RewardSamples, RoutingDataset, convert_dataset, read_dataset,
                         read_samples, write_dataset, write_samples)
from erpjax.data._records import open_records, read_manifest


def _dataset(num_prompts: int = 60) -> RoutingDataset:
  """Prompts with 0 to 5 samples, unknown categories and costs, two reward models, some
  responses missing."""
  rng = np.random.default_rng(0)
  counts = rng.integers(0, 6, num_prompts)
  prompt_index = np.repeat(np.arange(num_prompts), counts)
  rng.shuffle(prompt_index)  # a prompt's samples spread over the file and over batches
  n = len(prompt_index)
  return RoutingDataset(
      name="tiny", prompt_ids=tuple(f"q{i}" for i in range(num_prompts)),
      prompts=tuple(f"prompt {i} ✓" for i in range(num_prompts)),
      categories=tuple(None if i % 3 else f"cat{i % 2}" for i in range(num_prompts)),
      llms=("a", "b", "c"), costs=np.array([0.5, 0.0, 2.0]), reward_models=("rm2", "rm1"),
      samples=RewardSamples.build(
          prompt_index, rng.integers(0, 3, n), rng.normal(size=n),
          reward_model_index=rng.integers(0, 2, n),
          cost=np.where(rng.random(n) < 0.3, np.nan, rng.random(n)),
          response=[None if i % 7 == 0 else f"answer {i}" for i in range(n)]),
      notes=("a note",))


def _records(folder: pathlib.Path, shard: int) -> list[bytes]:
  _, source = open_records(folder, shards=[shard])
  return list(source.__getitems__(range(len(source)))) if len(source) else []


def _assert_same_folder(streamed: pathlib.Path, expected: pathlib.Path, num_shards: int) -> None:
  assert read_manifest(streamed) == read_manifest(expected)
  for shard in range(num_shards):
    assert _records(streamed, shard) == _records(expected, shard), shard


def _leftovers(parent: pathlib.Path) -> list[str]:
  return sorted(p.name for p in parent.iterdir() if ".tmp" in p.name or "convert" in p.name)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("reward_models_listed", [True, False])
def test_streamed_records_equal_the_in_memory_path(tmp_path, fmt, reward_models_listed):
  source = write_dataset(_dataset(), tmp_path / "ds", format=fmt)
  if not reward_models_listed:  # then: in order of first appearance in the samples table
    meta = json.loads((source / "dataset.json").read_text())
    del meta["reward_models"]
    (source / "dataset.json").write_text(json.dumps(meta))
  if fmt == "jsonl":  # blank lines count as rows in messages; they must not shift anything
    text = (source / "samples.jsonl").read_text().splitlines(keepends=True)
    (source / "samples.jsonl").write_text("".join(text[:5] + ["\n"] + text[5:]))
  expected = write_samples(read_dataset(source), tmp_path / "memory", num_shards=4)
  done = convert_dataset(source, tmp_path / "streamed", num_shards=4, batch_rows=7)
  _assert_same_folder(done.folder, expected, 4)
  data = read_dataset(source)
  assert (done.num_prompts, done.num_samples, done.num_llms) == (
      data.num_prompts, len(data.samples), data.num_llms)
  assert _leftovers(tmp_path) == []


def test_mixed_formats_and_the_command(tmp_path, capsys):
  source = write_dataset(_dataset(), tmp_path / "ds", format="parquet")
  table = pq.read_table(source / "samples.parquet")
  (source / "samples.parquet").unlink()
  with open(source / "samples.jsonl", "w") as f:
    for record in table.to_pylist():
      f.write(json.dumps(record) + "\n")
  expected = write_samples(read_dataset(source), tmp_path / "memory", num_shards=1)
  assert cli.main(["convert", str(source), "-o", str(tmp_path / "out")]) == 0
  assert "as 1 ArrayRecord shard(s)" in capsys.readouterr().out
  _assert_same_folder(tmp_path / "out", expected, 1)


def _jsonl_folder(tmp_path) -> pathlib.Path:
  return write_dataset(_dataset(), tmp_path / "ds", format="jsonl")


def _edit_line(path: pathlib.Path, row: int, **changes) -> None:
  lines = path.read_text().splitlines()
  record = json.loads(lines[row - 1])
  record.update(changes)
  lines[row - 1] = json.dumps(record)  # NaN/Infinity written as the (JSON5) tokens json reads
  path.write_text("\n".join(lines) + "\n")


def _undeclared_llm(folder):
  _edit_line(folder / "samples.jsonl", 40, llm="gpt-9")


def _duplicate_prompt(folder):
  with open(folder / "prompts.jsonl", "a") as f:  # row 61
    f.write(json.dumps({"prompt_id": "q3", "text": "again"}) + "\n")


def _nonfinite_reward(folder):
  _edit_line(folder / "samples.jsonl", 77, reward=float("inf"))


def _blank_text(folder):
  _edit_line(folder / "prompts.jsonl", 33, text=" \t")


def _undeclared_prompt(folder):
  _edit_line(folder / "samples.jsonl", 61, prompt_id="nowhere")


def _wrong_type_late(folder):
  _edit_line(folder / "samples.jsonl", 95, reward="0.5")


def _negative_llm_cost(folder):
  _edit_line(folder / "llms.jsonl", 2, cost=-1)


def _parquet_null_late(folder):
  path = folder / "samples.parquet"
  write_dataset(read_dataset(folder), folder, format="parquet")  # replaces the JSONL tables
  table = pq.read_table(path)
  llm = table.column("llm").to_pylist()
  llm[88] = None
  pq.write_table(table.set_column(1, "llm", pa.array(llm, pa.string())), path)


@pytest.mark.parametrize("edit, message", [
    (_undeclared_llm, "samples.jsonl, row 40, field 'llm': llm 'gpt-9' is not declared in "
     "llms.jsonl"),
    (_duplicate_prompt, "prompts.jsonl, row 61, field 'prompt_id': duplicate prompt_id 'q3' "
     "(first at row 4)"),
    (_nonfinite_reward, "samples.jsonl, row 77, field 'reward': reward is inf (must be finite)"),
    (_blank_text, "prompts.jsonl, row 33, field 'text': empty prompt text"),
    (_undeclared_prompt, "samples.jsonl, row 61, field 'prompt_id': prompt_id 'nowhere' is not "
     "declared in prompts.jsonl"),
    (_wrong_type_late, "samples.jsonl, row 95, field 'reward': expected a number, found str"),
    (_negative_llm_cost, "llms.jsonl, row 2, field 'cost': cost is -1.0 (must not be negative)"),
    (_parquet_null_late, "samples.parquet, row 89, field 'llm': missing required field (null)"),
])
def test_bad_input_gets_read_datasets_message(tmp_path, edit, message):
  folder = _jsonl_folder(tmp_path)
  edit(folder)
  with pytest.raises(DataError) as expected:
    read_dataset(folder)
  assert message in str(expected.value)
  with pytest.raises(DataError) as streamed:  # rows span many batches and shards
    convert_dataset(folder, tmp_path / "out", num_shards=5, batch_rows=4)
  assert str(streamed.value) == str(expected.value)
  assert not (tmp_path / "out").exists()
  assert _leftovers(tmp_path) == []


# Memory: one batch and one shard, whatever the number of samples.

def _synthetic_folder(folder: pathlib.Path, num_prompts: int, per_prompt: int) -> pathlib.Path:
  """A JSONL dataset folder of num_prompts * per_prompt samples with short texts, written fast."""
  folder.mkdir()
  with open(folder / "prompts.jsonl", "w") as f:
    f.writelines(f'{{"prompt_id": "p{i}", "text": "question number {i}"}}\n'
                 for i in range(num_prompts))
  (folder / "llms.jsonl").write_text('{"llm": "a", "cost": 1}\n{"llm": "b", "cost": 2}\n')
  with open(folder / "samples.jsonl", "w") as f:
    for k in range(per_prompt):  # samples of one prompt far apart in the file
      f.writelines(f'{{"prompt_id": "p{i}", "llm": "{"ab"[k % 2]}", "reward": {k / 10}, '
                   f'"response": "reply {k} to {i}"}}\n' for i in range(num_prompts))
  return folder


def _peak_bytes(run) -> int:
  """Peak of Python objects (tracemalloc) plus Arrow buffers (a fresh memory pool's peak) while
  `run()` runs."""
  pool = pa.proxy_memory_pool(pa.default_memory_pool())
  previous = pa.default_memory_pool()
  pa.set_memory_pool(pool)
  gc.collect()
  tracemalloc.start()
  try:
    run()
    _, python_peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
    pa.set_memory_pool(previous)
  return python_peak + pool.max_memory()


def test_memory_is_one_batch_and_one_shard_not_the_dataset(tmp_path):
  """100,000 samples in 10 shards take the memory of 10,000 samples in one: the same batch
  (1,000 rows) and the same shard size. Holding the dataset (the in-memory path) takes ~10x."""
  big = _synthetic_folder(tmp_path / "big", 10_000, 10)
  one_shard = _synthetic_folder(tmp_path / "small", 1_000, 10)
  convert_dataset(one_shard, tmp_path / "warm", num_shards=1)  # imports, lazy set-ups
  small_peak = _peak_bytes(
      lambda: convert_dataset(one_shard, tmp_path / "o1", num_shards=1, batch_rows=1_000))
  big_peak = _peak_bytes(
      lambda: convert_dataset(big, tmp_path / "o2", num_shards=10, batch_rows=1_000))
  print(f"peak bytes: 10k samples, 1 shard {small_peak:,}; 100k samples, 10 shards {big_peak:,}")
  assert big_peak < 1.5 * small_peak
  # The assertion can fail: reading the 100k samples whole takes far more.
  assert _peak_bytes(lambda: read_dataset(big)) > 5 * small_peak


def test_one_record_writer_alive_at_a_time_and_empty_shards_written(tmp_path, monkeypatch):
  """An ArrayRecord writer keeps ~200 bytes per record until it is freed (outside what
  tracemalloc sees), so convert must not keep S writers: at most one is alive at any time."""
  import weakref

  from erpjax.data import _records as records_module

  alive, most = set(), [0]

  def counted(path):
    writer = real(path)

    class Counted:  # pybind11 writers take no weak references; a wrapper does
      write, close = writer.write, writer.close

    wrapper = Counted()
    alive.add(id(wrapper))
    weakref.finalize(wrapper, alive.discard, id(wrapper))
    most[0] = max(most[0], len(alive))
    return wrapper

  real = records_module._writer
  monkeypatch.setattr(records_module, "_writer", counted)
  source = write_dataset(_dataset(num_prompts=5), tmp_path / "ds")
  done = convert_dataset(source, tmp_path / "out", num_shards=12, batch_rows=3)
  assert most[0] == 1
  monkeypatch.setattr(records_module, "_writer", real)
  expected = write_samples(read_dataset(source), tmp_path / "memory", num_shards=12)
  _assert_same_folder(done.folder, expected, 12)
  assert sum(not _records(done.folder, s) for s in range(12)) >= 7  # 5 prompts: empty shards
  assert [read_samples(done.folder, shards=[s]).num_prompts for s in range(12)].count(0) >= 7


def test_records_out_of_shard_order_are_refused(tmp_path):
  from erpjax.data._records import write_records

  with pytest.raises(ValueError, match="a record of shard 0 after shard 1's"):
    write_records(tmp_path / "r", "samples", [(1, b"a"), (0, b"b")], num_shards=2,
                  in_shard_order=True)
  assert not (tmp_path / "r").exists()
