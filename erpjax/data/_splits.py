"""Train/test overlap: test prompts whose text also occurs in the training split.

A router evaluated on prompts it was trained on looks better than it is. Public routing datasets
do share prompts across their splits (LLMRouter's test split repeats 119 of its 500 questions from
train), so loaders report the overlap and `drop_overlap` removes it from the test split.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np

from erpjax.data._schema import RoutingDataset
from erpjax.data._text import normalize_text


@dataclasses.dataclass(frozen=True)
class Overlap:
  """Test prompts that also occur in train, matched by normalized text (`normalize_text`).

  Attributes:
    test_rows: [P] rows of the overlapping prompts in the test split, ascending.
    train_rows: [P] the first train row with the same normalized text.
  """

  test_rows: np.ndarray
  train_rows: np.ndarray

  def __len__(self) -> int:
    return len(self.test_rows)


def overlap_of_texts(train: Sequence[str], test: Sequence[str]) -> Overlap:
  """The overlap between two lists of prompt texts."""
  first_row: dict[str, int] = {}
  for row, text in enumerate(train):
    first_row.setdefault(normalize_text(text), row)
  pairs = [
      (row, first_row[key])
      for row, key in enumerate(map(normalize_text, test))
      if key in first_row
  ]
  test_rows, train_rows = zip(*pairs) if pairs else ((), ())
  return Overlap(np.asarray(test_rows, np.int64), np.asarray(train_rows, np.int64))


def find_overlap(train: RoutingDataset, test: RoutingDataset) -> Overlap:
  """The test prompts whose normalized text also occurs in `train`."""
  return overlap_of_texts(train.prompts, test.prompts)


def drop_overlap(test: RoutingDataset, train: RoutingDataset) -> RoutingDataset:
  """`test` without the prompts that also occur in `train`; a note records how many went."""
  return resolve_overlap(test, find_overlap(train, test), dedupe=True)


def resolve_overlap(test: RoutingDataset, overlap: Overlap, *, dedupe: bool) -> RoutingDataset:
  """`test` with a note describing `overlap` by category, and without it if `dedupe`."""
  if not len(overlap):
    return test
  by_category = dict(collections.Counter(test.categories[i] for i in overlap.test_rows))
  note = (
      f"{len(overlap)} of {test.num_prompts} test prompts also occur in train (same normalized "
      f"text; by category: {by_category}); {'dropped' if dedupe else 'kept'} (dedupe={dedupe})"
  )
  if not dedupe:
    return dataclasses.replace(test, notes=test.notes + (note,))
  keep = np.ones(test.num_prompts, bool)
  keep[overlap.test_rows] = False
  return test.select_prompts(keep, note=note)
