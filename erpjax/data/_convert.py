"""A dataset folder to a "samples" records folder in bounded memory: `erpjax convert`.

`write_samples(read_dataset(folder), ...)` holds every table whole. `convert_dataset` writes the
same records folder (the same records in the same shards and order, the same records.json) as an
external hash-partition join in two passes, holding one batch of rows, then one shard:

1. The prompts and samples tables are read `batch_rows` rows at a time (Parquet row batches, each
   row group decoded whole by Arrow; JSONL blocks of lines), parsed and checked field by field as
   `read_dataset` parses them, and each row is appended, with its row in the file, to the
   temporary bucket of its prompt's shard `shard_of(prompt_id, S)` (Arrow IPC, one file per table
   and shard, in a temporary folder beside the output, removed however the conversion ends; only
   a SIGKILL leaves it, as `.<output>.convert-*.tmp`). The llms table (M rows) is read whole.
2. Shard by shard, the two buckets are read back and go through `read_dataset`'s own checks and
   join (`_io._checked_dataset`), and the shard's dataset is written with `sample_records`, one
   ArrayRecord writer open at a time (`write_records(in_shard_order=True)`).

Measured (peak RSS of `erpjax convert`, short texts, 2-core CPU host): 1e5 JSONL samples in 1
shard 319 MB, 1e6 in 10 shards 325 MB (the in-memory path: 311 and 787 MB).

The checks that compare rows are local to a shard: every copy of a prompt id hashes to the same
shard, and so does every sample of a declared prompt. So each problem is reported with the
message `read_dataset` gives, naming the original file, row and field. Where the input has several
problems, the one named may differ from `read_dataset`'s first (buckets are checked shard by
shard; the samples table's location is looked up first, to count its rows).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import struct
import tempfile
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from erpjax.data import _io
from erpjax.data._errors import DataError
from erpjax.data._records import sample_records, samples_meta, shard_of, write_records

BATCH_ROWS = 32_768  # rows parsed at a time in pass 1: tens of MB of JSONL objects at most
_ROW = "__row__"  # the bucket column holding each row's 1-based row in the original file
_SIZE = struct.Struct("<Q")  # byte length of one IPC stream appended to a bucket


@dataclasses.dataclass(frozen=True)
class Converted:
  """What `convert_dataset` wrote: the records folder and its counts."""

  folder: pathlib.Path
  num_shards: int
  num_prompts: int
  num_samples: int
  num_llms: int


def count_rows(path: str | os.PathLike[str]) -> int:
  """Data rows of a table file, for choosing the shard count before reading it: Parquet's
  metadata count; for JSONL, its lines, counted in 1 MiB blocks without parsing (blank lines
  are counted too, so it may exceed the samples by those)."""
  path = pathlib.Path(path)
  if path.suffix == ".parquet":
    try:
      return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as e:
      raise DataError(f"not a readable Parquet file: {e}", file=path) from e
  lines, last = 0, b"\n"
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      lines += block.count(b"\n")
      last = block[-1:]
  return lines + (last != b"\n")  # a last line without a line break


class _Buckets:
  """One table's rows partitioned by shard into append-only files (one per shard) of
  length-prefixed Arrow IPC streams; a shard's file is read back whole, rows in file order."""

  def __init__(self, folder: pathlib.Path, table: str, num_shards: int):
    self.table = table
    self.paths = [folder / f"{table}-{s:05d}.arrows" for s in range(num_shards)]

  def add(self, batch: _io._Table, shards: np.ndarray) -> None:
    """Appends each row of `batch` ([n] rows) to the bucket of its shard `shards` ([n] int)."""
    order = np.argsort(shards, kind="stable")  # stable: rows stay in file order within a shard
    data = pa.table({**batch.columns, _ROW: pa.array(batch.rows)}).take(pa.array(order))
    bounds = np.searchsorted(shards[order], np.arange(len(self.paths) + 1))
    for shard in np.flatnonzero(np.diff(bounds)):
      piece = data.slice(bounds[shard], bounds[shard + 1] - bounds[shard])
      sink = pa.BufferOutputStream()
      with pa.ipc.new_stream(sink, piece.schema) as writer:
        writer.write_table(piece)
      stream = sink.getvalue()
      # Files are opened per append, not kept open: S may exceed the open-file limit.
      with open(self.paths[shard], "ab") as f:
        f.write(_SIZE.pack(stream.size))
        f.write(stream)

  def take(self, shard: int, path: pathlib.Path) -> _io._Table:
    """The rows of `shard` as a table of the original file `path` (empty if none hashed there);
    the bucket file is deleted."""
    fields = _io._TABLES[self.table]
    bucket = self.paths[shard]
    if not bucket.exists():  # An empty table of the right column types.
      return _io._jsonl_table(path, fields, ())
    pieces = []
    with open(bucket, "rb") as f:
      while header := f.read(_SIZE.size):
        (size,) = _SIZE.unpack(header)
        pieces.append(pa.ipc.open_stream(f.read(size)).read_all())
    bucket.unlink()
    data = pa.concat_tables(pieces)
    return _io._Table(path, {field.name: data.column(field.name) for field in fields},
                      data.column(_ROW).to_numpy())


def _partition(batch: _io._Table, buckets: _Buckets, num_shards: int) -> None:
  ids = batch.columns["prompt_id"].to_pylist()
  buckets.add(batch, np.fromiter((shard_of(i, num_shards) for i in ids), np.int64, len(ids)))


def convert_dataset(folder: str | os.PathLike[str], output: str | os.PathLike[str], *,
                    num_shards: int | None = None, name: str | None = None,
                    batch_rows: int = BATCH_ROWS) -> Converted:
  """Writes the dataset folder `folder` (docs/data_format.md) as the "samples" records folder
  `output`, as `write_samples(read_dataset(folder, name), output, num_shards=...)` would, holding
  at most one batch of `batch_rows` rows (pass 1) or one shard (pass 2) in memory.

  Args:
    num_shards: S; default `erpjax.streamed.default_num_shards` of the samples table's row count
      (`count_rows`: exact for Parquet; JSONL lines, blank ones included).
    name: the dataset's name (default: dataset.json's, else the folder's name).

  Raises:
    DataError: a malformed input, with `read_dataset`'s message (file, row, field).
    erpjax.files.OutputPathError: `output` is not a records folder erpjax may replace.
  """
  from erpjax import files
  from erpjax.streamed import default_num_shards

  if num_shards is not None and num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")
  if batch_rows < 1:
    raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
  folder = pathlib.Path(folder)
  output = files.check_output_dir(output, "records")  # before reading a large input
  meta = _io._read_meta(folder / _io.META_FILE)
  samples_path = _io._table_path(folder, "samples")
  num_shards = num_shards or default_num_shards(count_rows(samples_path))
  output.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{output.name}.convert-", suffix=".tmp",
                                      dir=output.parent))
  try:
    # Pass 1, in read_dataset's table order: prompts, llms, samples.
    prompts_path = _io._table_path(folder, "prompts")
    prompt_buckets = _Buckets(tmp, "prompts", num_shards)
    for batch in _io._table_batches(prompts_path, "prompts", batch_rows):
      _partition(batch, prompt_buckets, num_shards)
    llms = _io._read_table(folder, "llms")
    sample_buckets = _Buckets(tmp, "samples", num_shards)
    first_seen: dict[str, None] = {}  # reward models in order of first appearance
    for batch in _io._table_batches(samples_path, "samples", batch_rows):
      first_seen.update(dict.fromkeys(pc.unique(batch.columns["reward_model"]).to_pylist()))
      _partition(batch, sample_buckets, num_shards)
    reward_models = meta.get("reward_models")
    if reward_models is None:
      reward_models = list(first_seen)
    name = name or meta.get("name") or folder.name

    # Pass 2: each shard's prompts and samples, checked and joined. records.json's meta comes
    # from the shards' datasets (the same for each: name, notes, LLMs, costs, reward models).
    out_meta: dict = {}
    counts = {"prompts": 0, "samples": 0}

    def records() -> Iterator[tuple[int, bytes]]:
      for shard in range(num_shards):
        data = _io._checked_dataset(
            folder, meta, prompt_buckets.take(shard, prompts_path), llms,
            sample_buckets.take(shard, samples_path), name=name, reward_models=reward_models)
        out_meta.update(samples_meta(data))
        counts["prompts"] += data.num_prompts
        counts["samples"] += len(data.samples)
        for _, record in sample_records(data):
          yield shard, record
        del data  # before the next shard is read: one shard at a time

    written = write_records(output, "samples", records(), num_shards=num_shards, meta=out_meta,
                            in_shard_order=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return Converted(written, num_shards, counts["prompts"], counts["samples"],
                   len(out_meta["llms"]))
