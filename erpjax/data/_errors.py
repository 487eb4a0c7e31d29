"""The one error type for bad input data: it names the file, row and field."""

from __future__ import annotations

import os


class DataError(ValueError):
  """Bad input data, located by file, row (1-based, as an editor shows it) and field."""

  def __init__(
      self,
      message: str,
      *,
      file: str | os.PathLike[str] | None = None,
      row: int | None = None,
      field: str | None = None,
  ):
    self.file = None if file is None else os.fspath(file)
    self.row = row
    self.field = field
    self.reason = message
    where = []
    if self.file is not None:
      where.append(self.file)
    if row is not None:
      where.append(f"row {row}")
    if field is not None:
      where.append(f"field {field!r}")
    super().__init__(f"{', '.join(where)}: {message}" if where else message)
