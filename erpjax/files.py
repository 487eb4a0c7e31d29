"""Writing output files atomically: a reader (or a resumed job) sees the old file or the new one,
never a partial one."""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Callable


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> pathlib.Path:
  """Calls `write(tmp)` on a temporary path beside `path`, syncs it, then renames it to `path`.

  The temporary file lives in the same folder (a rename across file systems is not atomic) and
  starts with "." so that globs for finished files skip it. It is removed if `write` fails.
  """
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  os.close(fd)
  try:
    write(tmp)
    with open(tmp, "rb") as f:
      os.fsync(f.fileno())  # durable before visible: a crash cannot leave an empty "finished" file
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> pathlib.Path:
  """Writes `data` to `path` atomically."""
  return atomic_write(path, lambda tmp: pathlib.Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> pathlib.Path:
  """Writes `text` (UTF-8) to `path` atomically."""
  return atomic_write_bytes(path, text.encode("utf-8"))
