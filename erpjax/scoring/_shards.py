"""Scores on disk: Parquet shards written atomically, a manifest, and resumption.

A scoring job writes into one folder:
  manifest.json           what the job is (model, the sha256 of its checkpoint files, formatter,
                          dtype, ...) and its shards so far
  scores-000000.parquet   columns `id` (string) and `score` (float32; a fixed-size list of
  scores-000001.parquet   float32 when the model has several labels), one row per scored item
Each file is written under a temporary name and renamed (`erpjax.files.atomic_write`), so a shard
either exists whole or not at all, whenever the process dies. The shard files are the record of
what is done; the manifest describes the job and is rewritten after each shard. A restarted job
reads the ids of the existing shards and scores only the others. A job never adds to a folder of
another job: a retrained reward model at the same path has another checkpoint digest, so its
scores are refused there (with the reason) rather than mixed with the old weights' scores.

One process writes a folder: a multi-process job gives each process folders of its own
(`erpjax.streamed`: one per record shard).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from erpjax.files import atomic_write, atomic_write_text, claim_output_dir, files_digest

MANIFEST = "manifest.json"
SHARD_PREFIX = "scores-"
FORMAT = "erpjax.scores/1"
# The files of a Hugging Face checkpoint folder that decide its scores: weights, config and
# tokenizer. Others (README, a torch copy of the weights, training logs) do not.
CHECKPOINT_FILES = ("config.json", "*.safetensors", "*.safetensors.index.json", "*.gguf",
                    "tokenizer*", "special_tokens_map.json", "vocab*", "merges.txt", "*.model",
                    "chat_template*")


class ScoreFolderError(ValueError):
  """A score folder that cannot be used as asked (another job's scores, duplicate ids, ...)."""


@dataclasses.dataclass(frozen=True)
class Scores:
  """Merged scores of a folder.

  Attributes:
    ids: [N] item ids, sorted.
    values: float32[N, L] scores (L = the reward model's labels, 1 for reward models).
    job: the job description from the manifest.
    complete: whether the job finished (every input id has a score).
  """

  ids: tuple[str, ...]
  values: np.ndarray
  job: Mapping[str, Any]
  complete: bool

  def __len__(self) -> int:
    return len(self.ids)

  def as_dict(self) -> dict[str, float]:
    """id -> score, for single-label models."""
    if self.values.shape[1] != 1:
      raise ValueError(
          f"as_dict needs one label per item, these scores have {self.values.shape[1]}")
    return dict(zip(self.ids, self.values[:, 0].tolist()))


def checkpoint_digest(folder: str | os.PathLike[str]) -> str:
  """sha256 of a checkpoint folder's `CHECKPOINT_FILES` (names and contents, streamed): the
  content key of a scoring job, so that retrained weights at the same path are a new job.

  Raises:
    FileNotFoundError: the folder holds none of those files.
  """
  folder = pathlib.Path(folder)
  files = sorted({p for pattern in CHECKPOINT_FILES for p in folder.glob(pattern) if p.is_file()})
  if not files:
    raise FileNotFoundError(f"{folder}: no checkpoint files ({', '.join(CHECKPOINT_FILES)})")
  return files_digest(files, root=folder)


def _shard_files(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(folder.glob(f"{SHARD_PREFIX}*.parquet"))


def _shard_index(name: str) -> int:
  """The index of a shard file: 12 for "scores-000012.parquet"."""
  return int(name[len(SHARD_PREFIX):].partition(".")[0])


def _read_manifest(folder: pathlib.Path) -> dict[str, Any] | None:
  path = folder / MANIFEST
  if not path.is_file():
    return None
  manifest = json.loads(path.read_text())
  if manifest.get("format") != FORMAT:
    raise ScoreFolderError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
  return manifest


class ShardStore:
  """The score shards of one job in `folder`, opened for writing (and resuming)."""

  def __init__(self, folder: str | os.PathLike[str], job: Mapping[str, Any]):
    """Opens `folder` for `job`, a JSON-serializable description that must match on resume.

    Raises:
      ScoreFolderError: the folder holds scores of a different job.
    """
    self.folder = pathlib.Path(folder)
    self.job = json.loads(json.dumps(dict(job)))  # As read back from the manifest.
    manifest = _read_manifest(self.folder) if self.folder.is_dir() else None
    shards = _shard_files(self.folder) if self.folder.is_dir() else []
    if manifest is None and shards:
      raise ScoreFolderError(f"{self.folder} holds score shards but no {MANIFEST}")
    if manifest is None:  # A new job: only into a new, empty or erpjax score folder.
      claim_output_dir(self.folder, "scores")
    elif manifest["job"] != self.job:
      raise ScoreFolderError(_other_job(self.folder, manifest["job"], self.job))
    # Leftovers of writes killed before their rename (atomic_write's ".<name>.*.tmp" files).
    for pattern in (f".{SHARD_PREFIX}*.tmp", f".{MANIFEST}.*.tmp"):
      for stale in self.folder.glob(pattern):
        stale.unlink()
    self._shards = [p.name for p in shards]
    self._num_scores = sum(pq.read_metadata(p).num_rows for p in shards)
    self._write_manifest(num_items=None)

  def completed_ids(self) -> set[str]:
    """Ids that already have a score in a shard."""
    done: set[str] = set()
    for name in self._shards:
      done.update(pq.read_table(self.folder / name, columns=["id"]).column("id").to_pylist())
    return done

  def write(self, ids: Sequence[str], values: np.ndarray) -> pathlib.Path:
    """Writes one shard: `ids` [n] and their float32 scores `values` [n, L]."""
    values = np.asarray(values, np.float32)
    if values.ndim != 2 or values.shape[0] != len(ids):
      raise ValueError(f"values of shape {values.shape} for {len(ids)} ids; expected [n, L]")
    index = 1 + max((_shard_index(name) for name in self._shards), default=-1)
    path = self.folder / f"{SHARD_PREFIX}{index:06d}.parquet"
    table = pa.table({"id": pa.array(list(ids), pa.string()), "score": _score_column(values)})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    self._shards.append(path.name)
    self._num_scores += len(ids)
    self._write_manifest(num_items=None)
    return path

  def finish(self, num_items: int) -> None:
    """Marks the job complete: the shards hold all `num_items` input ids."""
    if self._num_scores != num_items:
      raise ScoreFolderError(f"{self.folder}: {self._num_scores} scores for {num_items} items")
    self._write_manifest(num_items=num_items)

  def _write_manifest(self, num_items: int | None) -> None:
    manifest = {
        "format": FORMAT,
        "job": self.job,
        "shards": self._shards,
        "num_scores": self._num_scores,
        "complete": num_items is not None,
    }
    atomic_write_text(self.folder / MANIFEST, json.dumps(manifest, indent=2))


def _other_job(folder: pathlib.Path, found: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
  """Why `folder`'s scores cannot be resumed by this job, naming what differs."""
  differ = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
  changes = "; ".join(f"{k}: {found.get(k)!r} there, {wanted.get(k)!r} now" for k in differ)
  reason = ("the reward model's checkpoint files have changed since (retrained or replaced at the "
            "same path), " if differ == ["checkpoint_sha256"] else "")
  return (f"{folder} holds scores of another job: {reason}{changes}. Scores of different jobs "
          "are never mixed: use a new score folder (or delete this one) to score again.")


def _score_column(values: np.ndarray) -> pa.Array:
  if values.shape[1] == 1:
    return pa.array(values[:, 0], pa.float32())
  return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()),
                                           values.shape[1])


def read_scores(folder: str | os.PathLike[str]) -> Scores:
  """Merges the shards of `folder` into one `Scores`, sorted by id.

  Raises:
    ScoreFolderError: no manifest, or an id scored twice.
  """
  folder = pathlib.Path(folder)
  manifest = _read_manifest(folder)
  if manifest is None:
    raise ScoreFolderError(f"{folder}: no {MANIFEST}; not a score folder")
  ids: list[str] = []
  values: list[np.ndarray] = []
  for path in _shard_files(folder):
    table = pq.read_table(path)
    ids.extend(table.column("id").to_pylist())
    column = table.column("score").combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
      values.append(column.flatten().to_numpy().reshape(len(column), column.type.list_size))
    else:
      values.append(column.to_numpy().reshape(-1, 1))
  order = np.argsort(np.asarray(ids, dtype=object), kind="stable") if ids else np.zeros(0, int)
  sorted_ids = tuple(ids[i] for i in order)
  for a, b in itertools.pairwise(sorted_ids):
    if a == b:
      raise ScoreFolderError(f"{folder}: id {a!r} is scored twice")
  merged = np.concatenate(values)[order] if values else np.zeros((0, 1), np.float32)
  return Scores(sorted_ids, merged.astype(np.float32), manifest["job"], manifest["complete"])
