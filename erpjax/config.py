"""Run configuration: frozen dataclasses, validated on construction, read from YAML files.

A YAML file mirrors `RunConfig`; every section and key is optional except `data.source`, and an
unknown key is an error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import typing
from collections.abc import Mapping
from typing import Any

import yaml

DATA_SOURCES = ("routerbench", "llmrouter", "folder", "synthetic")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the train and test splits come from.

  Attributes:
    source: "routerbench" | "llmrouter" (the shared real data), "folder" (datasets in the erpjax
      on-disk format, docs/data_format.md) or "synthetic" (the seeded benchmark of `erpjax demo`).
    root: the source's folder; None = its default (the shared data folder for real sources).
    train, test: split names ("train"/"test") or, for "folder", sub-folders of `root`.
    options: keyword options of the source's loader (e.g. `prefix: strip`, `dedupe: true`).
  """

  source: str
  root: str | None = None
  train: str = "train"
  test: str = "test"
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.source not in DATA_SOURCES:
      raise ValueError(f"data.source must be one of {DATA_SOURCES}, got {self.source!r}")
    if self.source == "folder" and self.root is None:
      raise ValueError("data.source 'folder' needs data.root")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The prompt encoder.

  Attributes:
    path: an HF checkpoint folder of a BERT-family sentence encoder; None = all-MiniLM-L6-v2.
    max_length: tokens kept per prompt.
    batch_size: prompts per encoder call.
    dtype: compute dtype, "float32" or "bfloat16".
    cache: reuse embeddings cached on disk (keyed by encoder and text).
  """

  path: str | None = None
  max_length: int = 256
  batch_size: int = 64
  dtype: str = "float32"
  cache: bool = True

  def __post_init__(self):
    if self.dtype not in DTYPES:
      raise ValueError(f"encoder.dtype must be one of {DTYPES}, got {self.dtype!r}")
    if self.max_length < 2 or self.batch_size < 1:
      raise ValueError("encoder.max_length must be >= 2 and encoder.batch_size >= 1")


@dataclasses.dataclass(frozen=True)
class PredictorConfig:
  """The ridge heads: beta = 1 as in the paper; `reward_model` None = the dataset's first."""

  beta: float = 1.0
  standardize: bool = False
  reward_model: str | None = None

  def __post_init__(self):
    if self.beta <= 0:
      raise ValueError(f"predictor.beta must be positive, got {self.beta}")


@dataclasses.dataclass(frozen=True)
class RoutingConfig:
  """The cost weights evaluated: `num_cost_weights` lambdas over the useful range, and optionally
  the lambda meeting a mean `budget` per prompt (US$) on the training prompts."""

  num_cost_weights: int = 50
  budget: float | None = None

  def __post_init__(self):
    if self.num_cost_weights < 1:
      raise ValueError("routing.num_cost_weights must be >= 1")
    if self.budget is not None and self.budget <= 0:
      raise ValueError(f"routing.budget must be positive, got {self.budget}")


@dataclasses.dataclass(frozen=True)
class RewardsConfig:
  """Rewards from a reward model: every response of both splits is scored before fitting.

  Attributes:
    model: HF checkpoint folder of a reward model (any architecture `erpjax.models` loads).
    name: the reward model's name among the dataset's reward models (fit on it with
      `predictor.reward_model: <name>`).
    scoring: `erpjax.scoring.ScoringConfig` fields (buckets, batch tokens, packing, dtype, ...).
  """

  model: str
  name: str = "reward_model"
  scoring: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One ERP job: data -> [score] -> encode -> estimate -> fit -> route -> report, written to
  `output_dir` (scores of a `rewards` model go to `<output_dir>/scores/<split>`, resumable)."""

  data: DataConfig
  encoder: EncoderConfig = EncoderConfig()
  predictor: PredictorConfig = PredictorConfig()
  routing: RoutingConfig = RoutingConfig()
  rewards: RewardsConfig | None = None
  output_dir: str = "runs/erp"

  @classmethod
  def from_dict(cls, raw: Mapping[str, Any], *, where: str = "config") -> RunConfig:
    """Builds a config from nested mappings, refusing unknown keys."""
    return _build(cls, raw, where)

  @classmethod
  def from_yaml(cls, path: str | os.PathLike[str]) -> RunConfig:
    raw = yaml.safe_load(pathlib.Path(path).read_text()) or {}
    if not isinstance(raw, Mapping):
      raise ValueError(f"{path}: expected a mapping at the top level")
    return cls.from_dict(raw, where=str(path))


def _build(cls, raw: Mapping[str, Any], where: str):
  if not isinstance(raw, Mapping):
    raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
  hints = typing.get_type_hints(cls)
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(raw) - fields)
  if unknown:
    raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
  values = {}
  for name, value in raw.items():
    # A section is a dataclass, or an optional one (`RewardsConfig | None`).
    section = next((t for t in (hints[name], *typing.get_args(hints[name]))
                    if dataclasses.is_dataclass(t)), None)
    if section is not None and value is not None:
      value = _build(section, value, f"{where}.{name}")
    values[name] = value
  try:
    return cls(**values)
  except (TypeError, ValueError) as error:
    raise ValueError(f"{where}: {error}") from error
