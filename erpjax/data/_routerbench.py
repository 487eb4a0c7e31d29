"""RouterBench (zero-shot subset, as split by RouterDC) as a `RoutingDataset`.

Each CSV `{task}_{split}.csv` holds one row per prompt: `sample_id`, `prompt` (a Python-literal
list of strings), `eval_name` (the task), and per model a 0/1 correctness column, the response
(`<model>|model_response`, a Python-literal list) and the US$ cost of that call
(`<model>|total_cost`). One response per (prompt, model), so K = 1.

What the files hold that a reader must not hide (each is recorded in the dataset's notes and
logged):
  * arc_challenge repeats some sample_ids in two rows with the same question: one row lists the
    prompt twice, bills about twice the cost and is scored for gpt-3.5-turbo-1106 only; the other
    is scored for every other model. Rows of one sample_id in a file are merged into one prompt
    (scores from whichever row has them; a row whose prompt list repeats the prompt n times has
    its costs divided by n). Six such sample_ids have their two rows in different splits, so
    they stay incomplete, and by default are dropped (`incomplete="drop_prompt"`).
  * arc_challenge and winogrande prompts start with the same few-shot examples (about 1,650 and
    1,220 characters): see `prefix`.
  * Some questions occur in both splits (mbpp has two texts shared by different sample_ids).
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import math
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from erpjax import paths
from erpjax.data._errors import DataError
from erpjax.data._schema import RewardSamples, RoutingDataset
from erpjax.data._splits import overlap_of_texts, resolve_overlap
from erpjax.data._text import keep_tail, shared_prefix, strip_prefix

TASKS = ("arc_challenge", "mbpp", "winograde")
SPLITS = ("train", "test")
REWARD_MODEL = "correctness"
PREFIX_MODES = ("strip", "tail", "keep")
INCOMPLETE_MODES = ("drop_prompt", "keep")


@dataclasses.dataclass
class _File:
  """One CSV after merging rows by sample_id; arrays are [N, M] over the file's models.

  `reward` is NaN where the model has no score for the prompt.
  """

  path: pathlib.Path
  models: tuple[str, ...]
  ids: list[str]
  texts: list[str]
  categories: list[str]
  reward: np.ndarray
  cost: np.ndarray
  response: list[list[str | None]]
  merged_rows: int


def load_routerbench(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    tasks: Sequence[str] | None = None,
    prefix: str = "strip",
    tail_chars: int = 1000,
    incomplete: str = "drop_prompt",
    routing_costs: Mapping[str, float] | None = None,
    dedupe: bool = False,
) -> RoutingDataset:
  """Loads one split of the RouterBench subset.

  Args:
    split: "train" or "test".
    root: the folder of CSVs; defaults to `paths.shared_data("routerbench_subset")`.
    tasks: a subset of `TASKS`; all by default.
    prefix: what to do with the few-shot prefix shared by a task's prompts, found on the TRAIN
      prompts of the task (so both splits lose the same text): "strip" removes it, "tail" keeps
      the last `tail_chars` characters of every prompt (cut at a whitespace; about what a
      256-token encoder window holds), "keep" leaves the texts as they are.
    tail_chars: the length kept by `prefix="tail"`.
    incomplete: "drop_prompt" drops prompts that lack a score for some LLM, so every prompt has
      all LLMs; "keep" keeps them with only the samples they have.
    routing_costs: c_i per LLM name; by default each LLM's mean observed US$ per call over the
      TRAIN prompts of the loaded tasks (also when loading test).
    dedupe: for the test split, drop prompts whose text also occurs in train.

  Returns:
    The split with reward model "correctness" (0/1, K = 1), observed per-call costs in
    `samples.cost`, and the responses. Its notes say what was merged, dropped and stripped.
  """
  _check_choice("split", split, SPLITS)
  _check_choice("prefix", prefix, PREFIX_MODES)
  _check_choice("incomplete", incomplete, INCOMPLETE_MODES)
  tasks = tuple(TASKS if tasks is None else tasks)
  for task in tasks:
    _check_choice("task", task, TASKS)
  root = pathlib.Path(root) if root is not None else paths.shared_data("routerbench_subset")

  notes: list[str] = []
  train = [_read_csv(root / f"{task}_train.csv") for task in tasks]
  files = train if split == "train" else [_read_csv(root / f"{task}_test.csv") for task in tasks]
  models = train[0].models
  for file in train[1:] + files:
    if set(file.models) != set(models):
      raise DataError(f"models {sorted(file.models)} differ from {sorted(models)}", file=file.path)
  for file in files:
    if file.merged_rows:
      notes.append(
          f"{file.path.name}: {file.merged_rows} rows repeat the sample_id (and question) of "
          "another row; merged into one prompt per sample_id, taking each model's score from the "
          "row that has it (costs of a row whose prompt list repeats the prompt n times / n)"
      )
  kept_train = [_complete(file, incomplete, notes if split == "train" else None) for file in train]
  kept = kept_train if split == "train" else [_complete(f, incomplete, notes) for f in files]

  texts = [_prefixed(train_file, file, prefix, tail_chars, notes)
           for train_file, file in zip(train, kept)]
  costs = _routing_costs(kept_train, models, routing_costs)
  if routing_costs is None:
    notes.append(
        "routing costs c_i: each LLM's mean observed US$ per call over the "
        f"{sum(len(file.ids) for file in kept_train)} train prompts of {', '.join(tasks)}"
    )
  dataset = _assemble(f"routerbench_subset/{split}", kept, texts, models, costs, notes)
  if split == "test":
    dataset = resolve_overlap(
        dataset,
        overlap_of_texts(
            [text for file in kept_train for text in file.texts],
            [text for file in kept for text in file.texts],  # before the prefix is handled
        ),
        dedupe=dedupe,
    )
  duplicates = dataset.num_prompts - len(set(dataset.prompts))
  if duplicates:
    dataset = dataclasses.replace(dataset, notes=dataset.notes + (
        f"{duplicates} prompts have the same text as another prompt of this split",))
  return dataset


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f"{what} must be one of {tuple(choices)}, got {value!r}")


def _read_csv(path: pathlib.Path) -> _File:
  """Parses and validates one CSV, merging rows that share a sample_id.

  Errors name the data row: 1 is the first row after the header (a row may span several lines).
  """
  # Model responses can be long: lift the 128 KiB field limit (the longest field in the shared
  # files is 16 KB), and restore the process-wide setting afterwards.
  limit = csv.field_size_limit(sys.maxsize)
  try:
    with open(path, newline="", encoding="utf-8") as f:
      rows = list(csv.reader(f))
  finally:
    csv.field_size_limit(limit)
  if not rows:
    raise DataError("empty file", file=path)
  header, rows = rows[0], rows[1:]
  column = {name: i for i, name in enumerate(header)}
  for name in ("sample_id", "prompt", "eval_name"):
    if name not in column:
      raise DataError("missing column", file=path, field=name)
  models = tuple(
      name for name in header
      if f"{name}|model_response" in column and f"{name}|total_cost" in column
  )
  if not models:
    raise DataError("no model columns (<model>, <model>|model_response, <model>|total_cost)",
                    file=path)
  score_col = [column[m] for m in models]
  cost_col = [column[f"{m}|total_cost"] for m in models]
  response_col = [column[f"{m}|model_response"] for m in models]

  first_row: dict[str, int] = {}
  ids, texts, categories, rewards, costs, responses = [], [], [], [], [], []
  merged = 0
  for row_number, row in enumerate(rows, start=1):
    if len(row) != len(header):
      raise DataError(f"{len(row)} fields, header has {len(header)}", file=path, row=row_number)
    text, repeats = _literal_text(row[column["prompt"]], path, row_number, "prompt")
    sample_id = row[column["sample_id"]]
    if sample_id in first_row:
      index = first_row[sample_id]
      merged += 1
      if texts[index] != text:
        raise DataError(f"sample_id {sample_id!r} occurs again with a different prompt",
                        file=path, row=row_number, field="sample_id")
    else:
      index = first_row[sample_id] = len(ids)
      ids.append(sample_id)
      texts.append(text)
      categories.append(row[column["eval_name"]])
      rewards.append(np.full(len(models), np.nan))
      costs.append(np.full(len(models), np.nan))
      responses.append([None] * len(models))
    for j, model in enumerate(models):
      score = row[score_col[j]]
      if not score:
        continue  # No score for this model here; another row of the sample_id may have it.
      if not math.isnan(rewards[index][j]):
        raise DataError(f"sample_id {sample_id!r} is scored twice for this model",
                        file=path, row=row_number, field=model)
      rewards[index][j] = _number(score, path, row_number, model)
      costs[index][j] = _number(row[cost_col[j]], path, row_number, f"{model}|total_cost") / repeats
      responses[index][j], _ = _literal_text(
          row[response_col[j]], path, row_number, f"{model}|model_response", allow_empty=True
      )
  return _File(path, models, ids, texts, categories,
               np.array(rewards).reshape(-1, len(models)),
               np.array(costs).reshape(-1, len(models)), responses, merged)


def _literal_text(
    value: str, path: pathlib.Path, row: int, field: str, *, allow_empty: bool = False
) -> tuple[str, int]:
  """The text of a Python-literal list of equal strings, and how many times it is repeated."""
  try:
    parsed = ast.literal_eval(value)  # Never eval: the files are data, not code.
  except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
    raise DataError(f"not a Python literal list of strings: {value[:60]!r}",
                    file=path, row=row, field=field) from e
  if (not isinstance(parsed, (list, tuple)) or not parsed
      or not all(isinstance(item, str) for item in parsed)):
    raise DataError(f"expected a non-empty list of strings, found {value[:60]!r}",
                    file=path, row=row, field=field)
  if len(set(parsed)) > 1:
    raise DataError(f"the list holds {len(set(parsed))} different texts", file=path, row=row,
                    field=field)
  if not allow_empty and not parsed[0].strip():
    raise DataError("empty text", file=path, row=row, field=field)
  return parsed[0], len(parsed)


def _number(value: str, path: pathlib.Path, row: int, field: str) -> float:
  try:
    number = float(value)
  except ValueError:
    number = math.nan
  if not math.isfinite(number) or number < 0:
    raise DataError(f"expected a finite non-negative number, found {value[:40]!r}",
                    file=path, row=row, field=field)
  return number


def _complete(file: _File, incomplete: str, notes: list[str] | None) -> _File:
  """`file` without prompts that lack a score for some model (incomplete="drop_prompt")."""
  missing = np.isnan(file.reward)
  lacking = missing.any(axis=1)
  if not lacking.any():
    return file
  if notes is not None:
    by_model = {m: int(n) for m, n in zip(file.models, missing.sum(axis=0)) if n}
    action = (
        "dropped those prompts" if incomplete == "drop_prompt" else "kept their other samples"
    )
    notes.append(
        f"{file.path.name}: {int(lacking.sum())} of {len(file.ids)} prompts lack a score for "
        f"some LLM ({int(missing.sum())} missing (prompt, LLM) pairs: {by_model}); {action}"
    )
  if incomplete == "keep":
    return file
  rows = np.flatnonzero(~lacking)
  return dataclasses.replace(
      file,
      ids=[file.ids[i] for i in rows],
      texts=[file.texts[i] for i in rows],
      categories=[file.categories[i] for i in rows],
      reward=file.reward[rows],
      cost=file.cost[rows],
      response=[file.response[i] for i in rows],
  )


def _prefixed(
    train: _File, file: _File, mode: str, tail_chars: int, notes: list[str]
) -> list[str]:
  """The texts of `file` after handling the few-shot prefix shared by `train`'s prompts."""
  task = train.path.stem.removesuffix("_train")
  if mode == "keep":
    return file.texts
  if mode == "tail":
    texts = [keep_tail(text, tail_chars) for text in file.texts]
    cut = sum(a != b for a, b in zip(texts, file.texts))
    notes.append(f"{task}: kept the last <= {tail_chars} characters of {cut} longer prompts")
    return texts
  prefix = shared_prefix(train.texts)
  if not prefix:
    notes.append(f"{task}: the train prompts share no prefix; nothing stripped")
    return file.texts
  texts, missed = strip_prefix(file.texts, prefix)
  notes.append(
      f"{task}: stripped a {len(prefix)}-character prefix shared by all train prompts"
      + (f"; {missed} prompts do not start with it and were kept whole" if missed else "")
  )
  return texts


def _routing_costs(
    train: Sequence[_File], models: tuple[str, ...], given: Mapping[str, float] | None
) -> np.ndarray:
  """[M] c_i: `given`, else each model's mean observed cost per scored train call."""
  if given is not None:
    missing = [m for m in models if m not in given]
    if missing:
      raise ValueError(f"routing_costs lacks {missing}")
    costs = np.array([float(given[m]) for m in models])
    if not np.all(np.isfinite(costs) & (costs >= 0)):
      raise ValueError(f"routing_costs must be finite and non-negative, got {dict(given)}")
    return costs
  total, count = np.zeros(len(models)), np.zeros(len(models))
  for file in train:
    order = [file.models.index(m) for m in models]
    cost, scored = file.cost[:, order], ~np.isnan(file.reward[:, order])
    total += np.where(scored, cost, 0.0).sum(axis=0)
    count += scored.sum(axis=0)
  if not count.all():
    raise DataError(f"no scored train call for {[m for m, n in zip(models, count) if not n]}")
  return total / count


def _assemble(
    name: str,
    files: Sequence[_File],
    texts: Sequence[Sequence[str]],
    models: tuple[str, ...],
    costs: np.ndarray,
    notes: Sequence[str],
) -> RoutingDataset:
  prompt_rows, llm_index, reward, cost, response = [], [], [], [], []
  offset = 0
  for file in files:
    order = [file.models.index(m) for m in models]
    scored = ~np.isnan(file.reward[:, order])
    p, j = np.nonzero(scored)  # Row-major: samples grouped by prompt, models in `models` order.
    prompt_rows.append(p + offset)
    llm_index.append(j)
    reward.append(file.reward[:, order][p, j])
    cost.append(file.cost[:, order][p, j])
    response.extend(file.response[a][order[b]] for a, b in zip(p, j))
    offset += len(file.ids)
  return RoutingDataset(
      name=name,
      prompt_ids=tuple(i for file in files for i in file.ids),
      prompts=tuple(t for file_texts in texts for t in file_texts),
      categories=tuple(c for file in files for c in file.categories),
      llms=models,
      costs=costs,
      reward_models=(REWARD_MODEL,),
      samples=RewardSamples.build(
          np.concatenate(prompt_rows), np.concatenate(llm_index), np.concatenate(reward),
          cost=np.concatenate(cost), response=response,
      ),
      notes=tuple(notes),
  )
