"""Where erpjax finds the shared real data and its default caches."""

import os
import pathlib

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def shared_data_dir() -> pathlib.Path:
  """The folder of real routing data: `$ERPJAX_SHARED_DATA`, else `<repo>/../shared/data`."""
  env = os.environ.get("ERPJAX_SHARED_DATA")
  return pathlib.Path(env) if env else _REPO_ROOT.parent / "shared" / "data"


def cache_dir() -> pathlib.Path:
  """Default cache folder (embeddings): `$ERPJAX_CACHE`, else ~/.cache/erpjax."""
  env = os.environ.get("ERPJAX_CACHE")
  return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "erpjax"
