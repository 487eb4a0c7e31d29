"""Preference pairs packed into fixed-shape batches: both dialogues of a pair in the same step.

Sequences are packed several to a row with segment ids by `erpjax.runtime.build_batch`, the
layout the runner scores, so the reward model reads training batches as it reads scoring ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from erpjax.runtime import PackItem, build_batch


@dataclasses.dataclass(frozen=True)
class PairBatch:
  """Pairs packed into one [R, T] batch of rows.

  Attributes:
    inputs: the reward model's inputs (tokens_bt, segment_ids_bt, positions_bt: [R, T];
      score_index_bs: [R, S]).
    chosen_p2, rejected_p2: int32[P, 2], the (row, slot) of each pair's two scores.
    mask_p: bool[P], False on padding pairs.
  """

  inputs: dict[str, np.ndarray]
  chosen_p2: np.ndarray
  rejected_p2: np.ndarray
  mask_p: np.ndarray

  @property
  def num_pairs(self) -> int:
    return int(self.mask_p.sum())


class _OpenBatch:
  """The rows of a batch being filled: free tokens, sequence counts and contents per row."""

  def __init__(self, rows: int, length: int, max_segments: int):
    self.length, self.max_segments = length, max_segments
    self.max_pairs = rows * max_segments // 2
    self.free = np.full(rows, length)
    self.count = np.zeros(rows, np.int64)
    self.layout: list[list[PackItem]] = [[] for _ in range(rows)]
    self.pairs: list[int] = []

  def add(self, pair: int, chosen: Sequence[int], rejected: Sequence[int]) -> bool:
    """Places both sequences of `pair` (first fit), or neither and returns False."""
    if len(self.pairs) == self.max_pairs:
      return False
    placed = []
    for tag, seq in (("c", chosen), ("r", rejected)):
      fits = (self.free >= len(seq)) & (self.count < self.max_segments)
      if not fits.any():
        for row, item in placed:  # Undo the chosen sequence.
          self.layout[row].remove(item)
          self.free[row] += len(item.ids)
          self.count[row] -= 1
        return False
      row = int(np.argmax(fits))
      item = PackItem(f"{pair}/{tag}", seq, None)
      self.layout[row].append(item)
      self.free[row] -= len(seq)
      self.count[row] += 1
      placed.append((row, item))
    self.pairs.append(pair)
    return True

  def close(self) -> PairBatch:
    batch = build_batch([row for row in self.layout if row], self.length, len(self.layout),
                        self.max_segments, "first", with_types=False)
    slot = {item_id: (b, s) for item_id, b, s in zip(batch.ids, batch.slot_b, batch.slot_s)}
    chosen_p2 = np.zeros((self.max_pairs, 2), np.int32)
    rejected_p2 = np.zeros((self.max_pairs, 2), np.int32)
    for p, pair in enumerate(self.pairs):
      chosen_p2[p] = slot[f"{pair}/c"]
      rejected_p2[p] = slot[f"{pair}/r"]
    return PairBatch(batch.model_inputs(), chosen_p2, rejected_p2,
                     np.arange(self.max_pairs) < len(self.pairs))


def pack_pairs(chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]], *,
               rows: int, length: int, max_segments: int) -> list[PairBatch]:
  """Packs pairs, in order, into batches of `rows` x `length` (first fit, pairs kept whole).

  A batch is closed when the next pair does not fit. Every batch has the same shapes
  (P = rows * max_segments // 2 pair slots), so a training step compiles once.
  """
  batches: list[PairBatch] = []
  open_batch = _OpenBatch(rows, length, max_segments)
  for pair, (c, r) in enumerate(zip(chosen, rejected, strict=True)):
    if open_batch.add(pair, c, r):
      continue
    if open_batch.pairs:
      batches.append(open_batch.close())
    open_batch = _OpenBatch(rows, length, max_segments)
    if not open_batch.add(pair, c, r):
      raise ValueError(f"pair {pair} ({len(c)} and {len(r)} tokens) does not fit an empty batch "
                       f"of {rows} x {length}")
  if open_batch.pairs:
    batches.append(open_batch.close())
  return batches
