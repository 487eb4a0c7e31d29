"""The one error type for bad input data: it names the file, row and field."""

from __future__ import annotations

import os
from collections.abc import Iterator


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


def utf8_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
  """(1-based line number, line without its line break) for each line of a UTF-8 text file.

  Raises:
    DataError: a line that is not UTF-8; it names the file, the line and the byte's column.
  """
  with open(path, "rb") as f:
    for row, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise DataError(
            f"not UTF-8 text: byte 0x{raw[e.start]:02x} at column {e.start + 1} ({e.reason}); "
            "save the file as UTF-8", file=path, row=row) from None
      yield row, line.rstrip("\r\n")
