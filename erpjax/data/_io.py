"""A `RoutingDataset` on disk: a folder of three tables, each JSONL or Parquet.

    <folder>/prompts.{jsonl,parquet}   prompt_id: str, text: str, category: str | null
    <folder>/llms.{jsonl,parquet}      llm: str, cost: float (routing cost c_i, US$ per call)
    <folder>/samples.{jsonl,parquet}   prompt_id, llm, reward_model (default "reward"),
                                       reward: float, cost: float | null, response: str | null
    <folder>/dataset.json              optional: {"name", "notes", "reward_models"}

docs/data_format.md is the full description. Every problem found while reading raises a
`DataError` naming the file, the 1-based data row (the line number for JSONL) and the field.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from erpjax.data._errors import DataError, utf8_lines
from erpjax.data._jsonl import jsonl_records
from erpjax.data._schema import RewardSamples, RoutingDataset, first_duplicate
from erpjax.data._splits import find_overlap, resolve_overlap
from erpjax.files import write_dir_atomically

FORMATS = ("parquet", "jsonl")
META_FILE = "dataset.json"
DEFAULT_REWARD_MODEL = "reward"


@dataclasses.dataclass(frozen=True)
class _Field:
  """A column: its kind ("str" or "float"), whether it may be absent, and whether it may be null."""

  name: str
  kind: str
  required: bool = True
  nullable: bool = False
  default: str | None = None


_TABLES = {
    "prompts": (
        _Field("prompt_id", "str"),
        _Field("text", "str"),
        _Field("category", "str", required=False, nullable=True),
    ),
    "llms": (_Field("llm", "str"), _Field("cost", "float")),
    "samples": (
        _Field("prompt_id", "str"),
        _Field("llm", "str"),
        _Field("reward_model", "str", required=False, default=DEFAULT_REWARD_MODEL),
        _Field("reward", "float"),
        _Field("cost", "float", required=False, nullable=True),
        _Field("response", "str", required=False, nullable=True),
    ),
}


@dataclasses.dataclass(frozen=True)
class _Table:
  """One table read from `path`: columns as Arrow arrays, and the file row of each data row."""

  path: pathlib.Path
  columns: dict[str, pa.ChunkedArray]
  rows: np.ndarray  # [n] 1-based row (line number for JSONL) of each data row

  def error(self, message: str, index: int | None = None, field: str | None = None) -> DataError:
    row = None if index is None else int(self.rows[index])
    return DataError(message, file=self.path, row=row, field=field)


# Reading.


def read_dataset(folder: str | os.PathLike[str], name: str | None = None) -> RoutingDataset:
  """Reads and validates the dataset in `folder` (see the module docstring for the layout).

  Args:
    folder: the dataset folder.
    name: the dataset's name; defaults to the one in dataset.json, else the folder's name.

  Raises:
    DataError: a table is missing or malformed; the message names file, row and field.
  """
  folder = pathlib.Path(folder)
  meta = _read_meta(folder / META_FILE)
  prompts, llms, samples = (_read_table(folder, table) for table in _TABLES)
  reward_models = meta.get("reward_models")
  if reward_models is None:  # In order of first appearance; pc.unique keeps that order.
    reward_models = pc.unique(samples.columns["reward_model"]).to_pylist()
  return _checked_dataset(folder, meta, prompts, llms, samples,
                          name=name or meta.get("name") or folder.name, reward_models=reward_models)


def _checked_dataset(folder: pathlib.Path, meta: dict, prompts: _Table, llms: _Table,
                     samples: _Table, *, name: str, reward_models: list[str]) -> RoutingDataset:
  """The dataset of parsed tables, after the checks that compare rows and tables.

  Every check looks within one table or from samples to the prompts and LLMs they name, so it also
  holds for a part of the rows (`erpjax.data._convert` checks one shard at a time) provided that
  the part holds every row of each prompt id it holds, and the prompt of each of its samples.
  """
  prompt_ids, texts = _prompt_ids_and_texts(prompts)
  llm_names = _strings(llms, "llm")
  _check_unique(llms, "llm", llm_names)
  costs = _floats(llms, "cost", nonnegative=True)
  sample_cost = _floats(samples, "cost", nonnegative=True)
  response = None
  if samples.columns["response"].null_count < len(samples.rows):
    response = tuple(samples.columns["response"].to_pylist())
  return RoutingDataset(
      name=name,
      prompt_ids=tuple(prompt_ids),
      prompts=tuple(texts),
      categories=tuple(prompts.columns["category"].to_pylist()),
      llms=tuple(llm_names),
      costs=costs,
      reward_models=tuple(reward_models),
      samples=RewardSamples(
          prompt_index=_index_in(samples, "prompt_id", prompt_ids, prompts.path),
          llm_index=_index_in(samples, "llm", llm_names, llms.path),
          reward_model_index=_index_in(
              samples, "reward_model", reward_models, folder / META_FILE
          ),
          reward=_floats(samples, "reward"),
          cost=sample_cost,
          response=response,
      ),
      notes=tuple(meta.get("notes", ())),
  )


def load_folder(
    root: str | os.PathLike[str], train: str = "train", test: str = "test", *,
    dedupe: bool = False,
) -> tuple[RoutingDataset, RoutingDataset]:
  """The (train, test) datasets in the sub-folders `train` and `test` of `root` (`data.source:
  folder`), checked as the built-in loaders check theirs.

  Args:
    root: the folder holding one dataset folder per split.
    train, test: the splits' sub-folder names.
    dedupe: drop test prompts whose text also occurs in train; either way the overlap is reported
      in the test split's notes.

  Raises:
    DataError: a missing split folder (named as such) or a malformed dataset.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise DataError("data folder not found (data.root)", file=root)
  splits = []
  for role, name in (("train", train), ("test", test)):
    if not (root / name).is_dir():
      present = sorted(p.name for p in root.iterdir() if p.is_dir())
      raise DataError(f"{role} split folder {name!r} is missing (sub-folders: {present})",
                      file=root / name)
    splits.append(read_dataset(root / name))
  train_set, test_set = splits
  counts = np.bincount(train_set.samples.llm_index, minlength=train_set.num_llms)
  if unsampled := [llm for llm, count in zip(train_set.llms, counts) if count == 0]:
    raise DataError(f"LLM(s) {unsampled} have no samples in the train split: there is nothing to "
                    "learn their rewards from; add samples or remove them from the llms table",
                    file=root / train)
  if missing := [llm for llm in train_set.llms if llm not in test_set.llms]:
    raise DataError(f"LLM(s) {missing} of the train split are not in the test split's llms table",
                    file=root / test)
  return train_set, resolve_overlap(test_set, find_overlap(train_set, test_set), dedupe=dedupe)


def read_prompts(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
  """(prompt ids, texts) of prompts to embed or route, from any of:

  - a dataset folder (its prompts table);
  - a prompts table file (`prompts` schema, .jsonl or .parquet);
  - a .txt file with one prompt per line. The ids are the line numbers ("line-<n>", 1-based, as an
    editor shows them), so output rows can be matched to the file's lines. A blank line inside the
    file is refused with its line number (a blank prompt cannot be routed, and dropping it silently
    would leave a row missing); blank lines at the very end of the file are ignored.

  Raises:
    DataError: no prompts, a malformed file or line (not UTF-8 included), a duplicate id or an
      empty text; the message names file, row and field.
  """
  path = pathlib.Path(path)
  if path.is_dir():
    dataset = read_dataset(path)
    ids, texts = list(dataset.prompt_ids), list(dataset.prompts)
  elif path.suffix == ".txt":
    ids, texts = _read_text_prompts(path)
  else:
    fmt = path.suffix.lstrip(".")
    if fmt not in FORMATS:
      raise DataError("expected a dataset folder, a .jsonl or .parquet prompts table, or a .txt "
                      "file with one prompt per line", file=path)
    if not path.exists():
      raise DataError("file not found", file=path)
    fields = _TABLES["prompts"]
    table = _read_parquet(path, fields) if fmt == "parquet" else _read_jsonl(path, fields)
    ids, texts = _prompt_ids_and_texts(table)
  if not texts:
    raise DataError("no prompts in it", file=path)
  return ids, texts


def _read_text_prompts(path: pathlib.Path) -> tuple[list[str], list[str]]:
  """(ids "line-<n>", texts) of a .txt file, one prompt per line (see `read_prompts`)."""
  if not path.exists():
    raise DataError("file not found", file=path)
  lines = list(utf8_lines(path))
  while lines and not lines[-1][1].strip():
    lines.pop()
  for row, line in lines:
    if not line.strip():
      raise DataError("blank line; each line is one prompt and its id is the line number, so "
                      "remove the line (or give it a prompt)", file=path, row=row)
  return [f"line-{row}" for row, _ in lines], [line for _, line in lines]


def _prompt_ids_and_texts(prompts: _Table) -> tuple[list[str], list[str]]:
  """Validated prompt ids (unique) and texts (non-empty) of a prompts table."""
  prompt_ids = _strings(prompts, "prompt_id")
  _check_unique(prompts, "prompt_id", prompt_ids)
  texts = _strings(prompts, "text")
  empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(prompts.columns["text"])), 0)
  if (bad := _first(empty)) is not None:
    raise prompts.error("empty prompt text", bad, "text")
  return prompt_ids, texts


def _read_meta(path: pathlib.Path) -> dict:
  if not path.exists():
    return {}
  try:
    meta = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise DataError(f"not valid JSON: {e.msg}", file=path, row=e.lineno) from e
  if not isinstance(meta, dict):
    raise DataError("expected a JSON object", file=path)
  if not isinstance(meta.get("name", ""), str):
    raise DataError("expected a string", file=path, field="name")
  for key in ("notes", "reward_models"):
    value = meta.get(key, [])
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
      raise DataError("expected a list of strings", file=path, field=key)
  return meta


def _table_path(folder: pathlib.Path, table: str) -> pathlib.Path:
  """The file of `table` in `folder`: exactly one of <table>.parquet and <table>.jsonl."""
  paths = [folder / f"{table}.{fmt}" for fmt in FORMATS]
  found = [path for path in paths if path.exists()]
  if not found:
    raise DataError(f"missing table {table!r} (expected {table}.parquet or {table}.jsonl)",
                    file=folder)
  if len(found) > 1:
    raise DataError(f"table {table!r} exists as both Parquet and JSONL; keep one", file=found[0])
  return found[0]


def _read_table(folder: pathlib.Path, table: str) -> _Table:
  path = _table_path(folder, table)
  fields = _TABLES[table]
  return _read_parquet(path, fields) if path.suffix == ".parquet" else _read_jsonl(path, fields)


def _table_batches(path: pathlib.Path, table: str, batch_rows: int) -> Iterator[_Table]:
  """`table`'s file read `batch_rows` data rows at a time, each batch parsed and checked as
  `_read_table` does and carrying its rows' file rows; only one batch is in memory at a time."""
  fields = _TABLES[table]
  if path.suffix == ".parquet":
    yield from _parquet_batches(path, fields, batch_rows)
    return
  records = jsonl_records(path)
  while block := list(itertools.islice(records, batch_rows)):
    yield _jsonl_table(path, fields, block)


def _read_jsonl(path: pathlib.Path, fields: tuple[_Field, ...]) -> _Table:
  return _jsonl_table(path, fields, jsonl_records(path))


def _jsonl_table(path: pathlib.Path, fields: tuple[_Field, ...],
                 records: Iterable[tuple[int, dict]]) -> _Table:
  """The table of (line number, object) records of the JSONL file `path`, checked field by field."""
  values: dict[str, list] = {field.name: [] for field in fields}
  rows = []
  for row, record in records:
    for field in fields:
      if field.name not in record:
        if field.required:
          raise DataError("missing required field", file=path, row=row, field=field.name)
        value = field.default
      else:
        value = record[field.name]
      if value is None and not field.nullable:
        raise DataError("missing required field (null)", file=path, row=row, field=field.name)
      if not _is_kind(value, field):
        raise DataError(
            f"expected {_describe(field)}, found {type(value).__name__} {value!r:.40}",
            file=path, row=row, field=field.name,
        )
      values[field.name].append(value)
    rows.append(row)
  arrow_type = {"str": pa.string(), "float": pa.float64()}
  columns = {
      field.name: pa.chunked_array([pa.array(values[field.name], arrow_type[field.kind])])
      for field in fields
  }
  return _Table(path, columns, np.asarray(rows, np.int64))


def _is_kind(value, field: _Field) -> bool:
  if value is None:
    return True
  if field.kind == "str":
    return isinstance(value, str)
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _describe(field: _Field) -> str:
  kind = "a string" if field.kind == "str" else "a number"
  return f"{kind} or null" if field.nullable else kind


def _read_parquet(path: pathlib.Path, fields: tuple[_Field, ...]) -> _Table:
  try:
    table = pq.read_table(path)
  except (pa.ArrowException, OSError) as e:
    raise DataError(f"not a readable Parquet file: {e}", file=path) from e
  return _parquet_table(path, fields, table, 1)


def _parquet_batches(path: pathlib.Path, fields: tuple[_Field, ...],
                     batch_rows: int) -> Iterator[_Table]:
  """The Parquet table `path` in batches of at most `batch_rows` rows, only the `fields` columns
  (as `_table_batches`). Arrow decodes a whole row group before slicing it into batches, so the
  file's row groups (the writer's choice; pyarrow writes up to 1Mi rows in one) bound the memory
  too: measured, one 205 MB row group took ~300 MB to iterate, whatever the batch size."""

  def unreadable(e: Exception) -> DataError:
    return DataError(f"not a readable Parquet file: {e}", file=path)

  try:
    file = pq.ParquetFile(path)
    names = [field.name for field in fields if field.name in file.schema_arrow.names]
    # Columns missing or of the wrong type are refused before any row is read (also for 0 rows).
    _parquet_table(path, fields, file.schema_arrow.empty_table().select(names), 1)
    batches = file.iter_batches(batch_size=batch_rows, columns=names)
  except (pa.ArrowException, OSError) as e:
    raise unreadable(e) from e
  first_row = 1
  while True:
    try:
      batch = next(batches, None)
    except (pa.ArrowException, OSError) as e:
      raise unreadable(e) from e
    if batch is None:
      return
    yield _parquet_table(path, fields, pa.Table.from_batches([batch]), first_row)
    first_row += batch.num_rows


def _parquet_table(path: pathlib.Path, fields: tuple[_Field, ...], table: pa.Table,
                   first_row: int) -> _Table:
  """The `fields` of `table`, rows `first_row`, `first_row` + 1, ... of the Parquet file `path`,
  checked: required columns present, types, no nulls in non-nullable fields."""
  n = table.num_rows
  columns = {}
  for field in fields:
    if field.name not in table.column_names:
      if field.required:
        raise DataError("missing required column", file=path, field=field.name)
      default = pa.scalar(field.default, _arrow_type(field))
      columns[field.name] = pa.chunked_array([pa.repeat(default, n)])
      continue
    column = table.column(field.name)
    kind = column.type
    if pa.types.is_dictionary(kind):
      column, kind = column.cast(kind.value_type), kind.value_type
    ok = (
        pa.types.is_null(kind)
        or (field.kind == "str" and (pa.types.is_string(kind) or pa.types.is_large_string(kind)))
        or (field.kind == "float" and (pa.types.is_integer(kind) or pa.types.is_floating(kind)))
    )
    if not ok:
      raise DataError(f"expected {_describe(field)} column, found type {kind}",
                      file=path, field=field.name)
    columns[field.name] = column.cast(_arrow_type(field))
  result = _Table(path, columns, np.arange(first_row, first_row + n, dtype=np.int64))
  for field in fields:
    if not field.nullable and (bad := _first(pc.is_null(columns[field.name]))) is not None:
      raise result.error("missing required field (null)", bad, field.name)
  return result


def _arrow_type(field: _Field) -> pa.DataType:
  return pa.string() if field.kind == "str" else pa.float64()


def _first(mask: pa.ChunkedArray | np.ndarray) -> int | None:
  """The index of the first true entry of a boolean mask, or None."""
  if isinstance(mask, pa.ChunkedArray):
    mask = mask.to_numpy()
  hits = np.flatnonzero(mask)
  return int(hits[0]) if len(hits) else None


def _strings(table: _Table, field: str) -> list[str]:
  return table.columns[field].to_pylist()


def _floats(table: _Table, field: str, *, nonnegative: bool = False) -> np.ndarray:
  """[n] float64 values of a numeric column, nulls as NaN; NaN, inf and negatives are errors."""
  column = table.columns[field]
  null = pc.is_null(column).to_numpy()
  values = np.where(null, np.nan, column.to_numpy())
  if (bad := _first(~null & ~np.isfinite(values))) is not None:
    raise table.error(f"{field} is {values[bad]} (must be finite)", bad, field)
  if nonnegative and (bad := _first(~null & (values < 0))) is not None:
    raise table.error(f"{field} is {values[bad]} (must not be negative)", bad, field)
  return values


def _check_unique(table: _Table, field: str, values: list[str]) -> None:
  duplicate = first_duplicate(values)
  if duplicate is not None:
    first, second = duplicate
    raise table.error(
        f"duplicate {field} {values[second]!r} (first at row {int(table.rows[first])})",
        second, field,
    )


def _index_in(
    table: _Table, field: str, declared: list[str], declared_in: pathlib.Path
) -> np.ndarray:
  """[n] int32 position of each value of `field` in `declared`; undeclared values are errors."""
  index = pc.index_in(table.columns[field], value_set=pa.array(declared, pa.string()))
  if (bad := _first(pc.is_null(index))) is not None:
    value = table.columns[field][bad].as_py()
    raise table.error(f"{field} {value!r} is not declared in {declared_in.name}", bad, field)
  return index.to_numpy().astype(np.int32)


# Writing.


def write_dataset(
    dataset: RoutingDataset, folder: str | os.PathLike[str], format: str = "parquet"
) -> pathlib.Path:
  """Writes `dataset` to `folder` as three tables in `format` ("parquet" or "jsonl").

  The folder is written beside `folder` and then put in its place in one step
  (`erpjax.files.write_dir_atomically`): a reader sees the old dataset or the new one. An existing
  `folder` is replaced only if it is empty or a dataset erpjax wrote; other files are never
  deleted (`erpjax.files.OutputPathError`).

  Returns:
    The folder (absolute).
  """
  if format not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
  tables = _to_tables(dataset)
  meta = {"name": dataset.name, "notes": list(dataset.notes),
          "reward_models": list(dataset.reward_models)}

  def write(staging: pathlib.Path) -> None:
    staging.mkdir()
    for table, data in tables.items():
      _write_table(data, staging / f"{table}.{format}")
    (staging / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

  return write_dir_atomically(folder, "dataset", write)


def _to_tables(dataset: RoutingDataset) -> dict[str, pa.Table]:
  s = dataset.samples

  def names(values: tuple[str, ...], index: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(index, pa.int32()))

  samples = {
      "prompt_id": names(dataset.prompt_ids, s.prompt_index),
      "llm": names(dataset.llms, s.llm_index),
      "reward_model": names(dataset.reward_models, s.reward_model_index),
      "reward": pa.array(s.reward, pa.float64()),
      "cost": pa.array(s.cost, pa.float64(), mask=np.isnan(s.cost)),  # NaN = unknown = null
  }
  if s.response is not None:
    samples["response"] = pa.array(s.response, pa.string())
  return {
      "prompts": pa.table({
          "prompt_id": pa.array(dataset.prompt_ids, pa.string()),
          "text": pa.array(dataset.prompts, pa.string()),
          "category": pa.array(dataset.categories, pa.string()),
      }),
      "llms": pa.table({
          "llm": pa.array(dataset.llms, pa.string()),
          "cost": pa.array(dataset.costs, pa.float64()),
      }),
      "samples": pa.table(samples),
  }


def _write_table(table: pa.Table, path: pathlib.Path) -> None:
  if path.suffix == ".parquet":
    pq.write_table(table, path)
    return
  with open(path, "w", encoding="utf-8") as f:
    for record in table.to_pylist():
      f.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
