"""Hugging Face checkpoints <-> Flax NNX modules, for every model family.

A family describes its checkpoint with a declarative key map: a list of `KeyRule`s, each pairing a
Hugging Face key template with an NNX state path template and a per-tensor `Transform`
(MaxText `checkpoint_conversion/utils/param_mapping.py` and Levanter's `_state_dict_key_map` work
the same way). Templates name their variable parts in braces, e.g.

  KeyRule("encoder.layer.{layer}.attention.self.query.weight",
          "layers/attention/qkv/kernel", index=("{layer}", 0), transform=linear())

reads the query weight of every layer into slice `[layer, 0]` of one stacked parameter. Loading
checks that every parameter (every slice, for stacked ones) is assigned exactly once with the
right shape and that every checkpoint tensor is used or explicitly ignored, naming the offending
key otherwise. Tensors are read with `safetensors` in its numpy flavour: never torch, never
pickle.
"""

import dataclasses
import functools
import json
import math
import os
import pathlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
CONFIG_FILE = "config.json"

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
ModuleT = TypeVar("ModuleT", bound=nnx.Module)


class CheckpointError(ValueError):
  """A checkpoint does not match the module it is loaded into (or saved from)."""


# ------------------------------------------------------------------------------------------------
# Reading and writing files.


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
  """The `config.json` of a checkpoint folder (or the file itself) as a dict."""
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"no Hugging Face config at {path}")
  with path.open() as f:
    return json.load(f)


class SafetensorsCheckpoint(Mapping[str, np.ndarray]):
  """The tensors of a safetensors checkpoint, read lazily one key at a time.

  `path` is a `.safetensors` file, a sharded checkpoint's `model.safetensors.index.json`, or a
  folder holding either (the index wins when both are there, as in `transformers`).
  """

  def __init__(self, path: str | os.PathLike[str]):
    path = pathlib.Path(path)
    if path.is_dir():
      if (path / SAFETENSORS_INDEX).is_file():
        path = path / SAFETENSORS_INDEX
      elif (path / SAFETENSORS_FILE).is_file():
        path = path / SAFETENSORS_FILE
      else:
        raise FileNotFoundError(f"no {SAFETENSORS_FILE} or {SAFETENSORS_INDEX} in {path}")
    if path.name.endswith(".index.json"):
      with path.open() as f:
        weight_map = json.load(f)["weight_map"]
      self._file_of = {key: path.parent / name for key, name in weight_map.items()}
    else:
      with safetensors.safe_open(path, framework="numpy") as f:
        # A safe_open handle is not iterable: keys() is its only listing.
        self._file_of = {key: path for key in f.keys()}  # noqa: SIM118
    self.files = tuple(sorted(set(self._file_of.values())))
    for file in self.files:
      if not file.is_file():
        raise FileNotFoundError(f"shard {file} named by {path} is missing")

  def __getitem__(self, key: str) -> np.ndarray:
    with safetensors.safe_open(self._file_of[key], framework="numpy") as f:
      return f.get_tensor(key)

  def __iter__(self) -> Iterator[str]:
    return iter(self._file_of)

  def __len__(self) -> int:
    return len(self._file_of)


def write_safetensors(tensors: Mapping[str, np.ndarray], folder: str | os.PathLike[str], *,
                      max_shard_bytes: int | None = None) -> None:
  """Writes `tensors` to `folder` as `model.safetensors`, or as shards plus an index.

  Shards are filled in key order up to `max_shard_bytes` and named as `transformers` names them
  (`model-00001-of-00003.safetensors`), so either library reads what the other writes.
  """
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  tensors = {k: np.ascontiguousarray(v) for k, v in sorted(tensors.items())}
  if max_shard_bytes is None:
    safetensors.numpy.save_file(tensors, folder / SAFETENSORS_FILE, metadata={"format": "np"})
    return
  shards: list[dict[str, np.ndarray]] = [{}]
  shard_bytes = 0
  for key, value in tensors.items():
    if shards[-1] and shard_bytes + value.nbytes > max_shard_bytes:
      shards.append({})
      shard_bytes = 0
    shards[-1][key] = value
    shard_bytes += value.nbytes
  weight_map = {}
  for i, shard in enumerate(shards):
    name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    safetensors.numpy.save_file(shard, folder / name, metadata={"format": "np"})
    weight_map.update(dict.fromkeys(shard, name))
  index = {"metadata": {"total_size": sum(v.nbytes for v in tensors.values())},
           "weight_map": weight_map}
  with (folder / SAFETENSORS_INDEX).open("w") as f:
    json.dump(index, f, indent=2)


# ------------------------------------------------------------------------------------------------
# Per-tensor transforms.


@dataclasses.dataclass(frozen=True)
class Transform:
  """A bijection between a checkpoint tensor and an NNX parameter (or a slice of one).

  `to_nnx(x, shape)` gets the target's shape so that head splits need no configuration;
  `to_hf(x)` is its inverse. Both use only `.T`/`.reshape`, so the expected checkpoint shape of a
  parameter is found with `jax.eval_shape(to_hf, ...)` before any data is touched.
  """
  name: str
  to_nnx: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]

  def hf_shape(self, nnx_shape: tuple[int, ...]) -> tuple[int, ...]:
    return jax.eval_shape(self.to_hf, jax.ShapeDtypeStruct(nnx_shape, jnp.float32)).shape


IDENTITY = Transform("identity", lambda x, shape: x, lambda x: x)


def reshape() -> Transform:
  """A flat checkpoint tensor <-> the parameter's shape, e.g. a bias [N*H] <-> [N, H]."""
  return Transform("reshape", lambda x, shape: x.reshape(shape), lambda x: x.reshape(-1))


def linear(in_ndim: int = 1) -> Transform:
  """A torch `Linear` weight [out, in] <-> a kernel [*in_dims, *out_dims].

  The first `in_ndim` axes of the kernel are the input features: a query kernel [D, N, H] has
  `in_ndim=1`, an attention output kernel [N, H, D] has `in_ndim=2`.
  """
  return Transform(
      f"linear(in_ndim={in_ndim})",
      lambda x, shape: x.T.reshape(shape),
      lambda x: x.reshape(math.prod(x.shape[:in_ndim]), -1).T)


# ------------------------------------------------------------------------------------------------
# Key maps.


def _template_regex(template: str) -> re.Pattern[str]:
  """`a.{layer}.b` -> a regex matching the whole key, with a named group per placeholder."""
  parts = _PLACEHOLDER.split(template)
  # re.split with one group alternates literal text and placeholder names.
  pattern = "".join(re.escape(p) if i % 2 == 0 else rf"(?P<{p}>\d+)" for i, p in enumerate(parts))
  return re.compile(pattern)


@dataclasses.dataclass(frozen=True)
class KeyRule:
  """One family of checkpoint tensors and where they live in the NNX state.

  Attributes:
    hf: checkpoint key template, e.g. "encoder.layer.{layer}.output.dense.weight".
    nnx: NNX state path template, "/"-separated, e.g. "layers/{layer}/ffn_out/kernel" (a list of
      layers) or "layers/ffn_out/kernel" (stacked layers, with `index`).
    index: leading indices into the NNX parameter: ints or placeholders of `hf`. Empty means the
      whole parameter; ("{layer}",) means slice [layer] of a stacked one.
    transform: checkpoint tensor <-> parameter (slice).
  """
  hf: str
  nnx: str
  index: tuple[int | str, ...] = ()
  transform: Transform = IDENTITY

  def __post_init__(self):
    names = set(_PLACEHOLDER.findall(self.hf))
    used = set(_PLACEHOLDER.findall(self.nnx))
    for i in self.index:
      if isinstance(i, str):
        match = _PLACEHOLDER.fullmatch(i)
        if not match:
          raise ValueError(f"{self}: index entries are ints or '{{name}}', got {i!r}")
        used.add(match.group(1))
    if used != names:
      raise ValueError(f"{self}: placeholders of hf {sorted(names)} and of nnx/index "
                       f"{sorted(used)} differ")

  @functools.cached_property
  def hf_regex(self) -> re.Pattern[str]:
    return _template_regex(self.hf)

  @functools.cached_property
  def nnx_regex(self) -> re.Pattern[str]:
    return _template_regex(self.nnx)

  def resolve(self, bindings: Mapping[str, str]) -> tuple[str, tuple[int, ...]]:
    """The NNX path and integer index of the tensor whose key bound these placeholders."""
    path = self.nnx.format(**bindings)
    index = tuple(i if isinstance(i, int) else int(i.format(**bindings)) for i in self.index)
    return path, index


@dataclasses.dataclass(frozen=True)
class KeyMap:
  """A model family's full checkpoint layout.

  Attributes:
    rules: one per family of tensors; a key may match only one rule.
    ignore: regexes of checkpoint keys deliberately not loaded (buffers, unused heads), matched
      against the key after prefix stripping. Anything else unused is an error.
    prefixes: optional key prefixes stripped before matching, e.g. "bert." for checkpoints of
      `BertFor...` heads (all-MiniLM-L6-v2 has none).
  """
  rules: tuple[KeyRule, ...]
  ignore: tuple[str, ...] = ()
  prefixes: tuple[str, ...] = ()

  def match(self, key: str) -> tuple[KeyRule, dict[str, str]] | None:
    """The rule for a (prefix-stripped) key and its placeholder values; None if ignored."""
    found = [(r, m.groupdict()) for r in self.rules if (m := r.hf_regex.fullmatch(key))]
    if len(found) > 1:
      raise CheckpointError(f"checkpoint key {key!r} matches several rules: "
                            f"{[r.hf for r, _ in found]}")
    if found:
      return found[0]
    if any(re.fullmatch(p, key) for p in self.ignore):
      return None
    raise CheckpointError(f"checkpoint key {key!r} matches no rule and is not in the ignore list")

  def strip(self, key: str) -> str:
    for prefix in self.prefixes:
      if key.startswith(prefix):
        return key[len(prefix):]
    return key


def _path_str(path: Sequence[Any]) -> str:
  return "/".join(str(p) for p in path)


# ------------------------------------------------------------------------------------------------
# Loading.


def load_state(abstract: ModuleT, checkpoint: Mapping[str, np.ndarray], key_map: KeyMap) -> ModuleT:
  """Fills an abstract module (from `nnx.eval_shape`) with checkpoint tensors.

  Args:
    abstract: the module with `jax.ShapeDtypeStruct` values; its parameter dtypes are kept
      (checkpoint tensors are cast to them).
    checkpoint: key -> tensor, e.g. a `SafetensorsCheckpoint`.
    key_map: the family's layout.

  Returns:
    A concrete module holding the checkpoint's values.

  Raises:
    CheckpointError: naming the key or parameter, when a tensor is unused and not ignored, matches
      no parameter, has the wrong shape, is assigned twice, or a parameter is left (partly) empty.
  """
  graphdef, state = nnx.split(abstract)
  variables = {_path_str(p): v for p, v in nnx.to_flat_state(state)}
  buffers = {path: np.empty(v.get_value().shape, v.get_value().dtype)
             for path, v in variables.items()}
  # Per parameter, which leading-index slices were assigned (a 0-d array for whole parameters).
  assigned: dict[str, np.ndarray] = {}

  for key in checkpoint:
    found = key_map.match(key_map.strip(key))
    if found is None:
      continue
    rule, bindings = found
    path, index = rule.resolve(bindings)
    if path not in variables:
      raise CheckpointError(f"checkpoint key {key!r} maps to {path!r}, which the module lacks")
    target = buffers[path]
    if len(index) > target.ndim or any(not 0 <= i < n for i, n in zip(index, target.shape)):
      raise CheckpointError(f"checkpoint key {key!r} maps to {path}{list(index)}, outside the "
                            f"parameter's shape {target.shape}")
    done = assigned.setdefault(path, np.zeros(target.shape[:len(rule.index)], bool))
    if done.ndim != len(index):
      raise CheckpointError(f"parameter {path!r} is filled by rules with different index depths")
    if done[index]:
      raise CheckpointError(f"checkpoint key {key!r} assigns {path}{list(index)} a second time")
    slot_shape = target[index].shape
    tensor = checkpoint[key]
    expected = rule.transform.hf_shape(slot_shape)
    if tuple(tensor.shape) != expected:
      raise CheckpointError(f"checkpoint key {key!r} has shape {tuple(tensor.shape)}; parameter "
                            f"{path}{list(index)} {slot_shape} needs {expected} "
                            f"({rule.transform.name})")
    target[index] = rule.transform.to_nnx(np.asarray(tensor), slot_shape)
    done[index] = True

  for path in variables:
    if path not in assigned:
      raise CheckpointError(f"parameter {path!r} is not assigned by any checkpoint key")
    if not assigned[path].all():
      missing = np.argwhere(~assigned[path]).tolist()
      raise CheckpointError(f"parameter {path!r} slices {missing} are not assigned")
  for path, variable in variables.items():
    # Popping frees each host buffer once it is on the device: peak memory is one model plus one
    # parameter, not two models.
    variable.set_value(jnp.asarray(buffers.pop(path)))
  return nnx.merge(graphdef, state)


def load_pretrained(make: Callable[[], ModuleT], path: str | os.PathLike[str],
                    key_map: KeyMap) -> ModuleT:
  """Builds the module abstractly with `make` (no random init) and loads `path` into it."""
  return load_state(nnx.eval_shape(make), SafetensorsCheckpoint(path), key_map)


# ------------------------------------------------------------------------------------------------
# Saving.


def export_state(module: nnx.Module, key_map: KeyMap) -> dict[str, np.ndarray]:
  """The module's parameters as checkpoint tensors (the inverse of `load_state`).

  Ignored keys (buffers, unused heads) are not produced, and no prefix is added.
  """
  _, state = nnx.split(module)
  tensors: dict[str, np.ndarray] = {}
  for p, variable in nnx.to_flat_state(state):
    path = _path_str(p)
    value = np.asarray(variable.get_value())
    rules = [(r, m.groupdict()) for r in key_map.rules if (m := r.nnx_regex.fullmatch(path))]
    if not rules:
      raise CheckpointError(f"parameter {path!r} matches no rule")
    for rule, bindings in rules:
      # Placeholders that appear only in `index` run over the parameter's leading axes.
      free = [(axis, _PLACEHOLDER.fullmatch(i).group(1)) for axis, i in enumerate(rule.index)
              if isinstance(i, str) and _PLACEHOLDER.fullmatch(i).group(1) not in bindings]
      for values in np.ndindex(*(value.shape[axis] for axis, _ in free)):
        full = dict(bindings, **{name: str(v) for (_, name), v in zip(free, values)})
        key = rule.hf.format(**full)
        if key in tensors:
          raise CheckpointError(f"checkpoint key {key!r} produced twice")
        _, index = rule.resolve(full)
        tensors[key] = np.asarray(rule.transform.to_hf(value[index]))
  return tensors


def save_pretrained(module: nnx.Module, key_map: KeyMap, folder: str | os.PathLike[str], *,
                    config: Mapping[str, Any] | None = None,
                    max_shard_bytes: int | None = None) -> None:
  """Writes the module as a Hugging Face checkpoint folder (config.json + safetensors)."""
  write_safetensors(export_state(module, key_map), folder, max_shard_bytes=max_shard_bytes)
  if config is not None:
    with (pathlib.Path(folder) / CONFIG_FILE).open("w") as f:
      json.dump(dict(config), f, indent=2)
