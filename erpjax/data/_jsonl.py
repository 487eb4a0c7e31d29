"""Reading JSONL files record by record, with errors that name the file and line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from erpjax.data._errors import DataError, utf8_lines


def jsonl_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict]]:
  """(1-based line number, object) for each non-blank line of a JSONL file.

  Raises:
    DataError: a line that is not UTF-8, not valid JSON, or not a JSON object; it names file and
      line.
  """
  for row, line in utf8_lines(path):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"not valid JSON: {e.msg} (column {e.colno})", file=path, row=row) from e
    if not isinstance(record, dict):
      raise DataError(f"expected a JSON object, found {type(record).__name__}",
                      file=path, row=row)
    yield row, record
