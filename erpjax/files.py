"""Writing output atomically, and only where erpjax may write.

Files: a reader (or a resumed job) sees the old file or the new one, never a partial one.
Folders (a router, a score folder, a run's outputs, a written dataset): erpjax writes into an
existing folder only when the folder is empty or holds erpjax's own output of the same kind, which
it recognises by a marker file (`MARKER`: the kind and the erpjax version that wrote it). Any other
folder is refused with an `OutputPathError` naming it, so a mistyped `--router ~/docs` cannot
delete a user's files. Every file and folder written here gets the modes the umask allows (as
`open` would give), not the 0600/0700 of `tempfile`.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterable

MARKER = "erpjax-output.json"
# Output kinds: one per writer, so that no writer replaces another's output.
KINDS = ("router", "scores", "run", "dataset", "records")


class OutputPathError(ValueError):
  """An output path erpjax may not write: someone else's files, another kind of output, or a
  folder it has no permission to write."""


def _umask() -> int:
  """The process umask, read without changing it (os.umask would, for a moment, for all threads)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _chmod_as_created(path: str | os.PathLike[str], *, folder: bool = False) -> None:
  """Gives `path` the mode `open`/`mkdir` would have: 0o666 (0o777 for folders) minus the umask."""
  os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


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
    _chmod_as_created(tmp)  # mkstemp makes it 0600 whatever the umask
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


# Output folders.


def _marker_kind(folder: pathlib.Path) -> str | None:
  """The kind recorded in `folder`'s marker; None without a (readable) marker."""
  try:
    marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return None
  return marker.get("kind") if isinstance(marker, dict) else None


def check_output_dir(path: str | os.PathLike[str], kind: str) -> pathlib.Path:
  """Refuses, before any work, an output folder erpjax may not write `kind` output into.

  Allowed: a path that does not exist yet (its nearest existing parent must be a writable folder),
  an empty folder, or a folder whose marker says it holds `kind` output. Nothing is written.

  Returns:
    The absolute path.

  Raises:
    OutputPathError: a file, a folder of other files or of another kind of output, or no write
      permission; the message names the path.
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  path = pathlib.Path(path).absolute()
  if not path.exists():
    parent = path.parent
    while not parent.exists():
      parent = parent.parent
    if not parent.is_dir():
      raise OutputPathError(f"{path}: cannot create it, {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
      raise OutputPathError(f"{path}: cannot create it, no permission to write in {parent}")
    return path
  if not path.is_dir():
    raise OutputPathError(f"{path}: exists and is a file; the {kind} output is a folder")
  found = _marker_kind(path)
  if found is None:
    entries = sorted(p.name for p in path.iterdir())
    if entries:
      shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
      raise OutputPathError(
          f"{path}: exists and holds files erpjax did not write ({shown}); refusing to write the "
          f"{kind} there. Choose a new or empty folder.")
  elif found != kind:
    raise OutputPathError(
        f"{path}: holds erpjax {found} output, not {kind} output; choose another folder")
  if not os.access(path, os.W_OK | os.X_OK):
    raise OutputPathError(f"{path}: no permission to write in it")
  return path


def _write_marker(folder: pathlib.Path, kind: str) -> None:
  import erpjax

  atomic_write_text(folder / MARKER,
                    json.dumps({"kind": kind, "erpjax_version": erpjax.__version__}) + "\n")


def claim_output_dir(path: str | os.PathLike[str], kind: str) -> pathlib.Path:
  """Checks `path` (`check_output_dir`), creates it and marks it as erpjax `kind` output.

  For folders filled in place, file by file (each file with `atomic_write`): a run's outputs, a
  score folder. Writing the marker also proves that the folder is writable before the work starts.

  Returns:
    The absolute path.
  """
  path = check_output_dir(path, kind)
  try:
    path.mkdir(parents=True, exist_ok=True)
    if _marker_kind(path) != kind:
      _write_marker(path, kind)
  except OSError as error:  # no permission, a read-only file system, ...
    raise OutputPathError(f"{path}: cannot write there ({error.strerror})") from error
  return path


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: pathlib.Path, b: pathlib.Path) -> bool:
  """Swaps two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (AttributeError, OSError):
    return False
  at_fdcwd = -100
  if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  code = ctypes.get_errno()
  if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
    return False
  raise OSError(code, os.strerror(code), os.fsdecode(b))


def write_dir_atomically(
    path: str | os.PathLike[str], kind: str, write: Callable[[pathlib.Path], object]
) -> pathlib.Path:
  """Writes a whole output folder and puts it at `path` in one step: old or new, never neither.

  `write(tmp)` is called with a path beside `path` that does not exist yet and must create the
  folder there (orbax, for one, insists on creating its own). The marker is added, the folder is
  then swapped with an existing `path` in one rename (Linux renameat2; elsewhere two renames, with
  the old folder kept beside until the new one is in place) and the old one deleted. `path` is
  checked with `check_output_dir` first, so only an empty folder or `kind` output is replaced.

  Returns:
    The absolute path.
  """
  path = check_output_dir(path, kind)
  path.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
  try:
    new = staging / "new"
    write(new)
    if not new.is_dir():
      raise RuntimeError(f"write({new}) did not create a folder")
    _chmod_as_created(new, folder=True)
    _write_marker(new, kind)
    if not path.exists():
      os.rename(new, path)
    elif not _exchange(new, path):
      os.rename(path, staging / "old")
      os.rename(new, path)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return path


def files_digest(paths: Iterable[str | os.PathLike[str]], *,
                 root: str | os.PathLike[str] | None = None) -> str:
  """sha256 (hex) of the files' contents, read in 4 MiB blocks (a 10 GB checkpoint never sits in
  memory). With `root`, each file's path relative to it is hashed too, so renaming a file (say,
  which shard holds which tensors) changes the digest."""
  digest = hashlib.sha256()
  for path in paths:
    path = pathlib.Path(path)
    if root is not None:
      name = path.relative_to(root).as_posix().encode("utf-8")
      digest.update(len(name).to_bytes(8, "little") + name)
    digest.update(path.stat().st_size.to_bytes(8, "little"))
    with path.open("rb") as f:
      for block in iter(lambda: f.read(1 << 22), b""):
        digest.update(block)
  return digest.hexdigest()


def check_output_file(path: str | os.PathLike[str]) -> pathlib.Path:
  """Refuses, before any work, an output file path that cannot be written: a folder, or a place
  without write permission. Nothing is written.

  Raises:
    OutputPathError: naming the path and the reason.
  """
  path = pathlib.Path(path).absolute()
  if path.is_dir():
    raise OutputPathError(f"{path}: is a folder; expected a file path")
  parent = path.parent
  while not parent.exists():
    parent = parent.parent
  if not parent.is_dir():
    raise OutputPathError(f"{path}: cannot create it, {parent} is a file")
  if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
    raise OutputPathError(f"{path}: no permission to write it")
  return path
