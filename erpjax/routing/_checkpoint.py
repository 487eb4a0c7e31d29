"""Saving and loading an `ERPRouter` with orbax-checkpoint.

A router checkpoint is one orbax composite folder: `state` (the module's arrays) and `metadata`
(JSON: the `RouterSpec`, the erpjax version and a format version). Loading reads the metadata first,
builds the abstract module it describes, restores the arrays into it and refuses any mismatch.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import tempfile

import jax
import orbax.checkpoint as ocp
from flax import nnx

import erpjax
from erpjax.routing._router import ERPRouter, RouterSpec

FORMAT = "erpjax.router/1"


class RouterCheckpointError(ValueError):
  """A router checkpoint that cannot be used as asked."""


def save_router(router: ERPRouter, path: str | os.PathLike[str]) -> pathlib.Path:
  """Writes `router` to the folder `path`, atomically replacing any router already there."""
  path = pathlib.Path(path).absolute()
  path.parent.mkdir(parents=True, exist_ok=True)
  metadata = {
      "format": FORMAT,
      "erpjax_version": erpjax.__version__,
      "spec": dataclasses.asdict(router.spec),
  }
  state = nnx.to_pure_dict(nnx.state(router))
  # orbax finalizes a checkpoint by renaming its temporary folder; writing beside the target and
  # swapping folders keeps an existing router intact until the new one is complete.
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  checkpointer.save(
      staging / "router",
      ocp.args.Composite(state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata)),
  )
  if path.exists():
    retired = staging / "retired"
    path.rename(retired)
  (staging / "router").rename(path)
  shutil.rmtree(staging)
  return path


def load_router(
    path: str | os.PathLike[str],
    *,
    expect_encoder: str | None = None,
    expect_llms: tuple[str, ...] | None = None,
) -> ERPRouter:
  """Loads a router saved by `save_router`.

  Args:
    path: the checkpoint folder.
    expect_encoder: if given, the encoder identifier the caller will embed prompts with; a router
      fit on another encoder's embeddings is refused.
    expect_llms: if given, the LLM names (in order) the caller expects.

  Raises:
    RouterCheckpointError: missing or foreign checkpoint, or any mismatch.
  """
  path = pathlib.Path(path).absolute()
  if not (path / "metadata").exists():
    raise RouterCheckpointError(f"{path}: not an erpjax router checkpoint (no metadata)")
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  metadata = checkpointer.restore(
      path, ocp.args.Composite(metadata=ocp.args.JsonRestore())
  )["metadata"]
  if metadata.get("format") != FORMAT:
    raise RouterCheckpointError(
        f"{path}: checkpoint format {metadata.get('format')!r}, this erpjax reads {FORMAT!r}"
    )
  raw_spec = dict(metadata["spec"])
  raw_spec["llms"] = tuple(raw_spec["llms"])
  spec = RouterSpec(**raw_spec)
  if expect_encoder is not None and spec.encoder != expect_encoder:
    raise RouterCheckpointError(
        f"{path}: router was fit on embeddings of encoder {spec.encoder!r}, "
        f"but prompts would be embedded with {expect_encoder!r}"
    )
  if expect_llms is not None and tuple(expect_llms) != spec.llms:
    raise RouterCheckpointError(
        f"{path}: router routes to {list(spec.llms)}, expected {list(expect_llms)}"
    )
  abstract = nnx.eval_shape(lambda: ERPRouter(spec))
  graphdef, abstract_state = nnx.split(abstract)
  target = nnx.to_pure_dict(abstract_state)
  try:
    restored = checkpointer.restore(
        path, ocp.args.Composite(state=ocp.args.StandardRestore(target))
    )["state"]
  except (ValueError, KeyError) as error:
    raise RouterCheckpointError(f"{path}: state does not match its metadata: {error}") from error
  mismatched = [
      f"{jax.tree_util.keystr(key)}: saved {got.shape}, spec says {want.shape}"
      for (key, got), want in zip(
          jax.tree_util.tree_leaves_with_path(restored), jax.tree_util.tree_leaves(target)
      )
      if got.shape != want.shape
  ]
  if mismatched:
    raise RouterCheckpointError(f"{path}: state does not match its metadata: {mismatched}")
  nnx.replace_by_pure_dict(abstract_state, restored)
  return nnx.merge(graphdef, abstract_state)
