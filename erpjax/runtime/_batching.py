"""Token id lists -> batches of a bounded set of shapes, one sequence per row or several packed.

Every batch is a `Batch`: rows of T tokens in which each sequence is a segment (segment ids
1..S, 0 = padding) with positions restarting at 0, so a model needs no [T, T] mask from the
caller and a packed row computes exactly what its sequences would alone. Two ways to fill rows:

  make_batches  one sequence per row, sorted longest first, `batch_size` rows per batch, each
                batch padded to the shortest bucket length holding its longest sequence (the
                prompt encoder: mean pooling runs over whole rows).
  pack          first-fit-decreasing packing of up to `max_segments` sequences per row, as in T5's
                and MaxText's packed datasets; a row goes to the shortest bucket holding it, and a
                batch of length T has about `tokens_per_batch / T` rows (reward-model scoring).

Both take their lengths from `bucket_lengths`, so the runner compiles a few programs only.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Hashable, Sequence
from typing import Literal, NamedTuple

import numpy as np

ScoreToken = Literal["first", "last"]


def bucket_lengths(max_length: int, smallest: int = 128, *, per_octave: int = 1
                   ) -> tuple[int, ...]:
  """Row lengths from `smallest` up to `max_length` (always the last), `per_octave` per doubling.

  per_octave=1 gives powers of two, (128, 256, 512) for 512: packed rows are mostly full, so a
  few lengths hold them with little padding. per_octave=2 adds the midpoints, (32, 48, 64, 96,
  128, 192, 256) for 256 with smallest=32: one sequence per row wastes up to the gap between two
  lengths, and steps of x1.5 or x1.33 bound it to a third while keeping the programs few (each
  costs seconds to compile on a small CPU).
  """
  if max_length < 1:
    raise ValueError(f"max_length must be positive, got {max_length}")
  if smallest < 1 or per_octave < 1:
    raise ValueError(f"smallest ({smallest}) and per_octave ({per_octave}) must be >= 1")
  lengths = set()
  size = smallest
  while size < max_length:
    lengths.update(size * (per_octave + i) // per_octave for i in range(per_octave))
    size *= 2
  return tuple(sorted({n for n in lengths if n < max_length} | {max_length}))


class Tokenized(NamedTuple):
  """N tokenized sequences.

  Attributes:
    ids: [N] token id lists, each 1 <= length <= max_length.
    types: [N] token type lists of the same lengths (text pairs for models with segment
      embeddings, e.g. BERT), or None when there are none.
  """

  ids: list[list[int]]
  types: list[list[int]] | None = None


@dataclasses.dataclass(frozen=True)
class Batch:
  """One batch on the host: rows of T token slots holding sequences as segments.

  Attributes:
    tokens_bt: int32[B, T] token ids, 0 in padding.
    segment_ids_bt: int32[B, T]: 1..S numbers the sequences of a row, 0 = padding (and the
      filler rows that round a last batch up).
    positions_bt: int32[B, T], restarting at 0 in each sequence.
    score_index_bs: int32[B, S], the token of each sequence whose output the caller reads (its
      first or last token), 0 in unused slots.
    token_types_bt: int32[B, T] text-pair token types, or None when there are none.
    ids: [n] the caller's key of each of the n sequences (an item id, or an index into the
      input), in slot order.
    slot_b, slot_s: int32[n], the (row, segment slot) of each sequence: the runner returns each
      sequence's output from there.
    num_tokens: real (non-padding) tokens.
  """

  tokens_bt: np.ndarray
  segment_ids_bt: np.ndarray
  positions_bt: np.ndarray
  score_index_bs: np.ndarray
  token_types_bt: np.ndarray | None
  ids: tuple[Hashable, ...]
  slot_b: np.ndarray
  slot_s: np.ndarray
  num_tokens: int

  @property
  def shape(self) -> tuple[int, int]:
    """(B, T)."""
    return self.tokens_bt.shape

  @property
  def num_slots(self) -> int:
    """Token slots B * T (real tokens + padding)."""
    return self.tokens_bt.size

  def model_inputs(self) -> dict[str, np.ndarray]:
    """The arrays a step reads, by the reward-model interface's keyword names (token types only
    when there are some)."""
    inputs = {
        "tokens_bt": self.tokens_bt,
        "segment_ids_bt": self.segment_ids_bt,
        "positions_bt": self.positions_bt,
        "score_index_bs": self.score_index_bs,
    }
    if self.token_types_bt is not None:
      inputs["token_types_bt"] = self.token_types_bt
    return inputs


class PackItem(NamedTuple):
  """One tokenized sequence: the caller's key, its token ids and token types (None: no types)."""

  id: Hashable
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
  """Lays out `rows` of sequences (left to right within a row) as a [num_rows, length] batch.

  Rows beyond `len(rows)` are padding (segment id 0 everywhere).
  """
  if score_token not in ("first", "last"):
    raise ValueError(f"score_token must be 'first' or 'last', got {score_token!r}")
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


def _check_lengths(lengths: np.ndarray, longest: int) -> None:
  if len(lengths) and (lengths.min() < 1 or lengths.max() > longest):
    raise ValueError(f"sequence lengths must lie in [1, {longest}], got "
                     f"[{lengths.min()}, {lengths.max()}]")


# ------------------------------------------------------------------------------------------------
# One sequence per row.


def batch_rows(num_seqs: int, batch_size: int, row_multiple: int = 1) -> int:
  """Rows of a batch of `num_seqs` <= batch_size sequences: batch_size, or for a smaller (last)
  group the next power of two (so one text costs a [1, T] batch, not a [batch_size, T] one),
  rounded up to a multiple of `row_multiple` (the mesh's data-parallel size)."""
  rows = batch_size if num_seqs >= batch_size else min(batch_size,
                                                         1 << (num_seqs - 1).bit_length())
  return -(-rows // row_multiple) * row_multiple


def batch_shapes(batch_size: int, lengths: Sequence[int],
                 row_multiple: int = 1) -> set[tuple[int, int]]:
  """Every [rows, length] shape `make_batches` can produce: the programs a runner compiles."""
  rows = {batch_rows(n, batch_size, row_multiple) for n in range(1, batch_size + 1)}
  return {(r, length) for r in rows for length in lengths}


def make_batches(token_ids: Sequence[Sequence[int]], batch_size: int, lengths: Sequence[int],
                 row_multiple: int = 1) -> list[Batch]:
  """Sorts `token_ids` longest first and cuts them into batches of one sequence per row.

  Each batch has `batch_rows(n, batch_size, row_multiple)` rows and the shortest of `lengths`
  holding its longest sequence; a sequence's key (`Batch.ids`) is its index in `token_ids`. The
  sort is stable, so equal lengths keep input order and batches are reproducible.

  Raises:
    ValueError: a sequence is empty or longer than the longest length (truncate first).
  """
  if batch_size < 1 or row_multiple < 1 or batch_size % row_multiple:
    raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of row_multiple "
                     f"({row_multiple})")
  lengths = sorted(lengths)
  seq_lengths = np.asarray([len(ids) for ids in token_ids], dtype=np.int64)
  _check_lengths(seq_lengths, lengths[-1])
  order = np.argsort(-seq_lengths, kind="stable")
  batches = []
  for start in range(0, len(order), batch_size):
    group = order[start:start + batch_size]
    width = lengths[bisect.bisect_left(lengths, int(seq_lengths[group[0]]))]
    rows = [[PackItem(int(i), token_ids[i], None)] for i in group]
    batches.append(build_batch(rows, width, batch_rows(len(group), batch_size, row_multiple),
                               max_segments=1, score_token="first", with_types=False))
  return batches


# ------------------------------------------------------------------------------------------------
# Packing.


@dataclasses.dataclass(frozen=True)
class Buckets:
  """The batch shapes of packed batches.

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


def first_fit_decreasing(lengths: np.ndarray, capacity: int, max_segments: int) -> list[list[int]]:
  """Packs items of `lengths` ([N] int) into rows of `capacity`, at most `max_segments` per row.

  Returns:
    The item indices of each row, longest first within a row.
  """
  _check_lengths(lengths, capacity)
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


def pack(ids: Sequence[Hashable], tokenized: Tokenized, buckets: Buckets,
         score_token: ScoreToken) -> list[Batch]:
  """Packs N sequences (their keys `ids` [N] and tokens) into batches of the bucket shapes.

  Deterministic: the same input always gives the same batches, so a resumed job recomputes a
  window exactly as an uninterrupted one would. The last batch of each length is padded with
  empty rows; the rows left for a shorter length move into those empty rows when they all fit,
  which saves that length's last batch.
  """
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
