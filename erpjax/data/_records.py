"""ArrayRecord storage of routing data: random access by index, read as a stream through grain.

A records folder holds one kind of record in `num_shards` ArrayRecord files, a `records.json`
describing them and erpjax's output marker (`erpjax.files`):

    records.json                         {"format", "kind", "num_records", "files", "meta"}
    <kind>-00000-of-00004.array_record   one shard of the records

Samples are placed by prompt: a prompt's samples all sit in the shard `shard_of(prompt id)`, so a
shard is a self-contained unit of work (whole prompts, and every copy of a (prompt, response)
together) that one process reads alone (`erpjax.streamed`). Features go round-robin.

Two kinds:
- "samples": one record per sampled response, self-contained for scoring and estimation:
  UTF-8 JSON `{"id", "prompt_id", "prompt", "category", "llm", "reward_model", "reward", "cost",
  "response"}` (`id` is the stable sample id of `RoutingDataset.sample_ids`: [prompt id, LLM, k]).
  `meta` holds the dataset's name, notes, LLMs with their routing costs and reward models.
- "features": one record per prompt for fitting: its id, its feature vector float32[D] and its
  estimated expected rewards float64[M] (NaN: no samples), encoded by `encode_arrays` (a JSON
  header and raw little-endian bytes; nothing is ever unpickled).

Readers never load a whole folder: `open_records` gives random access by index, and
`feature_chunks` streams this process's share of [B, D] / [B, M] chunks through a grain
iterator whose `get_state()` / `set_state()` resume a pass where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from erpjax.data._errors import DataError
from erpjax.data._schema import RewardSamples, RoutingDataset

FORMAT = "erpjax.records/1"
MANIFEST = "records.json"
KINDS = ("samples", "features")
_HEADER = struct.Struct("<I")  # byte length of an array record's JSON header


def encode_arrays(ident: str, arrays: Mapping[str, np.ndarray]) -> bytes:
  """One record: `ident` and named arrays as a JSON header (dtype, shape) + their raw bytes."""
  arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
  header = json.dumps({"id": ident, "arrays": [
      [name, a.dtype.newbyteorder("<").str, list(a.shape)] for name, a in arrays.items()]})
  body = b"".join(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
                  for a in arrays.values())
  encoded = header.encode()
  return _HEADER.pack(len(encoded)) + encoded + body


def decode_arrays(record: bytes) -> tuple[str, dict[str, np.ndarray]]:
  """Inverse of `encode_arrays`: (ident, {name: array})."""
  (size,) = _HEADER.unpack_from(record)
  header = json.loads(record[_HEADER.size:_HEADER.size + size])
  offset = _HEADER.size + size
  arrays = {}
  for name, dtype, shape in header["arrays"]:
    dtype = np.dtype(dtype)
    count = math.prod(shape)
    arrays[name] = np.frombuffer(record, dtype, count, offset).reshape(shape)
    offset += count * dtype.itemsize
  if offset != len(record):
    raise ValueError(f"record of {len(record)} bytes, its header describes {offset}")
  return header["id"], arrays


def shard_of(prompt_id: str, num_shards: int) -> int:
  """The shard holding the samples of prompt `prompt_id`: a stable hash of the id (the one
  `erpjax.runtime.distributed.owner` uses), the same on every machine and run."""
  from erpjax.runtime.distributed import owner

  return owner(prompt_id, num_shards)


def shard_files(kind: str, num_shards: int) -> list[str]:
  """The file names of a folder's `num_shards` shards of `kind` records."""
  return [f"{kind}-{i:05d}-of-{num_shards:05d}.array_record" for i in range(num_shards)]


def _writer(path: str | os.PathLike[str]):
  from array_record.python.array_record_module import ArrayRecordWriter

  # group_size:1 makes every record its own chunk: random access reads one record, not a group.
  return ArrayRecordWriter(str(path), "group_size:1")


def _check_kind(kind: str, num_shards: int) -> None:
  if kind not in KINDS:
    raise ValueError(f"record kind {kind!r} not in {KINDS}")
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")


def _manifest(kind: str, num_records: int, names: Sequence[str], meta: Mapping[str, Any]) -> str:
  return json.dumps({"format": FORMAT, "kind": kind, "num_records": num_records,
                     "files": list(names), "meta": dict(meta)}, indent=1, allow_nan=False)


def write_records(folder: str | os.PathLike[str], kind: str,
                  records: Iterable[tuple[int, bytes]], *, num_shards: int = 1,
                  meta: Mapping[str, Any] | None = None,
                  in_shard_order: bool = False) -> pathlib.Path:
  """Writes `records`, (shard, record) pairs consumed once, one at a time, as a records folder.

  The folder appears whole or not at all (`files.write_dir_atomically`): an existing records
  folder is replaced in one step, a folder of anything else is refused. `meta` may be filled in by
  the time `records` is exhausted (e.g. the feature dimension).

  An open ArrayRecord writer holds ~200 bytes per record written (its index) until it is closed,
  so S shards open at once hold memory in proportion to the whole folder. With `in_shard_order`
  (shard numbers never decrease, as from `erpjax.data.convert_dataset`) one shard is open at a
  time: each is closed as the next begins.
  """
  from erpjax import files

  _check_kind(kind, num_shards)

  def write(tmp: pathlib.Path) -> None:
    tmp.mkdir()
    names = shard_files(kind, num_shards)
    writers = [] if in_shard_order else [_writer(tmp / name) for name in names]
    num_records = 0
    try:
      for shard, record in records:
        if in_shard_order and shard < len(writers) - 1:
          raise ValueError(f"a record of shard {shard} after shard {len(writers) - 1}'s")
        while len(writers) <= shard:  # in_shard_order: shards up to this one begin
          if writers:
            writers[-1].close()
            writers[-1] = None  # a closed writer keeps part of its index until it is freed
          writers.append(_writer(tmp / names[len(writers)]))
        writers[shard].write(record)
        num_records += 1
      writers += [_writer(tmp / name) for name in names[len(writers):]]  # shards left empty
    finally:
      for writer in writers:
        if writer is not None:
          writer.close()
    (tmp / MANIFEST).write_text(_manifest(kind, num_records, names, meta or {}))

  return files.write_dir_atomically(folder, "records", write)


PENDING = "records.pending.json"


def write_records_by_shard(folder: str | os.PathLike[str], kind: str, num_shards: int,
                           shard_records: Callable[[int], Iterable[bytes]], *,
                           meta: Mapping[str, Any]) -> pathlib.Path:
  """Fills a records folder shard by shard, each process its own shards; resumable.

  Process p of a P-process run (`jax.process_index()`, `jax.process_count()`; one process: all)
  writes the shards s with s % P == p, from `shard_records(s)`; a shard file is written whole or
  not at all (`files.atomic_write`), and one that exists (an interrupted run finished it) is
  skipped, so a restart with any process count writes each missing shard once. Process 0 claims
  the folder and records `meta` in records.pending.json before the others start, and writes
  records.json, which makes the folder readable, once every shard is there.

  Returns:
    The folder. A complete folder with the same meta is returned as it is.

  Raises:
    DataError: the folder holds records of another kind, meta or shard count.
  """
  import jax

  from erpjax import files
  from erpjax.runtime import distributed

  _check_kind(kind, num_shards)
  folder = pathlib.Path(folder).absolute()
  names = shard_files(kind, num_shards)
  job = json.loads(_manifest(kind, 0, names, meta))  # As read back from disk.
  del job["num_records"]
  if jax.process_index() == 0:
    files.check_output_dir(folder, "records")
    for name in (MANIFEST, PENDING):
      path = folder / name
      found = json.loads(path.read_text()) if path.is_file() else None
      if found is not None:
        found.pop("num_records", None)
        if found != job:
          raise DataError(f"{path}: the folder holds other records (its {name} differs from "
                          "this job's: kind, shards or meta); use a new folder")
    if not (folder / MANIFEST).is_file():
      files.claim_output_dir(folder, "records")
      files.atomic_write_text(folder / PENDING, json.dumps(job, indent=1, allow_nan=False))
      # Leftovers of shard writes killed before their rename (atomic_write's temporary names);
      # no process writes yet: the others wait at the barrier below.
      for stale in folder.glob(f".{kind}-*.tmp"):
        stale.unlink()
  distributed.barrier(f"records folder {folder} opened")
  if (folder / MANIFEST).is_file():
    return folder
  process, num_processes = jax.process_index(), jax.process_count()
  for shard in range(process, num_shards, num_processes):
    path = folder / names[shard]
    if path.exists():
      continue

    def write(tmp: str, shard: int = shard) -> None:
      writer = _writer(tmp)
      try:
        for record in shard_records(shard):
          writer.write(record)
      finally:
        writer.close()

    files.atomic_write(path, write)
  distributed.barrier(f"records folder {folder} written")
  if process == 0:
    from array_record.python.array_record_module import ArrayRecordReader

    num_records = 0
    for name in names:
      reader = ArrayRecordReader(str(folder / name))
      num_records += reader.num_records()
      reader.close()
    files.atomic_write_text(folder / MANIFEST, _manifest(kind, num_records, names, meta))
    (folder / PENDING).unlink()
  distributed.barrier(f"records folder {folder} complete")
  return folder


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
  """The records.json of `folder`, checked."""
  folder = pathlib.Path(folder)
  path = folder / MANIFEST
  try:
    manifest = json.loads(path.read_text())
  except FileNotFoundError:
    raise DataError(f"{folder}: not a records folder (no {MANIFEST})") from None
  except ValueError as error:
    raise DataError(f"{path}: not valid JSON: {error}") from None
  if manifest.get("format") != FORMAT:
    raise DataError(f"{path}: format {manifest.get('format')!r}, this erpjax reads {FORMAT!r}")
  missing = [name for name in manifest["files"] if not (folder / name).exists()]
  if missing:
    raise DataError(f"{folder}: shard file(s) {missing} listed in {MANIFEST} are missing")
  return manifest


def open_records(folder: str | os.PathLike[str], *, kind: str | None = None,
                 shards: Sequence[int] | None = None):
  """(manifest, grain's ArrayRecordDataSource) of a records folder's `shards` (None: all):
  records by index, `source[i]` or many at once with `source.__getitems__(rows)`; nothing is read
  yet."""
  import grain

  folder = pathlib.Path(folder)
  manifest = read_manifest(folder)
  if kind is not None and manifest["kind"] != kind:
    raise DataError(f"{folder}: holds {manifest['kind']!r} records, expected {kind!r}")
  names = manifest["files"] if shards is None else [manifest["files"][s] for s in shards]
  source = grain.sources.ArrayRecordDataSource([str(folder / name) for name in names])
  if shards is None and len(source) != manifest["num_records"]:
    raise DataError(f"{folder}: {MANIFEST} counts {manifest['num_records']} records, "
                    f"the shards hold {len(source)}")
  return manifest, source


# Samples.

def samples_meta(data: RoutingDataset) -> dict[str, Any]:
  """What a "samples" folder records about `data` beside its samples."""
  return {"name": data.name, "notes": list(data.notes), "llms": list(data.llms),
          "costs": [float(c) for c in data.costs], "reward_models": list(data.reward_models)}


def sample_records(data: RoutingDataset) -> Iterator[tuple[str, bytes]]:
  """(prompt id, "samples" record) of every sample of `data`, one at a time."""
  samples = data.samples
  ids = data.sample_ids(np.arange(len(samples)))
  for row, ident in enumerate(ids):
    p = int(samples.prompt_index[row])
    cost = float(samples.cost[row])
    yield data.prompt_ids[p], json.dumps({
        "id": ident, "prompt_id": data.prompt_ids[p], "prompt": data.prompts[p],
        "category": data.categories[p], "llm": data.llms[samples.llm_index[row]],
        "reward_model": data.reward_models[samples.reward_model_index[row]],
        "reward": float(samples.reward[row]), "cost": None if math.isnan(cost) else cost,
        "response": None if samples.response is None else samples.response[row],
    }, allow_nan=False).encode()


def write_samples(data: RoutingDataset, folder: str | os.PathLike[str], *,
                  num_shards: int = 1) -> pathlib.Path:
  """Writes every sample of `data` as a self-contained "samples" record, each prompt's samples
  in shard `shard_of(prompt id)`."""
  records = ((shard_of(prompt_id, num_shards), record)
             for prompt_id, record in sample_records(data))
  return write_records(folder, "samples", records, num_shards=num_shards, meta=samples_meta(data))


def read_samples(folder: str | os.PathLike[str], *,
                 shards: Sequence[int] | None = None) -> RoutingDataset:
  """The `RoutingDataset` of a "samples" folder's `shards` (None: all; prompts in order of first
  appearance). One shard holds whole prompts (`shard_of`): the unit a process reads alone."""
  manifest, source = open_records(folder, kind="samples", shards=shards)
  meta = manifest["meta"]
  llms, reward_models = meta["llms"], meta["reward_models"]
  prompt_row: dict[str, int] = {}
  prompts, categories = [], []
  columns: dict[str, list] = {k: [] for k in
                              ("prompt_index", "llm_index", "reward_model_index", "reward", "cost")}
  responses = []
  where = "" if shards is None else f" (of shards {list(shards)})"
  # An empty shard (no prompt hashed to it) is read as no records: grain's bulk read of none
  # raises.
  for index, raw in enumerate(source.__getitems__(range(len(source))) if len(source) else ()):
    try:
      record = json.loads(raw)
      p = prompt_row.setdefault(record["prompt_id"], len(prompt_row))
      if p == len(prompts):
        prompts.append(record["prompt"])
        categories.append(record["category"])
      columns["prompt_index"].append(p)
      columns["llm_index"].append(llms.index(record["llm"]))
      columns["reward_model_index"].append(reward_models.index(record["reward_model"]))
      columns["reward"].append(float(record["reward"]))
      columns["cost"].append(math.nan if record["cost"] is None else float(record["cost"]))
      responses.append(record["response"])
    except (ValueError, KeyError, TypeError) as error:
      raise DataError(f"{folder}: record {index}{where}: {error}") from None
  samples = RewardSamples.build(
      columns["prompt_index"], columns["llm_index"], columns["reward"],
      reward_model_index=columns["reward_model_index"], cost=columns["cost"],
      response=None if any(r is None for r in responses) else responses)
  return RoutingDataset(
      name=meta["name"], prompt_ids=tuple(prompt_row), prompts=tuple(prompts),
      categories=tuple(categories), llms=tuple(llms), costs=np.asarray(meta["costs"], np.float64),
      reward_models=tuple(reward_models), samples=samples, notes=tuple(meta["notes"]))


# Features.

def feature_records(ids: Sequence[str], features, rewards, *, dim: int,
                    num_llms: int) -> Iterator[bytes]:
  """The "features" record of each of B prompts: ids [B], features [B, D], rewards [B, M]."""
  features = np.asarray(features, np.float32)
  rewards = np.asarray(rewards, np.float64)
  if features.shape != (len(ids), dim) or rewards.shape != (len(ids), num_llms):
    raise ValueError(f"chunk of {len(ids)} ids has features {features.shape} and rewards "
                     f"{rewards.shape}; expected [B, {dim}] and [B, {num_llms}]")
  for ident, x, y in zip(ids, features, rewards):
    yield encode_arrays(ident, {"x": x, "y": y})


def write_features(folder: str | os.PathLike[str],
                   chunks: Iterable[tuple[Sequence[str], np.ndarray, np.ndarray]], *,
                   llms: Sequence[str], num_shards: int = 1,
                   meta: Mapping[str, Any] | None = None) -> pathlib.Path:
  """Writes (prompt ids [B], features [B, D], expected rewards [B, M]) chunks as "features"
  records, one per prompt, round-robin over the shards; only one chunk is held at a time."""
  meta = {"llms": list(llms), "dim": None, **(meta or {})}

  def records() -> Iterator[tuple[int, bytes]]:
    count = 0
    for ids, features, rewards in chunks:
      if meta["dim"] is None:
        meta["dim"] = np.shape(features)[1]
      for record in feature_records(ids, features, rewards, dim=meta["dim"], num_llms=len(llms)):
        yield count % num_shards, record
        count += 1

  return write_records(folder, "features", records(), num_shards=num_shards, meta=meta)


@dataclasses.dataclass(frozen=True)
class FeatureChunk:
  """B prompts of a "features" folder: ids [B], features float32[B, D], rewards float64[B, M]."""

  ids: tuple[str, ...]
  features: np.ndarray
  rewards: np.ndarray


def _stack(records: Sequence[bytes]) -> FeatureChunk:
  decoded = [decode_arrays(r) for r in records]
  return FeatureChunk(tuple(i for i, _ in decoded), np.stack([a["x"] for _, a in decoded]),
                      np.stack([a["y"] for _, a in decoded]))


def feature_chunks(folder: str | os.PathLike[str], *, batch_size: int = 4096,
                   shard_index: int = 0, shard_count: int = 1) -> Iterator[FeatureChunk]:
  """A grain iterator over `FeatureChunk`s of this shard's records (records i with
  i % shard_count == shard_index, e.g. shard = the JAX process).

  The iterator's `get_state()` / `set_state(state)` resume a pass after the last chunk taken.
  """
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
  import grain

  _, source = open_records(folder, kind="features")
  rows = np.arange(shard_index, len(source), shard_count)

  def chunk(start: int) -> FeatureChunk:
    # One bulk read per chunk: the source reads its records in parallel, where reading them one
    # by one (grain's `batch`) costs a lookup each and was 10x slower at 1e6 records.
    return _stack(source.__getitems__(rows[start:start + batch_size].tolist()))

  dataset = grain.MapDataset.range(0, len(rows), batch_size).map(chunk)
  # grain reads ahead 500 elements by default: 500 chunks would hold most of a large folder in
  # memory. Two chunks in flight keep the reader busy while the caller works on one.
  read = grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)
  return iter(dataset.to_iter_dataset(read))
