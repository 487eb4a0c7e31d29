"""Length bucketing and sequence packing: token id lists -> a bounded set of batch shapes.

Every batch has one of `len(Buckets.lengths)` shapes, so the scoring step compiles at most that
many times. Sequences are packed several to a row (first-fit decreasing into rows of the longest
bucket length), as in T5's and MaxText's packed datasets; a row then goes to the shortest bucket
that holds it. A packed row numbers its sequences with segment ids 1..S (0 = padding), restarts
positions at 0 in each, and `score_index` names the token each sequence is scored at.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

from erpjax.scoring._format import Tokenized

ScoreToken = Literal["first", "last"]


def bucket_lengths(max_length: int, smallest: int = 128) -> tuple[int, ...]:
  """Powers of two from `smallest` below `max_length`, then `max_length`: e.g. (128, 256, 512).

  Packed rows are mostly full, so a few doubling lengths hold them with little padding.
  """
  if max_length < 1:
    raise ValueError(f"max_length must be positive, got {max_length}")
  lengths = []
  size = smallest
  while size < max_length:
    lengths.append(size)
    size *= 2
  return (*lengths, max_length)


@dataclasses.dataclass(frozen=True)
class Buckets:
  """The compiled batch shapes.

  Attributes:
    lengths: row lengths T, ascending; the longest is the longest sequence accepted.
    tokens_per_batch: token slots per batch; a batch of length T has `rows(T)` rows, so all
      shapes cost about the same.
    max_segments: S, the most sequences packed in one row (1 = no packing, plain bucketing).
    row_multiple: rows per batch are a multiple of this (the mesh's data-parallel size).
  """

  lengths: tuple[int, ...] = (128, 256, 512)
  tokens_per_batch: int = 16384
  max_segments: int = 16
  row_multiple: int = 1

  def __post_init__(self):
    if not self.lengths or any(b <= a for a, b in zip(self.lengths, self.lengths[1:])):
      raise ValueError(f"bucket lengths must be ascending and distinct, got {self.lengths}")
    if self.lengths[0] < 1:
      raise ValueError(f"bucket lengths must be positive, got {self.lengths}")
    if self.tokens_per_batch < self.lengths[-1]:
      raise ValueError(f"tokens_per_batch {self.tokens_per_batch} is below the longest bucket "
                       f"{self.lengths[-1]}")
    if self.max_segments < 1 or self.row_multiple < 1:
      raise ValueError(f"max_segments ({self.max_segments}) and row_multiple "
                       f"({self.row_multiple}) must be >= 1")

  @property
  def max_length(self) -> int:
    return self.lengths[-1]

  def rows(self, length: int) -> int:
    """Rows B of a batch of row length `length`."""
    rows = self.tokens_per_batch // length // self.row_multiple * self.row_multiple
    return max(rows, self.row_multiple)

  def length_for(self, used: int) -> int:
    """The shortest bucket length holding `used` tokens."""
    i = bisect.bisect_left(self.lengths, used)
    if i == len(self.lengths):
      raise ValueError(f"{used} tokens exceed the longest bucket {self.max_length}")
    return self.lengths[i]


@dataclasses.dataclass(frozen=True)
class Batch:
  """One packed batch on the host.

  Attributes:
    tokens_bt, segment_ids_bt, positions_bt: int32[B, T].
    score_index_bs: int32[B, S], 0 in unused slots.
    token_types_bt: int32[B, T] text-pair token types, or None when the formatter makes none.
    ids: [n] item ids of the n sequences in the batch.
    slot_b, slot_s: int32[n], the (row, segment slot) holding each sequence's score.
    num_tokens: real (non-padding) tokens.
  """

  tokens_bt: np.ndarray
  segment_ids_bt: np.ndarray
  positions_bt: np.ndarray
  score_index_bs: np.ndarray
  token_types_bt: np.ndarray | None
  ids: tuple[str, ...]
  slot_b: np.ndarray
  slot_s: np.ndarray
  num_tokens: int

  @property
  def shape(self) -> tuple[int, int]:
    return self.tokens_bt.shape

  @property
  def num_slots(self) -> int:
    return self.tokens_bt.size

  def model_inputs(self) -> dict[str, np.ndarray]:
    """The reward model's keyword arguments (token types only when there are some)."""
    inputs = {
        "tokens_bt": self.tokens_bt,
        "segment_ids_bt": self.segment_ids_bt,
        "positions_bt": self.positions_bt,
        "score_index_bs": self.score_index_bs,
    }
    if self.token_types_bt is not None:
      inputs["token_types_bt"] = self.token_types_bt
    return inputs


def first_fit_decreasing(lengths: np.ndarray, capacity: int, max_segments: int) -> list[list[int]]:
  """Packs items of `lengths` ([N] int) into rows of `capacity`, at most `max_segments` per row.

  Returns:
    The item indices of each row, longest first within a row.
  """
  if len(lengths) and (lengths.max() > capacity or lengths.min() < 1):
    raise ValueError(f"item lengths must lie in [1, {capacity}], "
                     f"got {lengths.min()}..{lengths.max()}")
  free = np.zeros(len(lengths), np.int64)  # Free slots of each open row (N rows at most).
  count = np.zeros(len(lengths), np.int64)
  rows: list[list[int]] = []
  for i in np.argsort(-lengths, kind="stable"):
    fits = (free[:len(rows)] >= lengths[i]) & (count[:len(rows)] < max_segments)
    r = int(np.argmax(fits)) if fits.any() else len(rows)
    if r == len(rows):
      rows.append([])
      free[r] = capacity
    rows[r].append(int(i))
    free[r] -= lengths[i]
    count[r] += 1
  return rows


class PackItem(NamedTuple):
  """One tokenized item: its id, token ids and token types (None: no types)."""

  id: str
  ids: Sequence[int]
  types: Sequence[int] | None


def build_batch(
    rows: Sequence[Sequence[PackItem]],
    length: int,
    num_rows: int,
    max_segments: int,
    score_token: ScoreToken,
    with_types: bool,
) -> Batch:
  """Lays out `rows` of sequences as a [num_rows, length] batch.

  Rows beyond `len(rows)` are padding (segment id 0 everywhere).
  """
  if len(rows) > num_rows:
    raise ValueError(f"{len(rows)} rows do not fit a batch of {num_rows}")
  tokens = np.zeros((num_rows, length), np.int32)
  segments = np.zeros((num_rows, length), np.int32)
  positions = np.zeros((num_rows, length), np.int32)
  types = np.zeros((num_rows, length), np.int32) if with_types else None
  score_index = np.zeros((num_rows, max_segments), np.int32)
  ids, slot_b, slot_s = [], [], []
  num_tokens = 0
  for b, row in enumerate(rows):
    if len(row) > max_segments:
      raise ValueError(f"row {b} holds {len(row)} sequences, more than {max_segments}")
    start = 0
    for s, seq in enumerate(row):
      end = start + len(seq.ids)
      if end > length:
        raise ValueError(f"row {b} holds {end} tokens, more than {length}")
      tokens[b, start:end] = seq.ids
      segments[b, start:end] = s + 1
      positions[b, start:end] = np.arange(len(seq.ids))
      if types is not None:
        types[b, start:end] = seq.types
      score_index[b, s] = start if score_token == "first" else end - 1
      ids.append(seq.id)
      slot_b.append(b)
      slot_s.append(s)
      start = end
    num_tokens += start
  return Batch(tokens, segments, positions, score_index, types, tuple(ids),
               np.asarray(slot_b, np.int32), np.asarray(slot_s, np.int32), num_tokens)


def pack(ids: Sequence[str], tokenized: Tokenized, buckets: Buckets,
         score_token: ScoreToken) -> list[Batch]:
  """Packs N sequences (item `ids` [N] and their tokens) into batches of the bucket shapes.

  Deterministic: the same input always gives the same batches, so a resumed job recomputes a
  window exactly as an uninterrupted one would. The last batch of each length is padded with
  empty rows; the rows left for a shorter length move into those empty rows when they all fit,
  which saves that length's last batch.
  """
  if score_token not in ("first", "last"):
    raise ValueError(f"score_token must be 'first' or 'last', got {score_token!r}")
  types = tokenized.types
  seqs = [PackItem(i, tokens, None if types is None else types[n])
          for n, (i, tokens) in enumerate(zip(ids, tokenized.ids, strict=True))]
  lengths = np.array([len(seq.ids) for seq in seqs], np.int64)
  by_length: dict[int, list[list[PackItem]]] = {length: [] for length in buckets.lengths}
  for row in first_fit_decreasing(lengths, buckets.max_length, buckets.max_segments):
    length = buckets.length_for(int(lengths[row].sum()))
    by_length[length].append([seqs[i] for i in row])
  for i, length in reversed(list(enumerate(buckets.lengths))):
    rows = by_length[length]
    free = -len(rows) % buckets.rows(length)
    for shorter in reversed(buckets.lengths[:i]):
      left = len(by_length[shorter]) % buckets.rows(shorter)
      if 0 < left <= free:
        moved = by_length[shorter][len(by_length[shorter]) - left:]
        del by_length[shorter][len(by_length[shorter]) - left:]
        rows.extend(moved)
        free -= left
  batches = []
  for length in buckets.lengths:
    rows = by_length[length]
    num_rows = buckets.rows(length)
    for start in range(0, len(rows), num_rows):
      batches.append(build_batch(rows[start:start + num_rows], length, num_rows,
                                 buckets.max_segments, score_token, types is not None))
  return batches
