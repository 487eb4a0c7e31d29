"""Anthropic HH-RLHF preference pairs (Bai et al. 2022): (chosen, rejected) dialogues.

The shared data holds the `*.test.jsonl.gz` files of the four subsets, one JSON object
{"chosen": str, "rejected": str} per line; each dialogue is the whole conversation
("\\n\\nHuman: ...\\n\\nAssistant: ..."), and the two of a pair differ in the last assistant turn.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np

HH_FILES = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")


@dataclasses.dataclass(frozen=True)
class PreferencePairs:
  """[N] (chosen, rejected) dialogues and the file each came from."""

  chosen: tuple[str, ...]
  rejected: tuple[str, ...]
  source: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.chosen)

  def take(self, rows: Sequence[int]) -> PreferencePairs:
    return PreferencePairs(*(tuple(getattr(self, f)[i] for i in rows)
                             for f in ("chosen", "rejected", "source")))


def read_hh_pairs(folder: str | os.PathLike[str], files: Sequence[str] = HH_FILES
                  ) -> tuple[PreferencePairs, int]:
  """The HH-RLHF pairs of `files` in `folder`, and how many identical pairs were dropped.

  A pair whose chosen and rejected dialogues are the same text carries no preference.
  """
  chosen, rejected, source, identical = [], [], [], 0
  for name in files:
    path = pathlib.Path(folder) / f"{name}.test.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
      for line_number, line in enumerate(f, 1):
        row = json.loads(line)
        if not isinstance(row.get("chosen"), str) or not isinstance(row.get("rejected"), str):
          raise ValueError(f"{path}, line {line_number}: expected string 'chosen' and 'rejected'")
        if row["chosen"] == row["rejected"]:
          identical += 1
          continue
        chosen.append(row["chosen"])
        rejected.append(row["rejected"])
        source.append(name)
  return PreferencePairs(tuple(chosen), tuple(rejected), tuple(source)), identical


def split_pairs(pairs: PreferencePairs, holdout_fraction: float, seed: int
                ) -> tuple[PreferencePairs, PreferencePairs]:
  """A seeded (train, holdout) split; each part in a seeded random order."""
  order = np.random.default_rng(seed).permutation(len(pairs))
  num_holdout = max(1, round(holdout_fraction * len(pairs)))
  return pairs.take(order[num_holdout:]), pairs.take(order[:num_holdout])
