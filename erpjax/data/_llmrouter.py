"""LLMRouter's DC-Router data (9 open LLMs, 14 tasks) as a `RoutingDataset`.

`dcrouter_{split}.json` is a list of {"question", "scores": {model: float}, "cluster_id"}; the
task of a question is found by joining its text with `query_{split}.jsonl`; prices come from
`llm_candidates.json` (US$ per million input and output tokens). The data holds no token counts
and no responses, so the cost of a call is estimated (see `call_costs`).

What the files hold that a reader must not hide (recorded in the dataset's notes): 119 of the 500
test questions also occur in train (`dedupe=True` drops them), and a few train questions appear in
query_train.jsonl under two tasks (their category is left unknown).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from erpjax import paths
from erpjax.data._errors import DataError
from erpjax.data._jsonl import jsonl_records
from erpjax.data._schema import RewardSamples, RoutingDataset
from erpjax.data._splits import overlap_of_texts, resolve_overlap

SPLITS = ("train", "test")
REWARD_MODEL = "score"
INCOMPLETE_MODES = ("drop_prompt", "keep")



@dataclasses.dataclass(frozen=True)
class _Rows:
  """One dcrouter file: questions and an [N, M] score matrix (NaN where a score is unusable)."""

  path: pathlib.Path
  questions: list[str]
  scores: np.ndarray
  unusable: int  # scores missing, null, non-numeric or non-finite
  duplicates: int  # rows dropped because their question occurred earlier in the file


def load_llmrouter(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    dedupe: bool = False,
    incomplete: str = "drop_prompt",
    assumed_output_tokens: float = 256,
    chars_per_token: float = 4.0,
    routing_costs: Mapping[str, float] | None = None,
) -> RoutingDataset:
  """Loads one split of the LLMRouter DC-Router data.

  Args:
    split: "train" or "test".
    root: the data folder; defaults to `paths.shared_data("llmrouter")`.
    dedupe: for the test split, drop questions whose text also occurs in train.
    incomplete: "drop_prompt" drops questions with an unusable score for some LLM (missing, null,
      non-numeric); "keep" keeps their other samples.
    assumed_output_tokens: the response length assumed by the cost estimate.
    chars_per_token: prompt tokens are estimated as len(text) / chars_per_token.
    routing_costs: c_i per LLM name; by default the mean estimated cost over the TRAIN questions.

  Returns:
    The split with reward model "score" (K = 1), prompt ids "llmrouter-<hash of the text>",
    categories from the query files, estimated per-call costs in `samples.cost`.
  """
  for what, value, choices in (("split", split, SPLITS),
                               ("incomplete", incomplete, INCOMPLETE_MODES)):
    if value not in choices:
      raise ValueError(f"{what} must be one of {choices}, got {value!r}")
  if assumed_output_tokens < 0 or chars_per_token <= 0:
    raise ValueError("assumed_output_tokens must be >= 0 and chars_per_token > 0")
  root = pathlib.Path(root) if root is not None else paths.shared_data("llmrouter")

  notes: list[str] = []
  train_models, train = _read_rows(root / "dcrouter_train.json", None)
  models, rows = (train_models, train) if split == "train" else _read_rows(
      root / f"dcrouter_{split}.json", train_models
  )
  if rows.duplicates:
    notes.append(f"{rows.path.name}: dropped {rows.duplicates} rows repeating an earlier question")
  rows = _complete(rows, models, incomplete, notes)
  train = rows if split == "train" else _complete(train, models, incomplete, None)

  prices = _read_prices(root / "llm_candidates.json", models)
  cost = call_costs(rows.questions, prices, assumed_output_tokens, chars_per_token)
  if routing_costs is None:
    costs = call_costs(train.questions, prices, assumed_output_tokens, chars_per_token).mean(0)
    notes.append(
        f"routing costs c_i: the mean estimated cost over the {len(train.questions)} train "
        f"questions, (input_price * len(text) / {chars_per_token:g} + output_price * "
        f"{assumed_output_tokens:g}) / 1e6 US$ per call"
    )
  else:
    missing = [m for m in models if m not in routing_costs]
    if missing:
      raise ValueError(f"routing_costs lacks {missing}")
    costs = np.array([float(routing_costs[m]) for m in models])

  categories = _categories(root / f"query_{split}.jsonl", rows.questions, notes)
  scored = ~np.isnan(rows.scores)
  p, j = np.nonzero(scored)
  dataset = RoutingDataset(
      name=f"llmrouter/{split}",
      prompt_ids=tuple(prompt_id(q) for q in rows.questions),
      prompts=tuple(rows.questions),
      categories=tuple(categories),
      llms=models,
      costs=costs,
      reward_models=(REWARD_MODEL,),
      samples=RewardSamples.build(p, j, rows.scores[p, j], cost=cost[p, j]),
      notes=tuple(notes),
  )
  if split == "test":
    dataset = resolve_overlap(
        dataset, overlap_of_texts(train.questions, rows.questions), dedupe=dedupe
    )
  return dataset


def prompt_id(text: str) -> str:
  """A stable id for a question: "llmrouter-" and 16 hex digits of the SHA-1 of its text."""
  return "llmrouter-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def call_costs(
    texts: Sequence[str],
    prices: np.ndarray,
    assumed_output_tokens: float = 256,
    chars_per_token: float = 4.0,
) -> np.ndarray:
  """[N, M] estimated US$ cost of sending each text to each LLM.

  cost = (input_price * len(text) / chars_per_token + output_price * assumed_output_tokens) / 1e6,
  with prices [M, 2] (input, output) in US$ per million tokens. About 4 characters per token is
  the usual rule of thumb for English text with BPE tokenizers; the output length is unknown
  (the data holds no responses), so one assumed length is used for every call.
  """
  prompt_tokens = np.array([len(text) for text in texts], np.float64) / chars_per_token
  return (
      np.einsum("n,m->nm", prompt_tokens, prices[:, 0]) + assumed_output_tokens * prices[:, 1]
  ) / 1e6


def _read_json(path: pathlib.Path):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f"not valid JSON: {e.msg} (line {e.lineno})", file=path) from e


def _read_rows(path: pathlib.Path, models: tuple[str, ...] | None) -> tuple[tuple[str, ...], _Rows]:
  """Reads a dcrouter file; `models` defaults to the score keys in order of first appearance."""
  data = _read_json(path)
  if not isinstance(data, list):
    raise DataError("expected a JSON list of rows", file=path)
  if models is None:
    seen: dict[str, None] = {}
    for row in data:
      if isinstance(row, dict) and isinstance(row.get("scores"), dict):
        seen.update(dict.fromkeys(row["scores"]))
    models = tuple(seen)
  questions, scores, first = [], [], set()
  unusable = duplicates = 0
  for number, row in enumerate(data, start=1):
    if not isinstance(row, dict):
      raise DataError("expected a JSON object", file=path, row=number)
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
      raise DataError("missing or empty question", file=path, row=number, field="question")
    if not isinstance(row.get("scores"), dict):
      raise DataError("missing scores object", file=path, row=number, field="scores")
    unknown = set(row["scores"]) - set(models)
    if unknown:
      raise DataError(f"scores for LLMs not in train: {sorted(unknown)}", file=path, row=number,
                      field="scores")
    if question in first:
      duplicates += 1
      continue
    first.add(question)
    values = [_score(row["scores"].get(model)) for model in models]
    unusable += sum(math.isnan(v) for v in values)
    questions.append(question)
    scores.append(values)
  matrix = np.array(scores, np.float64).reshape(-1, len(models))
  return models, _Rows(path, questions, matrix, unusable, duplicates)


def _score(value) -> float:
  """A finite score as float; NaN for a missing, null, non-numeric or non-finite one."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return math.nan
  return float(value) if math.isfinite(value) else math.nan


def _complete(
    rows: _Rows, models: tuple[str, ...], incomplete: str, notes: list[str] | None
) -> _Rows:
  lacking = np.isnan(rows.scores).any(axis=1)
  if notes is not None and rows.unusable:
    by_model = {m: int(n) for m, n in zip(models, np.isnan(rows.scores).sum(0)) if n}
    action = "dropped those rows" if incomplete == "drop_prompt" else "kept their other scores"
    notes.append(
        f"{rows.path.name}: {rows.unusable} scores are missing, null or not numbers "
        f"({by_model}) in {int(lacking.sum())} rows; {action}"
    )
  if incomplete == "keep" or not lacking.any():
    return rows
  keep = np.flatnonzero(~lacking)
  return dataclasses.replace(
      rows, questions=[rows.questions[i] for i in keep], scores=rows.scores[keep]
  )


def _read_prices(path: pathlib.Path, models: tuple[str, ...]) -> np.ndarray:
  """[M, 2] (input, output) US$ per million tokens for each of `models`."""
  candidates = _read_json(path)
  if not isinstance(candidates, dict):
    raise DataError("expected a JSON object of LLMs", file=path)
  prices = np.zeros((len(models), 2))
  for i, model in enumerate(models):
    entry = candidates.get(model)
    if not isinstance(entry, dict):
      raise DataError("no entry for this LLM", file=path, field=model)
    for k, key in enumerate(("input_price", "output_price")):
      value = entry.get(key)
      if (isinstance(value, bool) or not isinstance(value, (int, float))
          or not math.isfinite(value) or value < 0):
        raise DataError(f"expected a non-negative price, found {value!r}", file=path,
                        field=f"{model}.{key}")
      prices[i, k] = value
  return prices


def _categories(path: pathlib.Path, questions: Sequence[str], notes: list[str]) -> list[str | None]:
  """The task of each question from the query file; None where absent or ambiguous."""
  tasks: dict[str, set[str]] = collections.defaultdict(set)
  for number, record in jsonl_records(path):
    for field in ("query", "task_name"):
      if not isinstance(record.get(field), str):
        raise DataError("missing or not a string", file=path, row=number, field=field)
    tasks[record["query"]].add(record["task_name"])
  found = [tasks.get(q, set()) for q in questions]
  unjoined = sum(not names for names in found)
  ambiguous = [sorted(names) for names in found if len(names) > 1]
  if unjoined:
    notes.append(f"{unjoined} questions are not in {path.name}: category unknown")
  if ambiguous:
    pairs = collections.Counter("/".join(names) for names in ambiguous)
    notes.append(
        f"{len(ambiguous)} questions occur in {path.name} under several tasks ({dict(pairs)}): "
        "category unknown"
    )
  return [next(iter(names)) if len(names) == 1 else None for names in found]
