"""Which erpjax model family loads a Hugging Face checkpoint, by its config's `architectures`.

Every reward-model family registers a loader for the HF architecture names it implements, e.g.
`register_reward_model("LlamaForSequenceClassification")(load_llama_reward_model)`. The scoring
engine then loads any supported checkpoint folder with `load_reward_model(path)`.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable

RewardModelLoader = Callable[..., "object"]
_REWARD_MODEL_LOADERS: dict[str, RewardModelLoader] = {}


def register_reward_model(*architectures: str) -> Callable[[RewardModelLoader], RewardModelLoader]:
  """Decorator: `loader(path, **options)` builds the model for these HF architecture names."""

  def register(loader: RewardModelLoader) -> RewardModelLoader:
    for name in architectures:
      if name in _REWARD_MODEL_LOADERS:
        raise ValueError(f"architecture {name!r} is registered twice")
      _REWARD_MODEL_LOADERS[name] = loader
    return loader

  return register


def supported_reward_models() -> tuple[str, ...]:
  """The HF architecture names erpjax can load as reward models."""
  return tuple(sorted(_REWARD_MODEL_LOADERS))


def load_reward_model(path: str | os.PathLike[str], **options):
  """Loads the reward model in the HF checkpoint folder `path` (config.json + safetensors).

  Raises:
    ValueError: the folder has no config.json, or its architecture is not supported.
  """
  config_file = pathlib.Path(path) / "config.json"
  if not config_file.is_file():
    raise ValueError(f"{path}: no config.json; expected a Hugging Face checkpoint folder")
  architectures = json.loads(config_file.read_text()).get("architectures") or []
  for name in architectures:
    if name in _REWARD_MODEL_LOADERS:
      return _REWARD_MODEL_LOADERS[name](path, **options)
  raise ValueError(
      f"{config_file}: architectures {architectures} not supported; "
      f"supported: {list(supported_reward_models())}"
  )
