"""ArrayRecord storage of routing data: random access by index, read as a stream through grain.

A records folder holds one kind of record in `num_shards` ArrayRecord files, a `records.json`
describing them and erpjax's output marker (`erpjax.files`):

    records.json                         {"format", "kind", "num_records", "files", "meta"}
    <kind>-00000-of-00004.array_record   records round-robin over the shards

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


class _ShardWriters:
  """Writes records round-robin into `num_shards` ArrayRecord files of the new folder `folder`."""

  def __init__(self, folder: pathlib.Path, kind: str, num_shards: int):
    from array_record.python.array_record_module import ArrayRecordWriter

    folder.mkdir()
    self.files = [f"{kind}-{i:05d}-of-{num_shards:05d}.array_record" for i in range(num_shards)]
    # group_size:1 makes every record its own chunk: random access reads one record, not a group.
    self._writers = [ArrayRecordWriter(str(folder / name), "group_size:1") for name in self.files]
    self.num_records = 0

  def write(self, record: bytes) -> None:
    self._writers[self.num_records % len(self._writers)].write(record)
    self.num_records += 1

  def close(self) -> None:
    for writer in self._writers:
      writer.close()


def write_records(folder: str | os.PathLike[str], kind: str, records: Iterable[bytes], *,
                  num_shards: int = 1, meta: Mapping[str, Any] | None = None) -> pathlib.Path:
  """Writes `records` (consumed once, one at a time) as a records folder at `folder`.

  The folder appears whole or not at all (`files.write_dir_atomically`): an existing records
  folder is replaced in one step, a folder of anything else is refused. `meta` may be filled in by
  the time `records` is exhausted (e.g. the feature dimension).
  """
  from erpjax import files

  if kind not in KINDS:
    raise ValueError(f"record kind {kind!r} not in {KINDS}")
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")

  def write(tmp: pathlib.Path) -> None:
    shards = _ShardWriters(tmp, kind, num_shards)
    try:
      for record in records:
        shards.write(record)
    finally:
      shards.close()
    manifest = {"format": FORMAT, "kind": kind, "num_records": shards.num_records,
                "files": shards.files, "meta": dict(meta or {})}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, allow_nan=False))

  return files.write_dir_atomically(folder, "records", write)


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


def open_records(folder: str | os.PathLike[str], *, kind: str | None = None):
  """(manifest, grain's ArrayRecordDataSource) of a records folder: records by index,
  `source[i]` or many at once with `source.__getitems__(rows)`; nothing is read yet."""
  import grain

  folder = pathlib.Path(folder)
  manifest = read_manifest(folder)
  if kind is not None and manifest["kind"] != kind:
    raise DataError(f"{folder}: holds {manifest['kind']!r} records, expected {kind!r}")
  source = grain.sources.ArrayRecordDataSource([str(folder / name) for name in manifest["files"]])
  if len(source) != manifest["num_records"]:
    raise DataError(f"{folder}: {MANIFEST} counts {manifest['num_records']} records, "
                    f"the shards hold {len(source)}")
  return manifest, source


# Samples.

def write_samples(data: RoutingDataset, folder: str | os.PathLike[str], *,
                  num_shards: int = 1) -> pathlib.Path:
  """Writes every sample of `data` as a self-contained "samples" record."""
  meta = {"name": data.name, "notes": list(data.notes), "llms": list(data.llms),
          "costs": [float(c) for c in data.costs], "reward_models": list(data.reward_models)}
  samples = data.samples
  ids = data.sample_ids(np.arange(len(samples)))

  def records() -> Iterator[bytes]:
    for row, ident in enumerate(ids):
      p = int(samples.prompt_index[row])
      cost = float(samples.cost[row])
      yield json.dumps({
          "id": ident, "prompt_id": data.prompt_ids[p], "prompt": data.prompts[p],
          "category": data.categories[p], "llm": data.llms[samples.llm_index[row]],
          "reward_model": data.reward_models[samples.reward_model_index[row]],
          "reward": float(samples.reward[row]), "cost": None if math.isnan(cost) else cost,
          "response": None if samples.response is None else samples.response[row],
      }, allow_nan=False).encode()

  return write_records(folder, "samples", records(), num_shards=num_shards, meta=meta)


def read_samples(folder: str | os.PathLike[str]) -> RoutingDataset:
  """The `RoutingDataset` a "samples" folder holds (prompts in order of first appearance).

  This materializes the dataset, for the in-memory stages; streaming stages read `open_records`.
  """
  manifest, source = open_records(folder, kind="samples")
  meta = manifest["meta"]
  llms, reward_models = meta["llms"], meta["reward_models"]
  prompt_row: dict[str, int] = {}
  prompts, categories = [], []
  columns: dict[str, list] = {k: [] for k in
                              ("prompt_index", "llm_index", "reward_model_index", "reward", "cost")}
  responses = []
  for index, raw in enumerate(source.__getitems__(range(len(source)))):
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
      raise DataError(f"{folder}: record {index}: {error}") from None
  samples = RewardSamples.build(
      columns["prompt_index"], columns["llm_index"], columns["reward"],
      reward_model_index=columns["reward_model_index"], cost=columns["cost"],
      response=None if any(r is None for r in responses) else responses)
  return RoutingDataset(
      name=meta["name"], prompt_ids=tuple(prompt_row), prompts=tuple(prompts),
      categories=tuple(categories), llms=tuple(llms), costs=np.asarray(meta["costs"], np.float64),
      reward_models=tuple(reward_models), samples=samples, notes=tuple(meta["notes"]))


# Features.

def write_features(folder: str | os.PathLike[str],
                   chunks: Iterable[tuple[Sequence[str], np.ndarray, np.ndarray]], *,
                   llms: Sequence[str], num_shards: int = 1,
                   meta: Mapping[str, Any] | None = None) -> pathlib.Path:
  """Writes (prompt ids [B], features [B, D], expected rewards [B, M]) chunks as "features"
  records, one per prompt; only one chunk is held at a time."""
  meta = {"llms": list(llms), "dim": None, **(meta or {})}

  def records() -> Iterator[bytes]:
    for ids, features, rewards in chunks:
      features = np.asarray(features, np.float32)
      rewards = np.asarray(rewards, np.float64)
      meta["dim"] = features.shape[1] if meta["dim"] is None else meta["dim"]
      if features.shape != (len(ids), meta["dim"]) or rewards.shape != (len(ids), len(llms)):
        raise ValueError(f"chunk of {len(ids)} ids has features {features.shape} and rewards "
                         f"{rewards.shape}; expected [B, {meta['dim']}] and [B, {len(llms)}]")
      for ident, x, y in zip(ids, features, rewards):
        yield encode_arrays(ident, {"x": x, "y": y})

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
