"""Prompts of open-perfectblend-style chat files (the paper's prompt set) as a prompts-only set.

Each row holds `conversations`, a list of turns {"from": "human" | "gpt" | "system", "value": str}
(or, as in OpenAI-style files, {"role": "user" | "assistant" | "system", "content": str}; a
`messages` column is read the same way), and `source`, the subset the row came from (used as the
category). The prompt is the first user turn. Files are Hugging Face Parquet shards or JSONL.
"""

from __future__ import annotations

import itertools
import os
import pathlib
from collections.abc import Iterator

import numpy as np
import pyarrow.parquet as pq

from erpjax.data._errors import DataError
from erpjax.data._jsonl import jsonl_records
from erpjax.data._schema import RewardSamples, RoutingDataset

_USER_ROLES = ("human", "user")
_TURN_KEYS = (("from", "value"), ("role", "content"))
_CONVERSATION_FIELDS = ("conversations", "messages")


def read_perfectblend(
    path: str | os.PathLike[str], *, max_prompts: int | None = None
) -> RoutingDataset:
  """Reads the first user turn of each conversation in a file, or in every file of a folder.

  Args:
    path: a .parquet or .jsonl file, or a folder of them (read in name order, as HF shards).
    max_prompts: stop after this many prompts.

  Returns:
    A dataset with prompts only (no LLMs, no samples): prompt ids "<file stem>:<row>", the first
    user turn as text, and `source` as category.

  Raises:
    DataError: a row has no conversation, no user turn, or an empty one (names file, row, field).
  """
  path = pathlib.Path(path)
  if max_prompts is not None and max_prompts < 0:
    raise ValueError(f"max_prompts must be >= 0, got {max_prompts}")
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".jsonl"))
    if not files:
      raise DataError("no .parquet or .jsonl files", file=path)
  else:
    files = [path]
  ids, texts, categories = [], [], []
  rows = ((file, row, record) for file in files for row, record in _records(file))
  for file, row, record in itertools.islice(rows, max_prompts):
    ids.append(f"{file.stem}:{row}")
    texts.append(_first_user_turn(record, file, row))
    source = record.get("source")
    if source is not None and not isinstance(source, str):
      raise DataError(f"expected a string, found {source!r:.40}", file=file, row=row,
                      field="source")
    categories.append(source)
  notes = []
  repeated = len(texts) - len(set(texts))
  if repeated:
    notes.append(f"{repeated} prompts repeat the text of an earlier prompt")
  return RoutingDataset(
      name=path.stem, prompt_ids=tuple(ids), prompts=tuple(texts), categories=tuple(categories),
      llms=(), costs=np.zeros(0), reward_models=(), samples=RewardSamples.build([], [], []),
      notes=tuple(notes),
  )


def _records(file: pathlib.Path) -> Iterator[tuple[int, dict]]:
  """(1-based row, record) for each row of a Parquet or JSONL file; rows are lines for JSONL."""
  if file.suffix == ".parquet":
    parquet = pq.ParquetFile(file)
    names = parquet.schema_arrow.names
    columns = [name for name in (*_CONVERSATION_FIELDS, "source") if name in names]
    row = 0
    # Only the needed columns, batch by batch: the responses of a large file stay on disk.
    for batch in parquet.iter_batches(columns=columns, batch_size=4096):
      for record in batch.to_pylist():
        row += 1
        yield row, record
    return
  yield from jsonl_records(file)


def _first_user_turn(record: dict, file: pathlib.Path, row: int) -> str:
  field = next((name for name in _CONVERSATION_FIELDS if record.get(name) is not None), None)
  if field is None:
    raise DataError("missing conversation", file=file, row=row, field=_CONVERSATION_FIELDS[0])
  turns = record[field]
  if not isinstance(turns, list):
    raise DataError(f"expected a list of turns, found {type(turns).__name__}", file=file, row=row,
                    field=field)
  for i, turn in enumerate(turns):
    keys = next((k for k in _TURN_KEYS if isinstance(turn, dict) and turn.get(k[0]) is not None),
                None)
    if keys is None:
      raise DataError('expected {"from", "value"} or {"role", "content"}', file=file, row=row,
                      field=f"{field}[{i}]")
    role, text = turn[keys[0]], turn.get(keys[1])
    if role not in _USER_ROLES:
      continue
    if not isinstance(text, str) or not text.strip():
      raise DataError("empty user turn", file=file, row=row, field=f"{field}[{i}].{keys[1]}")
    return text
  raise DataError(f"no user turn (roles {_USER_ROLES})", file=file, row=row, field=field)
