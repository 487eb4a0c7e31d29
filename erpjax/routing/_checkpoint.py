"""Saving and loading an `ERPRouter` with orbax-checkpoint.

A router checkpoint is one orbax composite folder: `state` (the module's arrays) and `metadata`
(JSON: the `RouterSpec` with the predictor's kind and hyper-parameters, the erpjax version, a format
version, and for every array its shape, dtype and SHA-256 checksum of its bytes). Loading reads the
metadata first, checks it, builds the abstract module it describes, restores the arrays into it and
refuses any mismatch, any checksum that differs (corrupted bytes) and any non-finite value.

orbax is imported inside the functions: `import erpjax.routing` must stay light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib

import jax
import numpy as np
from flax import nnx

from erpjax.routing._router import ERPRouter, RouterSpec

FORMAT = "erpjax.router/2"


class RouterCheckpointError(ValueError):
  """A router checkpoint that cannot be used as asked."""


def _checksum(array: np.ndarray) -> str:
  """SHA-256 of the array's C-order bytes (its shape and dtype are recorded beside)."""
  return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _flat(tree) -> dict[str, np.ndarray]:
  """{"a/b": array} of a nested dict of arrays."""
  return {"/".join(str(k.key) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def save_router(router: ERPRouter, path: str | os.PathLike[str]) -> pathlib.Path:
  """Writes `router` to the folder `path`.

  What is guaranteed: `path` is written only if it does not exist, is an empty folder, or holds an
  erpjax router (its `erpjax.files.MARKER` says so); a folder of other files is refused with
  `erpjax.files.OutputPathError` and left untouched. The new router is written completely beside
  `path` and then exchanged with the old one in one rename (Linux renameat2), so a reader or a
  crash sees the old router or the new one at `path`, never neither and never a mix. Where the
  exchange is not supported, two renames are used and a crash between them leaves the old router
  in a hidden `.<name>.*.tmp` folder beside `path`.

  Raises:
    RouterCheckpointError: a non-finite array (nothing is written).
    erpjax.files.OutputPathError: `path` holds files that are not an erpjax router.
  """
  import orbax.checkpoint as ocp

  from erpjax import __version__, files

  state = nnx.to_pure_dict(nnx.state(router))
  arrays = _flat(state)
  bad = [name for name, a in arrays.items()
         if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a))]
  if bad:
    raise RouterCheckpointError(f"router arrays {bad} hold non-finite values; not saving")
  metadata = {
      "format": FORMAT,
      "erpjax_version": __version__,
      "spec": dataclasses.asdict(router.spec),
      "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.name, "sha256": _checksum(a)}
                 for name, a in arrays.items()},
  }

  def write(tmp: pathlib.Path) -> None:
    ocp.Checkpointer(ocp.CompositeCheckpointHandler()).save(
        tmp, ocp.args.Composite(state=ocp.args.StandardSave(state),
                                metadata=ocp.args.JsonSave(metadata)))

  return files.write_dir_atomically(path, "router", write)


def _read_metadata(path: pathlib.Path, checkpointer, ocp) -> dict:
  try:
    return checkpointer.restore(path, ocp.args.Composite(metadata=ocp.args.JsonRestore()))[
        "metadata"]
  except Exception as error:  # noqa: BLE001 - orbax raises many types for a damaged folder
    raise RouterCheckpointError(f"{path}: unreadable router metadata: {error}") from error


def _spec(path: pathlib.Path, metadata: dict) -> RouterSpec:
  if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
    found = metadata.get("format") if isinstance(metadata, dict) else None
    raise RouterCheckpointError(
        f"{path}: checkpoint format {found!r}, this erpjax reads {FORMAT!r}")
  try:
    raw = dict(metadata["spec"])
    raw["llms"] = tuple(raw["llms"])
    return RouterSpec(**raw)
  except (KeyError, TypeError, ValueError) as error:
    raise RouterCheckpointError(f"{path}: invalid router spec in metadata: {error}") from error


def _check_shapes(path: pathlib.Path, spec: RouterSpec, arrays: dict) -> None:
  """The recorded arrays agree with the spec: one entry per LLM along each per-LLM axis."""
  m, d = len(spec.llms), spec.embedding_dim
  want = {"costs": (m,), "margins": (m,), "feature_mean": (d,), "feature_scale": (d,)}
  problems = [f"{name}: saved {tuple(arrays[name]['shape'])}, spec says {shape}"
              for name, shape in want.items()
              if name in arrays and tuple(arrays[name]["shape"]) != shape]
  problems += [f"{name}: missing" for name in want if name not in arrays]
  for name, axis in spec.make_predictor().llm_axes().items():
    if name not in arrays:
      problems.append(f"{name}: missing")
    elif len(arrays[name]["shape"]) <= axis or arrays[name]["shape"][axis] != m:
      problems.append(f"{name}: saved {tuple(arrays[name]['shape'])}, spec says {m} LLMs on "
                      f"axis {axis}")
  if problems:
    raise RouterCheckpointError(f"{path}: state does not match its metadata: {problems}")


def check_encoder(path: str | os.PathLike[str], spec: RouterSpec, encoder: str) -> None:
  """Refuses a router (saved at `path`) fit on another encoder's embeddings than `encoder`'s."""
  if spec.encoder != encoder:
    raise RouterCheckpointError(
        f"{path}: router was fit on embeddings of encoder {spec.encoder!r}, "
        f"but prompts would be embedded with {encoder!r}")


def _first_line(error: BaseException) -> str:
  """An error's first line: TensorStore's messages go on for pages of JSON specs."""
  lines = str(error).strip().splitlines()
  return lines[0] if lines else type(error).__name__


def load_router(
    path: str | os.PathLike[str],
    *,
    expect_encoder: str | None = None,
    expect_llms: tuple[str, ...] | None = None,
) -> ERPRouter:
  """Loads a router saved by `save_router`, verifying every array's checksum and finiteness.

  Args:
    path: the checkpoint folder.
    expect_encoder: if given, the encoder identifier the caller will embed prompts with; a router
      fit on another encoder's embeddings is refused.
    expect_llms: if given, the LLM names (in order) the caller expects.

  Raises:
    RouterCheckpointError: missing, foreign, truncated or corrupted checkpoint, or any mismatch.
  """
  import orbax.checkpoint as ocp

  path = pathlib.Path(path).absolute()
  if not (path / "metadata").exists():
    raise RouterCheckpointError(f"{path}: not an erpjax router checkpoint (no metadata)")
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  metadata = _read_metadata(path, checkpointer, ocp)
  spec = _spec(path, metadata)
  if expect_encoder is not None:
    check_encoder(path, spec, expect_encoder)
  if expect_llms is not None and tuple(expect_llms) != spec.llms:
    raise RouterCheckpointError(
        f"{path}: router routes to {list(spec.llms)}, expected {list(expect_llms)}"
    )
  recorded = metadata.get("arrays")
  if not isinstance(recorded, dict):
    raise RouterCheckpointError(f"{path}: metadata lists no arrays")
  _check_shapes(path, spec, recorded)
  predictor_names = sorted(set(recorded) - {"costs", "margins", "feature_mean", "feature_scale"})
  try:
    shapes = {name: jax.ShapeDtypeStruct(tuple(recorded[name]["shape"]),
                                         np.dtype(recorded[name]["dtype"]))
              for name in predictor_names}
    abstract = nnx.eval_shape(lambda: ERPRouter(
        spec, {k: jax.numpy.zeros(s.shape, s.dtype) for k, s in shapes.items()}))
  except (KeyError, TypeError, ValueError) as error:
    raise RouterCheckpointError(f"{path}: state does not match its metadata: {error}") from error
  graphdef, abstract_state = nnx.split(abstract)
  target = nnx.to_pure_dict(abstract_state)
  try:
    restored = checkpointer.restore(
        path, ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
  except Exception as error:  # noqa: BLE001 - truncated or missing files surface as many types
    raise RouterCheckpointError(
        f"{path}: router arrays cannot be read (damaged or does not match its metadata): "
        f"{_first_line(error)}") from error
  arrays = _flat(restored)
  problems = []
  for name, info in recorded.items():
    array = arrays.get(name)
    if array is None:
      problems.append(f"{name}: missing")
    elif list(array.shape) != list(info["shape"]) or array.dtype.name != info["dtype"]:
      problems.append(f"{name}: saved {array.shape} {array.dtype}, metadata says "
                      f"{tuple(info['shape'])} {info['dtype']}")
    elif _checksum(array) != info["sha256"]:
      problems.append(f"{name}: checksum differs (corrupted bytes)")
    elif np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
      problems.append(f"{name}: non-finite values")
  problems += [f"{name}: not in metadata" for name in sorted(set(arrays) - set(recorded))]
  if problems:
    raise RouterCheckpointError(f"{path}: corrupted router checkpoint: {problems}")
  nnx.replace_by_pure_dict(abstract_state, restored)
  return nnx.merge(graphdef, abstract_state)

