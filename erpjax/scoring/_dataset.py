"""Scoring a routing dataset's responses with a reward model, as a new reward model of the dataset.

Routing on a reward model's rewards (the paper's setting) needs one reward per sampled response.
`score_dataset` scores every (prompt, response) sample of a `RoutingDataset` with a
`ScoringEngine` into a resumable score folder and returns the dataset with those scores added as
reward model `name` (the samples of the existing reward models are kept).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable

import numpy as np

from erpjax.data import DataError, RewardSamples, RoutingDataset
from erpjax.scoring._engine import ScoreItem, ScoringEngine, ScoringSummary
from erpjax.scoring._shards import read_scores


def score_dataset(
    data: RoutingDataset,
    engine: ScoringEngine,
    folder: str | os.PathLike[str],
    *,
    name: str,
    on_shard: Callable[[pathlib.Path], None] | None = None,
) -> tuple[RoutingDataset, ScoringSummary]:
  """Adds reward model `name`: `engine`'s score of every response of the dataset.

  The responses are those of the dataset's first reward model's samples (every reward model of a
  dataset scores the same responses). Scores are computed into `folder` (resumable, see
  `ScoringEngine.score`, which also says what `on_shard` does) and read back.

  Raises:
    DataError: the samples carry no response texts, or `name` is already a reward model.
  """
  if data.samples.response is None:
    raise DataError(f"{data.name}: samples carry no response texts to score")
  if name in data.reward_models:
    raise DataError(f"{data.name}: reward model {name!r} exists already")
  rows = np.flatnonzero(data.samples.reward_model_index == 0)
  ids = data.sample_ids(rows)
  items = [ScoreItem(i, data.prompts[data.samples.prompt_index[row]], data.samples.response[row])
           for i, row in zip(ids, rows)]
  summary = engine.score(items, folder, on_shard=on_shard)
  scores = read_scores(folder).as_dict()
  source = data.samples.take(rows)
  added = dataclasses.replace(
      source,
      reward_model_index=np.full(len(rows), len(data.reward_models), np.int32),
      reward=np.array([scores[i] for i in ids], np.float64),
  )
  samples = RewardSamples(
      *(np.concatenate([getattr(data.samples, f), getattr(added, f)])
        for f in ("prompt_index", "llm_index", "reward_model_index", "reward", "cost")),
      response=data.samples.response + added.response,
  )
  note = (f"reward model {name!r}: {len(rows)} responses scored by {engine.name} "
          f"({engine.formatter.name} inputs, max {engine.buckets.max_length} tokens)")
  scored = dataclasses.replace(data, reward_models=data.reward_models + (name,), samples=samples,
                               notes=data.notes + (note,))
  return scored, summary
